using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Karpetrack.Simulation;

/// <summary>An organization of the fake Spot API; its namespace is derived as the real service does.</summary>
public sealed record SpotApiOrg(string Id, string Name, string DisplayName)
{
    public string Namespace => SpotApiClient.NamespaceOf(Id) ?? throw new ArgumentException($"org id \"{Id}\" does not start with org_");
}

public sealed record SpotApiServerOptions
{
    public string RefreshToken { get; init; } = "demo-refresh-token";
    public string ClientId { get; init; } = SpotApiOptions.PublicClientId;
    /// <summary>id_token lifetime; the real one is 24 h (spot-api.md §1.1), tests use seconds.</summary>
    public TimeSpan TokenLifetime { get; init; } = TimeSpan.FromHours(24);
    /// <summary>What the organizations endpoint lists. The token belongs to the first and 403s on the others.</summary>
    public IReadOnlyList<SpotApiOrg> Organizations { get; init; } = [new("org_kNYILtp8ZZNvkZ5g", "karpetrack-demo", "Karpetrack Demo")];
    /// <summary>Whether the id_token carries `org_id` (the real one does; false exercises the organizations lookup).</summary>
    public bool OrgIdClaim { get; init; } = true;
    /// <summary>Cloudspaces of the first org: name → region.</summary>
    public IReadOnlyDictionary<string, string> Cloudspaces { get; init; } = new Dictionary<string, string> { ["demo"] = "us-east-iad-1" };
    /// <summary>A percentiles.json the server classes are built from; null: the newest embedded snapshot.</summary>
    public byte[]? Snapshot { get; init; }
    /// <summary>Clock for token expiry and the pool timers (tests share a manual clock with the client).</summary>
    public TimeProvider? Clock { get; init; }
    /// <summary>
    /// From a pool's create (or scale-up) to its bid being decided and its nodes joining. The real
    /// wait is 8–45 min (spot-api.md §2.9); the demo's is short enough to watch, tests' shorter.
    /// </summary>
    public TimeSpan ProvisioningDelay { get; init; } = TimeSpan.FromSeconds(20);
    /// <summary>From being outbid to the nodes leaving: 6 minutes on the real service (§3.4).</summary>
    public TimeSpan PreemptionNotice { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>A pool's node registered with the cloudspace's Kubernetes (called in order, one at a time).</summary>
    public Action<SpotPoolNode>? NodeJoined { get; init; }
    /// <summary>A pool's node is gone: scaled down, pre-empted, or its pool deleted.</summary>
    public Action<string>? NodeLeft { get; init; }
    /// <summary>Node names are `prod-instance-` and 17 digits counted from here, as the real ones look (§2.9).</summary>
    public long NodeNumberSeed { get; init; } = 17851864681050006;
    /// <summary>
    /// Null: a pool DELETE removes the pool and its nodes at once (200). Set: as the real API may
    /// (spot-api.md §2.1, delete 200/202, objects with finalizers), the DELETE answers 202, the pool
    /// stays listed with metadata.deletionTimestamp and a finalizer, and only after this delay do its
    /// nodes leave and the pool disappear.
    /// </summary>
    public TimeSpan? AsyncDeleteDelay { get; init; }
}

/// <summary>A server of a Spot pool as it appears in Kubernetes: the labels and taints Spot stamps on it (§2.9).</summary>
public sealed record SpotPoolNode(string NodeName, string Pool, string ServerClass, IReadOnlyDictionary<string, string> Labels, IReadOnlyList<Taint> Taints);

/// <summary>
/// An embedded fake of the Rackspace Spot API and its login host on one loopback address, with the
/// real paths and shapes (spot-api.md §1–2, openapi.json): refresh-token exchange returning an
/// id_token in JWT form, the gateway's 401 texts for a wrong or expired bearer, per-org RBAC (403),
/// Kubernetes-style lists of server classes built from real feed snapshots, regions, cloudspaces.
/// Fault hooks make it slow, failing or throttling on demand. SpotNodePools are faithful: the CRD
/// schema (422), then the `vspotnodepool.ngpc.rxt.io` admission webhook (403) with the messages
/// observed live (§2.6), merge patches guarded by resourceVersion, the collection DELETE that wipes
/// every pool, and a small cloud behind them: bids decided after a provisioning delay, nodes joining
/// and leaving through hooks, and pre-emption when the market rises above a bid.
/// </summary>
public sealed partial class SpotApiServer : IAsyncDisposable
{
    public const string DemoRefreshToken = "demo-refresh-token";

