using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Actuation;

/// <summary>
/// The whole actuation path against the embedded Kubernetes and Spot APIs: the demo cluster, the
/// fake Spot API whose pool nodes join it, the product's reflectors, recommender and actuator. The
/// test drives the recommender and the actuator's ticks itself, so each step is observable. Started
/// with a stepped clock (ActuationScenarioTests), every timer of the product and of the fakes
/// (provisioning, pool deletion, pod grace periods, cooldowns, retry periods, the drain and
/// provisioning timeouts) runs on <see cref="Clock"/>, which only the test moves: one
/// <see cref="StepAsync"/> moves it by <see cref="Step"/>, lets what that set off reach the caches
/// (an event barrier, not a sleep), plans and ticks. ActuationScenarioTests and SafetyTests run on it.
/// Without one (a test outside Actuation that only needs the rig's cluster), the fakes run on real time
/// and a step does not move time.
/// </summary>
public sealed class ActuationRig : IAsyncDisposable
{
    public DemoCluster Demo { get; }
    public SpotApiServer Spot { get; }
    public SpotApiClient SpotClient { get; }
    public KubeClient Kube { get; }
    public ClusterModel Model { get; } = new(ResourceTable.Default);
    public PriceFeed Prices { get; }
    public RecommenderLoop Recommender { get; }
    public Actuator Actuator { get; set; }
    public ReflectorStatus[] Statuses { get; } = [new("nodes"), new("pods"), new("poddisruptionbudgets"), new("daemonsets")];
    /// <summary>
    /// The rig's stepped clock when it has one: the actuators', the recommender's and the fakes'. Starts at the real time
    /// (node creation times are real).
    /// </summary>
    internal TimerClock? Clock { get; }
    private TimeProvider Time => (TimeProvider?)Clock ?? TimeProvider.System;
    /// <summary>How far the clock moves in one step.</summary>
    public TimeSpan Step { get; set; } = TimeSpan.FromSeconds(1);
    /// <summary>Steps taken so far.</summary>
    public int Steps { get; private set; }
    private readonly CancellationTokenSource stop = new();
    private readonly List<Task> running = [];
    private readonly List<ReflectorStatus[]> allStatuses = [];

    private static readonly ReflectorOptions Fast = new()
    {
        InitialBackoff = TimeSpan.FromMilliseconds(20),
        MaxBackoff = TimeSpan.FromMilliseconds(200),
        MinHealthyWatch = TimeSpan.FromMilliseconds(50),
    };

    /// <summary>Short timings, so a test runs in seconds (or, on the stepped clock, takes few steps).</summary>
    public static ActuationOptions Quick(ActuationMode mode = ActuationMode.Auto) => new()
    {
        Mode = mode,
        Cloudspace = "demo",
        // Long enough that a node which just joined is not taken for an empty one before its pods are bound.
        ScaleUpCooldown = TimeSpan.FromSeconds(2),
        MaxDisruptedNodes = 1,
        MaxDisruptedPercentPerHour = 100,
        Tick = TimeSpan.FromMilliseconds(100),
        PoolSweep = TimeSpan.FromMilliseconds(200),
        // Evictions ask for the least grace there is (a second); the embedded API server holds a terminating pod at most 200 ms.
        MaxGracePeriod = TimeSpan.FromSeconds(1),
    };

