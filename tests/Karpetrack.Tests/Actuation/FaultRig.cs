using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Actuation;

/// <summary>A counted write: its step, the operation it served, and that operation's type (Provision, Replace, Consolidate, DeleteEmpty).</summary>
internal sealed record WriteLabel(string Step, string Operation, string Type)
{
    public override string ToString() => $"{Type} {Step}";
}

/// <summary>How a fault-injection rig is set up: the actuation options, the market, and the fake cloud's timings (on the rig's clock).</summary>
internal sealed record FaultSetup
{
    public required ActuationOptions Options { get; init; }
    public Action<JsonObject, DemoCluster>? EditFeed { get; init; }
    /// <summary>From a pool's create to its node joining, on the rig's clock.</summary>
    public TimeSpan Provisioning { get; init; } = TimeSpan.FromSeconds(3);
    /// <summary>A pool DELETE is answered 202 and the pool and its node go this much later, on the rig's clock.</summary>
    public TimeSpan AsyncDelete { get; init; } = TimeSpan.FromSeconds(3);
    public TimeSpan PreemptionNotice { get; init; } = TimeSpan.FromSeconds(2);
    /// <summary>How far the clock moves before each tick.</summary>
    public TimeSpan Step { get; init; } = TimeSpan.FromSeconds(1);
}

/// <summary>
/// One simulated Karpetrack process on the fault rig: its own clients (which name it to the fakes'
/// write journal), model, reflectors, recommender and actuator. Killing it cancels everything it runs;
/// only the cluster and the Spot fake outlive it.
/// </summary>
internal sealed class FaultProcess : IAsyncDisposable
{
    private readonly CancellationTokenSource life = new();
    private readonly List<Task> reflectors = [];

    internal FaultProcess(string name, KubeClient kube, SpotApiClient spot)
    {
        Name = name;
        Kube = kube;
        Spot = spot;
    }

    public string Name { get; }
    public KubeClient Kube { get; }
    public SpotApiClient Spot { get; }
    public ClusterModel Model { get; } = new(ResourceTable.Default);
    public ReflectorStatus[] Statuses { get; } = [new("nodes"), new("pods"), new("poddisruptionbudgets"), new("daemonsets")];
    public RecommenderLoop Recommender { get; internal set; } = null!;
    public Actuator Actuator { get; internal set; } = null!;
    public CancellationToken Life => life.Token;
    public bool Dead => life.IsCancellationRequested;

    /// <summary>The journal's sequence number at the moment it died or lost its lease: it writes nothing from there on.</summary>
    public long? FencedAt { get; private set; }

    /// <summary>Recommendations this process planned, by id (what each provision was for).</summary>
    public ConcurrentDictionary<string, Recommendation> Seen { get; } = new(StringComparer.Ordinal);

    internal void Run(Func<CancellationToken, Task> reflector) => reflectors.Add(Task.Run(() => reflector(life.Token)));

    /// <summary>From now on this process must not write (its lease is gone).</summary>
    public void Fence(long at) => FencedAt ??= at;

    /// <summary>The process dies at once: its tick, its requests, its reflectors and its Events are cancelled.</summary>
    public void Kill(long at)
    {
        Fence(at);
        life.Cancel();
    }

    public async ValueTask DisposeAsync()
    {
        life.Cancel();
        try { await Task.WhenAll(reflectors).WaitAsync(TimeSpan.FromSeconds(10)); } catch (Exception e) when (e is OperationCanceledException or TimeoutException) { }
        Kube.Dispose();
        Spot.Dispose();
        life.Dispose();
    }
}

/// <summary>Stamps each Spot API request with the process's name, as the Kubernetes client's default header does, and its fence.</summary>
internal sealed class CallerHandler(string caller, Func<bool> fenced) : DelegatingHandler(new SocketsHttpHandler())
{
    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        request.Headers.TryAddWithoutValidation(WriteJournal.CallerHeader, caller);
        FenceStamp.Stamp(request, fenced);
        return base.SendAsync(request, ct);
    }
}

