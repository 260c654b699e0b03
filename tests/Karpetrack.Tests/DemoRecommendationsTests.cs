using System.Text.Json;
using Karpetrack.Simulation;

namespace Karpetrack.Tests;

/// <summary>The demo cluster produces every recommendation type as its workload churns and the real market moves.</summary>
public class DemoRecommendationsTests
{
    private static T Decode<T>(ReadOnlyMemory<byte> json, IObjectDecoder<T> decoder) where T : class
    {
        var r = new Utf8JsonReader(json.Span, isFinalBlock: true, default);
        r.Read();
        string? error = null;
        decoder.TryDecode(ref r, json.Span, out var value, ref error);
        return value;
    }

    private static (ClusterModel Model, PdbRecord[] Pdbs, DaemonSetRecord[] DaemonSets) Load(ObjectStore store)
    {
        var t = ResourceTable.Default;
        var model = new ClusterModel(t);
        foreach (var n in store.List("nodes").Items) model.UpsertNode(Decode(n.Json, new NodeDecoder(t)));
        foreach (var p in store.List("pods").Items)
        {
            var pod = Decode(p.Json, new PodDecoder(t));
            if (pod.Phase is not (PodPhase.Succeeded or PodPhase.Failed)) model.UpsertPod(pod);
        }
        var pdbs = store.List("poddisruptionbudgets").Items.Select(x => Decode(x.Json, new PdbDecoder())).ToArray();
        var ds = store.List("daemonsets").Items.Select(x => Decode(x.Json, new DaemonSetDecoder(t))).ToArray();
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
