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
    /// <summary>No minimum bid: the webhook cannot validate any bid (bare metal in the Dec 2025 probe).</summary>
    public bool Biddable => MinBid is not null;

    /// <summary>The catalogue entry, when the API gave enough to build one (the feed is the usual source).</summary>
    public ServerClass? ToServerClass()
    {
        if (Cpu is not { } cpu || MemoryBytes is not { } memory || CategoryName is null) return null;
        if (Categories.CodeOf(CategoryName) is not { } code) return null;
        return new ServerClass(Name, Region, code, CategoryName, cpu, memory, DisplayName ?? Name, "", "");
    }

    public SpotClassFacts ToFacts() => new(MinBid, OnDemandPerHour, DiskBytes, Availability, Market, ToServerClass(), Biddable);
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

    /// <summary>The stored bid price (invariant), 0 when unparsable. Computed, so `with` cannot leave it stale.</summary>
    public decimal Bid => decimal.TryParse(BidPrice, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var b) ? b : 0m;
}

/// <summary>What Karpetrack asks for when it creates a pool; the name is a lowercase UUID it chose.</summary>
public sealed record SpotNodePoolSpec(string Name, string ServerClass, int Desired, decimal BidPrice, string CloudSpace,
    IReadOnlyDictionary<string, string> CustomLabels, IReadOnlyList<Taint>? CustomTaints = null);

/// <summary>
/// A small client of the Rackspace Spot API: refresh-token exchange with a cached id_token, the
/// organization namespace resolved once, and one request pipeline (rate limit, circuit breaker,
/// per-request timeout, retries with backoff, 401 → re-exchange once) that every call goes through.
/// New resources (node pools) are one method each on top of <see cref="SendAsync"/>.
/// </summary>
public sealed class SpotApiClient : IDisposable
{
    private readonly SpotApiOptions options;
    private readonly string refreshToken;
    private readonly ILogger log;
    private readonly TimeProvider clock;
    private readonly HttpClient http;
    private readonly Random random;
    private readonly TokenBucket bucket;
    private readonly CircuitBreaker breaker;
    private readonly SemaphoreSlim tokenGate = new(1, 1);
    private readonly SemaphoreSlim orgGate = new(1, 1);
    private readonly object countsGate = new();
    private readonly Prometheus.Counter requestsFamily;
    private readonly Dictionary<(string Method, string Code), Prometheus.Counter.Child> requests = [];
    private BearerToken? token;
    private string? orgNamespace;
    private long tokenExchanges;

    private sealed record BearerToken(string IdToken, DateTimeOffset RefreshAt, DateTimeOffset ExpiresAt, string? OrgId);

