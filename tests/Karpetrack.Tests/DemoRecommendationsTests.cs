using System.Text.Json;
using Karpetrack.Simulation;

namespace Karpetrack.Tests;

/// <summary>The demo cluster produces every recommendation type as its workload churns and the real market moves.</summary>
public class DemoRecommendationsTests
{

    private static (ClusterModel Model, PdbRecord[] Pdbs, DaemonSetRecord[] DaemonSets) Load(ObjectStore store)
    {
        var t = ResourceTable.Default;
        var model = new ClusterModel(t);
        foreach (var n in store.List("nodes").Items) model.UpsertNode(new NodeDecoder(t).DecodeComplete(n.Json.Span, out _));
        foreach (var p in store.List("pods").Items)
        {
            var pod = new PodDecoder(t).DecodeComplete(p.Json.Span, out _);
            if (pod.Phase is not (PodPhase.Succeeded or PodPhase.Failed)) model.UpsertPod(pod);
        }
        var pdbs = store.List("poddisruptionbudgets").Items.Select(x => new PdbDecoder().DecodeComplete(x.Json.Span, out _)).ToArray();
        var ds = store.List("daemonsets").Items.Select(x => new DaemonSetDecoder(t).DecodeComplete(x.Json.Span, out _)).ToArray();
        return (model, pdbs, ds);
    }

    [Fact]
    public async Task EveryTypeAppearsAsTheDemoRuns()
    {
        await using var demo = await DemoCluster.StartAsync(new DemoClusterOptions { Churn = false });
        var seen = new Dictionary<RecommendationType, int>();
        var snapshots = FeedServer.EmbeddedSnapshots();
        for (int step = 0; step < snapshots.Count * 2; step++)
        {
            var book = PriceFeedParser.Parse(snapshots[step % snapshots.Count].Body, DateTimeOffset.UnixEpoch, "demo");
            var (model, pdbs, ds) = Load(demo.Api.Store);
            var plan = Recommender.Recommend(model.Snapshot(), model.Pods(), pdbs, ds, book, new RecommenderOptions());
            foreach (var r in plan.Recommendations) seen[r.Type] = seen.GetValueOrDefault(r.Type) + 1;
            Assert.Contains(plan.Blockers, b => b.Value.Any(x => x.Reason == BlockerReasons.PdbNoDisruptions));
            for (int k = 0; k < 3; k++) demo.Step();
        }
        foreach (var type in Enum.GetValues<RecommendationType>())
            Assert.True(seen.ContainsKey(type), $"the demo never produced {type}: {string.Join(", ", seen.Select(kv => $"{kv.Key}={kv.Value}"))}");
    }
}
