using System.Text.Json.Nodes;
using k8s;
using Karpetrack.Simulation;

namespace Karpetrack.Tests.Simulation;

/// <summary>The demo cluster hears writes made through its API server and nodes joining and leaving.</summary>
public sealed class DemoWriteTests : IAsyncLifetime
{
    private DemoCluster demo = null!;
    private KubeClient client = null!;
    private readonly TimerClock clock = new(DateTimeOffset.UtcNow);
    private static readonly TimeSpan Grace = TimeSpan.FromSeconds(2);

    public async Task InitializeAsync()
    {
        demo = await DemoCluster.StartAsync(new DemoClusterOptions
        {
            // Evicted pods stay terminating until the test moves the clock past the grace period.
            Seed = 7, Churn = false, Server = new KubeApiServerOptions { MaxPodGracePeriod = Grace, Clock = clock },
        });
        client = new KubeClient(KubeConnection.Resolve(demo.KubeconfigPath, null, KubeEnvironment.Process), TimeSpan.FromSeconds(10));
    }

    public async Task DisposeAsync()
    {
        client.Dispose();
        await demo.DisposeAsync();
    }

    private JsonObject[] Pods() => demo.Api.Store.List("pods").Items.Select(p => p.ToJsonObject()).ToArray();

    private static string? NodeOf(JsonObject pod) => (string?)pod["spec"]?["nodeName"];
    private static string NameOf(JsonObject o) => (string)o["metadata"]!["name"]!;
    private static string UidOf(JsonObject o) => (string)o["metadata"]!["uid"]!;
    private static string? App(JsonObject pod) => (string?)pod["metadata"]?["labels"]?["app.kubernetes.io/name"];
    private static string? OwnerKind(JsonObject pod) => (string?)pod["metadata"]?["ownerReferences"]?[0]?["kind"];

    // Node with the most Deployment pods that no zero-budget covers, so evicting them is allowed.
    private string BusyNode() => Pods()
        .Where(p => NodeOf(p) is not null && OwnerKind(p) == "ReplicaSet")
        .GroupBy(NodeOf).OrderByDescending(g => g.Count()).First().Key!;

    private int ReplicaSetPods(string app) => Pods().Count(p => App(p) == app && OwnerKind(p) == "ReplicaSet" && p["metadata"]!["deletionTimestamp"] is null);

    [Fact]
    public async Task CordonThroughTheApi_NoNewPodLandsThere_UncordonLiftsIt()
    {
        var node = BusyNode();
        await client.PatchNodeAsync(node, new JsonObject { ["spec"] = new JsonObject { ["unschedulable"] = true } }, default);
        Assert.True(demo.IsCordoned(node));

        var before = Pods().Where(p => NodeOf(p) == node).Select(NameOf).ToHashSet();
        for (var i = 0; i < 30; i++) demo.Step();
        var landed = Pods().Where(p => NodeOf(p) == node && !before.Contains(NameOf(p))).Select(NameOf).ToArray();
        Assert.Empty(landed);

        await client.PatchNodeAsync(node, new JsonObject { ["spec"] = new JsonObject { ["unschedulable"] = null } }, default);
        Assert.False(demo.IsCordoned(node));
    }

    [Fact]
    public async Task EvictingADeploymentPod_ReplicaSetReplacesIt_DaemonSetPodIsNotRecreated()
    {
        var node = BusyNode();
        var victim = Pods().First(p => NodeOf(p) == node && OwnerKind(p) == "ReplicaSet" && App(p) is not ("ledger" or "web"));
        var app = App(victim)!;
        var replicas = ReplicaSetPods(app);

        var outcome = await client.EvictPodAsync((string)victim["metadata"]!["namespace"]!, NameOf(victim), UidOf(victim), 0, default);
        Assert.Equal(EvictionResult.Evicted, outcome.Result);
        Assert.DoesNotContain(Pods(), p => NameOf(p) == NameOf(victim));
        Assert.Equal(replicas, ReplicaSetPods(app));   // a new pod under a new name

        var ds = Pods().First(p => NodeOf(p) == node && OwnerKind(p) == "DaemonSet");
        var dsCount = Pods().Count(p => OwnerKind(p) == "DaemonSet");
        Assert.Equal(EvictionResult.Evicted, (await client.EvictPodAsync((string)ds["metadata"]!["namespace"]!, NameOf(ds), UidOf(ds), 0, default)).Result);
        Assert.Equal(dsCount - 1, Pods().Count(p => OwnerKind(p) == "DaemonSet"));
    }