    public SpotApiClient(SpotApiOptions options, string refreshToken, ILogger log, TimeProvider? clock = null, HttpMessageHandler? handler = null,
        Telemetry? telemetry = null)
    {
        if (string.IsNullOrWhiteSpace(refreshToken)) throw new ArgumentException("a refresh token is needed", nameof(refreshToken));
        if (options.MaxAttempts < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxAttempts must be at least 1");
        this.options = options;
        this.refreshToken = refreshToken.Trim();
        this.log = log;
        this.clock = clock ?? TimeProvider.System;
        random = options.RandomSeed is { } seed ? new Random(seed) : new Random();
        bucket = new TokenBucket(options.RatePerSecond, Math.Max(1, options.Burst), this.clock);
        breaker = new CircuitBreaker(Math.Max(1, options.BreakerThreshold), options.BreakerCooldown, this.clock);
        breaker.Changed += open => CircuitChanged?.Invoke(open);
        http = new HttpClient(handler ?? new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) }, disposeHandler: true)
        {
            Timeout = Timeout.InfiniteTimeSpan,   // each attempt is bounded by RequestTimeout instead
        };
        http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("karpetrack", BuildInfo.Version));
        telemetry ??= new Telemetry();
        requestsFamily = telemetry.Counter("karpetrack_spot_api_requests_total",
            "Spot API requests by HTTP method and status code (\"error\" when no response came).", "method", "code");
        var circuit = telemetry.Gauge("karpetrack_spot_api_circuit_open",
            "1 while the Spot API circuit breaker is open or half-open (requests are held back), 0 when closed.");
        telemetry.OnScrape(() => circuit.Set(CircuitOpen ? 1 : 0));
    }

    /// <summary>True while the breaker refuses calls (open, or half-open with its one trial in flight).</summary>
    public bool CircuitOpen => breaker.IsOpen;

    /// <summary>How many times the circuit has opened.</summary>
    public long CircuitOpenings => breaker.Openings;

    /// <summary>Raised (outside any lock) when the circuit opens (true) or closes (false).</summary>
    public event Action<bool>? CircuitChanged;

    /// <summary>Every HTTP attempt by method and status code ("error" when no response came).</summary>
    public IReadOnlyDictionary<(string Method, string Code), long> Requests
    {
        get { lock (countsGate) return requests.ToDictionary(kv => kv.Key, kv => (long)kv.Value.Value); }
    }

    public long TokenExchanges => Interlocked.Read(ref tokenExchanges);

    /// <summary>Where the org namespace came from once resolved: flag, token, organizations.</summary>
    public string? OrgSource { get; private set; }

    // ---- resources -------------------------------------------------------------------------

    public async Task<IReadOnlyList<SpotOrganization>> ListOrganizationsAsync(CancellationToken ct)
    {
        using var doc = await SendAsync(new SpotRequest(HttpMethod.Get, "/apis/auth.ngpc.rxt.io/v1/organizations"), ct).ConfigureAwait(false);
        if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("organizations", out var orgs) || orgs.ValueKind != JsonValueKind.Array)
            throw Malformed("organizations", "no \"organizations\" array");
        var list = new List<SpotOrganization>();
        foreach (var o in orgs.EnumerateArray())
        {
            var id = Str(o, "id");
            if (id is null) continue;
            var ns = o.TryGetProperty("metadata", out var m) ? Str(m, "namespace") : null;
            ns ??= NamespaceOf(id);
            if (ns is null) continue;
            list.Add(new SpotOrganization(id, Str(o, "name") ?? id, Str(o, "display_name"), ns));
        }
        return list;
    }

    /// <summary>The org namespace (`org-…`), resolved on first use and cached for the client's life.</summary>
    public async Task<string> GetOrgNamespaceAsync(CancellationToken ct)
    {
        if (Volatile.Read(ref orgNamespace) is { } known) return known;
        await orgGate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (orgNamespace is { } again) return again;
            var (ns, source) = await ResolveOrgAsync(ct).ConfigureAwait(false);
            OrgSource = source;
            Volatile.Write(ref orgNamespace, ns);
            log.LogInformation("Spot organization namespace {Namespace} (from {Source})", ns, source);
            return ns;
        }
        finally { orgGate.Release(); }
    }

    private async Task<(string, string)> ResolveOrgAsync(CancellationToken ct)
    {
        if (options.Org is { } org && !string.IsNullOrWhiteSpace(org))
        {
            if (NamespaceOf(org) is { } direct) return (direct, "flag");
            // Neither form: an organization name, as the SDK accepts; look it up once.
            var all = await ListOrganizationsAsync(ct).ConfigureAwait(false);
            var match = all.FirstOrDefault(o => string.Equals(o.Name, org.Trim(), StringComparison.OrdinalIgnoreCase)
                                                || string.Equals(o.DisplayName, org.Trim(), StringComparison.OrdinalIgnoreCase));
            return match is not null
                ? (match.Namespace, "organizations")
                : throw new SpotApiException("config", null, $"--spot-org \"{org}\" is neither an org id (org_…), a namespace (org-…) nor the name of one of the {all.Count} organizations this token can see");
        }
        var t = await GetTokenAsync(ct).ConfigureAwait(false);
        if (t.OrgId is { } claim && NamespaceOf(claim) is { } fromClaim) return (fromClaim, "token");
        var orgs = await ListOrganizationsAsync(ct).ConfigureAwait(false);
        return orgs.Count switch
        {
            1 => (orgs[0].Namespace, "organizations"),
            0 => throw new SpotApiException("config", null, "the token sees no Spot organization"),
            _ => throw new SpotApiException("config", null,
                $"the token sees {orgs.Count} organizations ({string.Join(", ", orgs.Select(o => o.Name))}); choose one with --spot-org"),
        };
    }

    /// <summary>`org_kNYILtp8ZZNvkZ5g` or `org-knyiltp8zznvkz5g` → `org-knyiltp8zznvkz5g`; anything else → null.</summary>
    public static string? NamespaceOf(string org)
    {
        var s = org.Trim();
        if (s.Length <= 4 || !(s.StartsWith("org_", StringComparison.OrdinalIgnoreCase) || s.StartsWith("org-", StringComparison.OrdinalIgnoreCase)))
            return null;
        return s.ToLowerInvariant().Replace('_', '-');
    }

    public async Task<SpotCloudspace> GetCloudspaceAsync(string name, CancellationToken ct)
    {
        var ns = await GetOrgNamespaceAsync(ct).ConfigureAwait(false);
        using var doc = await SendAsync(new SpotRequest(HttpMethod.Get,
            $"/apis/ngpc.rxt.io/v1/namespaces/{Uri.EscapeDataString(ns)}/cloudspaces/{Uri.EscapeDataString(name)}"), ct).ConfigureAwait(false);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("spec", out var spec) || Str(spec, "region") is not { } region)
            throw Malformed($"cloudspace {name}", "no spec.region");
        var status = root.TryGetProperty("status", out var s) ? s : default;
        return new SpotCloudspace(name, ns, region, status.ValueKind == JsonValueKind.Object ? Str(status, "phase") : null, Str(spec, "kubernetesVersion"));
    }

    public async Task<SpotServerClassList> ListServerClassesAsync(CancellationToken ct)
    {
        using var doc = await SendAsync(new SpotRequest(HttpMethod.Get, "/apis/ngpc.rxt.io/v1/serverclasses"), ct).ConfigureAwait(false);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("items", out var items) || items.ValueKind != JsonValueKind.Array)
            throw Malformed("serverclasses", "no \"items\" array");
        var list = new List<SpotServerClass>();
        int skipped = 0;
        foreach (var item in items.EnumerateArray())
        {
            if (ServerClassParser.TryParse(item, out var c, out var why)) list.Add(c!);
            else
            {
                skipped++;
                log.LogDebug("Spot server class skipped: {Why}", why);
            }
        }
        string? rv = root.TryGetProperty("metadata", out var meta) && meta.ValueKind == JsonValueKind.Object ? Str(meta, "resourceVersion") : null;
        return new SpotServerClassList(list, skipped, rv);
    }

    // ---- node pools (§2.6) -----------------------------------------------------------------

    private long malformedPools;

    /// <summary>Pool items that lists returned but could not be read (skipped, never thrown).</summary>
    public long MalformedPools => Interlocked.Read(ref malformedPools);

    private static string PoolsPath(string ns) => $"/apis/ngpc.rxt.io/v1/namespaces/{Uri.EscapeDataString(ns)}/spotnodepools";

    private async Task<string> PoolPathAsync(string name, CancellationToken ct)
    {
        // An empty name would address the collection, whose DELETE removes every pool of the org (§2.1).
        if (string.IsNullOrWhiteSpace(name)) throw new ArgumentException("a pool name is needed", nameof(name));
        return $"{PoolsPath(await GetOrgNamespaceAsync(ct).ConfigureAwait(false))}/{Uri.EscapeDataString(name)}";
    }

    /// <summary>The pools of one cloudspace, selected by the label the API sets on create; unreadable items are skipped.</summary>
    public async Task<IReadOnlyList<SpotNodePool>> ListNodePoolsAsync(string cloudspace, CancellationToken ct)
    {
        var ns = await GetOrgNamespaceAsync(ct).ConfigureAwait(false);
        var selector = Uri.EscapeDataString($"{SpotPoolRules.CloudspaceLabel}={cloudspace}");
        using var doc = await SendAsync(new SpotRequest(HttpMethod.Get, $"{PoolsPath(ns)}?labelSelector={selector}"), ct).ConfigureAwait(false);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("items", out var items) || items.ValueKind != JsonValueKind.Array)
            throw Malformed("spotnodepools", "no \"items\" array");
        var list = new List<SpotNodePool>();
        int skipped = 0;
        foreach (var item in items.EnumerateArray())
        {
            if (SpotPoolRules.TryParse(item, out var pool, out var why)) list.Add(pool!);
            else
            {
                skipped++;
                log.LogDebug("Spot node pool skipped: {Why}", why);
            }
        }
        if (skipped > 0)
        {
            Interlocked.Add(ref malformedPools, skipped);
            log.LogWarning("Spot API: {Skipped} node pools of cloudspace {Cloudspace} could not be read and were skipped", skipped, cloudspace);
        }
        return list;
    }

    /// <summary>One pool, or null when there is none by that name.</summary>
    public async Task<SpotNodePool?> GetNodePoolAsync(string name, CancellationToken ct)
    {
        var path = await PoolPathAsync(name, ct).ConfigureAwait(false);
        try
        {
            using var doc = await SendAsync(new SpotRequest(HttpMethod.Get, path), ct).ConfigureAwait(false);
            return SpotPoolRules.TryParse(doc.RootElement, out var pool, out var why) ? pool : throw Malformed($"spotnodepool {name}", why!);
        }
        catch (SpotApiException e) when (e.StatusCode == 404)
        {
            return null;
        }
    }

    /// <summary>
    /// Creates a pool. Refused before sending when the spec breaks a rule the server is known to
    /// enforce. A bid the server refuses while stating what it wants is corrected once (never above
    /// <paramref name="maxBid"/>). A create repeated after a lost answer meets 409 AlreadyExists and
    /// succeeds when the existing pool is ours with the same class: pool names are client-chosen
    /// UUIDs, so a retried POST can never make a second pool.
    /// </summary>
    public async Task<SpotNodePool> CreateNodePoolAsync(SpotNodePoolSpec spec, decimal? maxBid, CancellationToken ct)
    {
        if (SpotPoolRules.Problem(spec, maxBid) is { } problem)
            throw new SpotApiException("invalid", null, $"node pool {spec.Name}: {problem}; not sent");
        var ns = await GetOrgNamespaceAsync(ct).ConfigureAwait(false);
        var bid = spec.BidPrice;
        for (bool corrected = false; ; corrected = true)
        {
            try
            {
                using var doc = await SendAsync(new SpotRequest(HttpMethod.Post, PoolsPath(ns), SpotPoolRules.CreateBody(spec, ns, bid), "application/json"), ct)
                    .ConfigureAwait(false);
                var created = SpotPoolRules.TryParse(doc.RootElement, out var pool, out var why) ? pool! : throw Malformed($"spotnodepool {spec.Name}", why!);
                log.LogInformation("Spot node pool {Pool} created: {Desired} × {Class} at bid {Bid}", created.Name, created.Desired, created.ServerClass, created.BidPrice);
                return created;
            }
            catch (SpotApiException e) when (e.StatusCode == 409)
            {
                return await ExistingIfOursAsync(spec, e, ct).ConfigureAwait(false);
            }
            catch (SpotApiException e) when (e.StatusCode is 400 or 403 or 422 && SpotPoolRules.CorrectBid(e.ServerMessage, bid) is { } rule)
            {
                var fixedBid = rule.Bid;
                string? refusal = corrected ? "the corrected bid was refused too"
                    : fixedBid is not { } f ? "no correction can be read from the message"
                    : f == bid ? "the bid the message asks for is the one sent"
                    : maxBid is { } max && f > max ? $"the bid it asks for, {SpotPoolRules.FormatBid(f)}, is above the maximum {SpotPoolRules.FormatBid(max)}"
                    : null;
                if (refusal is not null)
                    throw new SpotApiException("bid_rejected", e.StatusCode,
                        $"node pool {spec.Name} ({spec.ServerClass}): bid {SpotPoolRules.FormatBid(bid)} refused ({refusal}): {e.ServerMessage}", e.ServerMessage, inner: e);
                log.LogWarning("Spot refused bid {Bid} for pool {Pool} ({Class}): {Message}; retrying once with {Corrected}",
                    SpotPoolRules.FormatBid(bid), spec.Name, spec.ServerClass, e.ServerMessage, SpotPoolRules.FormatBid(fixedBid!.Value));
                bid = fixedBid.Value;
            }
        }
    }

    private async Task<SpotNodePool> ExistingIfOursAsync(SpotNodePoolSpec spec, SpotApiException conflict, CancellationToken ct)
    {
        var existing = await GetNodePoolAsync(spec.Name, ct).ConfigureAwait(false);
        if (existing is { IsManaged: true } && existing.ServerClass == spec.ServerClass && existing.CloudSpace == spec.CloudSpace)
        {
            log.LogInformation("Spot node pool {Pool} already exists as ours (an earlier create whose answer was lost); using it", spec.Name);
            return existing;
        }
        var what = existing is null ? "but is gone now"
            : !existing.IsManaged ? "and is not managed by Karpetrack"
            : $"with class {existing.ServerClass} in cloudspace {existing.CloudSpace}";
        throw new SpotApiException("conflict", 409, $"node pool {spec.Name} already exists {what}", conflict.ServerMessage, inner: conflict);
    }

    /// <summary>
    /// Deletes one managed pool by name (never the collection); false when it was already gone,
    /// which includes a retried DELETE meeting the 404 left by its own first attempt.
    /// </summary>
    public async Task<bool> DeleteNodePoolAsync(string name, CancellationToken ct)
    {
        var path = await PoolPathAsync(name, ct).ConfigureAwait(false);
        var pool = await GetNodePoolAsync(name, ct).ConfigureAwait(false);
        if (pool is null) return false;
        RequireManaged(pool, "delete");
        try
        {
            using var doc = await SendAsync(new SpotRequest(HttpMethod.Delete, path), ct).ConfigureAwait(false);
        }
        catch (SpotApiException e) when (e.StatusCode == 404)
        {
            return false;
        }
        log.LogInformation("Spot node pool {Pool} ({Class}, {Desired} nodes) deleted", name, pool.ServerClass, pool.Desired);
        return true;
    }

    private static void RequireManaged(SpotNodePool pool, string verb)
    {
        if (!pool.IsManaged)
            throw new SpotApiException("unmanaged", null,
                $"node pool {pool.Name} ({pool.ServerClass}) lacks {Actuator.ManagedLabel}=true: Karpetrack did not create it and will not {verb} it; not sent");
    }

    // ---- request pipeline ------------------------------------------------------------------

    /// <summary>
    /// One logical call. Retries 429 (after Retry-After), 5xx, timeouts and transport errors up to
    /// MaxAttempts. Writes are retried too, because each is safe to repeat: pool names are
    /// client-chosen UUIDs, so a repeated create answers 409 AlreadyExists rather than making a second
    /// pool (CreateNodePoolAsync then reads the pool); a scale patch carries the resourceVersion, so a
    /// repeat of one that was applied answers 409 Conflict and the re-read shows it done; a repeated
    /// DELETE answers 404.
    /// </summary>
    internal async Task<JsonDocument> SendAsync(SpotRequest request, CancellationToken ct)
    {
        bool reauthenticated = false;
        SpotApiException? last = null;
        for (int attempt = 1; ; attempt++)
        {
            string? bearer = request.Authenticated ? (await GetTokenAsync(ct).ConfigureAwait(false)).IdToken : null;
            if (!breaker.TryEnter(out var reopensIn))
            {
                // The breaker opening in the middle of our retries: the real error says more than "circuit open".
                throw last ?? new SpotApiException("circuit_open", null,
                    $"{request.Method} {request.Path}: not sent, the Spot API circuit is open after {options.BreakerThreshold} consecutive failures (next try in {reopensIn.TotalSeconds:0}s)");
            }
            Outcome outcome;
            try
            {
                outcome = await SendOnceAsync(request, bearer, ct).ConfigureAwait(false);
            }
            catch
            {
                // Cancelled by the caller or an oversized answer: says nothing about the server's health,
                // but a half-open trial must not stay "in flight" forever.
                breaker.Abandon();
                throw;
            }
            if (outcome.Status is >= 200 and < 300)
            {
                breaker.Success();
                try
                {
                    return JsonDocument.Parse(outcome.Body, new JsonDocumentOptions { MaxDepth = 64 });
                }
                catch (JsonException e)
                {
                    throw new SpotApiException("malformed", outcome.Status, $"{request.Method} {request.Path}: the answer is not JSON: {e.Message}", inner: e);
                }
            }

            var error = ToException(request, outcome);
            bool retryable = outcome.Status is null or 429 or >= 500;
            if (retryable) breaker.Failure();
            else breaker.Success();   // a 4xx is a healthy server refusing us

            if (outcome.Status == 401 && request.Authenticated && !reauthenticated)
            {
                // The id_token died early (revoked, clock skew): one fresh exchange, one more try.
                reauthenticated = true;
                log.LogInformation("Spot API answered 401 ({Message}); exchanging the refresh token again", error.ServerMessage);
                await RefreshTokenAsync(bearer, ct).ConfigureAwait(false);
                attempt--;
                continue;
            }
            if (!retryable || attempt >= options.MaxAttempts) throw error;
            TimeSpan delay;
            if (outcome.RetryAfter is { } asked)
            {
                if (asked > options.MaxRetryAfter) throw error;
                delay = asked < TimeSpan.Zero ? TimeSpan.Zero : asked;
            }
            else delay = Backoff(attempt);
            last = error;
            log.LogDebug("Spot API {Method} {Path}: {Reason}; retry {Attempt}/{Max} in {Delay}", request.Method, request.Path, error.Reason, attempt + 1, options.MaxAttempts, delay);
            await Task.Delay(delay, clock, ct).ConfigureAwait(false);
        }
    }

    private sealed record Outcome(int? Status, byte[] Body, string? ContentType, TimeSpan? RetryAfter, Exception? Transport, bool TimedOut);

    private async Task<Outcome> SendOnceAsync(SpotRequest request, string? bearer, CancellationToken ct)
    {
        var wait = bucket.Reserve();
        if (wait > TimeSpan.Zero) await Task.Delay(wait, clock, ct).ConfigureAwait(false);
        var baseUrl = request.Auth ? options.AuthUrl : options.ApiUrl;
        using var message = new HttpRequestMessage(request.Method, new Uri(baseUrl, request.Path));
        message.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
        if (bearer is not null) message.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        if (request.Body is not null)
        {
            message.Content = new ByteArrayContent(request.Body);
            message.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(request.ContentType ?? "application/json");
        }
        // Wall-clock bound on real I/O; the TimeProvider only paces our own waits.
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(options.RequestTimeout);
        try
        {
            using var response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
            int status = (int)response.StatusCode;
            Count(request.Method.Method, status.ToString(CultureInfo.InvariantCulture));
            var body = await ReadLimitedAsync(response.Content, status is >= 200 and < 300 ? options.MaxResponseBytes : 64 * 1024, timeout.Token).ConfigureAwait(false)
                ?? throw new SpotApiException("malformed", status, $"{request.Method} {request.Path}: the answer is larger than {options.MaxResponseBytes} bytes");
            return new Outcome(status, body, response.Content.Headers.ContentType?.MediaType, RetryAfterOf(response), null, false);
        }
        catch (OperationCanceledException e) when (!ct.IsCancellationRequested)
        {
            Count(request.Method.Method, "error");
            return new Outcome(null, [], null, null, e, true);
        }
        catch (HttpRequestException e)
        {
            Count(request.Method.Method, "error");
            return new Outcome(null, [], null, null, e, false);
        }
        catch (IOException e)
        {
            Count(request.Method.Method, "error");
            return new Outcome(null, [], null, null, e, false);
        }
    }

    private TimeSpan? RetryAfterOf(HttpResponseMessage response)
    {
        if (response.Headers.RetryAfter?.Delta is { } delta) return delta;
        if (response.Headers.RetryAfter?.Date is { } date) return date - clock.GetUtcNow();
        return null;
    }

    private static async Task<byte[]?> ReadLimitedAsync(HttpContent content, int limit, CancellationToken ct)
    {
        await using var s = await content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        using var ms = new MemoryStream();
        var buf = new byte[64 * 1024];
        int n;
        while ((n = await s.ReadAsync(buf, ct).ConfigureAwait(false)) > 0)
        {
            // Error bodies are only read for their message: the start of a long one is enough.
            if (ms.Length + n > limit) return limit < 1024 * 1024 ? ms.ToArray() : null;
            ms.Write(buf, 0, n);
        }
        return ms.ToArray();
    }

    private SpotApiException ToException(SpotRequest request, Outcome o)
    {
        var what = $"{request.Method} {(request.Auth ? "/oauth/token" : request.Path)}";
        if (o.Status is not { } status)
        {
            return o.TimedOut
                ? new SpotApiException("timeout", null, $"{what}: no answer within {options.RequestTimeout.TotalSeconds:0.###}s", inner: o.Transport)
                : new SpotApiException("network", null, $"{what}: {o.Transport?.Message}", inner: o.Transport);
        }
        var serverMessage = ServerMessageOf(o.Body);
        var reason = SpotApiException.ReasonFor(status);
        // The login host answers a bad refresh token with 401 or 403: for us both mean "unauthorized".
        if (request.Auth && status is 401 or 403) reason = "unauthorized";
        return new SpotApiException(reason, status, $"{what}: {status} {serverMessage}".TrimEnd(), serverMessage, o.RetryAfter);
    }

    /// <summary>A Kubernetes Status `message`, an OAuth `error_description`, else the (short) body text.</summary>
    internal static string? ServerMessageOf(byte[] body)
    {
        if (body.Length == 0) return null;
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.ValueKind == JsonValueKind.Object)
            {
                if (Str(doc.RootElement, "message") is { } m) return m;
                if (Str(doc.RootElement, "error_description") is { } d) return d;
                if (Str(doc.RootElement, "error") is { } e) return e;
            }
        }
        catch (JsonException) { }
        var text = Encoding.UTF8.GetString(body.AsSpan(0, Math.Min(body.Length, 300))).Trim();
        return text.Length == 0 ? null : text;
    }

    private TimeSpan Backoff(int attempt)
    {
        var ceiling = Math.Min(options.BackoffMax.TotalMilliseconds, options.BackoffBase.TotalMilliseconds * Math.Pow(2, attempt - 1));
        double jitter;
        lock (random) jitter = random.NextDouble();
        // Half fixed, half random: spreads clients out without ever retrying at once.
        return TimeSpan.FromMilliseconds(ceiling / 2 + ceiling / 2 * jitter);
    }

    private void Count(string method, string code)
    {
        Prometheus.Counter.Child? counter;
        lock (countsGate)
        {
            if (!requests.TryGetValue((method, code), out counter)) requests[(method, code)] = counter = requestsFamily.WithLabels(method, code);
        }
        counter.Inc();
    }

    private static SpotApiException Malformed(string what, string why) => new("malformed", null, $"{what}: {why}");

    internal static string? Str(JsonElement e, string key) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    // ---- tokens ----------------------------------------------------------------------------

    private async Task<BearerToken> GetTokenAsync(CancellationToken ct)
    {
        var t = Volatile.Read(ref token);
        if (t is not null && clock.GetUtcNow() < t.RefreshAt) return t;
        return await RefreshTokenAsync(t?.IdToken, ct).ConfigureAwait(false);
    }

    /// <summary>Exchanges the refresh token unless another caller already replaced <paramref name="stale"/>.</summary>
    private async Task<BearerToken> RefreshTokenAsync(string? stale, CancellationToken ct)
    {
        await tokenGate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var current = token;
            if (current is not null && current.IdToken != stale && clock.GetUtcNow() < current.RefreshAt) return current;
            var form = new FormUrlEncodedContent([
                new("grant_type", "refresh_token"), new("client_id", options.ClientId), new("refresh_token", refreshToken),
            ]);
            var body = await form.ReadAsByteArrayAsync(ct).ConfigureAwait(false);
            Interlocked.Increment(ref tokenExchanges);
            using var doc = await SendAsync(new SpotRequest(HttpMethod.Post, "/oauth/token", body, "application/x-www-form-urlencoded", Authenticated: false, Auth: true), ct).ConfigureAwait(false);
            var fresh = ParseTokenResponse(doc.RootElement, clock.GetUtcNow(), options.TokenRefreshMargin);
            Volatile.Write(ref token, fresh);
            log.LogDebug("Spot id_token obtained, valid until {Expiry:O}", fresh.ExpiresAt);
            return fresh;
        }
        finally { tokenGate.Release(); }
    }

    private static BearerToken ParseTokenResponse(JsonElement root, DateTimeOffset now, TimeSpan margin)
    {
        // The bearer is the id_token: the opaque access_token is refused by the API gateway (§1.1).
        if (Str(root, "id_token") is not { } idToken || idToken.Split('.').Length != 3)
            throw new SpotApiException("malformed", 200, "POST /oauth/token: the answer has no id_token in JWT form");
        var claims = DecodeJwtPayload(idToken);
        DateTimeOffset? expiry = null;
        if (root.TryGetProperty("expires_in", out var ei) && ei.ValueKind == JsonValueKind.Number && ei.TryGetInt64(out var secs) && secs > 0)
            expiry = now.AddSeconds(secs);
        if (claims?.Exp is { } exp) expiry = expiry is { } e && e < exp ? e : exp;
        var expiresAt = expiry ?? now.AddHours(1);   // neither said: assume an hour, a 401 will correct us
        var lifetime = expiresAt - now;
        var early = lifetime / 2 < margin ? lifetime / 2 : margin;
        return new BearerToken(idToken, expiresAt - early, expiresAt, claims?.OrgId);
    }

    internal sealed record JwtClaims(DateTimeOffset? Exp, string? OrgId);

    /// <summary>Reads `exp` and `org_id` from a JWT payload. No signature check: the server checks it, we only plan.</summary>
    internal static JwtClaims? DecodeJwtPayload(string jwt)
    {
        var parts = jwt.Split('.');
        if (parts.Length != 3) return null;
        try
        {
            var b64 = parts[1].Replace('-', '+').Replace('_', '/');
            b64 = b64.PadRight(b64.Length + (4 - b64.Length % 4) % 4, '=');
            using var doc = JsonDocument.Parse(Convert.FromBase64String(b64));
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return null;
            DateTimeOffset? exp = root.TryGetProperty("exp", out var e) && e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out var s)
                ? DateTimeOffset.FromUnixTimeSeconds(s) : null;
            return new JwtClaims(exp, Str(root, "org_id"));
        }
        catch (Exception e) when (e is FormatException or JsonException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }

    public void Dispose()
    {
        http.Dispose();
        tokenGate.Dispose();
        orgGate.Dispose();
    }
}