/// <summary>
/// Marks a request that leaves a process after its fence was raised (<see cref="WriteJournal.FencedHeader"/>), right
/// before the socket handler (which sends nothing on a cancelled token). The rig raises the fence once the term's token
/// is cancelled, so a marked request that reaches a server was sent on some other token after the term ended; an
/// unmarked one that the server numbers after the fence was on the wire before it (an Event sent in the background
/// while the tick's next write overtook it).
/// </summary>
internal sealed class FenceStamp(Func<bool> fenced) : DelegatingHandler
{
    internal static void Stamp(HttpRequestMessage request, Func<bool> fenced)
    {
        if (fenced()) request.Headers.TryAddWithoutValidation(WriteJournal.FencedHeader, "1");
    }

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        Stamp(request, fenced);
        return base.SendAsync(request, ct);
    }
}

/// <summary>
/// The clock of a process's Spot client on the rig: it reads the rig's time, so that what the client measures on
/// it (the circuit breaker's cool-down, the token's expiry, the rate bucket) passes as the rig's steps pass, as it
/// does for the actuator and the fakes; its timers run on real time, so that a wait inside a request (a backoff, a
/// Retry-After), which the tick awaits and the rig cannot step past meanwhile, still ends. Left on real time, the
/// breaker stayed open for as many rig steps as the machine ran in its cool-down: the faster the steps (a warm
/// process, the whole class run), the more of a run's steps went by with every Spot call refused.
/// </summary>
internal sealed class RigTimeRealTimers(TimeProvider rig) : TimeProvider
{
    public override DateTimeOffset GetUtcNow() => rig.GetUtcNow();

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        System.CreateTimer(callback, state, dueTime, period);
}

/// <summary>
/// The demo rig for fault injection: the embedded API server and the Spot fake (pools deleted
/// asynchronously, as the real API may), both journalling every write with its caller, a hand-moved
/// clock for the fake cloud's timers, the pods' grace periods and every actuator, and any number of
/// Karpetrack processes started and killed on it. <see cref="Check"/> watches the invariants throughout.
/// </summary>
internal sealed class FaultRig : IAsyncDisposable
{
    private static readonly ReflectorOptions Fast = new()
    {
        InitialBackoff = TimeSpan.FromMilliseconds(20),
        MaxBackoff = TimeSpan.FromMilliseconds(200),
        MinHealthyWatch = TimeSpan.FromMilliseconds(50),
    };

    private readonly List<FaultProcess> processes = [];
    private Func<WriteRecord, JournalVerdict>? fault;
    private Action<WriteRecord>? afterFault;

    private FaultRig(FaultSetup setup, DemoCluster demo, SpotApiServer spot, TimerClock clock, WriteJournal journal, PriceFeed prices)
    {
        Setup = setup;
        Demo = demo;
        Spot = spot;
        Clock = clock;
        Journal = journal;
        Prices = prices;
        Check = new FaultInvariants(this);
        journal.Before = r =>
        {
            if (FaultInvariants.Counts(r)) Labels[r.Seq] = Classify(r);
            var verdict = Check.Before(r);
            if (verdict == JournalVerdict.Proceed && fault is { } f) verdict = f(r);
            return verdict;
        };
        journal.After = r =>
        {
            Check.After(r);
            afterFault?.Invoke(r);
        };
        demo.Api.Written += Check.Written;
    }

    public FaultSetup Setup { get; }

    /// <summary>What each counted write was, read when it arrived: its step, the operation it served and that operation's type.</summary>
    public ConcurrentDictionary<long, WriteLabel> Labels { get; } = new();

    public DemoCluster Demo { get; }
    public SpotApiServer Spot { get; }
    public TimerClock Clock { get; }
    public WriteJournal Journal { get; }
    public PriceFeed Prices { get; }
    public FaultInvariants Check { get; }
    public IReadOnlyList<FaultProcess> Processes => processes;
    public TimeSpan PlanTime, TickTime;
    public int Steps;

    /// <summary>Nodes cordoned before Karpetrack ever ran (the demo's forgotten cordon): not Karpetrack's to answer for.</summary>
    public HashSet<string> CordonedAtStart { get; } = new(StringComparer.Ordinal);

