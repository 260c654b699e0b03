using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests;

public class CollectorTests
{
    internal static (int ExitCode, string Output) Promtool(byte[] exposition)
    {
        var psi = new ProcessStartInfo("promtool", "check metrics")
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        p.StandardInput.BaseStream.Write(exposition);
        p.StandardInput.Close();
        var output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output);
    }

    private static ClusterModel SampleModel(ResourceTable? table = null)
    {
        var m = new ClusterModel(table ?? ResourceTable.Default);
        m.UpsertNode(ClusterModelTests.Node("node-a", labels: new() { ["pool"] = "p1", ["zone"] = "z1", [SpotLabels.ServerClass] = "gp.vs1.large-iad", [SpotLabels.CapacityType] = "spot" }));
        m.UpsertNode(ClusterModelTests.Node("node-b", 2000, 4L << 30, cordoned: true, labels: new() { ["pool"] = "p1", ["weird"] = "a\"b\\c" }));
        m.UpsertNode(ClusterModelTests.Node("node-c", ready: false, labels: new() { ["pool"] = "p2" }));
        m.UpsertPod(ClusterModelTests.Pod("web-1", "node-a", 1250, 1L << 30));
        m.UpsertPod(ClusterModelTests.Pod("ds-a", "node-a", 100, 64L << 20, owner: OwnerKind.DaemonSet));
        m.UpsertPod(ClusterModelTests.Pod("web-2", "node-b", 500, 512L << 20));
        m.UpsertPod(ClusterModelTests.Pod("pending", null, 3000, 2L << 30, PodPhase.Pending, unschedulable: true));
        return m;
    }

    private static string Render(ClusterModel m, IReadOnlyList<IReadOnlyList<string>>? groups = null) =>
        Encoding.UTF8.GetString(new Collector(m, groups ?? []).RenderToArray());

    /// <summary>The whole exposition, as /metrics writes it: the cluster families, then the telemetry.</summary>
    internal static string Scrape(Collector collector)
    {
        using var buffer = new MemoryStream();
        collector.WriteAsync(buffer, CancellationToken.None).GetAwaiter().GetResult();
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    [Fact]
    public void ExpositionPassesPromtool()
    {
        var telemetry = Telemetry.ForService();
        var status = new ReflectorStatus("pods", telemetry);
        _ = new ReflectorStatus("nodes", telemetry);
        status.MarkSynced("5", DateTimeOffset.UtcNow);
        status.Restarted("expired");
        var text = Scrape(new Collector(SampleModel(), [["pool"], ["pool", "zone"], ["weird"]], telemetry: telemetry));
        var (code, output) = Promtool(Encoding.UTF8.GetBytes(text));
        Assert.True(code == 0, output + "\n" + text);
        Assert.Contains("karpetrack_watch_restarts_total{resource=\"pods\",reason=\"expired\"} 1\n", text);
        Assert.Contains("karpetrack_watch_restarts_total{resource=\"nodes\",reason=\"expired\"} 0\n", text);
        Assert.Contains($"karpetrack_build_info{{version=\"{BuildInfo.Version}\"}} 1\n", text);
    }

    [Fact]
    public void NodeClusterAndGroupValuesAreExact()
    {
        var text = Render(SampleModel(), [["pool"]]);
        Assert.Contains("karpetrack_node_allocated{node=\"node-a\",resource=\"cpu\"} 1.35\n", text);
        Assert.Contains("karpetrack_node_allocated{node=\"node-a\",resource=\"memory\"} 1140850688\n", text);
        Assert.Contains("karpetrack_node_daemonset_overhead{node=\"node-a\",resource=\"cpu\"} 0.1\n", text);
        Assert.Contains("karpetrack_node_allocatable{node=\"node-b\",resource=\"cpu\"} 2\n", text);
        Assert.Contains("karpetrack_node_utilization_ratio{node=\"node-b\",resource=\"cpu\"} 0.25\n", text);
        Assert.Contains("karpetrack_node_pods{node=\"node-a\"} 2\n", text);
        Assert.Contains("karpetrack_node_info{node=\"node-a\",server_class=\"gp.vs1.large-iad\",pool=\"\",capacity_type=\"spot\",region=\"us-east-iad-1\",schedulable=\"true\",ready=\"true\"} 1\n", text);
        Assert.Contains("karpetrack_node_info{node=\"node-b\",server_class=\"\",pool=\"\",capacity_type=\"\",region=\"\",schedulable=\"false\",ready=\"true\"} 1\n", text);
        Assert.Contains("karpetrack_cluster_allocated{resource=\"cpu\"} 1.85\n", text);
        Assert.Contains("karpetrack_cluster_allocatable{resource=\"cpu\"} 10\n", text);
        Assert.Contains("karpetrack_cluster_utilization_ratio{resource=\"cpu\"} 0.185\n", text);
        Assert.Contains("karpetrack_cluster_nodes{state=\"ready\"} 1\n", text);
        Assert.Contains("karpetrack_cluster_nodes{state=\"cordoned\"} 1\n", text);
        Assert.Contains("karpetrack_cluster_nodes{state=\"not_ready\"} 1\n", text);
        Assert.Contains("karpetrack_group_allocated{label_group=\"pool\",label_group_value=\"p1\",resource=\"cpu\"} 1.85\n", text);
        Assert.Contains("karpetrack_group_allocatable{label_group=\"pool\",label_group_value=\"p1\",resource=\"cpu\"} 6\n", text);
        Assert.Contains("karpetrack_group_nodes{label_group=\"pool\",label_group_value=\"p2\"} 1\n", text);
        Assert.Contains("karpetrack_pending_pods 1\n", text);
        Assert.Contains("karpetrack_pending_requests{resource=\"cpu\"} 3\n", text);
        Assert.DoesNotContain("nvidia.com/gpu", text);    // tracked for the recommender, not exported unless listed
    }

    [Fact]
    public void EveryNodeHasExactlyOneSeriesPerResource()
    {
        var text = Render(SampleModel(new ResourceTable(["cpu", "memory", "nvidia.com/gpu"])));
        foreach (var node in new[] { "node-a", "node-b", "node-c" })
            foreach (var r in new[] { "cpu", "memory", "nvidia.com/gpu" })
                Assert.Single(text.Split('\n'), l => l.StartsWith($"karpetrack_node_allocated{{node=\"{node}\",resource=\"{r}\"}}"));
    }

    [Fact]
    public void MissingGroupLabelsAndEscapesAreRendered()
    {
        var text = Render(SampleModel(), [["pool", "zone"], ["weird"]]);
        Assert.Contains("label_group=\"pool,zone\",label_group_value=\"p1,<none>\"", text);
        Assert.Contains("label_group_value=\"a\\\"b\\\\c\"", text);
    }

    [Fact]
    public void CacheAgeCountsFromTheLastEventNotFromStart()
    {
        var clock = new ManualClock(DateTimeOffset.Parse("2026-11-21T10:00:00Z"));
        var telemetry = new Telemetry();
        var status = new ReflectorStatus("pods", telemetry, clock);
        var collector = new Collector(SampleModel(), [], telemetry: telemetry);
        var text = Scrape(collector);
        Assert.DoesNotContain("karpetrack_cache_age_seconds{", text);    // nothing received yet
        Assert.Contains("karpetrack_cache_synced{resource=\"pods\"} 0", text);
        status.MarkSynced("1", clock.GetUtcNow());
        clock.Advance(TimeSpan.FromSeconds(42));
        status.Received("2", clock.GetUtcNow());
        clock.Advance(TimeSpan.FromSeconds(3));
        text = Scrape(collector);
        Assert.Contains("karpetrack_cache_age_seconds{resource=\"pods\"} 3\n", text);
    }

    [Fact]
    public void CachedNodeBlocksFollowChanges()
    {
        var m = SampleModel();
        var collector = new Collector(m, []);
        var first = Encoding.UTF8.GetString(collector.RenderToArray());
        Assert.Contains("karpetrack_node_pods{node=\"node-b\"} 1\n", first);
        m.UpsertPod(ClusterModelTests.Pod("web-3", "node-b", 100, 0));
        var second = Encoding.UTF8.GetString(collector.RenderToArray());
        Assert.Contains("karpetrack_node_pods{node=\"node-b\"} 2\n", second);
        Assert.Contains("karpetrack_node_pods{node=\"node-a\"} 2\n", second);
        m.DeleteNode("node-c");
        var third = Encoding.UTF8.GetString(collector.RenderToArray());
        Assert.DoesNotContain("node-c", third);
        // A node arriving in the middle shifts every later node's position in the cached chunks.
        m.UpsertNode(ClusterModelTests.Node("node-aa"));
        m.UpsertPod(ClusterModelTests.Pod("web-4", "node-aa", 300, 0));
        var fourth = Encoding.UTF8.GetString(collector.RenderToArray());
        Assert.Contains("karpetrack_node_pods{node=\"node-aa\"} 1\n", fourth);
        Assert.Contains("karpetrack_node_pods{node=\"node-b\"} 2\n", fourth);
        Assert.Contains("karpetrack_cluster_allocated{resource=\"cpu\"} 2.25\n", fourth);
        Assert.Equal(fourth, Encoding.UTF8.GetString(new Collector(m, []).RenderToArray()));
    }

    [Fact]
    public void CachedChunksMatchAFreshRenderThroughRandomChurnAcrossManyChunks()
    {
        // 300 nodes span five chunks of 64; nodes come and go in the middle (shifting the rest),
        // pods land and leave, and each scrape must equal what a collector without a cache renders.
        var rng = new Random(7);
        var m = new ClusterModel(ResourceTable.Default);
        var names = new List<string>();
        for (int i = 0; i < 300; i++) { names.Add($"node-{i:D4}"); m.UpsertNode(ClusterModelTests.Node(names[^1])); }
        var collector = new Collector(m, [["servers.ngpc.rxt.io/class"]]);
        int pods = 0, next = 300;
        for (int step = 0; step < 60; step++)
        {
            for (int k = rng.Next(1, 6); k > 0; k--)
            {
                switch (rng.Next(4))
                {
                    case 0:
                        var added = $"node-{rng.Next(0, next++):D4}x";   // sorts between existing names
                        m.UpsertNode(ClusterModelTests.Node(added));
                        if (!names.Contains(added)) names.Add(added);   // then takes pods and may leave
                        break;
                    case 1 when names.Count > 10:
                        int at = rng.Next(names.Count);
                        m.DeleteNode(names[at]);
                        names.RemoveAt(at);
                        break;
                    default:
                        m.UpsertPod(ClusterModelTests.Pod($"p{pods++}", names[rng.Next(names.Count)], rng.Next(10, 500), rng.Next(1, 64) << 20));
                        break;
                }
            }
            var cached = collector.RenderToArray();
            Assert.Equal(Encoding.UTF8.GetString(new Collector(m, [["servers.ngpc.rxt.io/class"]]).RenderToArray()), Encoding.UTF8.GetString(cached));
        }
    }

    [Fact]
    public void CachedChunksMatchAFreshRenderThroughNodeUpdatesDeletesAndReAddsWithinChunks()
    {
        // Priced nodes (price and idle-cost lines, cost sums) whose node objects change in place (allocatable, labels,
        // readiness), leave and come back under the same name within a chunk, beside pod churn: every scrape must
        // equal a collector without a cache, and the cache must still hold each node's lines once.
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance);
        var rng = new Random(5);
        var m = new ClusterModel(ResourceTable.Default);
        string[] classes = ["gp.vs1.large-iad", "gp.vs1.medium-iad", "unknown-class"];
        NodeRecord NodeOf(string name) => ClusterModelTests.Node(name, rng.Next(2, 16) * 1000, (long)rng.Next(4, 64) << 30, ready: rng.Next(8) > 0,
            cordoned: rng.Next(8) == 0, labels: new() { [SpotLabels.ServerClass] = classes[rng.Next(classes.Length)], [SpotLabels.CapacityType] = rng.Next(4) == 0 ? "on-demand" : "spot", ["pool"] = $"p{rng.Next(3)}" });
        var names = Enumerable.Range(0, 200).Select(i => $"node-{i:D4}").ToList();
        foreach (var n in names) m.UpsertNode(NodeOf(n));
        var gone = new List<string>();
        var collector = new Collector(m, [["pool"]], prices);
        int pods = 0;
        for (int step = 0; step < 80; step++)
        {
            for (int k = rng.Next(1, 6); k > 0; k--)
            {
                switch (rng.Next(5))
                {
                    case 0:
                        m.UpsertNode(NodeOf(names[rng.Next(names.Count)]));   // the same node, changed
                        break;
                    case 1 when names.Count > 20:
                        int at = rng.Next(names.Count);
                        m.DeleteNode(names[at]);
                        gone.Add(names[at]);
                        names.RemoveAt(at);
                        break;
                    case 2 when gone.Count > 0:
                        int back = rng.Next(gone.Count);
                        m.UpsertNode(NodeOf(gone[back]));                     // back where it was, between its old neighbours
                        names.Add(gone[back]);
                        gone.RemoveAt(back);
                        break;
                    default:
                        var pod = ClusterModelTests.Pod($"p{pods++}", names[rng.Next(names.Count)], rng.Next(10, 900), rng.Next(1, 256) << 20);
                        pod.Namespace = $"ns{rng.Next(4)}";
                        m.UpsertPod(pod);
                        break;
                }
            }
            var cached = Encoding.UTF8.GetString(collector.RenderToArray());
            Assert.Equal(Encoding.UTF8.GetString(new Collector(m, [["pool"]], prices).RenderToArray()), cached);
            long nodeLines = 0;
            foreach (var line in cached.Split('\n'))
                if (line.StartsWith("karpetrack_node_", StringComparison.Ordinal) && line.Contains("node=\"", StringComparison.Ordinal)) nodeLines += line.Length + 1;
            Assert.Equal(nodeLines, collector.CachedLineBytes());
        }
        Assert.Contains("karpetrack_node_price_dollars_per_hour{node=", Encoding.UTF8.GetString(collector.RenderToArray()));
    }

    [Fact]
    public void TheCacheHoldsEachNodesLinesOnceThroughChurn()
    {
        // The per-node lines and the chunks' concatenated blocks are the same bytes: the cache must hold them once,
        // also after nodes changed, came and went (the fresh lines of a changed node become slices of its new chunk).
        var m = new ClusterModel(ResourceTable.Default);
        for (int i = 0; i < 300; i++) m.UpsertNode(ClusterModelTests.Node($"node-{i:D4}"));
        var collector = new Collector(m, []);
        void Check()
        {
            collector.RenderToArray();
            long nodeLines = 0;
            var text = Encoding.UTF8.GetString(collector.RenderToArray());
            foreach (var line in text.Split('\n'))
                if (line.StartsWith("karpetrack_node_", StringComparison.Ordinal) && line.Contains("node=\"", StringComparison.Ordinal)) nodeLines += line.Length + 1;
            Assert.True(nodeLines > 100_000, $"only {nodeLines} bytes of node lines");
            Assert.Equal(nodeLines, collector.CachedLineBytes());
        }
        Check();
        for (int i = 0; i < 40; i++) m.UpsertPod(ClusterModelTests.Pod($"p{i}", $"node-{i * 7:D4}", 100, 1 << 20));
        Check();
        m.DeleteNode("node-0100");
        m.UpsertNode(ClusterModelTests.Node("node-0050x"));
        Check();
    }

    /// <summary>A synced pods cache, the sample model and a recommender loop over them (not started).</summary>
    private static (ReflectorStatus Status, ClusterModel Model, RecommenderLoop Loop) WithRecommender(PriceFeed prices)
    {
        var status = new ReflectorStatus("pods");
        status.MarkSynced("1", DateTimeOffset.UtcNow);
        var model = SampleModel();
        var loop = new RecommenderLoop(new(model, prices, [status]), new(() => new RecommenderOptions(), TimeSpan.FromSeconds(30)),
            Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        return (status, model, loop);
    }

    [Fact]
    public void EachScrapeShowsThePlanPublishedLast()
    {
        using var prices = new PriceFeed(new PriceFeedOptions(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var (status, model, loop) = WithRecommender(prices);
        var collector = new Collector(model, [], prices, loop);
        static Plan Blocking(string node, string reason) =>
            new([], new Dictionary<string, IReadOnlyList<Blocker>> { [node] = [new Blocker(reason, [], [])] }, [], 0, 0, "");

        loop.Publish(Blocking("node-a", BlockerReasons.NotCheaper));
        var first = Encoding.UTF8.GetString(collector.RenderToArray());
        Assert.Contains($"karpetrack_node_disruption_blocked{{node=\"node-a\",reason=\"{BlockerReasons.NotCheaper}\"}} 1\n", first);
        static string[] Blocked(string text) => text.Split('\n').Where(l => l.StartsWith("karpetrack_node_disruption_blocked", StringComparison.Ordinal)).ToArray();
        Assert.Equal(Blocked(first), Blocked(Encoding.UTF8.GetString(collector.RenderToArray())));   // the same plan renders the same

        loop.Publish(Blocking("node-b", BlockerReasons.PodsDoNotFit));
        var second = Encoding.UTF8.GetString(collector.RenderToArray());
        Assert.DoesNotContain("node=\"node-a\",reason=", second);
        Assert.Contains($"karpetrack_node_disruption_blocked{{node=\"node-b\",reason=\"{BlockerReasons.PodsDoNotFit}\"}} 1\n", second);
        var (code, output) = Promtool(Encoding.UTF8.GetBytes(second));
        Assert.True(code == 0, output);
    }

    [Fact]
    public void ThePlansSeriesAreAbsentUntilTheFirstPlan()
    {
        using var prices = new PriceFeed(new PriceFeedOptions(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var (_, model, loop) = WithRecommender(prices);
        var collector = new Collector(model, [], prices, loop);
        MetricFamily[] planFamilies =
        [
            Families.Recommendations, Families.RecommendationSavings, Families.ProvisioningCost, Families.ProvisioningLowerBound,
            Families.ClusterCostAfterRecommendations, Families.ClusterCostLowerBound, Families.ClusterCostLowerBoundExcludedPods,
        ];
        var before = Encoding.UTF8.GetString(collector.RenderToArray());
        foreach (var f in planFamilies) Assert.DoesNotContain(f.Name, before);
        Assert.Contains("karpetrack_cluster_cost_dollars_per_hour ", before);   // today's cost needs no plan

        loop.RunOnce();
        var after = Encoding.UTF8.GetString(collector.RenderToArray());
        foreach (var f in planFamilies) Assert.Contains($"# TYPE {f.Name} gauge\n", after);
        var plan = loop.Current;
        Assert.Contains($"karpetrack_cluster_cost_lower_bound_dollars_per_hour {((double)plan.Costs!.LowerBoundPerHour).ToString("R", System.Globalization.CultureInfo.InvariantCulture)}\n", after);
        Assert.Contains($"karpetrack_recommendations{{type=\"provision\"}} ", after);
        var (code, output) = Promtool(Encoding.UTF8.GetBytes(after));
        Assert.True(code == 0, output);
    }

    [Fact]
    public async Task EveryDeclaredFamilyIsRendered()
    {
        var telemetry = Telemetry.ForService();
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, telemetry: telemetry);
        var status = new ReflectorStatus("pods", telemetry);
        status.MarkSynced("1", DateTimeOffset.UtcNow);
        var model = SampleModel();
        var actuator = new Actuator(new ActuationOptions { Mode = ActuationMode.DryRun }, model, prices, [status], NullLogger.Instance, telemetry: telemetry);
        var loop = new RecommenderLoop(new(model, prices, [status]) { InFlight = actuator.InFlight }, new(() => new RecommenderOptions(), TimeSpan.FromSeconds(30)),
            NullLogger.Instance, telemetry: telemetry);
        loop.RunOnce();
        _ = new GrpcCalls(new GrpcServerOptions(), telemetry);
        using var spot = new SpotApiClient(new SpotApiOptions(), "unused", NullLogger.Instance, telemetry: telemetry);
        var supervisor = new Supervisor(NullLogger.Instance, telemetry: telemetry);
        using var stop = new CancellationTokenSource();
        var done = supervisor.Run("idle", ct => Task.Delay(Timeout.Infinite, ct), stop.Token);

        var text = Scrape(new Collector(model, [["pool"]], prices, loop, telemetry));
        Assert.Contains("karpetrack_leader 1\n", text);
        Assert.Contains("karpetrack_spot_api_circuit_open 0\n", text);
        Assert.Contains("karpetrack_actuation_mode{mode=\"dry-run\"} 1\n", text);
        Assert.Contains("karpetrack_loop_failing{loop=\"idle\"} 0\n", text);
        Assert.Contains("karpetrack_loop_restarts_total{loop=\"idle\"} 0\n", text);
        Assert.Contains("karpetrack_recommender_duration_seconds_count 1\n", text);
        var (code, output) = Promtool(Encoding.UTF8.GetBytes(text));
        Assert.True(code == 0, output);
        foreach (var f in Families.All.Concat(telemetry.Families)) Assert.Contains($"# TYPE {f.Name} {f.TypeName}\n", text);
        // The cluster families first, the telemetry after them: one source each, no name in both.
        Assert.Empty(Families.All.Select(f => f.Name).Intersect(telemetry.Families.Select(f => f.Name)));
        Assert.True(text.IndexOf("# TYPE karpetrack_node_disruption_blocked ", StringComparison.Ordinal) < text.IndexOf("# TYPE karpetrack_build_info ", StringComparison.Ordinal));
        await stop.CancelAsync();
        await done;
    }

    [Fact]
    public async Task ALoopThatThrowsIsCountedAndShownFailingUntilTheWindowPasses()
    {
        var clock = new ManualClock(DateTimeOffset.Parse("2026-11-21T10:00:00Z"));
        var telemetry = new Telemetry();
        var supervisor = new Supervisor(NullLogger.Instance, clock, telemetry);
        var collector = new Collector(new ClusterModel(ResourceTable.Default), [], telemetry: telemetry);
        using var stop = new CancellationTokenSource();
        int runs = 0;
        var done = supervisor.Run("flaky", ct => ++runs == 1 ? throw new InvalidOperationException("bad input") : Task.Delay(Timeout.Infinite, ct), stop.Token);
        for (int i = 0; i < 500 && supervisor.Health().Single().Restarts == 0; i++) await Task.Delay(10);
        var text = Scrape(collector);
        Assert.Contains("karpetrack_loop_restarts_total{loop=\"flaky\"} 1\n", text);
        Assert.Contains("karpetrack_loop_failing{loop=\"flaky\"} 1\n", text);
        clock.Advance(Supervisor.FailingWindow);
        Assert.Contains("karpetrack_loop_failing{loop=\"flaky\"} 0\n", Scrape(collector));
        await stop.CancelAsync();
        await done;
    }
}