    private readonly WebApplication app;
    private readonly SpotApiServerOptions options;
    private readonly TimeProvider clock;
    private readonly object gate = new();
    private readonly Dictionary<string, DateTimeOffset> idTokens = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> requests = new(StringComparer.Ordinal);
    private readonly List<Fault> faults = [];
    private readonly List<JsonObject> serverClasses;
    private readonly List<JsonObject> regions;
    /// <summary>Namespaced objects: resource (plural) → "namespace/name" → object.</summary>
    private readonly Dictionary<string, SortedDictionary<string, JsonObject>> namespaced = new(StringComparer.Ordinal)
    {
        ["cloudspaces"] = new(StringComparer.Ordinal),
        ["spotnodepools"] = new(StringComparer.Ordinal),
        ["ondemandnodepools"] = new(StringComparer.Ordinal),
    };
    private long resourceVersion = 1000;
    private int tokenExchanges;

    private readonly Dictionary<string, PoolNodes> poolNodes = new(StringComparer.Ordinal);   // "namespace/name" → its servers
    private readonly HashSet<string> neverJoin = new(StringComparer.Ordinal);
    private readonly List<string> requestLog = [];
    private readonly Channel<Action> hooks = Channel.CreateUnbounded<Action>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource stopping = new();
    private readonly Task hookPump;
    private long nodeCounter;
    private int collectionDeletes;
    private int asyncDeletes;

    private sealed class Fault(int count, int status, TimeSpan? retryAfter, string? pathContains, bool afterHandling = false, string? method = null)
    {
        public int Remaining = count;
        public int Status { get; } = status;
        public TimeSpan? RetryAfter { get; } = retryAfter;
        public string? PathContains { get; } = pathContains;
        /// <summary>The request is carried out, then its answer replaced: the client cannot know it worked.</summary>
        public bool AfterHandling { get; } = afterHandling;
        public string? Method { get; } = method;
    }

    /// <summary>The servers the fake cloud runs for one pool, oldest first.</summary>
    private sealed class PoolNodes(string uid)
    {
        public string Uid { get; } = uid;
        public List<string> Names { get; } = [];
    }

    private sealed record Reply(int Status, JsonNode Body);

    /// <summary>The last tokens handed out by /oauth/token.</summary>
    public sealed record IssuedToken(string AccessToken, string IdToken, DateTimeOffset ExpiresAt);

    private SpotApiServer(WebApplication app, SpotApiServerOptions options)
    {
        this.app = app;
        this.options = options;
        clock = options.Clock ?? TimeProvider.System;
        var snapshot = options.Snapshot ?? FeedServer.EmbeddedSnapshots()[^1].Body;
        (serverClasses, regions) = BuildCatalogue(snapshot, this);
        var org = options.Organizations[0];
        foreach (var (name, region) in options.Cloudspaces) Put("cloudspaces", Cloudspace(org.Namespace, name, region));
        hookPump = Task.Run(PumpHooksAsync);
    }

    public Uri BaseAddress { get; private set; } = new("http://127.0.0.1/");

    /// <summary>Added before every answer, to make the server slow (timeout tests).</summary>
    public TimeSpan Delay { get; set; }

    public int TokenExchanges => Volatile.Read(ref tokenExchanges);

    public IssuedToken? LastIssued { get; private set; }

    /// <summary>The Authorization header of the last /apis request.</summary>
    public string? LastAuthorization { get; private set; }

    public string OrgNamespace => options.Organizations[0].Namespace;

    /// <summary>Requests seen per path (all methods, faults included).</summary>
    public IReadOnlyDictionary<string, int> Requests { get { lock (gate) return new Dictionary<string, int>(requests); } }