/// <summary>One request to send: path relative to the API (or, with Auth, the login) base URL.</summary>
internal sealed record SpotRequest(HttpMethod Method, string Path, byte[]? Body = null, string? ContentType = null, bool Authenticated = true, bool Auth = false);

/// <summary>What a bid rejection asks for: the bid that would satisfy it (null: none can be read) and which rule spoke.</summary>
internal sealed record BidCorrection(decimal? Bid, string Rule);

/// <summary>
/// The node-pool rules the client knows (§2.6): validation before sending, the wire form of a
/// create and a scale, defensive reading, and reading a bid rejection for the bid it asks for.
/// </summary>
internal static partial class SpotPoolRules
{
    public const string CloudspaceLabel = "ngpc.rxt.io/cloudspace";

    [GeneratedRegex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    private static partial Regex LowercaseUuid();

    [GeneratedRegex(@"greater than or equal to the (minimum bid|market) price of (\d+(?:\.\d+)?)")]
    private static partial Regex AtLeast();

    [GeneratedRegex(@"is not on the bid ladder")]
    private static partial Regex OffLadder();

    [GeneratedRegex(@"must be a multiple of (\d+(?:\.\d+)?)")]
    private static partial Regex MultipleOf();

    [GeneratedRegex(@"up to three decimal places")]
    private static partial Regex ThreeDecimals();

    public static bool IsLowercaseUuid(string name) => LowercaseUuid().IsMatch(name);

    /// <summary>Why the server would refuse this spec (or why we never send it), null when none.</summary>
    public static string? Problem(SpotNodePoolSpec spec, decimal? maxBid)
    {
        if (!IsLowercaseUuid(spec.Name)) return $"the name \"{spec.Name}\" is not a lowercase UUID";
        if (string.IsNullOrWhiteSpace(spec.ServerClass)) return "no server class";
        if (string.IsNullOrWhiteSpace(spec.CloudSpace)) return "no cloudspace";
        if (spec.Desired < 1) return $"desired {spec.Desired} is below 1";
        if (spec.BidPrice <= 0) return $"bid {spec.BidPrice.ToString(CultureInfo.InvariantCulture)} is not positive";
        if (decimal.Round(spec.BidPrice, 3) != spec.BidPrice) return $"bid {spec.BidPrice.ToString(CultureInfo.InvariantCulture)} has more than three decimals";
        if (maxBid is { } max && spec.BidPrice > max) return $"bid {FormatBid(spec.BidPrice)} is above the maximum {FormatBid(max)}";
        if (!spec.CustomLabels.TryGetValue(Actuator.ManagedLabel, out var managed) || managed != "true")
            return $"custom labels lack {Actuator.ManagedLabel}=true, without which Karpetrack could never touch the pool again";
        return null;
    }

    /// <summary>
    /// The shortest invariant form: 0.02 → "0.02", 0.020 → "0.02", 1 → "1". The CRD pattern
    /// `^\d+(\.\d{1,3})?$` takes all of these, and the live object stores "0.01" (§2.6).
    /// </summary>
    public static string FormatBid(decimal bid) => bid.ToString("0.###", CultureInfo.InvariantCulture);

    public static byte[] CreateBody(SpotNodePoolSpec spec, string ns, decimal bid)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteString("apiVersion", "ngpc.rxt.io/v1");
            w.WriteString("kind", "SpotNodePool");
            w.WriteStartObject("metadata");
            w.WriteString("name", spec.Name);
            w.WriteString("namespace", ns);
            w.WriteStartObject("labels");
            w.WriteString(CloudspaceLabel, spec.CloudSpace);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteStartObject("spec");
            w.WriteString("serverClass", spec.ServerClass);
            w.WriteNumber("desired", spec.Desired);
            w.WriteString("bidPrice", FormatBid(bid));   // a string: the CRD refuses a JSON number
            w.WriteString("cloudSpace", spec.CloudSpace);
            // Said explicitly: Spot's autoscaler must not resize a pool Karpetrack sizes.
            w.WriteStartObject("autoscaling");
            w.WriteBoolean("enabled", false);
            w.WriteEndObject();
            w.WriteStartObject("customLabels");
            foreach (var (k, v) in spec.CustomLabels.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteString(k, v);
            w.WriteEndObject();
            if (spec.CustomTaints is { Count: > 0 } taints)
            {
                w.WriteStartArray("customTaints");
                foreach (var t in taints)
                {
                    w.WriteStartObject();
                    w.WriteString("key", t.Key);
                    if (t.Value is not null) w.WriteString("value", t.Value);
                    w.WriteString("effect", t.Effect);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    /// <summary>
    /// Reads the bid a rejection asks for. The rules changed four times in a year (§2.6), so the
    /// message is the authority: a stated minimum (min bid or market) is rounded up onto the ladder,
    /// an off-ladder bid goes to the next rung, a step rule rounds up to that step, and the
    /// three-decimal rule to the next thousandth. Null: not a bid rejection.
    /// </summary>
    public static BidCorrection? CorrectBid(string? message, decimal sent)
    {
        if (string.IsNullOrEmpty(message)) return null;
        if (AtLeast().Match(message) is { Success: true } m)
        {
            var rule = m.Groups[1].Value == "market" ? "market price" : "minimum bid";
            return new BidCorrection(Number(m.Groups[2].Value) is { } min ? BidLadder.RoundUp(min) : null, rule);
        }
        if (OffLadder().IsMatch(message)) return new BidCorrection(BidLadder.RoundUp(sent), "bid ladder");
        if (MultipleOf().Match(message) is { Success: true } step)
        {
            return new BidCorrection(Number(step.Groups[1].Value) is { } s and > 0 ? Math.Ceiling(sent / s) * s : null, "bid step");
        }
        if (ThreeDecimals().IsMatch(message))
            return new BidCorrection(sent > 0 ? Math.Ceiling(sent * 1000m) / 1000m : null, "three decimals");
        return null;
    }

    private static decimal? Number(string s) =>
        decimal.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var d) ? d : null;

    /// <summary>Defensive pool reading: a malformed item is reported, never thrown.</summary>
    public static bool TryParse(JsonElement item, out SpotNodePool? pool, out string? why)
    {
        pool = null;
        why = null;
        if (item.ValueKind != JsonValueKind.Object) { why = $"an item is a {item.ValueKind}, not an object"; return false; }
        if (!item.TryGetProperty("metadata", out var meta) || meta.ValueKind != JsonValueKind.Object) { why = "an item has no metadata"; return false; }
        var name = SpotApiClient.Str(meta, "name");
        if (string.IsNullOrEmpty(name)) { why = "an item has no metadata.name"; return false; }
        if (SpotApiClient.Str(meta, "resourceVersion") is not { Length: > 0 } rv) { why = $"{name}: no metadata.resourceVersion"; return false; }
        if (!item.TryGetProperty("spec", out var spec) || spec.ValueKind != JsonValueKind.Object) { why = $"{name}: no spec"; return false; }
        if (SpotApiClient.Str(spec, "serverClass") is not { Length: > 0 } serverClass) { why = $"{name}: no spec.serverClass"; return false; }
        if (!spec.TryGetProperty("desired", out var d) || d.ValueKind != JsonValueKind.Number || !d.TryGetInt32(out var desired) || desired < 0)
        { why = $"{name}: spec.desired is not a count"; return false; }
        string? bid = spec.TryGetProperty("bidPrice", out var b) ? b.ValueKind switch
        {
            JsonValueKind.String => b.GetString(),
            JsonValueKind.Number => b.GetRawText(),   // not what the CRD allows, but readable
            _ => null,
        } : null;
        if (string.IsNullOrEmpty(bid)) { why = $"{name}: no spec.bidPrice"; return false; }
        var labels = Map(meta, "labels");
        var cloudSpace = SpotApiClient.Str(spec, "cloudSpace") ?? labels.GetValueOrDefault(CloudspaceLabel) ?? "";
        var status = item.TryGetProperty("status", out var st) && st.ValueKind == JsonValueKind.Object ? st : default;
        int won = status.ValueKind == JsonValueKind.Object && status.TryGetProperty("wonCount", out var wc) && wc.ValueKind == JsonValueKind.Number && wc.TryGetInt32(out var w) ? w : 0;
        DateTimeOffset? created = SpotApiClient.Str(meta, "creationTimestamp") is { } ts
            && DateTimeOffset.TryParse(ts, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var c) ? c : null;
        pool = new SpotNodePool(name, SpotApiClient.Str(meta, "namespace") ?? "", serverClass, desired, bid, cloudSpace, labels, Map(spec, "customLabels"),
            status.ValueKind == JsonValueKind.Object ? SpotApiClient.Str(status, "bidStatus") : null, won, rv, created);
        return true;
    }

    private static IReadOnlyDictionary<string, string> Map(JsonElement parent, string key)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        if (parent.TryGetProperty(key, out var o) && o.ValueKind == JsonValueKind.Object)
            foreach (var p in o.EnumerateObject())
                if (p.Value.ValueKind == JsonValueKind.String) map[p.Name] = p.Value.GetString()!;
        return map;
    }
}

/// <summary>Defensive ServerClass reading: a malformed item is reported, never thrown.</summary>
internal static class ServerClassParser
{
    public static bool TryParse(JsonElement item, out SpotServerClass? result, out string? why)
    {
        result = null;
        why = null;
        if (item.ValueKind != JsonValueKind.Object) { why = $"an item is a {item.ValueKind}, not an object"; return false; }
        var name = item.TryGetProperty("metadata", out var meta) ? SpotApiClient.Str(meta, "name") : null;
        if (string.IsNullOrEmpty(name)) { why = "an item has no metadata.name"; return false; }
        if (!item.TryGetProperty("spec", out var spec) || spec.ValueKind != JsonValueKind.Object) { why = $"{name}: no spec"; return false; }
        var region = SpotApiClient.Str(spec, "region");
        if (string.IsNullOrEmpty(region)) { why = $"{name}: no spec.region"; return false; }
        try
        {
            var resources = Obj(spec, "resources");
            var cpu = Decimal(resources, "cpu", $"{name}: spec.resources.cpu");
            var memory = Bytes(resources, "memory", $"{name}: spec.resources.memory");
            var disk = Bytes(resources, "disk", $"{name}: spec.resources.disk");
            var minBid = Decimal(spec, "minBidPricePerHour", $"{name}: spec.minBidPricePerHour");
            decimal? onDemand = null;
            if (Obj(spec, "onDemandPricing") is { } od && Decimal(od, "cost", $"{name}: spec.onDemandPricing.cost") is { } cost)
            {
                var interval = SpotApiClient.Str(od, "interval");
                var hours = 1.0;
                if (!string.IsNullOrWhiteSpace(interval))
                {
                    try { hours = KarpetrackOptions.ParseDuration(interval, "interval").TotalHours; }
                    catch (OptionsException) { throw new FormatException($"{name}: spec.onDemandPricing.interval \"{interval}\" is not a duration"); }
                    if (hours <= 0) throw new FormatException($"{name}: spec.onDemandPricing.interval \"{interval}\" is not positive");
                }
                onDemand = Math.Round(cost / (decimal)hours, 6);
            }
            var status = Obj(item, "status");
            var pricing = status is { } st ? Obj(st, "spotPricing") : null;
            result = new SpotServerClass(
                name, region, SpotApiClient.Str(spec, "category"), SpotApiClient.Str(spec, "displayName"), SpotApiClient.Str(spec, "flavorType"),
                cpu, memory, disk, minBid, onDemand, SpotApiClient.Str(spec, "availability"),
                pricing is { } p ? Decimal(p, "marketPricePerHour", $"{name}: status.spotPricing.marketPricePerHour") : null,
                pricing is { } p2 ? Decimal(p2, "hammerPricePerHour", $"{name}: status.spotPricing.hammerPricePerHour") : null);
            return true;
        }
        catch (FormatException e)
        {
            why = e.Message;
            return false;
        }
    }

    private static JsonElement? Obj(JsonElement parent, string key) =>
        parent.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Object ? v : null;

    /// <summary>A price or count sent as a string (or, defensively, a number); absent or "" → null; garbage → FormatException.</summary>
    private static decimal? Decimal(JsonElement? parent, string key, string path)
    {
        if (parent is not { } p || !p.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        decimal d;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetDecimal(out var n)) d = n;
        else if (v.ValueKind == JsonValueKind.String)
        {
            var s = v.GetString()!.Trim();
            if (s.Length == 0) return null;
            if (!decimal.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out d)) throw new FormatException($"{path}: \"{s}\" is not a number");
        }
        else throw new FormatException($"{path}: a {v.ValueKind} is not a number");
        if (d < 0) throw new FormatException($"{path}: negative {d}");
        return d;
    }

    private static long? Bytes(JsonElement? parent, string key, string path)
    {
        if (parent is not { } p || SpotApiClient.Str(p, key) is not { } s || s.Trim().Length == 0) return null;
        return PriceFeedParser.ParseGigabytes(s) ?? throw new FormatException($"{path}: \"{s}\" is not a size like 100GB");
    }
}

/// <summary>Token bucket: reservations may go negative, so waiters queue in arrival order.</summary>
internal sealed class TokenBucket(double ratePerSecond, int burst, TimeProvider clock)
{
    private readonly object gate = new();
    private double tokens = burst;
    private DateTimeOffset last = clock.GetUtcNow();

