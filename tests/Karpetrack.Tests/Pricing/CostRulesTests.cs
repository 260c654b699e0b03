using System.Globalization;
using System.Text.RegularExpressions;
using k8s;
using k8s.Models;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Tests.Pricing;

/// <summary>
/// The cost rules (Pricing/CostRules.cs), and the proof that every reader of them agrees: /metrics,
/// GetSummary, ExplainNode and ListNodes give the same price and idle cost for every node, and the same
/// cluster sums, on the demo and on a node whose GPU is full.
/// </summary>
public sealed partial class CostRulesTests
{
    private const string GpuClass = "gpu.vs2.xlargeplusplus-sjc";

    private static NodeView GpuNode(long gpusUsed)
    {
        var m = new ClusterModel(ResourceTable.Default);
        var node = ClusterModelTests.Node("gpu-1", 8000, 32L << 30, labels: new() { [SpotLabels.ServerClass] = GpuClass, [SpotLabels.CapacityType] = "spot" });
        node.Allocatable = [8000, 32L << 30, 1];
        node.Capacity = [8000, 32L << 30, 1];
        m.UpsertNode(node);
        var pod = ClusterModelTests.Pod("trainer", "gpu-1", 2400, 4L << 30);
        pod.Requests = [2400, 4L << 30, gpusUsed];
        m.UpsertPod(pod);
        return m.Snapshot().Nodes.Single();
    }

