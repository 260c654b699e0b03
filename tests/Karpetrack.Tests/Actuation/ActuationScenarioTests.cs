using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Actuation;

/// <summary>
/// The whole actuation path against the embedded Kubernetes and Spot APIs: the demo cluster, the
/// fake Spot API whose pool nodes join it, the product's reflectors, recommender and actuator. The
/// test drives the recommender and the actuator's ticks itself, so each step is observable.
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
    private readonly CancellationTokenSource stop = new();
    private readonly List<Task> running = [];

    private static readonly ReflectorOptions Fast = new()
    {
        InitialBackoff = TimeSpan.FromMilliseconds(20),
        MaxBackoff = TimeSpan.FromMilliseconds(200),
        MinHealthyWatch = TimeSpan.FromMilliseconds(50),
    };

    /// <summary>Short timings everywhere, so a test runs in seconds.</summary>
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

    private ActuationRig(DemoCluster demo, SpotApiServer spot, ActuationOptions options, Action<JsonObject, DemoCluster>? editFeed)
    {
        Demo = demo;
        Spot = spot;
        var connection = KubeConnection.Resolve(demo.KubeconfigPath, null, KubeEnvironment.Process);
        Kube = new KubeClient(connection, TimeSpan.FromSeconds(10));
        SpotClient = new SpotApiClient(new SpotApiOptions
        {
            ApiUrl = spot.BaseAddress, AuthUrl = spot.BaseAddress, Org = spot.OrgNamespace,
            BackoffBase = TimeSpan.FromMilliseconds(10), BackoffMax = TimeSpan.FromMilliseconds(50), RandomSeed = 1,
            BreakerCooldown = TimeSpan.FromMilliseconds(300),
        }, SpotApiServer.DemoRefreshToken, NullLogger.Instance);
        var feed = JsonNode.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-08-17.json")))!.AsObject();
        editFeed?.Invoke(feed, demo);
        var book = PriceFeedParser.Parse(System.Text.Encoding.UTF8.GetBytes(feed.ToJsonString()), DateTimeOffset.UtcNow, "test");
        Prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: book);
        // The pools in flight are those of the actuator built last, as in a process that has one.
        Recommender = new RecommenderLoop(new(Model, Prices, Statuses) { InFlight = () => latest?.InFlight() ?? [] },
            new(() => new RecommenderOptions { Region = "us-east-iad-1" }, TimeSpan.Zero), NullLogger.Instance);
        Actuator = NewActuator(options);
    }

    private Actuator? latest;

    /// <summary>The replacement thresholds every actuator of the rig checks against, as they are when it checks.</summary>
    public Func<RecommenderOptions> Thresholds { get; set; } = () => new RecommenderOptions();

    /// <summary>A second actuator on the same cluster: what a restarted or another replica's process would build.</summary>
    public Actuator NewActuator(ActuationOptions options, Func<bool>? isLeader = null, Func<CancellationToken>? leaseTerm = null, TimeProvider? clock = null)
    {
        var a = new Actuator(options, Model, Prices, Statuses, NullLogger.Instance, Kube, SpotClient, clock: clock, isLeader: isLeader, thresholds: () => Thresholds(),
            leaseTerm: leaseTerm);
        Recommender.PlanChanged += a.OnPlan;
        latest = a;
        return a;
    }

    public void Detach(Actuator a) => Recommender.PlanChanged -= a.OnPlan;

    public static async Task<ActuationRig> StartAsync(ActuationOptions options, TimeSpan? provisioning = null, int nodes = 12, Action<JsonObject, DemoCluster>? editFeed = null,
        TimeSpan? asyncDeletes = null)
    {
        var demo = await DemoCluster.StartAsync(new DemoClusterOptions
        {
            Churn = false, Nodes = nodes, Server = new KubeApiServerOptions { MaxPodGracePeriod = TimeSpan.FromMilliseconds(200) },
        });
        SpotApiServer? spot = null;
        spot = await SpotApiServer.StartAsync(new SpotApiServerOptions
        {
            ProvisioningDelay = provisioning ?? TimeSpan.FromMilliseconds(300),
            PreemptionNotice = TimeSpan.Zero,
            NodeJoined = n => demo.JoinNode(n.NodeName, n.ServerClass, n.Labels, n.Taints),
            NodeLeft = name => demo.RemoveNode(name),
            AsyncDeleteDelay = asyncDeletes,
        });
        foreach (var m in demo.ManagedNodes) spot.AdoptPool(m.Pool, m.ServerClass, 0.27m, m.CustomLabels, [m.Node]);
        var rig = new ActuationRig(demo, spot, options, editFeed);
        rig.StartReflectors();
        await rig.WaitAsync(() => rig.Statuses.All(s => s.Synced), "caches synced", drive: false);
        return rig;
    }

    private void StartReflectors() => StartReflectors(Model, Statuses, null);

    private void StartReflectors(ClusterModel model, ReflectorStatus[] statuses, string? nodeSelector)
    {
        var t = ResourceTable.Default;
        running.Add(Task.Run(() => new Reflector<NodeRecord>(Kube, "/api/v1/nodes", nodeSelector, null, new NodeDecoder(t), model.NodeTarget, statuses[0], Fast, NullLogger.Instance).RunAsync(stop.Token)));
        running.Add(Task.Run(() => new Reflector<PodRecord>(Kube, "/api/v1/pods", null, "status.phase!=Succeeded,status.phase!=Failed", new PodDecoder(t), model.PodTarget, statuses[1], Fast, NullLogger.Instance).RunAsync(stop.Token)));
        running.Add(Task.Run(() => new Reflector<PdbRecord>(Kube, "/apis/policy/v1/poddisruptionbudgets", null, null, new PdbDecoder(), model.Pdbs, statuses[2], Fast, NullLogger.Instance).RunAsync(stop.Token)));
        running.Add(Task.Run(() => new Reflector<DaemonSetRecord>(Kube, "/apis/apps/v1/daemonsets", null, null, new DaemonSetDecoder(t), model.DaemonSets, statuses[3], Fast, NullLogger.Instance).RunAsync(stop.Token)));
    }

    /// <summary>
    /// A fresh process on the same cluster: its own model and caches (nodes filtered by
    /// <paramref name="nodeSelector"/> as --node-selector does), recommender and actuator; nothing
    /// shared with the one before but the APIs.
    /// </summary>
    public async Task<RigProcess> NewProcessAsync(ActuationOptions options, string? nodeSelector = null, Func<bool>? isLeader = null,
        Func<CancellationToken>? leaseTerm = null, TimeProvider? clock = null)
    {
        var model = new ClusterModel(ResourceTable.Default);
        ReflectorStatus[] statuses = [new("nodes"), new("pods"), new("poddisruptionbudgets"), new("daemonsets")];
        StartReflectors(model, statuses, nodeSelector);
        Actuator? actuator = null;
        var recommender = new RecommenderLoop(new(model, Prices, statuses) { InFlight = () => actuator?.InFlight() ?? [] },
            new(() => new RecommenderOptions { Region = "us-east-iad-1" }, TimeSpan.Zero), NullLogger.Instance);
        actuator = new Actuator(options, model, Prices, statuses, NullLogger.Instance, Kube, SpotClient, clock: clock, isLeader: isLeader,
            thresholds: () => Thresholds(), leaseTerm: leaseTerm);
        recommender.PlanChanged += actuator.OnPlan;
        await WaitAsync(() => statuses.All(s => s.Synced), "the new process's caches synced", drive: false);
        return new RigProcess(model, recommender, actuator);
    }

    /// <summary>Runs the recommender and one actuator tick until <paramref name="done"/> holds; fails with what was seen otherwise.</summary>
    public async Task WaitAsync(Func<bool> done, string what, TimeSpan? timeout = null, bool drive = true, Actuator? actuator = null)
    {
        var until = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (!done())
        {
            if (DateTime.UtcNow > until)
                throw new TimeoutException($"waited for {what}; plan: {string.Join("; ", Recommender.Current.Recommendations.Select(r => $"{r.Id} {r.Type} {string.Join(",", r.Nodes)} → {(actuator ?? Actuator).StateOf(r.Id)}"))}");
            if (drive) await StepAsync(actuator);
            await Task.Delay(100);
        }
    }

    public async Task StepAsync(Actuator? actuator = null)
    {
        Recommender.RunOnce();
        await (actuator ?? Actuator).TickAsync(CancellationToken.None);
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
public sealed record RigProcess(ClusterModel Model, RecommenderLoop Recommender, Actuator Actuator)
{
    public async Task StepAsync(CancellationToken ct = default)
    {
        Recommender.RunOnce();
        await Actuator.TickAsync(ct);
    }
}

public class ActuationScenarioTests
{
    private static bool IsCordoned(JsonObject node) => node["spec"]?["unschedulable"]?.GetValue<bool>() == true;

    [Fact]
    public async Task PendingPodsGetOnePoolPerNewNodeAndAreScheduledWhenTheNodesJoin()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), provisioning: TimeSpan.FromSeconds(2));
        rig.Recommender.RunOnce();
        var provision = Assert.Single(rig.Recommender.Current.Recommendations, r => r.Type == RecommendationType.Provision);
        int wanted = provision.NewNodes.Sum(n => n.Count);
        await rig.Actuator.TickAsync(CancellationToken.None);
        // While the nodes are being provisioned, more plans and ticks buy nothing more for the same pods.
        for (int i = 0; i < 5; i++) await rig.StepAsync();
        var created = rig.ManagedPools().Where(p => p["metadata"]!["labels"]?["ngpc.rxt.io/cloudspace"]?.GetValue<string>() == "demo"
            && p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null).ToList();
        Assert.Equal(wanted, created.Count);
        Assert.Equal(wanted, rig.Count("create_pool", "succeeded"));
        foreach (var p in created)
        {
            Assert.Equal(1, p["spec"]!["desired"]!.GetValue<int>());
            Assert.Equal(provision.Id, p["spec"]!["customLabels"]![Actuator.RecommendationLabel]!.GetValue<string>());
            Assert.True(BidLadder.IsOnLadder(decimal.Parse(p["spec"]!["bidPrice"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture)));
        }
        await rig.WaitAsync(() => rig.Count("wait_ready", "succeeded") == 1, "the new nodes Ready");
        Assert.StartsWith("succeeded", rig.Actuator.StateOf(provision.Id));
        // The pods the nodes were bought for run on them now.
        await rig.WaitAsync(() => rig.Model.Snapshot().PendingPods == 0, "no pending pods");
        Assert.Empty(rig.Actuator.InFlight());
    }

    [Fact]
    public async Task AnUnderusedNodeOfKarpetracksIsCordonedDrainedAndItsPoolDeleted()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick());
        int mostAnnotated = 0;
        int Annotated() => rig.Demo.Api.Store.List("nodes").Items.Count(n => n.ToJsonObject()["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation] is not null);
        await rig.WaitAsync(() =>
        {
            mostAnnotated = Math.Max(mostAnnotated, Annotated());
            return rig.Count("delete_pool", "succeeded") >= 2;
        }, "two removals carried out", TimeSpan.FromSeconds(60));
        Assert.True(rig.Count("cordon", "succeeded") >= 2);
        Assert.True(rig.Count("drain", "succeeded") >= 2);
        // --max-disrupted-nodes 1: never two nodes cordoned for a disruption at once.
        Assert.Equal(1, mostAnnotated);
        Assert.Contains(rig.Recommender.Current.Recommendations, r => rig.Actuator.StateOf(r.Id)?.Contains("--max-disrupted-nodes 1") == true);
        var managed = rig.Demo.ManagedNodes.ToDictionary(m => m.Node, m => m.Pool);
        // Every node Karpetrack removed was one of its own, is gone from the cluster, and its pool from Spot.
        await rig.WaitAsync(() => managed.Keys.Count(n => rig.Demo.Api.Store.Get("nodes", null, n) is null) >= 2, "two managed nodes gone", drive: false);
        foreach (var (node, pool) in managed.Where(kv => rig.Demo.Api.Store.Get("nodes", null, kv.Key) is null))
            Assert.Null(rig.Spot.Pool(pool));
        Assert.Equal(0, rig.Spot.CollectionDeletes);
        // Every action left a Kubernetes Event about the node it touched.
        await rig.WaitAsync(() => rig.Demo.Api.Store.List("events").Items.Count(e => e.ToJsonObject()["reason"]?.GetValue<string>() == "PoolDeleted") >= 2, "the events", drive: false);
        var events = rig.Demo.Api.Store.List("events").Items.Select(e => e.ToJsonObject()).ToList();
        Assert.Contains(events, e => e["reason"]?.GetValue<string>() == "Cordoned" && e["involvedObject"]?["kind"]?.GetValue<string>() == "Node");
        Assert.Contains(events, e => e["reason"]?.GetValue<string>() == "Drained" && e["source"]?["component"]?.GetValue<string>() == "karpetrack");
    }

    [Fact]
    public async Task UnmanagedNodesAreNeverTouched()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick());
        await rig.WaitAsync(() => rig.Count("delete_pool", "succeeded") >= 1, "a removal carried out", TimeSpan.FromSeconds(60));
        var managed = rig.Demo.ManagedNodes.Select(m => m.Node).ToHashSet();
        foreach (var n in rig.Demo.Api.Store.List("nodes").Items.Select(x => x.ToJsonObject()))
        {
            var name = n["metadata"]!["name"]!.GetValue<string>();
            if (managed.Contains(name) || n["metadata"]!["labels"]![Actuator.ManagedLabel] is not null) continue;
            Assert.Null(n["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
        }
        Assert.Contains(rig.Recommender.Current.Recommendations, r => rig.Actuator.StateOf(r.Id)?.StartsWith("advisory only") == true);
    }

    private static int Annotated(ActuationRig rig) =>
        rig.Demo.Api.Store.List("nodes").Items.Count(n => n.ToJsonObject()["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation] is not null);

    private static IEnumerable<JsonObject> Nodes(ActuationRig rig) => rig.Demo.Api.Store.List("nodes").Items.Select(n => n.ToJsonObject());

    [Fact]
    public async Task AStalePriceBookUnsyncedCachesOrAnOldPlanChangeNothing()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { MaxPlanAge = TimeSpan.FromMilliseconds(300) });
        await rig.Actuator.TickAsync(CancellationToken.None);   // the recovery first: only a plan received after it is acted on
        rig.Recommender.RunOnce();
        await Task.Delay(500);
        await rig.Actuator.TickAsync(CancellationToken.None);
        Assert.DoesNotContain(rig.ManagedPools(), p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null);
        Assert.All(rig.Recommender.Current.Recommendations.Select(r => rig.Actuator.StateOf(r.Id)),
            st => Assert.True(st!.StartsWith("advisory") || st.StartsWith("refused: the plan is older than"), st));

        // The same plan with a book fetched long ago: stale, so refused as well.
        var stale = PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-08-17.json")), DateTimeOffset.UnixEpoch, "old");
        using var oldPrices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: stale);
        var synced = rig.Statuses;
        var onStale = new Actuator(ActuationRig.Quick(), rig.Model, oldPrices, synced, NullLogger.Instance, rig.Kube, rig.SpotClient);
        await onStale.TickAsync(CancellationToken.None);
        onStale.OnPlan(rig.Recommender.Current);
        await onStale.TickAsync(CancellationToken.None);
        Assert.Contains(rig.Recommender.Current.Recommendations, r => onStale.StateOf(r.Id) == "refused: the price book is stale");

        // Caches not synced: the tick does nothing at all.
        var unsynced = new Actuator(ActuationRig.Quick(), rig.Model, rig.Prices, [new ReflectorStatus("pods")], NullLogger.Instance, rig.Kube, rig.SpotClient);
        unsynced.OnPlan(rig.Recommender.Current);
        await unsynced.TickAsync(CancellationToken.None);
        Assert.Empty(unsynced.Counts);
        Assert.Equal(0, Annotated(rig));
        Assert.DoesNotContain(rig.ManagedPools(), p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null);
    }

    [Fact]
    public async Task OutsideTheMaintenanceWindowOnlyProvisioningHappens()
    {
        var now = DateTimeOffset.UtcNow;
        var closed = new MaintenanceWindow(TimeOnly.FromDateTime(now.AddHours(2).UtcDateTime), TimeOnly.FromDateTime(now.AddHours(3).UtcDateTime));
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { Window = closed });
        await rig.WaitAsync(() => rig.Count("create_pool", "succeeded") >= 1 && rig.Count("cordon", "refused") >= 1, "a provision done and a removal refused");
        for (int i = 0; i < 5; i++) await rig.StepAsync();
        Assert.Equal(0, rig.Count("cordon", "succeeded"));
        Assert.Equal(0, Annotated(rig));
        Assert.Contains(rig.Recommender.Current.Recommendations, r => rig.Actuator.StateOf(r.Id)?.StartsWith("refused: outside the maintenance window") == true);
    }

    [Fact]
    public async Task TheHourlyBudgetStopsAfterItsShareAndADoNotDisruptNodeIsNeverTouched()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { MaxDisruptedPercentPerHour = 1 });
        // Mark one managed node do-not-disrupt through the API, as a user would with kubectl annotate.
        var keep = rig.Demo.ManagedNodes[0].Node;
        await rig.Kube.PatchNodeAsync(keep, new JsonObject { ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { ["karpetrack.io/do-not-disrupt"] = "true" } } }, CancellationToken.None);
        await rig.WaitAsync(() => rig.Count("delete_pool", "succeeded") >= 1, "one removal");
        for (int i = 0; i < 10; i++) await rig.StepAsync();
        // 1 % of the nodes per hour rounds up to one node: exactly one was disrupted.
        Assert.Equal(1, rig.Count("cordon", "succeeded"));
        Assert.Contains(rig.Recommender.Current.Recommendations, r => rig.Actuator.StateOf(r.Id)?.Contains("disrupted in the last hour") == true);
        var kept = rig.Node(keep);
        Assert.False(IsCordoned(kept));
        Assert.Null(kept["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
    }

    [Fact]
    public async Task ANodeThatNeverJoinsHasItsPoolDeletedAfterTheTimeoutAndTheFailureIsReported()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ProvisioningTimeout = TimeSpan.FromSeconds(2) }, provisioning: TimeSpan.FromMilliseconds(200));
        rig.Recommender.RunOnce();
        var provision = Assert.Single(rig.Recommender.Current.Recommendations, r => r.Type == RecommendationType.Provision);
        int n = provision.NewNodes.Sum(x => x.Count);
        for (int i = 0; i < n; i++) rig.Spot.NeverJoin(Actuator.PoolName(provision.Id, i));
        await rig.WaitAsync(() => rig.Count("wait_ready", "failed") == 1, "the provisioning timeout");
        Assert.StartsWith("failed:", rig.Actuator.StateOf(provision.Id));
        Assert.Contains("not Ready after", rig.Actuator.StateOf(provision.Id));
        for (int i = 0; i < n; i++) Assert.Null(rig.Spot.Pool(Actuator.PoolName(provision.Id, i)));
        Assert.True(rig.Count("delete_pool", "succeeded") >= n);   // its pools, besides any removal of demo nodes
        // Failed, it is not retried at once (RetryAfter), and nothing more is bought meanwhile.
        for (int i = 0; i < 5; i++) await rig.StepAsync();
        Assert.Equal(n, rig.Count("create_pool", "succeeded"));
    }

    [Fact]
    public async Task ADrainThePdbKeepsRefusingIsRolledBackAndTheNodeUncordoned()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { DrainTimeout = TimeSpan.FromSeconds(2) });
        await rig.WaitAsync(() => rig.Model.Snapshot().PendingPods == 0, "provisioning done");
        // Every eviction is answered as a budget would: 429.
        rig.Demo.Api.Faults.FailNext(10_000, 429, TimeSpan.FromSeconds(1), pathContains: "/eviction");
        await rig.WaitAsync(() => rig.Count("drain", "failed") >= 1, "a drain given up", TimeSpan.FromSeconds(40));
        Assert.True(rig.Count("cordon", "succeeded") >= 1);
        var failed = rig.Recommender.Current.Recommendations.Where(r => rig.Actuator.StateOf(r.Id)?.StartsWith("failed") == true).ToList();
        Assert.NotEmpty(failed);
        Assert.Contains("did not finish", rig.Actuator.StateOf(failed[0].Id));
        // Rolled back: the node is schedulable again and carries no disruption annotation; its pool is still there.
        foreach (var node in failed[0].Nodes)
        {
            var n = rig.Node(node);
            Assert.False(IsCordoned(n));
            Assert.Null(n["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
            Assert.NotNull(rig.Spot.Pool(n["metadata"]!["labels"]![SpotLabels.Pool]!.GetValue<string>()));
        }
    }

    [Fact]
    public async Task AProcessKilledMidDrainIsFollowedByOneThatResumesTheDrain()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick());
        // Evictions hang (429), so the first process is caught in the middle of a drain.
        rig.Demo.Api.Faults.FailNext(10_000, 429, TimeSpan.FromSeconds(1), pathContains: "/eviction");
        await rig.WaitAsync(() => rig.Actuator.InFlightCounts.GetValueOrDefault("drain") == 1, "a drain in flight", TimeSpan.FromSeconds(60));
        var cordoned = Nodes(rig).Single(n => n["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation] is not null);
        var name = cordoned["metadata"]!["name"]!.GetValue<string>();
        Assert.True(IsCordoned(cordoned));

        // The annotation records the recommendation and the step.
        var record = DisruptionRecord.Parse(cordoned["metadata"]!["annotations"]![Actuator.DisruptionAnnotation]!.GetValue<string>());
        Assert.Equal(OperationStep.Drain, record.Step);

        // Killed: the old actuator never ticks again. A new process starts with no memory of it and takes the drain
        // up where the cluster says it was: the node stays cordoned, no rollback, the same recommendation drains on.
        rig.Detach(rig.Actuator);
        var next = rig.NewActuator(ActuationRig.Quick());
        rig.Recommender.RunOnce();
        await next.TickAsync(CancellationToken.None);
        Assert.Equal(1, next.InFlightCounts.GetValueOrDefault("drain"));
        Assert.StartsWith("in progress: ", next.StateOf(record.RecommendationId));
        var after = rig.Node(name);
        Assert.True(IsCordoned(after));
        Assert.DoesNotContain(rig.Demo.Api.Store.List("events").Items, e => e.ToJsonObject() is var o
            && o["reason"]?.GetValue<string>() == "DisruptionRolledBack" && o["involvedObject"]?["name"]?.GetValue<string>() == name);
        Assert.NotNull(rig.Spot.Pool(after["metadata"]!["labels"]![SpotLabels.Pool]!.GetValue<string>()));
        // Once the evictions go through, the new process finishes the job: nobody is left cordoned.
        rig.Demo.Api.Faults.Clear();
        await rig.WaitAsync(() => next.InFlightCounts.Count == 0 && Annotated(rig) == 0, "nothing in flight and no annotated node", actuator: next);
    }

    [Fact]
    public async Task AProcessKilledWhileProvisioningIsFollowedByOneThatAdoptsItsPoolsInsteadOfBuyingAgain()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), provisioning: TimeSpan.FromMinutes(5));
        await rig.StepAsync();   // the recovery: the plan it got before is not acted on
        await rig.StepAsync();
        var inFlight = rig.Actuator.InFlight().Select(f => f.Pool).Order().ToList();
        Assert.NotEmpty(inFlight);

        rig.Detach(rig.Actuator);
        var next = rig.NewActuator(ActuationRig.Quick());
        for (int i = 0; i < 5; i++) await rig.StepAsync(next);
        Assert.Equal(inFlight, next.InFlight().Select(f => f.Pool).Order().ToList());
        Assert.Equal(0, next.Counts.GetValueOrDefault(("create_pool", "succeeded")));
        Assert.DoesNotContain(rig.Recommender.Current.Recommendations, r => r.Type == RecommendationType.Provision);
        var ours = rig.ManagedPools().Where(p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null).ToList();
        Assert.Equal(inFlight.Count, ours.Count);
    }

    [Fact]
    public async Task OfTwoReplicasOnlyTheLeaderActsAndTheOtherTakesOverWhenItStops()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick());
        var lease = new LeaderElectionOptions { LeaseDuration = TimeSpan.FromSeconds(3), RenewDeadline = TimeSpan.FromSeconds(2), RetryPeriod = TimeSpan.FromMilliseconds(200) };
        using var stopA = new CancellationTokenSource();
        using var stopB = new CancellationTokenSource();
        var electorA = new LeaderElector(rig.Kube, "default", "karpetrack", "replica-a", lease, NullLogger.Instance);
        var electorB = new LeaderElector(rig.Kube, "default", "karpetrack", "replica-b", lease, NullLogger.Instance);
        rig.Detach(rig.Actuator);
        var a = rig.NewActuator(ActuationRig.Quick(), () => electorA.IsLeader);
        var b = rig.NewActuator(ActuationRig.Quick(), () => electorB.IsLeader);
        var runElectorA = electorA.RunAsync(stopA.Token);
        await rig.WaitAsync(() => electorA.IsLeader, "replica-a leads", drive: false);
        var runElectorB = electorB.RunAsync(stopB.Token);
        using var stopActuators = new CancellationTokenSource();
        var runA = a.RunAsync(stopActuators.Token);
        var runB = b.RunAsync(stopActuators.Token);
        bool both = false;
        await rig.WaitAsync(() =>
        {
            rig.Recommender.RunOnce();
            both |= electorA.IsLeader && electorB.IsLeader;
            return a.Counts.GetValueOrDefault(("delete_pool", "succeeded")) >= 1;
        }, "the leader acting", drive: false);
        Assert.False(both);
        Assert.Empty(b.Counts);

        // The leader goes away (its lease released on shutdown): the other replica takes over and acts.
        await stopActuators.CancelAsync();
        await Task.WhenAll(runA, runB);
        stopA.Cancel();
        await runElectorA;
        await rig.WaitAsync(() => electorB.IsLeader, "replica-b leads", drive: false);
        await rig.WaitAsync(() => b.Counts.Values.Sum() > 0, "replica-b acting", actuator: b);
        Assert.False(electorA.IsLeader);
        stopB.Cancel();
        await runElectorB;
    }

    [Fact]
    public async Task SpotApiStormsAndAnExpiredTokenStillEndWithOnePoolPerNode()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick());
        rig.Recommender.RunOnce();
        var provision = Assert.Single(rig.Recommender.Current.Recommendations, r => r.Type == RecommendationType.Provision);
        int n = provision.NewNodes.Sum(x => x.Count);
        await rig.SpotClient.ListNodePoolsAsync("demo", CancellationToken.None);   // holds a token now
        rig.Spot.RevokeIssuedTokens();
        rig.Spot.FailNext(3, 503, pathContains: "spotnodepools");
        rig.Spot.FailNext(2, 429, TimeSpan.FromMilliseconds(50), pathContains: "spotnodepools");
        // A create whose answer is lost after the pool was stored: the retry must not make a second one.
        rig.Spot.FailAfterHandling(1, 0, method: "POST", pathContains: "spotnodepools");
        await rig.WaitAsync(() => rig.Count("wait_ready", "succeeded") >= 1, "the new nodes Ready");
        var ours = rig.ManagedPools().Where(p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel]?.GetValue<string>() == provision.Id).ToList();
        Assert.Equal(n, ours.Count);
        Assert.True(rig.SpotClient.TokenExchanges >= 2);
        Assert.Equal(0, rig.Spot.CollectionDeletes);
    }

    [Fact]
    public async Task APreemptedPoolIsDeletedOnceItsNodeIsGoneAndItsPodsGetNewCapacity()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick());
        await rig.WaitAsync(() => rig.Count("wait_ready", "succeeded") >= 1, "the first provisioning done");
        var pool = rig.ManagedPools().First(p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null);
        var poolName = pool["metadata"]!["name"]!.GetValue<string>();
        var cls = pool["spec"]!["serverClass"]!.GetValue<string>();
        var bid = decimal.Parse(pool["spec"]!["bidPrice"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture);
        var nodes = rig.Spot.NodesOf(poolName);
        Assert.NotEmpty(nodes);
        // The market jumps above the bid: the pool is lost, its node leaves, its pods are pending again.
        rig.Spot.SetMarketPrice(cls, bid + 0.05m);
        await rig.WaitAsync(() => rig.Spot.Pool(poolName) is null, "the lost pool deleted");
        Assert.All(nodes, node => Assert.Null(rig.Demo.Api.Store.Get("nodes", null, node)));
        // New capacity for them: bid at (at least) the new market, whatever the feed still says.
        await rig.WaitAsync(() => rig.ManagedPools().Any(p => p["spec"]!["serverClass"]!.GetValue<string>() == cls
            && decimal.Parse(p["spec"]!["bidPrice"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture) >= bid + 0.05m)
            || rig.ManagedPools().Any(p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null && p["metadata"]!["name"]!.GetValue<string>() != poolName
                && p["spec"]!["serverClass"]!.GetValue<string>() != cls), "new capacity for the pre-empted pods");
    }

    /// <summary>
    /// The class of the busiest Karpetrack node gets expensive, so replacing it by cheaper nodes pays
    /// (its pods do not fit on the others, so removing it outright is not an option). Not the node
    /// holding the ledger pods: their budget allows no disruption, so that node is blocked.
    /// </summary>
    private static DemoManagedNode MakeBusiestNodeExpensive(JsonObject feed, DemoCluster demo)
    {
        var pods = demo.Api.Store.List("pods").Items.Select(p => p.ToJsonObject())
            .Where(p => p["metadata"]?["ownerReferences"]?[0]?["kind"]?.GetValue<string>() == "ReplicaSet")
            .GroupBy(p => p["spec"]?["nodeName"]?.GetValue<string>() ?? "").ToDictionary(g => g.Key, g => g.ToList());
        var busiest = demo.ManagedNodes
            .Where(m => !pods.GetValueOrDefault(m.Node, []).Any(p => p["metadata"]?["labels"]?["app.kubernetes.io/name"]?.GetValue<string>() == "ledger"))
            .OrderByDescending(m => pods.GetValueOrDefault(m.Node, []).Count).First();
        var c = feed["regions"]!["us-east-iad-1"]!["serverclasses"]![busiest.ServerClass]!;
        c["market_price"] = "0.900000";
        c["20_percentile"] = 0.9; c["50_percentile"] = 0.9; c["80_percentile"] = 0.9;
        return busiest;
    }

    [Fact]
    public async Task AReplacementWhoseSavingIsBelowTheThresholdAtTodaysPricesIsRefused()
    {
        DemoManagedNode? busiest = null;
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.Zero },
            editFeed: (feed, demo) => busiest = MakeBusiestNodeExpensive(feed, demo));
        // The recommender still proposes the replacement; the actuator's own check uses a stricter threshold.
        rig.Thresholds = () => new RecommenderOptions { ReplaceThresholdPercent = 100 };
        Recommendation? replace = null;
        await rig.WaitAsync(() =>
        {
            replace ??= rig.Recommender.Current.Recommendations.FirstOrDefault(r => r.Type == RecommendationType.Replace && r.Nodes.Contains(busiest!.Node));
            return replace is not null && rig.Actuator.StateOf(replace.Id) is { } st && st.StartsWith("refused: the saving fell to");
        }, "the replacement refused for its saving");
        Assert.False(IsCordoned(rig.Node(busiest!.Node)));
        Assert.Null(rig.Spot.Pool(Actuator.PoolName(replace!.Id, 0)));
    }

    [Fact]
    public async Task AConsolidationOntoNewNodesMeetsTheReplacementThresholdsAtTodaysPrices()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.Zero });
        // A node the recommender itself would disrupt (nothing else blocks it), found with the actuator detached.
        rig.Detach(rig.Actuator);
        string? node = null;
        await rig.WaitAsync(() =>
        {
            rig.Recommender.RunOnce();
            return (node = rig.Recommender.Current.Recommendations.FirstOrDefault(r => r.Nodes.Count == 1)?.Nodes[0]) is not null;
        }, "a removable node", drive: false);
        rig.Thresholds = () => new RecommenderOptions { ReplaceThresholdPercent = 100 };
        var view = rig.Model.Snapshot().Nodes.Single(n => n.Name == node);
        var price = rig.Prices.Current.NodePrice(view.ServerClass, view.CapacityType)!.Value;
        // Onto one new node of the same class at the same price less a tenth: it saves, but not 100 %.
        var rec = new Recommendation("con-buys-nodes", RecommendationType.Consolidate, [node!], [new NewNode(view.ServerClass, 1, price * 0.9m)],
            [], [], price, price * 0.9m, 0, 0, -1, ["a test plan"]);
        await rig.Actuator.TickAsync(CancellationToken.None);   // the recovery first: only a plan received after it is acted on
        rig.Actuator.OnPlan(new Plan([rec], new Dictionary<string, IReadOnlyList<Blocker>>(), [], 0, 0, "us-east-iad-1"));
        await rig.Actuator.TickAsync(CancellationToken.None);
        Assert.StartsWith("refused: the saving fell to", rig.Actuator.StateOf(rec.Id));
        Assert.False(IsCordoned(rig.Node(node!)));
        Assert.Null(rig.Spot.Pool(Actuator.PoolName(rec.Id, 0)));
    }

    [Fact]
    public async Task NoNodeIsDisruptedDuringTheCooldownAfterAScaleUp()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.FromMinutes(5) });
        await rig.WaitAsync(() => rig.Count("create_pool", "succeeded") >= 1 && rig.Count("cordon", "refused") >= 1, "a scale-up, then a removal refused");
        for (int i = 0; i < 5; i++) await rig.StepAsync();
        Assert.Equal(0, rig.Count("cordon", "succeeded"));
        Assert.Equal(0, Annotated(rig));
        Assert.Contains(rig.Recommender.Current.Recommendations, r => rig.Actuator.StateOf(r.Id)?.StartsWith("refused: cooling down after a scale-up") == true);
    }

    [Fact]
    public async Task AReplacementBringsItsNewNodesUpBeforeTheOldOneIsCordonedDrainedAndRemoved()
    {
        // The class of the busiest Karpetrack node got expensive: replacing it by cheaper nodes pays
        // (its pods do not fit on the others, so removing it outright is not an option).
        DemoManagedNode? busiest = null;
        // No cooldown: the replacement is in the first plan and takes the one disruption slot at once
        // (later, once the pending pods are served, its pods would fit elsewhere and plain removal would win).
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.Zero },
            editFeed: (feed, demo) => busiest = MakeBusiestNodeExpensive(feed, demo));
        Recommendation? replace = null;
        await rig.WaitAsync(() =>
        {
            replace ??= rig.Recommender.Current.Recommendations.FirstOrDefault(r => r.Type == RecommendationType.Replace && r.Nodes.Contains(busiest!.Node));
            return replace is not null && rig.Actuator.StateOf(replace.Id)?.StartsWith("succeeded") == true;
        }, "the replacement carried out", TimeSpan.FromSeconds(60));
        // Its new pools exist with nodes; the old node and its pool are gone.
        int n = replace!.NewNodes.Sum(x => x.Count);
        for (int i = 0; i < n; i++)
        {
            var pool = Actuator.PoolName(replace.Id, i);
            Assert.NotNull(rig.Spot.Pool(pool));
            Assert.NotEmpty(rig.Spot.NodesOf(pool));
        }
        Assert.Null(rig.Spot.Pool(busiest!.Pool));
        await rig.WaitAsync(() => rig.Demo.Api.Store.Get("nodes", null, busiest.Node) is null, "the old node gone", drive: false);
        Assert.Contains("for " + n + " new nodes", rig.Actuator.StateOf(replace.Id));
    }

    [Theory]
    [InlineData(ActuationMode.Approve)]
    [InlineData(ActuationMode.Auto)]
    public async Task ARecommendationThatWasAdvisoryIsActedOnOnceItsNodeBecomesKarpetracksOwn(ActuationMode mode)
    {
        // A closed maintenance window makes auto say plainly what it would do instead of doing it.
        var later = DateTime.UtcNow.AddHours(2);
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(mode) with
        {
            Window = new MaintenanceWindow(TimeOnly.FromDateTime(later), TimeOnly.FromDateTime(later.AddHours(1))),
        });
        rig.Recommender.RunOnce();
        var snap = rig.Model.Snapshot();
        // The demo's two nodes that share one pool: removing one of them stays advisory.
        var x = rig.Recommender.Current.Recommendations.First(r => r.Nodes.Count == 1 && rig.Actuator.StateOf(r.Id)?.StartsWith("advisory only: ") == true
            && snap.Nodes.Count(v => v.Pool == snap.Nodes.First(w => w.Name == r.Nodes[0]).Pool) == 2);
        var node = x.Nodes[0];
        var pool = snap.Nodes.First(v => v.Name == node).Pool;
        rig.Demo.RemoveNode(snap.Nodes.First(v => v.Pool == pool && v.Name != node).Name);
        await rig.Kube.PatchNodeAsync(node, new JsonObject { ["metadata"] = new JsonObject { ["labels"] = new JsonObject { [Actuator.ManagedLabel] = "true" } } }, CancellationToken.None);
        await rig.WaitAsync(() => rig.Model.Snapshot().Nodes.First(n => n.Name == node).Labels.GetValueOrDefault(Actuator.ManagedLabel) == "true", "the label seen", drive: false);
        await rig.WaitAsync(() => rig.Actuator.StateOf(x.Id) is { } st && !st.StartsWith("advisory"), "the state moved on");
        if (mode == ActuationMode.Approve)
        {
            Assert.Equal("waiting for approval", rig.Actuator.StateOf(x.Id));
            Assert.Equal(ApprovalOutcome.Approved, rig.Actuator.Approve(x.Id).Outcome);
        }
        await rig.WaitAsync(() => rig.Actuator.StateOf(x.Id)?.StartsWith("refused: outside the maintenance window") == true, "a refusal naming the window");
    }

    [Fact]
    public async Task ANodeLeftCordonedByAnEarlierDisruptionIsUncordonedByThePoolSweep()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { Window = new MaintenanceWindow(new TimeOnly(0, 0), new TimeOnly(0, 1)) });
        await rig.StepAsync();   // recovery done; from now on only the sweep looks for orphans
        // As an uncordon that failed, or a replica that died after cordoning, would leave it.
        var node = rig.Demo.ManagedNodes[1].Node;
        await rig.Kube.PatchNodeAsync(node, new JsonObject
        {
            ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { [Actuator.DisruptionAnnotation] = "con-000000000000" } },
            ["spec"] = new JsonObject { ["unschedulable"] = true },
        }, CancellationToken.None);
        await rig.WaitAsync(() => rig.Model.Snapshot().Nodes.Any(n => n.Name == node && !n.Schedulable), "the cordon seen", drive: false);
        await rig.WaitAsync(() => !IsCordoned(rig.Node(node)), "the sweep uncordoning it");
        Assert.Null(rig.Node(node)["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
    }
}

