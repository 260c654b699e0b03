using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>How the Spot API client authenticates, paces itself and gives up (spot-api.md §1, §2.1).</summary>
public sealed record SpotApiOptions
{
    /// <summary>The public OAuth client id published in the official API description.</summary>
    public const string PublicClientId = "mwG3lUMV8KyeMqHe4fJ5Bb3nM1vBvRNa";

    public Uri ApiUrl { get; init; } = new("https://spot.rackspace.com");
    public Uri AuthUrl { get; init; } = new("https://login.spot.rackspace.com");
    public string ClientId { get; init; } = PublicClientId;
    /// <summary>`org_…` id, `org-…` namespace or an organization name; null: from the id_token, else the only org.</summary>
    public string? Org { get; init; }
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Attempts per call for 5xx, 429, timeouts and transport errors (a 401 gets one extra attempt after a re-exchange).</summary>
    public int MaxAttempts { get; init; } = 4;
    public TimeSpan BackoffBase { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan BackoffMax { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>A 429 asking to wait longer than this is not waited out inside one call.</summary>
    public TimeSpan MaxRetryAfter { get; init; } = TimeSpan.FromMinutes(2);
    /// <summary>Token bucket: sustained requests per second (0 = no limit) and burst size.</summary>
    public double RatePerSecond { get; init; } = 5;
    public int Burst { get; init; } = 10;
    /// <summary>Consecutive 5xx/429/transport failures that open the circuit, and how long it stays open.</summary>
    public int BreakerThreshold { get; init; } = 5;
    public TimeSpan BreakerCooldown { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Exchange the refresh token this long before the id_token expires (at most half its lifetime).</summary>
    public TimeSpan TokenRefreshMargin { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary>Seed of the backoff jitter; null: unpredictable.</summary>
    public int? RandomSeed { get; init; }
    /// <summary>Larger response bodies are an error: a full server-class list is about 200 KB.</summary>
    public int MaxResponseBytes { get; init; } = 32 * 1024 * 1024;
}

/// <summary>
/// A failed Spot API call. <see cref="Reason"/> is one of: unauthorized (401, or the refresh token
/// was refused), access_denied (403), not_found (404), conflict (409), invalid (400/422),
/// throttled (429), http (5xx and other codes), timeout, network, malformed (a body we cannot
/// read), circuit_open (not sent: the breaker is open), config (e.g. several orgs, none chosen),
/// and for node pools: invalid with no status code (refused before sending), bid_rejected (the
/// server refused the bid and no acceptable correction existed), unmanaged (a pool Karpetrack did
/// not create: never changed).
/// </summary>
public sealed class SpotApiException(string reason, int? statusCode, string message, string? serverMessage = null,
    TimeSpan? retryAfter = null, Exception? inner = null) : Exception(message, inner)
{
    public string Reason { get; } = reason;
    public int? StatusCode { get; } = statusCode;
    /// <summary>What the server said: a Kubernetes Status `message`, an OAuth `error_description`, or the body.</summary>
    public string? ServerMessage { get; } = serverMessage;
    public TimeSpan? RetryAfter { get; } = retryAfter;

    public static string ReasonFor(int status) => status switch
    {
        401 => "unauthorized",
        403 => "access_denied",
        404 => "not_found",
        409 => "conflict",
        400 or 422 => "invalid",
        429 => "throttled",
        _ => "http",
    };
}

/// <summary>One organization the token's user can see (§2.2).</summary>
public sealed record SpotOrganization(string Id, string Name, string? DisplayName, string Namespace);

/// <summary>The fields of a CloudSpace Karpetrack uses (§2.5).</summary>
public sealed record SpotCloudspace(string Name, string Namespace, string Region, string? Phase, string? KubernetesVersion);

/// <summary>
/// A ServerClass as the authenticated API returns it (§2.4), parsed but not judged: null where the
/// API left a field out. Prices are USD per hour.
/// </summary>
public sealed record SpotServerClass(
    string Name,
    string Region,
    string? CategoryName,
    string? DisplayName,
    string? FlavorType,
    decimal? Cpu,
    long? MemoryBytes,
    long? DiskBytes,
    decimal? MinBid,
    decimal? OnDemandPerHour,
    string? Availability,
    decimal? Market,
    decimal? Hammer)
{
    /// <summary>The catalogue entry, when the API gave enough to build one (the feed is the usual source).</summary>
    public ServerClass? ToServerClass()
    {
        if (Cpu is not { } cpu || MemoryBytes is not { } memory || CategoryName is null) return null;
        if (Categories.CodeOf(CategoryName) is not { } code) return null;
        return new ServerClass(Name, Region, code, CategoryName, cpu, memory, DisplayName ?? Name, "", "");
    }

    public SpotClassFacts ToFacts() => new(MinBid, OnDemandPerHour, DiskBytes, Availability, Market, ToServerClass());
}

/// <summary>One list call's outcome: the items we could read and how many we could not.</summary>
public sealed record SpotServerClassList(IReadOnlyList<SpotServerClass> Items, int Skipped, string? ResourceVersion)
{
    public IReadOnlyDictionary<string, SpotClassFacts> ToFacts()
    {
        var facts = new Dictionary<string, SpotClassFacts>(StringComparer.Ordinal);
        foreach (var c in Items) facts[c.Name] = c.ToFacts();
        return facts;
    }
}

/// <summary>
/// A SpotNodePool as the API stores it (spot-api.md §2.6). The bid is kept as the stored string, since
/// the server is the authority on its format; <see cref="Bid"/> reads it.
/// </summary>
public sealed record SpotNodePool(
    string Name, string Namespace, string ServerClass, int Desired, string BidPrice, string CloudSpace,
    IReadOnlyDictionary<string, string> Labels, IReadOnlyDictionary<string, string> CustomLabels,
    string? BidStatus, int WonCount, string ResourceVersion, DateTimeOffset? Created)
{
    /// <summary>Created by Karpetrack: the only pools it may scale or delete.</summary>
    public bool IsManaged => CustomLabels.TryGetValue(Actuator.ManagedLabel, out var v) && v == "true";

    /// <summary>Set once a DELETE was accepted and the pool's finalizers still hold it (spot-api.md §2.1): it is going away.</summary>
    public DateTimeOffset? DeletionTimestamp { get; init; }

    public bool Deleting => DeletionTimestamp is not null;

    /// <summary>The stored bid price (invariant), 0 when unparsable. Computed, so `with` cannot leave it stale.</summary>
    public decimal Bid => decimal.TryParse(BidPrice, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var b) ? b : 0m;
}

/// <summary>What Karpetrack asks for when it creates a pool; the name is a lowercase UUID it chose.</summary>
public sealed record SpotNodePoolSpec(string Name, string ServerClass, int Desired, decimal BidPrice, string CloudSpace,
    IReadOnlyDictionary<string, string> CustomLabels, IReadOnlyList<Taint>? CustomTaints = null);