    /// <summary>Takes one token and says how long to wait before using it.</summary>
    public TimeSpan Reserve()
    {
        if (ratePerSecond <= 0) return TimeSpan.Zero;
        lock (gate)
        {
            var now = clock.GetUtcNow();
            if (now > last)
            {
                tokens = Math.Min(burst, tokens + (now - last).TotalSeconds * ratePerSecond);
                last = now;
            }
            tokens -= 1;
            return tokens >= 0 ? TimeSpan.Zero : TimeSpan.FromSeconds(-tokens / ratePerSecond);
        }
    }
}

/// <summary>
/// Closed → (threshold consecutive failures) → open → (cool-down) → half-open, where one trial
/// request goes through: success closes, failure re-opens for another cool-down.
/// </summary>
internal sealed class CircuitBreaker(int threshold, TimeSpan cooldown, TimeProvider clock)
{
    private enum State { Closed, Open, HalfOpen }

    private readonly object gate = new();
    private State state;
    private int failures;
    private DateTimeOffset openedAt;
    private bool trialInFlight;
    private long openings;

    public event Action<bool>? Changed;

    public bool IsOpen { get { lock (gate) return state != State.Closed; } }

    public long Openings { get { lock (gate) return openings; } }

    public bool TryEnter(out TimeSpan reopensIn)
    {
        lock (gate)
        {
            reopensIn = TimeSpan.Zero;
            if (state == State.Closed) return true;
            var now = clock.GetUtcNow();
            if (state == State.Open && now - openedAt >= cooldown)
            {
                state = State.HalfOpen;
                trialInFlight = false;
            }
            if (state == State.HalfOpen && !trialInFlight)
            {
                trialInFlight = true;
                return true;
            }
            reopensIn = state == State.Open ? cooldown - (now - openedAt) : TimeSpan.Zero;
            return false;
        }
    }