    public static async Task<FaultRig> StartAsync(FaultSetup setup)
    {
        var clock = new TimerClock(DateTimeOffset.UtcNow);
        var demo = await DemoCluster.StartAsync(new DemoClusterOptions { Churn = false, Nodes = 12, Server = new KubeApiServerOptions { Clock = clock } });
        FaultRig? rig = null;
        var spot = await SpotApiServer.StartAsync(new SpotApiServerOptions
        {
            Clock = clock,
            ProvisioningDelay = setup.Provisioning,
            PreemptionNotice = setup.PreemptionNotice,
            NodeJoined = n => demo.JoinNode(n.NodeName, n.ServerClass, n.Labels, n.Taints),
            NodeLeft = name =>
            {
                rig?.Check.Leaving(name);
                demo.RemoveNode(name);
            },
            AsyncDeleteDelay = setup.AsyncDelete,
        });
        foreach (var m in demo.ManagedNodes) spot.AdoptPool(m.Pool, m.ServerClass, 0.27m, m.CustomLabels, [m.Node]);
        var feed = JsonNode.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-08-17.json")))!.AsObject();
        setup.EditFeed?.Invoke(feed, demo);
        var book = PriceFeedParser.Parse(System.Text.Encoding.UTF8.GetBytes(feed.ToJsonString()), DateTimeOffset.UtcNow, "test");
        var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: book);
        var journal = new WriteJournal(clock);
        rig = new FaultRig(setup, demo, spot, clock, journal, prices);
        foreach (var n in demo.Api.Store.List("nodes").Items.Select(x => x.ToJsonObject()))
            if (n["spec"]?["unschedulable"]?.GetValue<bool>() == true) rig.CordonedAtStart.Add(n["metadata"]!["name"]!.GetValue<string>());
        demo.Api.Journal = journal;
        spot.Journal = journal;
        return rig;
    }

    /// <summary>A fault on the write path: decides, before each write is handled, whether it is dropped (the caller may be killed in the hook).</summary>
    public void OnWrite(Func<WriteRecord, JournalVerdict>? before, Action<WriteRecord>? after = null)
    {
        fault = before;
        afterFault = after;
    }

    public FaultProcess? ProcessNamed(string name) { lock (processes) return processes.FirstOrDefault(p => p.Name == name); }

    /// <summary>A fresh process: new clients, model, reflectors (nodes filtered by <paramref name="nodeSelector"/>), recommender and actuator.</summary>
    public async Task<FaultProcess> StartProcessAsync(string name, ActuationOptions? options = null, string? nodeSelector = null,
        Func<bool>? isLeader = null, Func<CancellationToken>? leaseTerm = null)
    {
        options ??= Setup.Options;
        // As the composition root does: the actuator knows the --node-selector its node cache is filtered by.
        if (nodeSelector is not null) options = options with { NodeSelector = nodeSelector };
        FaultProcess? self = null;
        bool Fenced() => self?.FencedAt is not null;
        var kube = new KubeClient(KubeConnection.Resolve(Demo.KubeconfigPath, null, KubeEnvironment.Process), TimeSpan.FromSeconds(10), new FenceStamp(Fenced));
        kube.Api.HttpClient.DefaultRequestHeaders.Add(WriteJournal.CallerHeader, name);
        var spot = new SpotApiClient(new SpotApiOptions
        {
            ApiUrl = Spot.BaseAddress, AuthUrl = Spot.BaseAddress, Org = Spot.OrgNamespace,
            BackoffBase = TimeSpan.FromMilliseconds(10), BackoffMax = TimeSpan.FromMilliseconds(50), RandomSeed = 1,
            BreakerCooldown = TimeSpan.FromMilliseconds(300),
            // The fake has no rate limit; the client's own (5/s) would make each tick wait on real time.
            RatePerSecond = 10_000, Burst = 10_000,
        }, SpotApiServer.DemoRefreshToken, NullLogger.Instance, clock: new RigTimeRealTimers(Clock), handler: new CallerHandler(name, Fenced));
        var p = new FaultProcess(name, kube, spot);
        self = p;
        var t = ResourceTable.Default;
        var model = p.Model;
        var st = p.Statuses;
        p.Run(ct => new Reflector<NodeRecord>(kube, "/api/v1/nodes", nodeSelector, null, new NodeDecoder(t), model.NodeTarget, st[0], Fast, NullLogger.Instance).RunAsync(ct));
        p.Run(ct => new Reflector<PodRecord>(kube, "/api/v1/pods", null, "status.phase!=Succeeded,status.phase!=Failed", new PodDecoder(t), model.PodTarget, st[1], Fast, NullLogger.Instance).RunAsync(ct));
        p.Run(ct => new Reflector<PdbRecord>(kube, "/apis/policy/v1/poddisruptionbudgets", null, null, new PdbDecoder(), model.Pdbs, st[2], Fast, NullLogger.Instance).RunAsync(ct));
        p.Run(ct => new Reflector<DaemonSetRecord>(kube, "/apis/apps/v1/daemonsets", null, null, new DaemonSetDecoder(t), model.DaemonSets, st[3], Fast, NullLogger.Instance).RunAsync(ct));
        Actuator? actuator = null;
        var pools = options.Pools;
        p.Recommender = new RecommenderLoop(new(model, Prices, st) { InFlight = () => actuator?.InFlight() ?? [] },
            new(() => new RecommenderOptions { Region = "us-east-iad-1", Pools = pools }, TimeSpan.Zero), NullLogger.Instance);
        var life = p.Life;
        actuator = new Actuator(options, model, Prices, st, NullLogger.Instance, kube, spot, clock: Clock, isLeader: isLeader,
            leaseTerm: leaseTerm ?? (() => life));
        p.Actuator = actuator;
        p.Recommender.PlanChanged += actuator.OnPlan;
        lock (processes) processes.Add(p);
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!st.All(s => s.Synced))
        {
            if (DateTime.UtcNow > until) throw new TimeoutException($"{name}'s caches never synced");
            await Task.Delay(10);
        }
        return p;
    }

    /// <summary>The clock moves one step, the process plans and its actuator ticks (on its life's token, or <paramref name="tick"/>'s).</summary>
    public async Task StepAsync(FaultProcess p, CancellationToken? tick = null)
    {
        Clock.Advance(Setup.Step);
        // What the clock set off (nodes joining and leaving, pods going) reaches the process's caches.
        await Task.Delay(15);
        if (p.Dead) return;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        p.Recommender.RunOnce();
        PlanTime += sw.Elapsed;
        foreach (var r in p.Recommender.Current.Recommendations) p.Seen.TryAdd(r.Id, r);
        sw.Restart();
        try { await p.Actuator.TickAsync(tick ?? p.Life); }
        catch (OperationCanceledException) when (p.Dead || tick?.IsCancellationRequested == true) { }
        TickTime += sw.Elapsed;
        Steps++;
    }

    /// <summary>Steps <paramref name="p"/> until <paramref name="done"/> holds; false after <paramref name="maxSteps"/>.</summary>
    public async Task<bool> RunUntilAsync(FaultProcess p, Func<bool> done, int maxSteps)
    {
        for (int i = 0; i < maxSteps; i++)
        {
            if (done()) return true;
            if (p.Dead) return false;
            await StepAsync(p);
        }
        return done();
    }

    /// <summary>The step a write is (create_pool, delete_pool, cordon, uncordon, evict, other), the operation it serves and its type.</summary>
    public WriteLabel Classify(WriteRecord r)
    {
        string step = "other";
        string? op = null;
        var store = Demo.Api.Store;
        JsonObject? NodeNamed(string? name) => name is null ? null : store.Get("nodes", null, name)?.ToJsonObject();
        if (FaultInvariants.PoolOf(r) is { Length: > 0 } pool && r.Method == "DELETE")
        {
            step = "delete_pool";
            op = Nodes().Where(n => n["metadata"]?["labels"]?[SpotLabels.Pool]?.GetValue<string>() == pool).Select(DisruptionOf).FirstOrDefault(d => d is not null)
                ?? Spot.Pool(pool)?["spec"]?["customLabels"]?[Actuator.RecommendationLabel]?.GetValue<string>();
        }
        else if (FaultInvariants.PoolOf(r) == "" && r.Method == "POST")
        {
            step = "create_pool";
            op = JsonNode.Parse(r.Body)?["spec"]?["customLabels"]?[Actuator.RecommendationLabel]?.GetValue<string>();
        }
        else if (FaultInvariants.EvictionOf(r) is { } key)
        {
            step = "evict";
            var parts = key.Split('/');
            op = DisruptionOf(NodeNamed(store.Get("pods", parts[0], parts[1])?.ToJsonObject()["spec"]?["nodeName"]?.GetValue<string>()) ?? new JsonObject());
        }
        else if (r.Api == "kube" && r.Method == "PATCH" && r.Path.StartsWith("/api/v1/nodes/", StringComparison.Ordinal))
        {
            var annotations = JsonNode.Parse(r.Body)?["metadata"]?["annotations"] as JsonObject;
            if (annotations is not null && annotations.TryGetPropertyValue(Actuator.DisruptionAnnotation, out var value))
            {
                step = value is null ? "uncordon" : "cordon";
                op = (value?.GetValue<string>() is { } v ? DisruptionRecord.Parse(v).RecommendationId : null) ?? DisruptionOf(NodeNamed(r.Path["/api/v1/nodes/".Length..].Split('?')[0]) ?? new JsonObject());
            }
        }
        var type = op is null ? "" : ProcessNamed(r.Caller)?.Seen.GetValueOrDefault(op)?.Type.ToString() ?? op.Split('-')[0];
        return new WriteLabel(step, op ?? "", type);
    }

    public IEnumerable<JsonObject> Nodes() => Demo.Api.Store.List("nodes").Items.Select(n => n.ToJsonObject());

    /// <summary>The recommendation a node's disruption annotation names (the recorded step, if any, left off).</summary>
    public static string? DisruptionOf(JsonObject node) =>
        node["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]?.GetValue<string>() is { } v ? DisruptionRecord.Parse(v).RecommendationId : null;

    public static bool IsCordoned(JsonObject node) => node["spec"]?["unschedulable"]?.GetValue<bool>() == true;

    public static string NameOf(JsonObject o) => o["metadata"]!["name"]!.GetValue<string>();

    /// <summary>
    /// Nothing is happening: the process has no operation in flight, no pool is being deleted, no node carries a
    /// disruption annotation, and its last step wrote nothing but Events.
    /// </summary>
    public bool Quiet(FaultProcess p, long sinceSeq) =>
        p.Actuator.InFlightCounts.Count == 0
        && !Spot.Pools.Any(x => x["metadata"]?["deletionTimestamp"] is not null)
        && !Nodes().Any(n => DisruptionOf(n) is not null)
        && !Journal.Since(sinceSeq).Any(r => r.Caller == p.Name && FaultInvariants.Counts(r));

    /// <summary>
    /// Steps the process until it has been <see cref="Quiet"/> for longer than any timer of the run (cooldown, provisioning,
    /// pool deletion) could keep work waiting; false when that never happened.
    /// </summary>
    public async Task<bool> SettleAsync(FaultProcess p, int maxSteps = 300, Func<CancellationToken>? tick = null, Func<Task>? alongside = null)
    {
        var longest = new[] { Setup.Options.ScaleUpCooldown, Setup.Provisioning, Setup.AsyncDelete, Setup.Options.PoolSweep }.Max();
        int needed = (int)Math.Ceiling(longest / Setup.Step) + 2;
        int quiet = 0;
        for (int i = 0; i < maxSteps && !p.Dead; i++)
        {
            long mark = Journal.Next;
            if (alongside is not null) await alongside();
            await StepAsync(p, tick?.Invoke());
            quiet = Quiet(p, mark) ? quiet + 1 : 0;
            if (quiet >= needed) return true;
        }
        return false;
    }

    /// <summary>What is still going on, for a run that never settled.</summary>
    public string Describe(FaultProcess p) =>
        $"in flight: {string.Join(", ", p.Actuator.InFlightCounts.Select(kv => $"{kv.Key} {kv.Value}"))}; "
        + $"annotated: {string.Join(", ", Nodes().Where(n => DisruptionOf(n) is not null).Select(n => $"{NameOf(n)}={DisruptionOf(n)}"))}; "
        + $"deleting pools: {Spot.Pools.Count(x => x["metadata"]?["deletionTimestamp"] is not null)}; "
        + $"plan: {string.Join("; ", p.Recommender.Current.Recommendations.Select(r => $"{r.Id} {string.Join(",", r.Nodes)} → {p.Actuator.StateOf(r.Id)}"))}; "
        + $"last writes: {string.Join("; ", Journal.Records.TakeLast(8))}";

    public async ValueTask DisposeAsync()
    {
        FaultProcess[] all;
        lock (processes) all = [.. processes];
        foreach (var p in all) await p.DisposeAsync();
        Prices.Dispose();
        await Spot.DisposeAsync();
        await Demo.DisposeAsync();
    }
}