    public int RequestsTo(string path) { lock (gate) return requests.GetValueOrDefault(path); }

    /// <summary>Every request as "METHOD path?query", in arrival order (faults included).</summary>
    public IReadOnlyList<string> RequestLog { get { lock (gate) return [.. requestLog]; } }

    /// <summary>DELETEs of a whole pool collection: each one wiped every matching pool, as the real API does.</summary>
    public int CollectionDeletes => Volatile.Read(ref collectionDeletes);

    /// <summary>Pool DELETEs answered 202 and left to the finalizer (<see cref="SpotApiServerOptions.AsyncDeleteDelay"/>).</summary>
    public int AsyncDeletes => Volatile.Read(ref asyncDeletes);

    /// <summary>Called (inside the request, before the answer) with each pool a DELETE names, so a test can check what it held then.</summary>
    public Action<string>? OnPoolDelete { get; set; }

    /// <summary>The last exception a NodeJoined/NodeLeft hook threw (the pump carries on).</summary>
    public Exception? LastHookError { get; private set; }

    /// <summary>
    /// The admission webhook's bid rule after the floor and market checks: null accepts, else the
    /// denial text. Starts as the 2026-08 ladder; the rule has changed often, so tests swap it.
    /// </summary>
    public Func<decimal, string?> BidRule { get; set; } = LadderRule;

    public static string? LadderRule(decimal bid) => BidLadder.IsOnLadder(bid) ? null : $"bid price {Plain(bid)} is not on the bid ladder";

    /// <summary>The May 2026 rule (§2.6): whole cents above 0.05.</summary>
    public static string? CentsAboveFiveRule(decimal bid) =>
        bid > 0.05m && decimal.Remainder(bid, 0.01m) != 0 ? $"BidPrice must be a multiple of 0.01 when greater than 0.05, but got {Six(bid)}" : null;

    /// <summary>Copies of the stored SpotNodePools.</summary>
    public IReadOnlyList<JsonObject> Pools
    {
        get { lock (gate) return namespaced["spotnodepools"].Values.Select(o => (JsonObject)o.DeepClone()).ToList(); }
    }

    public JsonObject? Pool(string name)
    {
        lock (gate) return namespaced["spotnodepools"].GetValueOrDefault($"{OrgNamespace}/{name}")?.DeepClone() as JsonObject;
    }

    /// <summary>The servers of a pool that have joined and not left, oldest first.</summary>
    public IReadOnlyList<string> NodesOf(string pool)
    {
        lock (gate) return poolNodes.TryGetValue($"{OrgNamespace}/{pool}", out var n) ? [.. n.Names] : [];
    }

    /// <summary>This pool's bid is won but its servers never join the cluster (DISC-468, ISS-361).</summary>
    public void NeverJoin(string pool)
    {
        lock (gate) neverJoin.Add(pool);
    }

    public static async Task<SpotApiServer> StartAsync(SpotApiServerOptions? options = null, CancellationToken ct = default)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        var server = new SpotApiServer(app, options ?? new SpotApiServerOptions());
        app.Run(server.HandleJournaled);
        await app.StartAsync(ct).ConfigureAwait(false);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.BaseAddress = new Uri(address);
        return server;
    }

    /// <summary>The next <paramref name="count"/> requests (whose path contains the text, if given) fail with that status.</summary>
    public void FailNext(int count, int status, TimeSpan? retryAfter = null, string? pathContains = null)
    {
        lock (gate) faults.Add(new Fault(count, status, retryAfter, pathContains));
    }

    /// <summary>
    /// The next <paramref name="count"/> node-pool requests (of that method, whose path contains the
    /// text) are carried out but answered with <paramref name="status"/>, or with a dropped
    /// connection when it is 0: a write whose answer was lost.
    /// </summary>
    public void FailAfterHandling(int count, int status, string? method = null, string? pathContains = null)
    {
        lock (gate) faults.Add(new Fault(count, status, null, pathContains, afterHandling: true, method));
    }

    public void ClearFaults()
    {
        lock (gate) faults.Clear();
    }