    public void Success()
    {
        bool closed;
        lock (gate)
        {
            failures = 0;
            closed = state != State.Closed;
            state = State.Closed;
            trialInFlight = false;
        }
        if (closed) Changed?.Invoke(false);
    }

    public void Abandon()
    {
        lock (gate) trialInFlight = false;
    }

    public void Failure()
    {
        bool opened = false;
        lock (gate)
        {
            failures++;
            if (state == State.HalfOpen || (state == State.Closed && failures >= threshold))
            {
                opened = state == State.Closed;
                if (opened) openings++;
                state = State.Open;
                openedAt = clock.GetUtcNow();
                trialInFlight = false;
            }
        }
        if (opened) Changed?.Invoke(true);
    }
}

/// <summary>
/// Reads the server classes every few minutes and hands their facts (minimum bid, on-demand
/// price, disk, availability) to the price feed; on failure records why and keeps the last facts.
/// </summary>
public sealed class SpotPricing(SpotApiClient client, PriceFeed prices, ILogger log, string? cloudspace = null, TimeSpan? refresh = null, TimeProvider? clock = null)
{
    private readonly TimeSpan refresh = refresh ?? TimeSpan.FromMinutes(10);
    private readonly TimeProvider clock = clock ?? TimeProvider.System;
    private volatile string? region;