/// <summary>
/// The invariants of issue 16, checked while a fault-injection run goes on (from the write journal's
/// hooks and the API server's change events) and once it has settled. Each broken one is a line in
/// <see cref="Violations"/> that starts with the invariant's name.
/// </summary>
internal sealed class FaultInvariants(FaultRig rig)
{
    public const string PoolDeletedWithPods = "pool-deleted-with-running-pods";
    public const string CordonedWithoutOwner = "cordoned-without-owner";
    public const string TwoOperations = "node-touched-by-two-operations";
    public const string EvictionOutsideDrain = "eviction-outside-a-drain";
    public const string WriteAfterFence = "write-after-lease-lost";
    public const string ProvisionedTwice = "pods-provisioned-twice";
    public const string CapacityLimit = "managed-capacity-over-limit";
    public const string CollectionDelete = "collection-delete";

    private readonly ConcurrentQueue<string> violations = new();
    private readonly ConcurrentDictionary<string, byte> evicted = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, byte> deletedPools = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string> owner = new(StringComparer.Ordinal);
    private readonly List<(string Rec, string Pool)> created = [];
    private readonly Dictionary<string, IReadOnlyList<string>> recPods = new(StringComparer.Ordinal);

    public IReadOnlyList<string> Violations => [.. violations];