    private ActuationRig(DemoCluster demo, SpotApiServer spot, TimerClock? clock, ActuationOptions options, Action<JsonObject, DemoCluster>? editFeed)
    {
        Demo = demo;
        Spot = spot;
        Clock = clock;
        var connection = KubeConnection.Resolve(demo.KubeconfigPath, null, KubeEnvironment.Process);
        Kube = new KubeClient(connection, TimeSpan.FromSeconds(10));
        SpotClient = new SpotApiClient(new SpotApiOptions
        {
            ApiUrl = spot.BaseAddress, AuthUrl = spot.BaseAddress, Org = spot.OrgNamespace,
            BackoffBase = TimeSpan.FromMilliseconds(10), BackoffMax = TimeSpan.FromMilliseconds(50), RandomSeed = 1,
            BreakerCooldown = TimeSpan.FromMilliseconds(300),
            // The fake has no rate limit; the client's own (5/s) would make a tick wait on real time.
            RatePerSecond = 10_000, Burst = 10_000,
        }, SpotApiServer.DemoRefreshToken, NullLogger.Instance, clock: clock is null ? null : new RigTimeRealTimers(clock));
        var feed = JsonNode.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-08-17.json")))!.AsObject();
        editFeed?.Invoke(feed, demo);
        var book = PriceFeedParser.Parse(System.Text.Encoding.UTF8.GetBytes(feed.ToJsonString()), DateTimeOffset.UtcNow, "test");
        Prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: book);
        // The pools in flight are those of the actuator built last, as in a process that has one.
        Recommender = new RecommenderLoop(new(Model, Prices, Statuses) { InFlight = () => latest?.InFlight() ?? [] },
            new(() => new RecommenderOptions { Region = "us-east-iad-1" }, TimeSpan.Zero), NullLogger.Instance, Time);
        Actuator = NewActuator(options);
    }

    private Actuator? latest;

    /// <summary>The replacement thresholds every actuator of the rig checks against, as they are when it checks.</summary>
    public Func<RecommenderOptions> Thresholds { get; set; } = () => new RecommenderOptions();

    /// <summary>A second actuator on the same cluster (on the rig's clock unless given one): what a restarted or another replica's process would build.</summary>
    public Actuator NewActuator(ActuationOptions options, Func<bool>? isLeader = null, Func<CancellationToken>? leaseTerm = null, TimeProvider? clock = null,
        Microsoft.Extensions.Logging.ILogger? log = null)
    {
        var a = new Actuator(options, Model, Prices, Statuses, log ?? NullLogger.Instance, Kube, SpotClient, clock: clock ?? Time, isLeader: isLeader, thresholds: () => Thresholds(),
            leaseTerm: leaseTerm);
        Recommender.PlanChanged += a.OnPlan;
        latest = a;
        return a;
    }

    public void Detach(Actuator a) => Recommender.PlanChanged -= a.OnPlan;

    public static async Task<ActuationRig> StartAsync(ActuationOptions options, TimeSpan? provisioning = null, int nodes = 12, Action<JsonObject, DemoCluster>? editFeed = null,
        TimeSpan? asyncDeletes = null, bool steppedClock = false)
    {
        var clock = steppedClock ? new TimerClock(DateTimeOffset.UtcNow) : null;
        var demo = await DemoCluster.StartAsync(new DemoClusterOptions
        {
            Churn = false, Nodes = nodes,
            Server = new KubeApiServerOptions { MaxPodGracePeriod = TimeSpan.FromMilliseconds(200), Clock = (TimeProvider?)clock ?? TimeProvider.System },
        });
        var spot = await SpotApiServer.StartAsync(new SpotApiServerOptions
        {
            Clock = clock,
            ProvisioningDelay = provisioning ?? TimeSpan.FromMilliseconds(300),
            PreemptionNotice = TimeSpan.Zero,
            NodeJoined = n => demo.JoinNode(n.NodeName, n.ServerClass, n.Labels, n.Taints),
            NodeLeft = name => demo.RemoveNode(name),
            AsyncDeleteDelay = asyncDeletes,
        });
        foreach (var m in demo.ManagedNodes) spot.AdoptPool(m.Pool, m.ServerClass, 0.27m, m.CustomLabels, [m.Node]);
        var rig = new ActuationRig(demo, spot, clock, options, editFeed);
        rig.StartReflectors();
        await rig.WaitForAsync(() => rig.Statuses.All(s => s.Synced), "caches synced");
        return rig;
    }

    private void StartReflectors() => StartReflectors(Model, Statuses, null, null, null);

    private void StartReflectors(ClusterModel model, ReflectorStatus[] statuses, string? nodeSelector, HeldCache<PodRecord>? pods, HeldCache<NodeRecord>? nodes)
    {
        var t = ResourceTable.Default;
        lock (allStatuses) allStatuses.Add(statuses);
        running.Add(Task.Run(() => new Reflector<NodeRecord>(Kube, "/api/v1/nodes", nodeSelector, null, new NodeDecoder(t), nodes?.Over(model.NodeTarget) ?? model.NodeTarget, statuses[0], Fast, NullLogger.Instance).RunAsync(stop.Token)));
        running.Add(Task.Run(() => new Reflector<PodRecord>(Kube, "/api/v1/pods", null, "status.phase!=Succeeded,status.phase!=Failed", new PodDecoder(t), pods?.Over(model.PodTarget) ?? model.PodTarget, statuses[1], Fast, NullLogger.Instance).RunAsync(stop.Token)));
        running.Add(Task.Run(() => new Reflector<PdbRecord>(Kube, "/apis/policy/v1/poddisruptionbudgets", null, null, new PdbDecoder(), model.Pdbs, statuses[2], Fast, NullLogger.Instance).RunAsync(stop.Token)));
        running.Add(Task.Run(() => new Reflector<DaemonSetRecord>(Kube, "/apis/apps/v1/daemonsets", null, null, new DaemonSetDecoder(t), model.DaemonSets, statuses[3], Fast, NullLogger.Instance).RunAsync(stop.Token)));
    }

    /// <summary>
    /// A fresh process on the same cluster and clock: its own model and caches (nodes filtered by
    /// <paramref name="nodeSelector"/> as --node-selector does), recommender and actuator; nothing
    /// shared with the one before but the APIs. With <paramref name="pods"/> and <paramref name="nodes"/>, its pod and node
    /// caches can be held back (made to lag). With <paramref name="build"/>, the actuator is what it builds on the new
    /// model and caches (<paramref name="options"/> and the arguments after it are then for the caches only).
    /// </summary>
    public async Task<RigProcess> NewProcessAsync(ActuationOptions options, string? nodeSelector = null, Func<bool>? isLeader = null,
        Func<CancellationToken>? leaseTerm = null, TimeProvider? clock = null, Microsoft.Extensions.Logging.ILogger? log = null,
        HeldCache<PodRecord>? pods = null, HeldCache<NodeRecord>? nodes = null, Func<ClusterModel, ReflectorStatus[], Actuator>? build = null)
    {
        // As the composition root does: the actuator knows the --node-selector its node cache is filtered by.
        if (nodeSelector is not null) options = options with { NodeSelector = nodeSelector };
        var model = new ClusterModel(ResourceTable.Default);
        ReflectorStatus[] statuses = [new("nodes"), new("pods"), new("poddisruptionbudgets"), new("daemonsets")];
        StartReflectors(model, statuses, nodeSelector, pods, nodes);
        Actuator? actuator = null;
        var recommender = new RecommenderLoop(new(model, Prices, statuses) { InFlight = () => actuator?.InFlight() ?? [] },
            new(() => new RecommenderOptions { Region = "us-east-iad-1" }, TimeSpan.Zero), NullLogger.Instance, Time);
        actuator = build?.Invoke(model, statuses) ?? new Actuator(options, model, Prices, statuses, log ?? NullLogger.Instance, Kube, SpotClient, clock: clock ?? Time, isLeader: isLeader,
            thresholds: () => Thresholds(), leaseTerm: leaseTerm);
        recommender.PlanChanged += actuator.OnPlan;
        await WaitForAsync(() => statuses.All(s => s.Synced), "the new process's caches synced");
        return new RigProcess(this, model, recommender, actuator);
    }

    /// <summary>
    /// Steps (clock, plan, tick) until <paramref name="done"/> holds; fails with what was seen after <paramref name="maxSteps"/>
    /// steps, that is <paramref name="maxSteps"/> × <see cref="Step"/> of the rig's time (not a real-time limit).
    /// </summary>
    public async Task RunUntilAsync(Func<bool> done, string what, int maxSteps = 40, Actuator? actuator = null)
    {
        for (int i = 0; !done(); i++)
        {
            if (i == maxSteps)
                throw new TimeoutException($"after {maxSteps} steps of {Step.TotalSeconds:0.#} s still waiting for {what}; plan: {string.Join("; ", Recommender.Current.Recommendations.Select(r => $"{r.Id} {r.Type} {string.Join(",", r.Nodes)} → {(actuator ?? Actuator).StateOf(r.Id)}"))}");
            await StepAsync(actuator);
        }
    }

    /// <summary>
    /// An event wait with the clock standing still: for something the caches or the API servers do on their own (a sync, a
    /// write reaching a cache, an Event written in the background). The limit is only there to fail a test that hangs.
    /// </summary>
    public async Task WaitForAsync(Func<bool> done, string what)
    {
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!done())
        {
            if (DateTime.UtcNow > until) throw new TimeoutException($"waited for {what}");
            await Task.Delay(5);
        }
    }

    /// <summary>
    /// Without a stepped clock: runs the recommender and one actuator tick until <paramref name="done"/>
    /// holds, 100 ms apart; with one, <see cref="RunUntilAsync"/> (steps) or, not driving, <see cref="WaitForAsync"/>.
    /// </summary>
    public async Task WaitAsync(Func<bool> done, string what, TimeSpan? timeout = null, bool drive = true, Actuator? actuator = null)
    {
        if (Clock is not null)
        {
            if (drive) await RunUntilAsync(done, what, actuator: actuator);
            else await WaitForAsync(done, what);
            return;
        }
        var until = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (!done())
        {
            if (DateTime.UtcNow > until)
                throw new TimeoutException($"waited for {what}; plan: {string.Join("; ", Recommender.Current.Recommendations.Select(r => $"{r.Id} {r.Type} {string.Join(",", r.Nodes)} → {(actuator ?? Actuator).StateOf(r.Id)}"))}");
            if (drive) await StepAsync(actuator);
            await Task.Delay(100);
        }
    }

    /// <summary>The stepped clock moves one <see cref="Step"/> and what that set off reaches every cache; the recommender plans and the actuator ticks.</summary>
    public async Task StepAsync(Actuator? actuator = null)
    {
        await AdvanceAsync(Step);
        Recommender.RunOnce();
        await (actuator ?? Actuator).TickAsync(CancellationToken.None);
        Steps++;
    }

    /// <summary>Moves the stepped clock (if any) and waits until what it set off (nodes joining and leaving, pods ending) is in every cache of the rig.</summary>
    public async Task AdvanceAsync(TimeSpan by)
    {
        if (Clock is null) return;
        Clock.Advance(by);
        await CaughtUpAsync();
    }

    /// <summary>
    /// An event barrier: the Spot fake's hooks have all run, then every watch is sent a bookmark at the API server's
    /// current resourceVersion and every cache has read up to it (so it has seen every change made before).
    /// </summary>
    public async Task CaughtUpAsync()
    {
        await WaitForAsync(() => Spot.Settled, "the Spot fake's hooks run");
        long rv = Demo.Api.Store.BookmarkAll();
        ReflectorStatus[] all;
        lock (allStatuses) all = [.. allStatuses.SelectMany(x => x)];
        await WaitForAsync(() => all.All(s => long.TryParse(s.ResourceVersion, out var seen) && seen >= rv), $"every cache at resourceVersion {rv}");
    }

    public JsonObject Node(string name) => Demo.Api.Store.Get("nodes", null, name)!.ToJsonObject();

    public IReadOnlyList<JsonObject> ManagedPools() => Spot.Pools.Where(p => p["spec"]?["customLabels"]?[Actuator.ManagedLabel]?.GetValue<string>() == "true").ToList();

    public long Count(string type, string result) => Actuator.Counts.GetValueOrDefault((type, result));

    public async ValueTask DisposeAsync()
    {
        stop.Cancel();
        try { await Task.WhenAll(running).WaitAsync(TimeSpan.FromSeconds(10)); } catch (OperationCanceledException) { }
        Kube.Dispose();
        SpotClient.Dispose();
        Prices.Dispose();
        await Spot.DisposeAsync();
        await Demo.DisposeAsync();
    }
}

