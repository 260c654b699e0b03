using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>
/// A small client of the Rackspace Spot API: organizations, cloudspaces, server classes and node
/// pools, each one method on top of the request pipeline (<see cref="SpotApiTransport"/>: rate limit,
/// circuit breaker, timeouts, retries, token exchange), with the organization namespace resolved once.
/// </summary>
public sealed class SpotApiClient : IDisposable
{
    private readonly SpotApiOptions options;
    private readonly ILogger log;
    private readonly SpotApiTransport transport;
    private readonly SemaphoreSlim orgGate = new(1, 1);
    private string? orgNamespace;

    public SpotApiClient(SpotApiOptions options, string refreshToken, ILogger log, TimeProvider? clock = null, HttpMessageHandler? handler = null,
        Telemetry? telemetry = null)
    {
        // The last line of defence: the flags are checked at start, but a client built any other way must not leak the token either.
        SpotUrls.Require(options.ApiUrl, "Spot API URL");
        SpotUrls.Require(options.AuthUrl, "Spot auth URL");
        this.options = options;
        this.log = log;
        transport = new SpotApiTransport(options, refreshToken, log, clock, handler, telemetry);
    }

    /// <summary>True while the breaker refuses calls (open, or half-open with its one trial in flight).</summary>
    public bool CircuitOpen => transport.CircuitOpen;

    /// <summary>How many times the circuit has opened.</summary>
    public long CircuitOpenings => transport.CircuitOpenings;

    /// <summary>Every HTTP attempt by method and status code ("error" when no response came).</summary>
    public IReadOnlyDictionary<(string Method, string Code), long> Requests => transport.Requests;

    public long TokenExchanges => transport.TokenExchanges;

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
        var t = await transport.GetTokenAsync(ct).ConfigureAwait(false);
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
        var list = ReadItems<SpotServerClass>(root, "serverclasses", ServerClassParser.TryParse, "server class", out int skipped);
        string? rv = root.TryGetProperty("metadata", out var meta) && meta.ValueKind == JsonValueKind.Object ? Str(meta, "resourceVersion") : null;
        return new SpotServerClassList(list, skipped, rv);
    }

    private delegate bool ItemParser<T>(JsonElement item, out T? result, out string? why);

    /// <summary>The readable items of a Kubernetes-style list; each unreadable one is skipped, logged and counted.</summary>
    private List<T> ReadItems<T>(JsonElement root, string resource, ItemParser<T> parse, string what, out int skipped) where T : class
    {
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("items", out var items) || items.ValueKind != JsonValueKind.Array)
            throw Malformed(resource, "no \"items\" array");
        var list = new List<T>();
        skipped = 0;
        foreach (var item in items.EnumerateArray())
        {
            if (parse(item, out var parsed, out var why)) list.Add(parsed!);
            else
            {
                skipped++;
                log.LogDebug("Spot {What} skipped: {Why}", what, why);
            }
        }
        return list;
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
        var list = ReadItems<SpotNodePool>(doc.RootElement, "spotnodepools", SpotPoolRules.TryParse, "node pool", out int skipped);
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
        if (pool.Deleting) return true;   // accepted before; its finalizers are still at work (spot-api.md §2.1)
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


    private Task<JsonDocument> SendAsync(SpotRequest request, CancellationToken ct) => transport.SendAsync(request, ct);

    private static SpotApiException Malformed(string what, string why) => new("malformed", null, $"{what}: {why}");

    internal static string? Str(JsonElement e, string key) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    public void Dispose()
    {
        transport.Dispose();
        orgGate.Dispose();
    }
}