    /// <summary>Pool creates whose recommendation the creating process had not planned (so not checked for double provisioning).</summary>
    public int UnknownCreates { get; private set; }

    private void Broken(string invariant, string what) => violations.Enqueue($"{invariant}: {what}");

    /// <summary>A write that is the process acting on the world: not its Lease, not a token exchange.</summary>
    public static bool Acts(WriteRecord r) => !r.Path.Contains("/leases", StringComparison.Ordinal) && r.Path != "/oauth/token";

    /// <summary>An action that changes pools or nodes or pods (what a process "did"): <see cref="Acts"/> without the Events.</summary>
    public static bool Counts(WriteRecord r) => Acts(r) && !r.Path.Contains("/events", StringComparison.Ordinal);

    private static readonly string[] PoolPath = ["apis", "ngpc.rxt.io", "v1", "namespaces"];

    /// <summary>The pool a Spot write names; "" for the collection; null for anything else.</summary>
    public static string? PoolOf(WriteRecord r)
    {
        if (r.Api != "spot") return null;
        var seg = r.Path.Split('?')[0].Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (seg.Length < 6 || !seg.Take(4).SequenceEqual(PoolPath) || seg[5] != "spotnodepools") return null;
        return seg.Length == 7 ? seg[6] : "";
    }

    /// <summary>namespace/name of the pod an eviction names, else null.</summary>
    public static string? EvictionOf(WriteRecord r)
    {
        if (r.Api != "kube" || r.Method != "POST") return null;
        var seg = r.Path.Split('?')[0].Split('/', StringSplitOptions.RemoveEmptyEntries);
        return seg is ["api", "v1", "namespaces", var ns, "pods", var name, "eviction"] ? $"{ns}/{name}" : null;
    }