/// <summary>One process of the rig: its model, recommender and actuator.</summary>
public sealed record RigProcess(ActuationRig Rig, ClusterModel Model, RecommenderLoop Recommender, Actuator Actuator)
{
    /// <summary>The rig's clock moves one step, and this process plans and ticks.</summary>
    public async Task StepAsync(CancellationToken ct = default)
    {
        await Rig.AdvanceAsync(Rig.Step);
        Recommender.RunOnce();
        await Actuator.TickAsync(ct);
    }

    /// <summary>Steps this process (the rig's clock, its plan, its tick) until <paramref name="done"/> holds; fails after <paramref name="maxSteps"/>.</summary>
    public async Task RunUntilAsync(Func<bool> done, string what, int maxSteps = 40)
    {
        for (int i = 0; !done(); i++)
        {
            if (i == maxSteps)
                throw new TimeoutException($"after {maxSteps} steps still waiting for {what}; plan: {string.Join("; ", Recommender.Current.Recommendations.Select(r => $"{r.Id} {r.Type} {string.Join(",", r.Nodes)} → {Actuator.StateOf(r.Id)}"))}");
            await StepAsync();
        }
    }
}

/// <summary>Keeps every log line written to it (formatted), for tests that check what was logged.</summary>
public sealed class CapturingLogger : Microsoft.Extensions.Logging.ILogger
{
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> lines = new();