    private static PriceBook Book() => PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-05-26.json")),
        DateTimeOffset.UnixEpoch, "test");

    [Fact]
    public void ANodeWhoseGpuIsFullIsNotIdle()
    {
        var n = GpuNode(gpusUsed: 1);
        var cost = CostRules.Of(n, Book())!;
        Assert.Equal(0.15m, cost.Price);
        Assert.Equal(ResourceTable.Default.GpuIndex, CostRules.LimitingResource(n));
        Assert.Equal(0m, cost.Idle);
        // The namespace's share is measured on the same resource: it holds the whole node.
        Assert.Equal(new[] { ("default", 0.15m) }, cost.Namespaces);
    }

    [Fact]
    public void WithTheGpuFreeTheMostAllocatedOtherResourceSetsTheIdleShare()
    {
        var n = GpuNode(gpusUsed: 0);
        var cost = CostRules.Of(n, Book())!;
        Assert.Equal(ResourceTable.Cpu, CostRules.LimitingResource(n));   // 30 % of cpu, 12.5 % of memory
        Assert.Equal(0.105m, cost.Idle);
        Assert.Equal(new[] { ("default", 0.045m) }, cost.Namespaces);
    }

    [Fact]
    public void UnpricedNodesAreCountedNeverFree()
    {
        var m = new ClusterModel(ResourceTable.Default);
        m.UpsertNode(ClusterModelTests.Node("mystery", labels: new() { [SpotLabels.ServerClass] = "xx.unknown-iad" }));
        var snap = m.Snapshot();
        Assert.Null(CostRules.Of(snap.Nodes[0], Book()));
        var totals = CostTotals.Of(snap, Book());
        Assert.Equal((0m, 0m, 1), (totals.Cost, totals.Idle, totals.Unpriced));
    }

    [Fact]
    public async Task MetricsSummaryExplainAndNodeMapAgreeOnTheDemo()
    {
        await using var service = await StartDemo();
        var seen = await AgreeingViews(service);
        Assert.True(seen.Nodes.Nodes.Count(n => n.Priced) >= 10, "the demo's nodes are priced");
        Assert.Contains(seen.Nodes.Nodes, n => n.IdleCostPerHour > 0);
    }

    [Fact]
    public async Task MetricsSummaryExplainAndNodeMapAgreeOnANodeWhoseGpuIsFull()
    {
        await using var service = await StartDemo();
        using var kube = new KubeClient(KubeConnection.Resolve(service.DemoKubeconfig, null, KubeEnvironment.Process), TimeSpan.FromSeconds(10));
        await kube.Api.CoreV1.CreateNodeAsync(new V1Node
        {
            Metadata = new V1ObjectMeta { Name = "gpu-node", Labels = new Dictionary<string, string> { [SpotLabels.ServerClass] = GpuClass, [SpotLabels.CapacityType] = "spot" } },
            Status = new V1NodeStatus
            {
                Allocatable = Quantities(("cpu", "20"), ("memory", "60Gi"), ("nvidia.com/gpu", "1"), ("pods", "110")),
                Capacity = Quantities(("cpu", "24"), ("memory", "64Gi"), ("nvidia.com/gpu", "1"), ("pods", "110")),
                Conditions = [new V1NodeCondition { Type = "Ready", Status = "True" }],
            },
        });
        await kube.Api.CoreV1.CreateNamespacedPodAsync(new V1Pod
        {
            Metadata = new V1ObjectMeta { Name = "trainer", NamespaceProperty = "ml" },
            Spec = new V1PodSpec
            {
                NodeName = "gpu-node",
                Containers = [new V1Container { Name = "train", Image = "trainer", Resources = new V1ResourceRequirements { Requests = Quantities(("cpu", "6"), ("memory", "8Gi"), ("nvidia.com/gpu", "1")) } }],
            },
            Status = new V1PodStatus { Phase = "Running" },
        }, "ml");
        await Eventually(() => service.Model.Snapshot().Nodes.FirstOrDefault(n => n.Name == "gpu-node") is { } n && n.Allocated[ResourceTable.Default.GpuIndex] == 1,
            "the GPU pod counted on its node");

        var seen = await AgreeingViews(service);
        var gpu = seen.Nodes.Nodes.Single(n => n.Name == "gpu-node");
        Assert.True(gpu.Priced);
        Assert.Equal(0.15, gpu.PricePerHour);
        // Its CPU is 30 % allocated, its GPU full: nothing of it is idle.
        Assert.Equal(0, gpu.IdleCostPerHour);
    }

    private static Dictionary<string, ResourceQuantity> Quantities(params (string Name, string Value)[] q) =>
        q.ToDictionary(x => x.Name, x => new ResourceQuantity(x.Value));

    private static async Task<Service> StartDemo()
    {
        // The demo holds still (no churn, no market moves), so that every reader sees the same cluster and prices.
        var options = KarpetrackOptions.Parse(["--demo", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-level", "error",
            "--demo-churn-interval", "1h", "--demo-price-interval", "1h"], _ => null);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        var service = await Service.StartAsync(options, cts.Token);
        await Eventually(() => service.Api!.Synced && service.Recommender!.LastRun is not null, "caches synced and a first plan");
        return service;
    }

    private sealed record Views(string Metrics, V1.Summary Summary, V1.ListNodesResponse Nodes, V1.NodeExplanation[] Explained);

    /// <summary>Reads every view of the costs and checks they agree, node by node and in sum.</summary>
    private static async Task<Views> AgreeingViews(Service service)
    {
        using var http = new HttpClient();
        var metricsUrl = new Uri(service.MetricsUrl, "/metrics");
        var api = service.Api!;
        for (int attempt = 0; ; attempt++)
        {
            var before = await http.GetStringAsync(metricsUrl);
            var views = new Views(before, api.GetSummary(), api.ListNodes(new V1.ListNodesRequest()), []);
            views = views with { Explained = views.Nodes.Nodes.Select(n => api.ExplainNode(new V1.ExplainNodeRequest { Node = n.Name })).ToArray() };
            var after = await http.GetStringAsync(metricsUrl);
            // The Spot API's facts may land in the price book between two reads: read again until nothing moved.
            if (CostLines(before) != CostLines(after) && attempt < 20) { await Task.Delay(200); continue; }
            Check(views);
            return views;
        }
    }

    private static void Check(Views v)
    {
        var prices = Samples(v.Metrics, "karpetrack_node_price_dollars_per_hour");
        var idle = Samples(v.Metrics, "karpetrack_node_idle_cost_dollars_per_hour");
        Assert.Equal(v.Summary.Nodes, v.Nodes.Nodes.Count);
        foreach (var (n, e) in v.Nodes.Nodes.Zip(v.Explained))
        {
            Assert.Equal((n.Priced, n.PricePerHour, n.IdleCostPerHour), (e.Priced, e.PricePerHour, e.IdleCostPerHour));
            if (n.Priced)
            {
                Assert.Equal((prices[n.Name], idle[n.Name]), (n.PricePerHour, n.IdleCostPerHour));
            }
            else
            {
                Assert.False(prices.ContainsKey(n.Name), $"{n.Name} is unpriced on ListNodes but has a price on /metrics");
                Assert.False(idle.ContainsKey(n.Name));
            }
        }
        Assert.Equal(v.Nodes.Nodes.Count(n => n.Priced), prices.Count);
        Assert.Equal(Single(v.Metrics, "karpetrack_cluster_cost_dollars_per_hour"), v.Summary.CostPerHour);
        Assert.Equal(Single(v.Metrics, "karpetrack_cluster_idle_cost_dollars_per_hour"), v.Summary.IdleCostPerHour);
        Assert.Equal(Single(v.Metrics, "karpetrack_unpriced_nodes"), v.Summary.UnpricedNodes);
    }

    private static string CostLines(string metrics) =>
        string.Join('\n', metrics.Split('\n').Where(l => l.StartsWith("karpetrack_node_price", StringComparison.Ordinal)
            || l.StartsWith("karpetrack_node_idle", StringComparison.Ordinal) || l.StartsWith("karpetrack_cluster_", StringComparison.Ordinal)
            || l.StartsWith("karpetrack_unpriced", StringComparison.Ordinal)));

    private static Dictionary<string, double> Samples(string metrics, string family) =>
        metrics.Split('\n').Select(l => NodeSample().Match(l)).Where(m => m.Success && m.Groups[1].Value == family)
            .ToDictionary(m => m.Groups[2].Value, m => double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture));

    private static double Single(string metrics, string family) =>
        double.Parse(metrics.Split('\n').Single(l => l.StartsWith(family + " ", StringComparison.Ordinal))[(family.Length + 1)..], CultureInfo.InvariantCulture);

    [GeneratedRegex("""^(karpetrack_node_[a-z_]+)\{node="([^"]*)"\} (\S+)$""")]
    private static partial Regex NodeSample();

    private static async Task Eventually(Func<bool> done, string what)
    {
        // A bound on a wait, never on how long something took: a loaded machine only makes it slower.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (!done())
        {
            if (timeout.IsCancellationRequested) throw new TimeoutException($"timed out waiting for {what}");
            await Task.Delay(50);
        }
    }
}