    internal JournalVerdict Before(WriteRecord r)
    {
        if (rig.ProcessNamed(r.Caller) is { FencedAt: { } fenced } p && r.Seq >= fenced && Acts(r))
        {
            // A dead process's requests still on the wire are lost with it (its token stops any new one). A replica that
            // lost its lease is alive and must not send anything more; what it sent before (unmarked: an Event in the
            // background that the tick's next write overtook on the way) lands, as the write the term ended on does.
            if (p.Dead) return JournalVerdict.Drop;
            if (r.SentFenced)
            {
                Broken(WriteAfterFence, $"{p.Name} lost its lease at #{fenced} and then sent {r}");
                return JournalVerdict.Drop;
            }
        }
        if (PoolOf(r) is { } pool && r.Method == "DELETE")
        {
            if (pool.Length == 0)
            {
                Broken(CollectionDelete, $"{r}");
                return JournalVerdict.Drop;
            }
            if (rig.Spot.Pool(pool) is { } existing && existing["metadata"]?["deletionTimestamp"] is null)
                foreach (var node in rig.Nodes().Where(n => n["metadata"]?["labels"]?[SpotLabels.Pool]?.GetValue<string>() == pool))
                    CheckPods(FaultRig.NameOf(node), $"{r.Caller} sent DELETE of pool {pool} (#{r.Seq}) while");
            deletedPools.TryAdd(pool, 0);
        }
        if (EvictionOf(r) is { } key)
        {
            var parts = key.Split('/');
            var nodeName = rig.Demo.Api.Store.Get("pods", parts[0], parts[1])?.ToJsonObject()["spec"]?["nodeName"]?.GetValue<string>();
            if (nodeName is not null && rig.Demo.Api.Store.Get("nodes", null, nodeName)?.ToJsonObject() is { } node && FaultRig.DisruptionOf(node) is null)
                Broken(EvictionOutsideDrain, $"{r.Caller} evicted {key} from {nodeName}, which no operation has cordoned (#{r.Seq})");
        }
        return JournalVerdict.Proceed;
    }

