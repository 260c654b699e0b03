using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests;

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
    private readonly KubeConnection connection;
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
        MaxGracePeriod = TimeSpan.Zero,
    };

    private ActuationRig(DemoCluster demo, SpotApiServer spot, ActuationOptions options)
    {
        Demo = demo;
        Spot = spot;
        connection = KubeConnection.Resolve(demo.KubeconfigPath, null, KubeEnvironment.Process);
        Kube = new KubeClient(connection, TimeSpan.FromSeconds(10));
        SpotClient = new SpotApiClient(new SpotApiOptions
        {
            ApiUrl = spot.BaseAddress, AuthUrl = spot.BaseAddress, Org = spot.OrgNamespace,
            BackoffBase = TimeSpan.FromMilliseconds(10), BackoffMax = TimeSpan.FromMilliseconds(50), RandomSeed = 1,
            BreakerCooldown = TimeSpan.FromMilliseconds(300),
        }, SpotApiServer.DemoRefreshToken, NullLogger.Instance);
        var book = PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-08-17.json")), DateTimeOffset.UtcNow, "test");
        Prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: book);
        Recommender = new RecommenderLoop(Model, Prices, Statuses, () => new RecommenderOptions { Region = "us-east-iad-1" }, TimeSpan.Zero, NullLogger.Instance);
        Actuator = NewActuator(options);
    }

    /// <summary>A second actuator on the same cluster: what a restarted or another replica's process would build.</summary>
    public Actuator NewActuator(ActuationOptions options)
    {
        var a = new Actuator(options, Model, Prices, Statuses, NullLogger.Instance, Kube, SpotClient);
        Recommender.PlanChanged += a.OnPlan;
        Recommender.InFlight = a.InFlight;
        return a;
    }

    public void Detach(Actuator a) => Recommender.PlanChanged -= a.OnPlan;

    public static async Task<ActuationRig> StartAsync(ActuationOptions options, TimeSpan? provisioning = null, int nodes = 12)
    {
        var demo = await DemoCluster.StartAsync(new DemoClusterOptions { Churn = false, Nodes = nodes });
        SpotApiServer? spot = null;
        spot = await SpotApiServer.StartAsync(new SpotApiServerOptions
        {
            ProvisioningDelay = provisioning ?? TimeSpan.FromMilliseconds(300),
            PreemptionNotice = TimeSpan.Zero,
            NodeJoined = n => demo.JoinNode(n.NodeName, n.ServerClass, n.Labels, n.Taints),
            NodeLeft = name => demo.RemoveNode(name),
        });
        foreach (var m in demo.ManagedNodes) spot.AdoptPool(m.Pool, m.ServerClass, 0.27m, m.CustomLabels, [m.Node]);
        var rig = new ActuationRig(demo, spot, options);
        rig.StartReflectors();
        await rig.WaitAsync(() => rig.Statuses.All(s => s.Synced), "caches synced", drive: false);
        return rig;
    }

    private void StartReflectors()
    {
        var t = ResourceTable.Default;
        running.Add(Task.Run(() => new Reflector<NodeRecord>(Kube, "/api/v1/nodes", null, null, new NodeDecoder(t), Model.NodeTarget, Statuses[0], Fast, NullLogger.Instance).RunAsync(stop.Token)));
        running.Add(Task.Run(() => new Reflector<PodRecord>(Kube, "/api/v1/pods", null, "status.phase!=Succeeded,status.phase!=Failed", new PodDecoder(t), Model.PodTarget, Statuses[1], Fast, NullLogger.Instance).RunAsync(stop.Token)));
        running.Add(Task.Run(() => new Reflector<PdbRecord>(Kube, "/apis/policy/v1/poddisruptionbudgets", null, null, new PdbDecoder(), Model.Pdbs, Statuses[2], Fast, NullLogger.Instance).RunAsync(stop.Token)));
        running.Add(Task.Run(() => new Reflector<DaemonSetRecord>(Kube, "/apis/apps/v1/daemonsets", null, null, new DaemonSetDecoder(t), Model.DaemonSets, Statuses[3], Fast, NullLogger.Instance).RunAsync(stop.Token)));
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
        connection.Dispose();
        SpotClient.Dispose();
        Prices.Dispose();
        await Spot.DisposeAsync();
        await Demo.DisposeAsync();
    }
}

public class ActuationTests
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
}