    [Fact]
    public async Task GracefulEviction_ReplacementAtOnce_CapacityFreedWhenTheOldPodIsGone()
    {
        var victim = Pods().First(p => NodeOf(p) is not null && OwnerKind(p) == "ReplicaSet" && App(p) is "ingest" or "query" or "cart");
        var app = App(victim)!;
        var replicas = ReplicaSetPods(app);
        Assert.Equal(EvictionResult.Evicted, (await client.EvictPodAsync((string)victim["metadata"]!["namespace"]!, NameOf(victim), UidOf(victim), 30, default)).Result);
        var terminating = Pods().Single(p => NameOf(p) == NameOf(victim));
        Assert.NotNull(terminating["metadata"]!["deletionTimestamp"]);
        Assert.Equal(replicas, ReplicaSetPods(app));   // the terminating one no longer counts; its replacement does

        await clock.WhenPending(1);
        clock.Advance(Grace - TimeSpan.FromMilliseconds(1));
        Assert.Contains(Pods(), p => NameOf(p) == NameOf(victim));   // still inside its grace period
        var gone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void Deleted(ApiWrite w) { if (w.Resource == "pods" && w.Name == NameOf(victim) && w.Object is null) gone.TrySetResult(); }
        demo.Api.Written += Deleted;
        try
        {
            clock.Advance(TimeSpan.FromMilliseconds(1));
            await gone.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally { demo.Api.Written -= Deleted; }
        Assert.DoesNotContain(Pods(), p => NameOf(p) == NameOf(victim));
        Assert.Equal(replicas, ReplicaSetPods(app));
    }

    [Fact]
    public async Task TheLedgerBudgetOfTheDemo_BlocksEvictions()
    {
        var ledger = Pods().First(p => App(p) == "ledger" && NodeOf(p) is not null);
        var outcome = await client.EvictPodAsync("payments", NameOf(ledger), UidOf(ledger), null, default);
        Assert.Equal(EvictionResult.Blocked, outcome.Result);
        var status = demo.Api.Store.Get("poddisruptionbudgets", "payments", "ledger")!.ToJsonObject()["status"]!;
        Assert.Equal(0, (int)status["disruptionsAllowed"]!);
        Assert.Equal((int)status["expectedPods"]!, (int)status["currentHealthy"]!);
    }

    [Fact]
    public async Task DeletingANodeThroughTheApi_RemovesItsPods_DeploymentPodsComeBack()
    {
        var node = BusyNode();
        var apps = Pods().Where(p => OwnerKind(p) == "ReplicaSet").GroupBy(App).ToDictionary(g => g.Key!, g => g.Count());
        Assert.Equal("Success", (await client.Api.CoreV1.DeleteNodeAsync(node)).Status);
        Assert.DoesNotContain(Pods(), p => NodeOf(p) == node);
        foreach (var (app, count) in apps) Assert.Equal(count, ReplicaSetPods(app));
        for (var i = 0; i < 5; i++) demo.Step();
        Assert.DoesNotContain(Pods(), p => NodeOf(p) == node);
    }

    [Fact]
    public void JoinNode_ReadyWithSpotLabelsAndDaemonSets_PendingPodsScheduledOntoIt()
    {
        var pendingTrainers = Pods().Count(p => App(p) == "trainer" && NodeOf(p) is null);
        Assert.True(pendingTrainers > 0);

        demo.JoinNode("spot-mh-1", "mh.vs1.2xlarge-iad", new Dictionary<string, string> { ["nodepool.ngpc.rxt.io/name"] = "pool-a", ["team"] = "ml" }, []);

        var node = demo.Api.Store.Get("nodes", null, "spot-mh-1")!.ToJsonObject();
        var labels = node["metadata"]!["labels"]!;
        Assert.Equal("mh.vs1.2xlarge-iad", (string?)labels["servers.ngpc.rxt.io/class"]);
        Assert.Equal("spot", (string?)labels["servers.ngpc.rxt.io/type"]);
        Assert.Equal("pool-a", (string?)labels["nodepool.ngpc.rxt.io/name"]);
        Assert.Equal("ml", (string?)labels["team"]);
        Assert.Equal("spot-mh-1", (string?)labels["kubernetes.io/hostname"]);
        Assert.Equal("16", (string?)node["status"]!["capacity"]!["cpu"]);
        Assert.Equal("15900m", (string?)node["status"]!["allocatable"]!["cpu"]);
        Assert.Contains(node["status"]!["conditions"]!.AsArray(), c => (string?)c!["type"] == "Ready" && (string?)c["status"] == "True");

        var onIt = Pods().Where(p => NodeOf(p) == "spot-mh-1").ToArray();
        Assert.Equal(3, onIt.Count(p => OwnerKind(p) == "DaemonSet"));
        Assert.Contains(onIt, p => App(p) == "kube-proxy");
        // 14 CPU each: exactly one trainer fits the 15.9 allocatable CPU beside the DaemonSets.
        Assert.Single(onIt, p => App(p) == "trainer");
        Assert.Equal(pendingTrainers - 1, Pods().Count(p => App(p) == "trainer" && NodeOf(p) is null));
    }

    [Fact]
    public void JoinNode_WithANoScheduleTaint_GetsOnlyDaemonSets_RemoveNodeRecreatesDeploymentPods()
    {
        demo.JoinNode("spot-tainted", "mh.vs1.2xlarge-iad", new Dictionary<string, string>(), [new Taint("dedicated", "ml", "NoSchedule")]);
        var node = demo.Api.Store.Get("nodes", null, "spot-tainted")!.ToJsonObject();
        Assert.Null(node["metadata"]!["labels"]!["nodepool.ngpc.rxt.io/name"]);
        Assert.Equal("NoSchedule", (string?)node["spec"]!["taints"]![0]!["effect"]);
        for (var i = 0; i < 10; i++) demo.Step();
        Assert.All(Pods().Where(p => NodeOf(p) == "spot-tainted"), p => Assert.True(OwnerKind(p) is "DaemonSet" or "Node", App(p)));

        var busy = BusyNode();
        var apps = Pods().Where(p => OwnerKind(p) == "ReplicaSet").GroupBy(App).ToDictionary(g => g.Key!, g => g.Count());
        Assert.True(demo.RemoveNode(busy));
        Assert.Null(demo.Api.Store.Get("nodes", null, busy));
        Assert.DoesNotContain(Pods(), p => NodeOf(p) == busy);
        foreach (var (app, count) in apps) Assert.Equal(count, ReplicaSetPods(app));
        Assert.False(demo.RemoveNode(busy));
        Assert.Throws<InvalidOperationException>(() => demo.JoinNode("spot-tainted", "mh.vs1.2xlarge-iad", new Dictionary<string, string>(), []));
    }
}