    internal void After(WriteRecord r)
    {
        if (EvictionOf(r) is { } key && r.Status == 201) evicted.TryAdd(key, 0);
        if (PoolOf(r) == "" && r.Method == "POST" && r.Status == 201) Created(r);
    }

    private void Created(WriteRecord r)
    {
        var body = JsonNode.Parse(r.Body)!;
        var pool = body["metadata"]?["name"]?.GetValue<string>() ?? "";
        var rec = body["spec"]?["customLabels"]?[Actuator.RecommendationLabel]?.GetValue<string>();
        // Managed capacity, counted as the actuator counts it: every managed pool listed (deleting ones too) at its size.
        var policy = rig.Setup.Options.Pools;
        if (policy.LimitsCapacity)
        {
            var total = ManagedCapacity.Zero;
            foreach (var p in rig.Spot.Pools.Where(p => p["spec"]?["customLabels"]?[Actuator.ManagedLabel]?.GetValue<string>() == "true"))
                if (rig.Prices.Current.Classes.TryGetValue(p["spec"]!["serverClass"]!.GetValue<string>(), out var c))
                    total += ManagedCapacity.Of(c.Class, p["spec"]!["desired"]!.GetValue<int>());
            if (policy.CheckCreate(total, ManagedCapacity.Zero) is { } over) Broken(CapacityLimit, $"after {r}: {over}");
        }
        if (rec is null) return;
        if (rig.ProcessNamed(r.Caller)?.Seen.GetValueOrDefault(rec) is not { } planned)
        {
            UnknownCreates++;
            return;
        }
        if (planned.PendingPods.Count == 0) return;   // new nodes of a replacement or consolidation: bought for moved pods, not pending ones
        lock (created)
        {
            recPods[rec] = planned.PendingPods;
            created.Add((rec, pool));
            // Each new node serves at least one pod: more live pools bought for a set of pending pods than there are pods in it
            // means some of them were provisioned for twice (a plan that did not count the pools already in flight).
            var covering = recPods.Where(kv => kv.Key == rec || kv.Value.Intersect(planned.PendingPods).Any()).Select(kv => kv.Key).ToHashSet(StringComparer.Ordinal);
            var pods = covering.SelectMany(c => recPods[c]).ToHashSet(StringComparer.Ordinal);
            // A pool counts while it is for them: its node has not joined yet, or it runs one of them, or it runs nothing at all
            // (a node whose room other pods took is no longer theirs, and buying again for them is not buying twice).
            var live = created.Where(c => covering.Contains(c.Rec) && rig.Spot.Pool(c.Pool) is { } x && x["metadata"]?["deletionTimestamp"] is null
                && x["status"]?["bidStatus"]?.GetValue<string>() != "Lost" && ForThem(c.Pool, pods)).Select(c => $"{c.Pool} ({c.Rec})").Distinct().ToList();
            if (live.Count > pods.Count)
                Broken(ProvisionedTwice, $"{r.Caller} created pool {pool} for {rec}: {live.Count} live pools ({string.Join(", ", live)}) bought for {pods.Count} pending pods ({string.Join(", ", pods)})");
        }
    }