    /// <summary>Every id_token issued so far stops verifying, as after a signing-key rotation.</summary>
    public void RevokeIssuedTokens()
    {
        lock (gate) idTokens.Clear();
    }

    /// <summary>Changes the served server-class items (tests add malformed ones, change prices).</summary>
    public void EditServerClasses(Action<List<JsonObject>> edit)
    {
        lock (gate) edit(serverClasses);
    }

    /// <summary>Adds or replaces a namespaced object (metadata.namespace and name required).</summary>
    public void Put(string resource, JsonObject obj)
    {
        var meta = obj["metadata"]!.AsObject();
        lock (gate)
        {
            meta["resourceVersion"] = (++resourceVersion).ToString(CultureInfo.InvariantCulture);
            namespaced[resource][$"{meta["namespace"]}/{meta["name"]}"] = obj;
        }
    }

    // ---- dispatch --------------------------------------------------------------------------

    private async Task Handle(HttpContext ctx)
    {
        var path = ctx.Request.Path.Value ?? "/";
        lock (gate)
        {
            requests[path] = requests.GetValueOrDefault(path) + 1;
            requestLog.Add($"{ctx.Request.Method} {path}{ctx.Request.QueryString}");
        }
        if (Delay > TimeSpan.Zero)
        {
            try { await Task.Delay(Delay, ctx.RequestAborted); }
            catch (OperationCanceledException) { return; }
        }
        if (TakeFault(path, ctx.Request.Method, afterHandling: false) is { } fault)
        {
            if (fault.RetryAfter is { } ra) ctx.Response.Headers.RetryAfter = ((int)Math.Ceiling(ra.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
            var (reason, message) = fault.Status switch
            {
                401 => ("Unauthorized", "Unauthorized"),
                403 => ("Forbidden", "forbidden"),
                429 => ("TooManyRequests", "Too many requests, please try again later."),
                503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
                504 => ("Timeout", "the server was unable to return a response in the time allotted"),
                _ => ("InternalError", "Internal error occurred: injected fault"),
            };
            await Status(ctx, fault.Status, reason, message);
            return;
        }
        var method = ctx.Request.Method;
        if (path == "/oauth/token")
        {
            if (HttpMethods.IsPost(method)) await Token(ctx);
            else await Status(ctx, 405, "MethodNotAllowed", "method not allowed");
            return;
        }
        if (!path.StartsWith("/apis/", StringComparison.Ordinal))
        {
            await Status(ctx, 404, "NotFound", "the server could not find the requested resource");
            return;
        }
        LastAuthorization = ctx.Request.Headers.Authorization.ToString();
        if (Authenticate(ctx) is { } denial)
        {
            // The API gateway's JWT filter answers in plain text, not as a Kubernetes Status.
            ctx.Response.StatusCode = 401;
            ctx.Response.ContentType = "text/plain";
            ctx.Response.Headers.WWWAuthenticate = $"Bearer realm=\"{BaseAddress}{path.TrimStart('/')}\", error=\"invalid_token\"";
            await ctx.Response.WriteAsync(denial);
            return;
        }
        var seg = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (seg is ["apis", "ngpc.rxt.io", "v1", "namespaces", var poolNs, "spotnodepools", ..] && seg.Length <= 7)
        {
            var reply = poolNs == OrgNamespace
                ? await PoolRequest(ctx, poolNs, seg.Length == 7 ? seg[6] : null)
                : Failure(403, "Forbidden", $"spotnodepools.ngpc.rxt.io is forbidden: User \"demo@example.com\" cannot {Verb(method, seg.Length == 7)} resource \"spotnodepools\" in API group \"ngpc.rxt.io\" in the namespace \"{poolNs}\"");
            if (TakeFault(path, method, afterHandling: true) is { } lost)
            {
                if (lost.Status == 0)
                {
                    ctx.Abort();
                    return;
                }
                reply = Failure(lost.Status, lost.Status == 503 ? "ServiceUnavailable" : "InternalError",
                    lost.Status == 503 ? "the server is currently unable to handle the request" : "Internal error occurred: injected fault");
            }
            await Json(ctx, reply.Status, reply.Body);
            return;
        }
        if (!HttpMethods.IsGet(method))
        {
            await Status(ctx, 405, "MethodNotAllowed", $"the server does not allow this method on the requested resource");
            return;
        }
        switch (seg)
        {
            case ["apis", "auth.ngpc.rxt.io", "v1", "organizations"]:
                await Json(ctx, 200, Organizations());
                return;
            case ["apis", "ngpc.rxt.io", "v1", "regions"]:
                await Json(ctx, 200, List("RegionList", regions));
                return;
            case ["apis", "ngpc.rxt.io", "v1", "regions", var name]:
                await One(ctx, regions.FirstOrDefault(r => Name(r) == name), "regions", name);
                return;
            case ["apis", "ngpc.rxt.io", "v1", "serverclasses"]:
                List<JsonObject> items;
                lock (gate) items = [.. serverClasses];
                await Json(ctx, 200, List("ServerClassList", items));
                return;
            case ["apis", "ngpc.rxt.io", "v1", "serverclasses", var name]:
                JsonObject? found;
                lock (gate) found = serverClasses.FirstOrDefault(r => Name(r) == name);
                await One(ctx, found, "serverclasses", name);
                return;
            case ["apis", "ngpc.rxt.io", "v1", "namespaces", var ns, var resource, ..] when namespaced.ContainsKey(resource) && seg.Length <= 7:
                if (ns != OrgNamespace)
                {
                    await Status(ctx, 403, "Forbidden",
                        $"{resource}.ngpc.rxt.io is forbidden: User \"demo@example.com\" cannot {(seg.Length == 7 ? "get" : "list")} resource \"{resource}\" in API group \"ngpc.rxt.io\" in the namespace \"{ns}\"");
                    return;
                }
                if (seg.Length == 6)
                {
                    List<JsonObject> list;
                    lock (gate) list = namespaced[resource].Where(kv => kv.Key.StartsWith(ns + "/", StringComparison.Ordinal)).Select(kv => kv.Value).ToList();
                    await Json(ctx, 200, List(KindOf(resource) + "List", list));
                }
                else
                {
                    JsonObject? obj;
                    lock (gate) obj = namespaced[resource].GetValueOrDefault($"{ns}/{seg[6]}");
                    await One(ctx, obj, resource, seg[6]);
                }
                return;
            default:
                await Status(ctx, 404, "NotFound", "the server could not find the requested resource");
                return;
        }
    }

    private Fault? TakeFault(string path, string method, bool afterHandling)
    {
        lock (gate)
        {
            foreach (var f in faults)
            {
                if (f.Remaining <= 0 || f.AfterHandling != afterHandling || (f.PathContains is not null && !path.Contains(f.PathContains, StringComparison.Ordinal))
                    || (f.Method is not null && !string.Equals(f.Method, method, StringComparison.OrdinalIgnoreCase))) continue;
                f.Remaining--;
                return f;
            }
            return null;
        }
    }

    /// <summary>Null when the bearer is a live id_token; else the gateway's 401 text.</summary>
    private string? Authenticate(HttpContext ctx)
    {
        var header = ctx.Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) return "Jwt is missing";
        var jwt = header[7..].Trim();
        if (jwt.Split('.').Length != 3) return "Jwt is not in the form of Header.Payload.Signature";
        var claims = SpotApiTransport.DecodeJwtPayload(jwt);
        if (claims is null) return "Jwt payload is an invalid JSON";
        if (claims.Exp is { } exp && clock.GetUtcNow() >= exp) return "Jwt is expired";
        lock (gate) return idTokens.ContainsKey(jwt) ? null : "Jwt verification fails";
    }

    public async ValueTask DisposeAsync()
    {
        await app.StopAsync().ConfigureAwait(false);
        await app.DisposeAsync().ConfigureAwait(false);
        await stopping.CancelAsync().ConfigureAwait(false);
        hooks.Writer.TryComplete();
        await hookPump.ConfigureAwait(false);
        stopping.Dispose();
    }
}
