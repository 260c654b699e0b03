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
        app.Run(server.Handle);
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

    // ---- spot node pools (§2.6) --------------------------------------------------------------

    private const string Webhook = "admission webhook \"vspotnodepool.ngpc.rxt.io\" denied the request: ";
    private const string CloudspaceLabel = "ngpc.rxt.io/cloudspace";
    private const int MaxServers = 1000;
    private static readonly string[] SpecFields = ["serverClass", "desired", "bidPrice", "cloudSpace", "autoscaling", "customLabels", "customAnnotations", "customTaints"];
    private static readonly string[] RequiredSpecFields = ["bidPrice", "cloudSpace", "desired", "serverClass"];

    private static string Verb(string method, bool one) => method switch
    {
        "GET" => one ? "get" : "list",
        "POST" => "create",
        "PATCH" => "patch",
        "PUT" => "update",
        "DELETE" => one ? "delete" : "deletecollection",
        _ => method.ToLowerInvariant(),
    };

    private async Task<Reply> PoolRequest(HttpContext ctx, string ns, string? name)
    {
        var method = ctx.Request.Method;
        if (name is null)
        {
            if (HttpMethods.IsGet(method) || HttpMethods.IsDelete(method))
            {
                LabelSelector selector;
                try
                {
                    var text = ctx.Request.Query["labelSelector"].ToString();
                    selector = string.IsNullOrWhiteSpace(text) ? LabelSelector.Everything : LabelSelector.Parse(text);
                }
                catch (FormatException e)
                {
                    return Failure(400, "BadRequest", $"unable to parse requirement: {e.Message}");
                }
                return HttpMethods.IsGet(method) ? ListPools(ns, selector) : DeleteCollection(ns, selector);
            }
            if (HttpMethods.IsPost(method))
            {
                if (!IsJson(ctx.Request.ContentType))
                    return Failure(415, "UnsupportedMediaType", $"the body of the request was in an unknown format - accepted media types include: application/json");
                var (body, error) = await ReadJson(ctx);
                return error is not null ? Failure(400, "BadRequest", $"couldn't get version/kind; json parse error: {error}") : CreatePool(ns, body);
            }
        }
        else
        {
            if (HttpMethods.IsGet(method))
            {
                lock (gate) return namespaced["spotnodepools"].GetValueOrDefault($"{ns}/{name}") is { } obj ? new Reply(200, obj.DeepClone()) : NotFound(name);
            }
            if (HttpMethods.IsPatch(method))
            {
                var media = ctx.Request.ContentType?.Split(';')[0].Trim();
                // application/json is taken as a merge patch, as the brief for this fake asks; the real
                // server's other patch types (JSON patch, apply) are not modelled.
                if (media is not ("application/merge-patch+json" or "application/json"))
                    return Failure(415, "UnsupportedMediaType", $"the body of the request was in an unknown format - accepted media types include: application/merge-patch+json");
                var (patch, error) = await ReadJson(ctx);
                if (error is not null || patch is not JsonObject po) return Failure(400, "BadRequest", $"error decoding patch: {error ?? "the patch is not a JSON object"}");
                return PatchPool(ns, name, po);
            }
            if (HttpMethods.IsDelete(method)) return DeletePool(ns, name);
        }
        return Failure(405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
    }

    private static bool IsJson(string? contentType) => contentType is null || contentType.Split(';')[0].Trim() == "application/json";

    private static async Task<(JsonNode?, string?)> ReadJson(HttpContext ctx)
    {
        using var ms = new MemoryStream();
        await ctx.Request.Body.CopyToAsync(ms, ctx.RequestAborted);
        try { return (JsonNode.Parse(ms.ToArray()), null); }
        catch (JsonException e) { return (null, e.Message); }
    }

    private Reply ListPools(string ns, LabelSelector selector)
    {
        List<JsonObject> list;
        lock (gate) list = namespaced["spotnodepools"].Where(kv => kv.Key.StartsWith(ns + "/", StringComparison.Ordinal) && selector.Matches(LabelsOf(kv.Value))).Select(kv => kv.Value).ToList();
        return new Reply(200, List("SpotNodePoolList", list));
    }

    private static Dictionary<string, string> LabelsOf(JsonObject obj) => StringMap(obj["metadata"]?["labels"]);

    private static Dictionary<string, string> StringMap(JsonNode? node)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        if (node is JsonObject o)
            foreach (var (k, v) in o)
                if (Text(v) is { } s) map[k] = s;
        return map;
    }

    private Reply CreatePool(string ns, JsonNode? body)
    {
        if (body is not JsonObject obj) return Failure(400, "BadRequest", "couldn't get version/kind; json parse error: the body is not a JSON object");
        if (Text(obj["apiVersion"]) is { } av && av != "ngpc.rxt.io/v1")
            return Failure(400, "BadRequest", $"the API version in the data ({av}) does not match the expected API version (ngpc.rxt.io/v1)");
        if (Text(obj["kind"]) is { } kind && kind != "SpotNodePool")
            return Failure(400, "BadRequest", $"the kind in the data ({kind}) does not match the expected kind (SpotNodePool)");
        var meta = obj["metadata"] as JsonObject;
        if (Text(meta?["namespace"]) is { } metaNs && metaNs != ns)
            return Failure(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request");
        var name = Text(meta?["name"]) ?? "";
        // Stage 1, the CRD's structural schema and CEL rule: every broken field at once, 422.
        var causes = SchemaCauses(obj);
        if (name.Length == 0) causes.Insert(0, ("metadata.name", "FieldValueRequired", "Required value: name or generateName is required"));
        if (causes.Count > 0) return Invalid(name, causes);
        var spec = (JsonObject)obj["spec"]!;
        lock (gate)
        {
            // Stage 2, the validating webhook: the first rule broken, 403.
            if (AdmitCreate(ns, name, spec) is { } denied) return Failure(403, "Forbidden", Webhook + denied);
            // Stage 3, storage.
            var key = $"{ns}/{name}";
            if (namespaced["spotnodepools"].ContainsKey(key))
                return Failure(409, "AlreadyExists", $"spotnodepools.ngpc.rxt.io \"{name}\" already exists",
                    new JsonObject { ["name"] = name, ["group"] = "ngpc.rxt.io", ["kind"] = "spotnodepools" });
            var rv = ++resourceVersion;
            var storedMeta = new JsonObject
            {
                ["name"] = name,
                ["namespace"] = ns,
                ["uid"] = new Guid(MD5.HashData(Encoding.UTF8.GetBytes($"{key}/{rv}"))).ToString(),
                ["resourceVersion"] = rv.ToString(CultureInfo.InvariantCulture),
                ["generation"] = 1,
                ["creationTimestamp"] = clock.GetUtcNow().UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture),
            };
            if (meta?["labels"] is JsonObject labels) storedMeta["labels"] = labels.DeepClone();
            if (meta?["annotations"] is JsonObject annotations) storedMeta["annotations"] = annotations.DeepClone();
            var stored = new JsonObject
            {
                ["apiVersion"] = "ngpc.rxt.io/v1",
                ["kind"] = "SpotNodePool",
                ["metadata"] = storedMeta,
                ["spec"] = Pruned(spec),
                ["status"] = new JsonObject
                {
                    ["bidStatus"] = "Pending",
                    ["wonCount"] = 0,
                    ["customMetadataStatus"] = new JsonObject { ["labels"] = new JsonArray(), ["annotations"] = new JsonArray(), ["taints"] = new JsonArray() },
                },
            };
            namespaced["spotnodepools"][key] = stored;
            var uid = (string)storedMeta["uid"]!;
            poolNodes[key] = new PoolNodes(uid);
            Schedule(options.ProvisioningDelay, () => Provision(key, uid));
            return new Reply(201, stored.DeepClone());
        }
    }

    /// <summary>A structural schema drops unknown fields (Kubernetes pruning).</summary>
    private static JsonObject Pruned(JsonObject spec)
    {
        var copy = new JsonObject();
        foreach (var f in SpecFields)
            if (spec.TryGetPropertyValue(f, out var v)) copy[f] = v?.DeepClone();
        return copy;
    }

    /// <summary>What the CRD's OpenAPI schema and its one CEL rule say about an object, as Kubernetes words it.</summary>
    private static List<(string Field, string Reason, string Message)> SchemaCauses(JsonObject obj)
    {
        var causes = new List<(string, string, string)>();
        void WrongType(string field, JsonNode? value, string expected) =>
            causes.Add((field, "FieldValueInvalid", $"Invalid value: \"{TypeName(value)}\": {field} in body must be of type {expected}: \"{TypeName(value)}\""));
        if (obj["metadata"] is { } m && m is not JsonObject) WrongType("metadata", m, "object");
        if (obj["metadata"]?["labels"] is { } l && l is not JsonObject) WrongType("metadata.labels", l, "object");
        if (!obj.TryGetPropertyValue("spec", out var specNode) || specNode is null)
        {
            causes.Add(("spec", "FieldValueRequired", "Required value"));
            return causes;
        }
        if (specNode is not JsonObject spec)
        {
            WrongType("spec", specNode, "object");
            return causes;
        }
        foreach (var (field, expected) in new[] { ("serverClass", "string"), ("desired", "integer"), ("bidPrice", "string"), ("cloudSpace", "string"),
                     ("autoscaling", "object"), ("customLabels", "object"), ("customAnnotations", "object"), ("customTaints", "array") })
        {
            if (spec.TryGetPropertyValue(field, out var v) && v is not null && TypeName(v) != expected)
                WrongType($"spec.{field}", v, expected);
        }
        foreach (var field in RequiredSpecFields)
            if (!spec.TryGetPropertyValue(field, out var v) || v is null) causes.Add(($"spec.{field}", "FieldValueRequired", "Required value"));
        if (spec["autoscaling"] is JsonObject auto)
        {
            if (!auto.ContainsKey("enabled")) causes.Add(("spec.autoscaling.enabled", "FieldValueRequired", "Required value"));
            else if (TypeName(auto["enabled"]) != "boolean") WrongType("spec.autoscaling.enabled", auto["enabled"], "boolean");
        }
        if (spec["customTaints"] is JsonArray taints)
        {
            for (int i = 0; i < taints.Count; i++)
            {
                foreach (var f in new[] { "effect", "key" })
                    if (taints[i] is not JsonObject t || Text(t[f]) is null) causes.Add(($"spec.customTaints[{i}].{f}", "FieldValueRequired", "Required value"));
            }
        }
        // The CEL rule runs on a string only; Kubernetes names the type, not the value, in its message.
        if (Text(spec["bidPrice"]) is { } bid && !BidPattern().IsMatch(bid))
            causes.Add(("spec.bidPrice", "FieldValueInvalid", "Invalid value: \"string\": bidPrice can only be a positive number up to three decimal places"));
        return causes;
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^\d+(\.\d{1,3})?$")]
    private static partial System.Text.RegularExpressions.Regex BidPattern();

    private static Reply Invalid(string name, List<(string Field, string Reason, string Message)> causes)
    {
        var lines = causes.Select(c => $"{c.Field}: {c.Message}").ToList();
        var message = $"SpotNodePool.ngpc.rxt.io \"{name}\" is invalid: " + (lines.Count == 1 ? lines[0] : $"[{string.Join(", ", lines)}]");
        var array = new JsonArray();
        foreach (var c in causes) array.Add((JsonNode)new JsonObject { ["reason"] = c.Reason, ["message"] = c.Message, ["field"] = c.Field });
        return Failure(422, "Invalid", message, new JsonObject { ["name"] = name, ["group"] = "ngpc.rxt.io", ["kind"] = "SpotNodePool", ["causes"] = array });
    }

    /// <summary>The webhook's create rules in the order it applies them; null admits. Caller holds the gate.</summary>
    private string? AdmitCreate(string ns, string name, JsonObject spec)
    {
        // Exact texts of the first three rules are not recorded anywhere (§2.1, §2.6): worded plainly here.
        if (!Guid.TryParseExact(name, "D", out _) || name != name.ToLowerInvariant()) return $"SpotNodePool name \"{name}\" must be a lowercase UUID";
        var desired = (long)Num(spec["desired"]);
        if (desired < 1) return $"desired must be at least 1, but got {desired}";
        // The platform's limit of servers per organization (§2.9); the exact check is not documented.
        if (desired > MaxServers) return $"desired must be at most {MaxServers}, but got {desired}";
        var cloudSpace = Text(spec["cloudSpace"])!;
        if (!namespaced["cloudspaces"].ContainsKey($"{ns}/{cloudSpace}")) return $"cloudspace \"{cloudSpace}\" not found in namespace \"{ns}\"";
        return AdmitBid(Text(spec["serverClass"])!, decimal.Parse(Text(spec["bidPrice"])!, CultureInfo.InvariantCulture));
    }

    private string? AdmitBid(string serverClass, decimal bid)
    {
        var sc = serverClasses.FirstOrDefault(c => Name(c) == serverClass);
        if (sc is null) return $"serverclass \"{serverClass}\" not found";
        var minText = Text(sc["spec"]?["minBidPricePerHour"]) ?? "";
        if (!decimal.TryParse(minText, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var min))
            return $"failed to parse serverclass min bid price for {serverClass}: strconv.ParseFloat: parsing \"{minText}\": invalid syntax";
        if (bid < min) return $"BidPrice must be greater than or equal to the minimum bid price of {Six(min)}, but got {Six(bid)}";
        var market = MarketOf(sc);
        if (bid < market) return $"BidPrice must be greater than or equal to the market price of {Six(market)}, but got {Six(bid)}";
        return BidRule(bid);
    }

    private static decimal MarketOf(JsonObject serverClass) =>
        decimal.TryParse(Text(serverClass["status"]?["spotPricing"]?["marketPricePerHour"]), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var m) ? m : 0m;

    private Reply PatchPool(string ns, string name, JsonObject patch)
    {
        var key = $"{ns}/{name}";
        lock (gate)
        {
            if (namespaced["spotnodepools"].GetValueOrDefault(key) is not { } current) return NotFound(name);
            if (patch["metadata"]?["resourceVersion"] is { } rvNode)
            {
                var rv = Text(rvNode) ?? rvNode.ToJsonString();
                if (!ulong.TryParse(rv, NumberStyles.None, CultureInfo.InvariantCulture, out _))
                    return Failure(500, "InternalError", $"strconv.ParseUint: parsing \"{rv}\": invalid syntax");
                if (rv != Text(current["metadata"]!["resourceVersion"]))
                    return Failure(409, "Conflict",
                        $"Operation cannot be fulfilled on spotnodepools.ngpc.rxt.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        new JsonObject { ["name"] = name, ["group"] = "ngpc.rxt.io", ["kind"] = "spotnodepools" });
            }
            var merged = (JsonObject)current.DeepClone();
            MergeInto(merged, patch);
            // The server owns identity and status: a patch only reaches labels, annotations and spec.
            var meta = (JsonObject)current["metadata"]!.DeepClone();
            meta["labels"] = merged["metadata"]?["labels"]?.DeepClone();
            meta["annotations"] = merged["metadata"]?["annotations"]?.DeepClone();
            if (meta["labels"] is null) meta.Remove("labels");
            if (meta["annotations"] is null) meta.Remove("annotations");
            merged["metadata"] = meta;
            merged["status"] = current["status"]!.DeepClone();
            merged["apiVersion"] = "ngpc.rxt.io/v1";
            merged["kind"] = "SpotNodePool";
            var causes = SchemaCauses(merged);
            if (causes.Count > 0) return Invalid(name, causes);
            merged["spec"] = Pruned((JsonObject)merged["spec"]!);
            if (JsonNode.DeepEquals(merged, current)) return new Reply(200, current.DeepClone());   // no-op: resourceVersion kept
            var spec = (JsonObject)merged["spec"]!;
            var before = (JsonObject)current["spec"]!;
            if (AdmitUpdate(name, before, spec) is { } denied) return Failure(403, "Forbidden", Webhook + denied);
            meta["resourceVersion"] = (++resourceVersion).ToString(CultureInfo.InvariantCulture);
            if (!JsonNode.DeepEquals(spec, before)) meta["generation"] = (long)Num(meta["generation"]) + 1;
            namespaced["spotnodepools"][key] = merged;
            Resize(key, merged);
            return new Reply(200, merged.DeepClone());
        }
    }

    /// <summary>
    /// Update rules: desired at least 1, and a bid or class that changed passes the bid rules again.
    /// Whether the real webhook re-checks an unchanged bid on update is unknown; here it does not.
    /// </summary>
    private string? AdmitUpdate(string name, JsonObject before, JsonObject after)
    {
        var desired = (long)Num(after["desired"]);
        if (desired < 1) return $"desired must be at least 1, but got {desired}";
        if (desired > MaxServers) return $"desired must be at most {MaxServers}, but got {desired}";
        if (Text(after["bidPrice"]) == Text(before["bidPrice"]) && Text(after["serverClass"]) == Text(before["serverClass"])) return null;
        return AdmitBid(Text(after["serverClass"])!, decimal.Parse(Text(after["bidPrice"])!, CultureInfo.InvariantCulture));
    }

    /// <summary>RFC 7386: objects merge, null removes, anything else replaces.</summary>
    private static void MergeInto(JsonObject target, JsonObject patch)
    {
        foreach (var (k, v) in patch)
        {
            if (v is null) target.Remove(k);
            else if (v is JsonObject po && target[k] is JsonObject to) MergeInto(to, po);
            else if (v is JsonObject fresh)
            {
                var o = new JsonObject();
                MergeInto(o, fresh);   // nulls inside a new object are dropped too
                target[k] = o;
            }
            else target[k] = v.DeepClone();
        }
    }

    private Reply DeletePool(string ns, string name)
    {
        var key = $"{ns}/{name}";
        lock (gate)
        {
            if (!namespaced["spotnodepools"].Remove(key, out var gone)) return NotFound(name);
            ReleaseNodes(key);
            return new Reply(200, new JsonObject
            {
                ["kind"] = "Status", ["apiVersion"] = "v1", ["metadata"] = new JsonObject(), ["status"] = "Success",
                ["details"] = new JsonObject { ["name"] = name, ["group"] = "ngpc.rxt.io", ["kind"] = "spotnodepools", ["uid"] = Text(gone["metadata"]?["uid"]) },
            });
        }
    }

    /// <summary>What the real collection DELETE does: every pool of the namespace (that the selector matches) is gone.</summary>
    private Reply DeleteCollection(string ns, LabelSelector selector)
    {
        Interlocked.Increment(ref collectionDeletes);
        lock (gate)
        {
            var doomed = namespaced["spotnodepools"].Where(kv => kv.Key.StartsWith(ns + "/", StringComparison.Ordinal) && selector.Matches(LabelsOf(kv.Value))).ToList();
            foreach (var (key, _) in doomed)
            {
                namespaced["spotnodepools"].Remove(key);
                ReleaseNodes(key);
            }
            return new Reply(200, List("SpotNodePoolList", doomed.Select(kv => kv.Value).ToList()));
        }
    }

    private static Reply NotFound(string name) => Failure(404, "NotFound", $"spotnodepools.ngpc.rxt.io \"{name}\" not found",
        new JsonObject { ["name"] = name, ["group"] = "ngpc.rxt.io", ["kind"] = "spotnodepools" });

    private static Reply Failure(int code, string reason, string message, JsonObject? details = null)
    {
        var body = new JsonObject
        {
            ["kind"] = "Status", ["apiVersion"] = "v1", ["metadata"] = new JsonObject(),
            ["status"] = "Failure", ["message"] = message, ["reason"] = reason, ["code"] = code,
        };
        if (details is not null) body["details"] = details;
        return new Reply(code, body);
    }

    // ---- the cloud behind the pools --------------------------------------------------------

    /// <summary>
    /// Changes a class's market price, as the continuous auction does. Pools of the class bidding
    /// below it are outbid: Lost, no servers won, their nodes gone after the pre-emption notice.
    /// </summary>
    public void SetMarketPrice(string serverClass, decimal price)
    {
        lock (gate)
        {
            var sc = serverClasses.FirstOrDefault(c => Name(c) == serverClass) ?? throw new ArgumentException($"no server class {serverClass}", nameof(serverClass));
            var pricing = sc["status"]!["spotPricing"]!.AsObject();
            pricing["marketPricePerHour"] = Six(price);
            pricing["hammerPricePerHour"] = Six(price);
            sc["metadata"]!["resourceVersion"] = (++resourceVersion).ToString(CultureInfo.InvariantCulture);
            foreach (var (key, pool) in namespaced["spotnodepools"])
            {
                if (Text(pool["spec"]?["serverClass"]) != serverClass || Text(pool["status"]?["bidStatus"]) == "Lost") continue;
                if (BidOf(pool) >= price) continue;
                var status = pool["status"]!.AsObject();
                status["bidStatus"] = "Lost";
                status["wonCount"] = 0;
                pool["metadata"]!["resourceVersion"] = (++resourceVersion).ToString(CultureInfo.InvariantCulture);
                if (poolNodes.GetValueOrDefault(key) is { } nodes && nodes.Names.Count > 0)
                {
                    var leaving = nodes.Names.ToList();
                    nodes.Names.Clear();
                    Schedule(options.PreemptionNotice, () => { foreach (var n in leaving) Emit(() => options.NodeLeft?.Invoke(n)); });
                }
            }
        }
    }

    /// <summary>
    /// Registers a pool that already runs (its bid won, its nodes in the cluster): the demo starts
    /// with some nodes in pools Karpetrack manages. No hook is called for these nodes.
    /// </summary>
    public void AdoptPool(string name, string serverClass, decimal bid, IReadOnlyDictionary<string, string> customLabels, IReadOnlyList<string> nodeNames)
    {
        if (!Guid.TryParseExact(name, "D", out _) || name != name.ToLowerInvariant()) throw new ArgumentException($"pool name \"{name}\" is not a lowercase UUID", nameof(name));
        var ns = OrgNamespace;
        var cloudspace = options.Cloudspaces.Keys.First();
        var labels = new JsonObject();
        foreach (var (k, v) in customLabels.OrderBy(kv => kv.Key, StringComparer.Ordinal)) labels[k] = v;
        lock (gate)
        {
            if (!serverClasses.Any(c => Name(c) == serverClass)) throw new ArgumentException($"no server class {serverClass}", nameof(serverClass));
            var key = $"{ns}/{name}";
            var meta = Meta(name, ns);
            meta["creationTimestamp"] = clock.GetUtcNow().UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
            meta["labels"] = new JsonObject { [CloudspaceLabel] = cloudspace };
            namespaced["spotnodepools"][key] = new JsonObject
            {
                ["apiVersion"] = "ngpc.rxt.io/v1",
                ["kind"] = "SpotNodePool",
                ["metadata"] = meta,
                ["spec"] = new JsonObject
                {
                    ["serverClass"] = serverClass, ["desired"] = nodeNames.Count, ["bidPrice"] = Plain(bid), ["cloudSpace"] = cloudspace,
                    ["autoscaling"] = new JsonObject { ["enabled"] = false }, ["customLabels"] = labels,
                },
                ["status"] = new JsonObject
                {
                    ["bidStatus"] = "Fulfilled",
                    ["wonCount"] = nodeNames.Count,
                    ["customMetadataStatus"] = MetadataStatus(customLabels, []),
                },
            };
            var nodes = new PoolNodes(Text(meta["uid"])!);
            nodes.Names.AddRange(nodeNames);
            poolNodes[key] = nodes;
        }
    }

    private static JsonObject MetadataStatus(IEnumerable<string> labelKeys, IEnumerable<string> taintKeys) => new()
    {
        ["labels"] = new JsonArray([.. labelKeys.Order(StringComparer.Ordinal).Select(k => (JsonNode?)JsonValue.Create(k))]),
        ["annotations"] = new JsonArray(),
        ["taints"] = new JsonArray([.. taintKeys.Select(k => (JsonNode?)JsonValue.Create(k))]),
    };

    private static JsonObject MetadataStatus(IReadOnlyDictionary<string, string> labels, IEnumerable<string> taintKeys) => MetadataStatus(labels.Keys, taintKeys);

    private static decimal BidOf(JsonObject pool) =>
        decimal.TryParse(Text(pool["spec"]?["bidPrice"]), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var b) ? b : 0m;

    /// <summary>The auction's answer to a pool, once its provisioning delay is over: won when the bid reaches the market.</summary>
    private void Provision(string key, string uid)
    {
        lock (gate)
        {
            if (namespaced["spotnodepools"].GetValueOrDefault(key) is not { } pool || Text(pool["metadata"]?["uid"]) != uid) return;
            var status = pool["status"]!.AsObject();
            if (Text(status["bidStatus"]) == "Lost") return;
            var serverClass = Text(pool["spec"]!["serverClass"])!;
            var sc = serverClasses.FirstOrDefault(c => Name(c) == serverClass);
            if (sc is null || BidOf(pool) < MarketOf(sc)) return;   // outbid before it was decided: stays Pending
            var desired = (int)Num(pool["spec"]!["desired"]);
            var customLabels = StringMap(pool["spec"]!["customLabels"]);
            var taints = Taints(pool["spec"]!["customTaints"]);
            status["bidStatus"] = "Fulfilled";
            status["wonCount"] = desired;
            status["customMetadataStatus"] = MetadataStatus(customLabels, taints.Select(t => t.Key));
            pool["metadata"]!["resourceVersion"] = (++resourceVersion).ToString(CultureInfo.InvariantCulture);
            var nodes = poolNodes.TryGetValue(key, out var n) && n.Uid == uid ? n : poolNodes[key] = new PoolNodes(uid);
            var poolName = Text(pool["metadata"]!["name"])!;
            if (neverJoin.Contains(poolName)) return;
            var region = Text(sc["spec"]?["region"]) ?? "";
            var regionCode = RegionFacts.TryGetValue(region, out var facts) ? facts.Code : region.ToUpperInvariant();
            while (nodes.Names.Count < desired)
            {
                var nodeName = $"prod-instance-{options.NodeNumberSeed + ++nodeCounter * 7_919_131L:D17}";
                nodes.Names.Add(nodeName);
                // Custom labels first: Spot's own labels and the cloud controller's win over them (§2.9).
                var labels = new Dictionary<string, string>(customLabels, StringComparer.Ordinal)
                {
                    ["servers.ngpc.rxt.io/class"] = serverClass,
                    ["servers.ngpc.rxt.io/type"] = "spot",
                    ["nodepool.ngpc.rxt.io/name"] = poolName,
                    ["node.kubernetes.io/instance-type"] = Text(sc["spec"]?["provider"]?["providerFlavorID"]) ?? serverClass,
                    ["topology.kubernetes.io/region"] = regionCode,
                };
                var node = new SpotPoolNode(nodeName, poolName, serverClass, labels, taints);
                Emit(() => options.NodeJoined?.Invoke(node));
            }
        }
    }

    private static List<Taint> Taints(JsonNode? node)
    {
        var list = new List<Taint>();
        if (node is JsonArray array)
            foreach (var t in array)
                if (Text(t?["key"]) is { } key && Text(t?["effect"]) is { } effect) list.Add(new Taint(key, Text(t?["value"]), effect));
        return list;
    }

    /// <summary>After a desired change: newest servers leave at once on a scale-down; a scale-up is provisioned like a create. Caller holds the gate.</summary>
    private void Resize(string key, JsonObject pool)
    {
        var status = pool["status"]!.AsObject();
        if (Text(status["bidStatus"]) != "Fulfilled") return;
        var desired = (int)Num(pool["spec"]!["desired"]);
        var uid = Text(pool["metadata"]!["uid"])!;
        var nodes = poolNodes.TryGetValue(key, out var n) ? n : poolNodes[key] = new PoolNodes(uid);
        if (desired < (int)Num(status["wonCount"])) status["wonCount"] = desired;
        while (nodes.Names.Count > desired)
        {
            var gone = nodes.Names[^1];
            nodes.Names.RemoveAt(nodes.Names.Count - 1);
            Emit(() => options.NodeLeft?.Invoke(gone));
        }
        if (desired > (int)Num(status["wonCount"])) Schedule(options.ProvisioningDelay, () => Provision(key, uid));
    }

    /// <summary>A deleted pool's servers are released; caller holds the gate.</summary>
    private void ReleaseNodes(string key)
    {
        if (!poolNodes.Remove(key, out var nodes)) return;
        foreach (var n in nodes.Names) Emit(() => options.NodeLeft?.Invoke(n));
    }

    /// <summary>Hooks run one at a time, in the order the fake decided them, outside its lock.</summary>
    private void Emit(Action hook) => hooks.Writer.TryWrite(hook);

    private async Task PumpHooksAsync()
    {
        await foreach (var hook in hooks.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            try { hook(); }
            catch (Exception e) { LastHookError = e; }
        }
    }

    private void Schedule(TimeSpan delay, Action action)
    {
        var token = stopping.Token;
        _ = Task.Run(async () =>
        {
            try
            {
                if (delay > TimeSpan.Zero) await Task.Delay(delay, clock, token).ConfigureAwait(false);
                action();
            }
            catch (OperationCanceledException) { }
        });
    }

    /// <summary>A price as Go's %f prints it: six decimals.</summary>
    private static string Six(decimal d) => d.ToString("F6", CultureInfo.InvariantCulture);

    /// <summary>A price as Go's %v prints a float: no trailing zeros.</summary>
    private static string Plain(decimal d) => d.ToString("0.############", CultureInfo.InvariantCulture);

    /// <summary>A number however it was built (parsed or set); callers checked the schema, so it is one.</summary>
    private static decimal Num(JsonNode? node) =>
        decimal.TryParse(node?.ToJsonString(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d : 0m;

    private static string? Text(JsonNode? node) => node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;

    private static string TypeName(JsonNode? node) => node switch
    {
        null => "null",
        JsonObject => "object",
        JsonArray => "array",
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => "string",
            JsonValueKind.True or JsonValueKind.False => "boolean",
            // Kubernetes' JSON decoder calls a number without fraction or exponent an integer.
            JsonValueKind.Number => v.ToJsonString().AsSpan().IndexOfAny(".eE") < 0 ? "integer" : "number",
            _ => "null",
        },
        _ => "unknown",
    };

    // ---- login host ------------------------------------------------------------------------

    private async Task Token(HttpContext ctx)
    {
        if (!ctx.Request.HasFormContentType)
        {
            await Json(ctx, 400, new JsonObject { ["error"] = "invalid_request", ["error_description"] = "Missing required parameter: grant_type" });
            return;
        }
        var form = await ctx.Request.ReadFormAsync();
        var grant = form["grant_type"].ToString();
        if (grant != "refresh_token")
        {
            await Json(ctx, 403, new JsonObject { ["error"] = "unsupported_grant_type", ["error_description"] = $"Unsupported grant type: {grant}" });
            return;
        }
        if (form["client_id"].ToString() != options.ClientId)
        {
            await Json(ctx, 401, new JsonObject { ["error"] = "access_denied", ["error_description"] = "Unauthorized" });
            return;
        }
        if (form["refresh_token"].ToString() != options.RefreshToken)
        {
            await Json(ctx, 403, new JsonObject { ["error"] = "invalid_grant", ["error_description"] = "Unknown or invalid refresh token." });
            return;
        }
        var now = clock.GetUtcNow();
        var expires = DateTimeOffset.FromUnixTimeSeconds(now.ToUnixTimeSeconds() + (long)options.TokenLifetime.TotalSeconds);
        var payload = new JsonObject
        {
            ["iss"] = "https://login.spot.rackspace.com/",
            ["sub"] = "auth0|demo",
            ["aud"] = options.ClientId,
            ["iat"] = now.ToUnixTimeSeconds(),
            ["exp"] = expires.ToUnixTimeSeconds(),
            ["email_verified"] = true,
            ["group"] = "cloudspace-admin",
        };
        if (options.OrgIdClaim) payload["org_id"] = options.Organizations[0].Id;
        var idToken = B64(Encoding.UTF8.GetBytes("""{"alg":"RS256","typ":"JWT","kid":"demo"}""")) + "." +
                      B64(Encoding.UTF8.GetBytes(payload.ToJsonString())) + "." + B64(RandomNumberGenerator.GetBytes(64));
        var accessToken = B64(RandomNumberGenerator.GetBytes(24));   // opaque, as Auth0's: no dots
        lock (gate) idTokens[idToken] = expires;
        LastIssued = new IssuedToken(accessToken, idToken, expires);
        Interlocked.Increment(ref tokenExchanges);
        await Json(ctx, 200, new JsonObject
        {
            ["access_token"] = accessToken,
            ["id_token"] = idToken,
            ["scope"] = "openid profile email offline_access",
            ["expires_in"] = (long)options.TokenLifetime.TotalSeconds,
            ["token_type"] = "Bearer",
        });
    }

    private static string B64(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    // ---- objects ---------------------------------------------------------------------------

    private JsonObject Organizations()
    {
        var list = new JsonArray();
        foreach (var o in options.Organizations)
            list.Add((JsonNode)new JsonObject { ["id"] = o.Id, ["name"] = o.Name, ["display_name"] = o.DisplayName, ["metadata"] = new JsonObject { ["namespace"] = o.Namespace } });
        return new JsonObject
        {
            ["start"] = 0, ["limit"] = 50, ["length"] = list.Count, ["total"] = list.Count, ["next"] = "", ["organizations"] = list,
        };
    }

    private JsonObject List(string kind, List<JsonObject> items)
    {
        string rv;
        lock (gate) rv = resourceVersion.ToString(CultureInfo.InvariantCulture);
        var array = new JsonArray();
        foreach (var i in items) array.Add(i.DeepClone());
        return new JsonObject
        {
            ["apiVersion"] = "ngpc.rxt.io/v1", ["kind"] = kind,
            ["metadata"] = new JsonObject { ["continue"] = "", ["resourceVersion"] = rv },
            ["items"] = array,
        };
    }

    private static Task One(HttpContext ctx, JsonObject? obj, string resource, string name) => obj is null
        ? Status(ctx, 404, "NotFound", $"{resource}.ngpc.rxt.io \"{name}\" not found")
        : Json(ctx, 200, obj.DeepClone());

    private static string? Name(JsonObject o) => (string?)o["metadata"]?["name"];

    private static string KindOf(string resource) => resource switch
    {
        "cloudspaces" => "CloudSpace",
        "spotnodepools" => "SpotNodePool",
        "ondemandnodepools" => "OnDemandNodePool",
        _ => resource,
    };

    private static Task Json(HttpContext ctx, int status, JsonNode body)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        return ctx.Response.WriteAsync(body.ToJsonString());
    }

    /// <summary>A Kubernetes Status, as the apiserver behind the gateway answers errors.</summary>
    private static Task Status(HttpContext ctx, int code, string reason, string message) => Json(ctx, code, new JsonObject
    {
        ["kind"] = "Status", ["apiVersion"] = "v1", ["metadata"] = new JsonObject(),
        ["status"] = "Failure", ["message"] = message, ["reason"] = reason, ["code"] = code,
    });

    private JsonObject Meta(string name, string? ns = null)
    {
        var m = new JsonObject
        {
            ["name"] = name,
            ["uid"] = new Guid(MD5.HashData(Encoding.UTF8.GetBytes(ns + "/" + name))).ToString(),
            ["resourceVersion"] = Interlocked.Increment(ref resourceVersion).ToString(CultureInfo.InvariantCulture),
            ["generation"] = 1,
            ["creationTimestamp"] = "2024-02-01T00:00:00Z",
        };
        if (ns is not null) m["namespace"] = ns;
        return m;
    }

    private JsonObject Cloudspace(string ns, string name, string region) => new()
    {
        ["apiVersion"] = "ngpc.rxt.io/v1",
        ["kind"] = "CloudSpace",
        ["metadata"] = Meta(name, ns),
        ["spec"] = new JsonObject
        {
            ["region"] = region, ["kubernetesVersion"] = "1.31.1", ["cni"] = "calico", ["HAControlPlane"] = false,
            ["cloud"] = "default", ["deploymentType"] = "gen2", ["webhook"] = "", ["bidRequests"] = new JsonArray(), ["onDemandRequests"] = new JsonArray(),
        },
        ["status"] = new JsonObject
        {
            ["phase"] = "Ready", ["health"] = "Healthy", ["currentKubernetesVersion"] = "1.31.1",
            ["APIServerEndpoint"] = $"https://hcp-{new Guid(MD5.HashData(Encoding.UTF8.GetBytes(name))):D}.spot.rackspace.com",
            ["assignedServers"] = new JsonObject(), ["bids"] = new JsonObject(), ["pendingAllocations"] = new JsonObject(),
        },
    };

    // OpenStack flavors and on-demand $/h of the v1 classes (spot-api.md §4.3, 2024; gp.vs1.medium from a 2026 probe).
    private static readonly Dictionary<string, (string Flavor, decimal OnDemand)> KnownV1 = new(StringComparer.Ordinal)
    {
        ["gp.vs1.medium"] = ("compute1-4", 0.019m), ["gp.vs1.large"] = ("io1-15", 0.04m), ["gp.vs1.xlarge"] = ("io1-30", 0.09m),
        ["gp.vs1.2xlarge"] = ("io1-60", 0.18m), ["ch.vs1.medium"] = ("compute1-4", 0.02m), ["ch.vs1.large"] = ("compute1-8", 0.03m),
        ["ch.vs1.xlarge"] = ("compute1-15", 0.07m), ["ch.vs1.2xlarge"] = ("compute1-30", 0.13m), ["mh.vs1.medium"] = ("memory1-15", 0.03m),
        ["mh.vs1.large"] = ("memory1-30", 0.07m), ["mh.vs1.xlarge"] = ("memory1-60", 0.13m),
    };

    private static readonly Dictionary<string, (string Country, string Code)> RegionFacts = new(StringComparer.Ordinal)
    {
        ["aus-syd-1"] = ("AUS", "SYD"), ["hkg-hkg-1"] = ("HKG", "HKG"), ["uk-lon-1"] = ("GBR", "LON"), ["us-central-dfw-1"] = ("USA", "DFW"),
        ["us-central-dfw-2"] = ("USA", "DFW2"), ["us-central-ord-1"] = ("USA", "ORD"), ["us-east-iad-1"] = ("USA", "IAD"), ["us-west-sjc-1"] = ("USA", "SJC"),
    };

    /// <summary>ServerClass and Region objects from a feed snapshot, with the fields only the API has filled in.</summary>
    private static (List<JsonObject>, List<JsonObject>) BuildCatalogue(byte[] snapshot, SpotApiServer server)
    {
        var classes = new List<JsonObject>();
        var regions = new List<JsonObject>();
        using var doc = JsonDocument.Parse(snapshot);
        foreach (var region in doc.RootElement.GetProperty("regions").EnumerateObject())
        {
            var generation = region.Value.TryGetProperty("generation", out var g) ? g.GetString() ?? "v1" : "v1";
            string description = "";
            foreach (var sc in region.Value.GetProperty("serverclasses").EnumerateObject())
            {
                var e = sc.Value;
                var category = e.GetProperty("category").GetString()!;
                description = e.TryGetProperty("description", out var d) ? d.GetString() ?? "" : "";
                var cpu = e.GetProperty("cpu").GetString()!;
                var memory = e.GetProperty("memory").GetString()!;
                var market = decimal.Parse(e.GetProperty("market_price").GetString()!, CultureInfo.InvariantCulture);
                var family = sc.Name[..sc.Name.LastIndexOf('-')];
                bool bareMetal = category == "Bare Metal";
                var (flavor, onDemand) = KnownV1.TryGetValue(family, out var known)
                    ? known
                    // No source gives these: a plausible flavor name and a price of the same order as the 2024 table.
                    : (family.Replace('.', '-'), Math.Round(decimal.Parse(cpu, CultureInfo.InvariantCulture) * 0.006m
                        + (PriceFeedParser.ParseGigabytes(memory) ?? 0) / 1_000_000_000m * 0.0012m, 3));
                var spec = new JsonObject
                {
                    ["availability"] = "available",
                    ["category"] = category,
                    ["displayName"] = e.GetProperty("display_name").GetString(),
                    ["flavorType"] = bareMetal ? "baremetal" : "virtual",
                    ["onDemandPricing"] = new JsonObject { ["cost"] = onDemand.ToString(CultureInfo.InvariantCulture), ["interval"] = "1h" },
                    ["provider"] = new JsonObject { ["providerFlavorID"] = flavor, ["providerType"] = bareMetal ? "ironic" : "ospc" },
                    ["region"] = region.Name,
                    ["resources"] = new JsonObject { ["cpu"] = cpu, ["memory"] = memory, ["disk"] = bareMetal ? "960GB" : "100GB" },
                };
                // Bare metal has no reserve price: the real webhook fails to parse "" for it (Dec 2025 probe).
                // Every virtual class has the 0.01 floor of the 2026 bid rules.
                if (!bareMetal) spec["minBidPricePerHour"] = "0.01";
                var meta = server.Meta(sc.Name);
                meta["labels"] = new JsonObject { [$"region.ngpc.rxt.io/{region.Name}"] = "true" };
                classes.Add(new JsonObject
                {
                    ["apiVersion"] = "ngpc.rxt.io/v1",
                    ["kind"] = "ServerClass",
                    ["metadata"] = meta,
                    ["spec"] = spec,
                    ["status"] = new JsonObject
                    {
                        ["available"] = 0, ["capacity"] = 0, ["reserved"] = 0, ["lastAuction"] = 0,
                        ["spotPricing"] = new JsonObject
                        {
                            ["marketPricePerHour"] = market.ToString("F6", CultureInfo.InvariantCulture),
                            ["hammerPricePerHour"] = market.ToString("F6", CultureInfo.InvariantCulture),
                        },
                    },
                });
            }
            var (country, code) = RegionFacts.GetValueOrDefault(region.Name, ("USA", region.Name.ToUpperInvariant()));
            regions.Add(new JsonObject
            {
                ["apiVersion"] = "ngpc.rxt.io/v1",
                ["kind"] = "Region",
                ["metadata"] = server.Meta(region.Name),
                ["spec"] = new JsonObject
                {
                    ["country"] = country, ["description"] = description, ["generation"] = generation,
                    ["provider"] = new JsonObject { ["providerRegionName"] = code, ["providerType"] = "ospc" },
                },
            });
        }
        classes.Sort((a, b) => string.CompareOrdinal(Name(a), Name(b)));
        regions.Sort((a, b) => string.CompareOrdinal(Name(a), Name(b)));
        return (classes, regions);
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