    public IReadOnlyList<string> Lines => [.. lines];

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel level) => true;

    public void Log<TState>(Microsoft.Extensions.Logging.LogLevel level, Microsoft.Extensions.Logging.EventId id, TState state, Exception? error,
        Func<TState, Exception?, string> formatter) => lines.Enqueue($"{level}: {formatter(state, error)}");
}

/// <summary>
/// A cache that lags on demand: between <see cref="Hold"/> and <see cref="Release"/> what its reflector reads is queued
/// instead of applied to the model (the reflector's status still moves on, so the rig's bookmark barrier passes), then
/// applied in order. The model shows the cluster as it was when the hold began.
/// </summary>
public sealed class HeldCache<T>
{
    private readonly object gate = new();
    private readonly List<Action> queued = [];
    private bool held;

    public void Hold() { lock (gate) held = true; }

    /// <summary>Applies what was queued, in order, and lets later events through.</summary>
    public void Release()
    {
        lock (gate)
        {
            held = false;
            foreach (var apply in queued) apply();
            queued.Clear();
        }
    }

    /// <summary>Events queued while held.</summary>
    public int Queued { get { lock (gate) return queued.Count; } }

    internal IReflectorTarget<T> Over(IReflectorTarget<T> inner) => new Target(this, inner);

    private void Apply(Action apply)
    {
        lock (gate)
        {
            if (held) queued.Add(apply);
            else apply();
        }
    }

    private sealed class Target(HeldCache<T> cache, IReflectorTarget<T> inner) : IReflectorTarget<T>
    {
        public void BeginRelist() => cache.Apply(inner.BeginRelist);
        public void Upsert(T item) => cache.Apply(() => inner.Upsert(item));
        public void Delete(T item) => cache.Apply(() => inner.Delete(item));
        // What a relist removed is only known once it is applied; nothing reads the count here.
        public int EndRelist()
        {
            int removed = 0;
            cache.Apply(() => removed = inner.EndRelist());
            return removed;
        }
    }
}