    private bool ForThem(string pool, HashSet<string> pods)
    {
        var nodes = rig.Nodes().Where(n => n["metadata"]?["labels"]?[SpotLabels.Pool]?.GetValue<string>() == pool).Select(FaultRig.NameOf).ToHashSet(StringComparer.Ordinal);
        if (nodes.Count == 0) return true;
        var running = rig.Demo.Api.Store.List("pods").Items.Select(p => p.ToJsonObject())
            .Where(p => p["spec"]?["nodeName"]?.GetValue<string>() is { } n && nodes.Contains(n)
                && p["metadata"]?["ownerReferences"]?[0]?["kind"]?.GetValue<string>() != "DaemonSet" && p["metadata"]?["annotations"]?["kubernetes.io/config.mirror"] is null)
            .Select(p => $"{p["metadata"]!["namespace"]}/{p["metadata"]!["name"]}").ToList();
        return running.Count == 0 || running.Any(pods.Contains);
    }

    /// <summary>Every change made through the Kubernetes API: a node passed from one operation to another without being released.</summary>
    internal void Written(ApiWrite w)
    {
        if (w.Resource != "nodes") return;
        if (w.Object is null)
        {
            owner.TryRemove(w.Name, out _);
            return;
        }
        var now = FaultRig.DisruptionOf(w.Object);
        var before = owner.GetValueOrDefault(w.Name);
        if (before is not null && now is not null && before != now)
            Broken(TwoOperations, $"{w.Name} was cordoned for {before} and then for {now} by {WriteJournal.Current?.Caller} without being released");
        if (now is null) owner.TryRemove(w.Name, out _);
        else owner[w.Name] = now;
    }

    /// <summary>A node leaves the cluster: if its pool was deleted by Karpetrack, nothing but DaemonSet pods and evicted pods may be on it.</summary>
    internal void Leaving(string node)
    {
        var pool = rig.Demo.Api.Store.Get("nodes", null, node)?.ToJsonObject()["metadata"]?["labels"]?[SpotLabels.Pool]?.GetValue<string>();
        if (pool is not null && deletedPools.ContainsKey(pool)) CheckPods(node, $"{node} left with its deleted pool {pool} while");
    }

    private void CheckPods(string node, string when)
    {
        foreach (var pod in rig.Demo.Api.Store.List("pods").Items.Select(p => p.ToJsonObject()).Where(p => p["spec"]?["nodeName"]?.GetValue<string>() == node))
        {
            var meta = pod["metadata"]!;
            if (meta["ownerReferences"]?[0]?["kind"]?.GetValue<string>() == "DaemonSet" || meta["annotations"]?["kubernetes.io/config.mirror"] is not null) continue;
            if (pod["status"]?["phase"]?.GetValue<string>() is "Succeeded" or "Failed") continue;
            var key = $"{meta["namespace"]}/{meta["name"]}";
            if (meta["deletionTimestamp"] is null) Broken(PoolDeletedWithPods, $"{when} {node} still ran {key}");
            else if (!evicted.ContainsKey(key)) Broken(PoolDeletedWithPods, $"{when} {node} held {key}, terminating but never evicted through the Eviction API");
        }
    }

    /// <summary>Once a run has settled: no node is left cordoned or annotated unless an operation of the live process owns it.</summary>
    public void CheckSettled(FaultProcess live)
    {
        var busy = live.Actuator.InFlightCounts.Values.Sum();
        foreach (var n in rig.Nodes())
        {
            var name = FaultRig.NameOf(n);
            var disruption = FaultRig.DisruptionOf(n);
            bool cordoned = FaultRig.IsCordoned(n) && !rig.CordonedAtStart.Contains(name);
            if ((cordoned || disruption is not null) && busy == 0)
                Broken(CordonedWithoutOwner, $"{name} is left {(cordoned ? "cordoned" : "schedulable")} with disruption {disruption ?? "none"} and nothing in flight");
        }
    }
}