    /// <summary>The cloudspace's region once read: what the recommender may price and propose.</summary>
    public string? Region => region;

    /// <summary>Items the last list could not read.</summary>
    public int LastSkipped { get; private set; }

    public async Task<bool> RefreshAsync(CancellationToken ct)
    {
        if (cloudspace is not null && region is null)
        {
            try
            {
                var cs = await client.GetCloudspaceAsync(cloudspace, ct).ConfigureAwait(false);
                region = cs.Region;
                log.LogInformation("cloudspace {Cloudspace} is in region {Region}", cs.Name, cs.Region);
            }
            catch (SpotApiException e)
            {
                // Prices are still worth reading without the region; try the cloudspace again next round.
                Record(e, $"cloudspace {cloudspace}");
            }
        }
        try
        {
            var list = await client.ListServerClassesAsync(ct).ConfigureAwait(false);
            LastSkipped = list.Skipped;
            if (list.Items.Count == 0)
            {
                prices.RecordError("spot_api", "malformed");
                log.LogWarning("Spot API listed no readable server class ({Skipped} skipped); keeping the last facts", list.Skipped);
                return false;
            }
            if (list.Skipped > 0) log.LogWarning("Spot API: {Skipped} server classes could not be read and were skipped", list.Skipped);
            prices.SetSpotFacts(list.ToFacts());
            log.LogInformation("Spot API: facts of {Count} server classes merged into the price book", list.Items.Count);
            return true;
        }
        catch (SpotApiException e)
        {
            Record(e, "server classes");
            return false;
        }
    }

    private void Record(SpotApiException e, string what)
    {
        var reason = PriceFeed.ErrorReasons.Contains(e.Reason) ? e.Reason : "http";
        prices.RecordError("spot_api", reason);
        log.LogWarning("Spot API {What}: {Error}; keeping the last facts", what, e.Message);
    }

    public async Task RunAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            try { await RefreshAsync(ct).ConfigureAwait(false); }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { return; }
            try { await Task.Delay(refresh, clock, ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
        }
    }
}
