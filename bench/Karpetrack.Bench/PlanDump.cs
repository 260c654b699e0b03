using System.Text;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Bench;

/// <summary>
/// `make bench ARGS="plans FILE"`: every plan of the recommender on the benchmark instances (the provisioning mixes,
/// the synthetic cluster, the provisioning family) and on the demo cluster at several seeds and steps, with what-if
/// answers there, written as text. A refactoring of the recommender records this before and compares it after:
/// the two files must be equal byte for byte.
/// </summary>
internal static class PlanDump
{
    public static async Task RunAsync(string path, int nodes, int pods)
    {
        using var output = new StreamWriter(path, append: false, new UTF8Encoding(false));
        var sb = new StringBuilder();
        void Flush() { output.Write(sb); sb.Clear(); }
        var book = RecommenderBench.Book();
        var iad = new RecommenderOptions { Region = "us-east-iad-1" };

        foreach (var n in new[] { 10_000, 100_000 })
        {
            var model = RecommenderBench.PendingMix(n);
            PlanText.Append(sb, $"provisioning mix {n}", Recommender.Recommend(model.Snapshot(), model.Pods(), [], [], book, iad));
            Flush();
        }

        foreach (var model in PackingFamily.PriceModels())
            foreach (var workload in PackingFamily.Workloads)
            {
                if (workload == "gpu" && !model.HasGpu) continue;
                foreach (int n in PackingFamily.Sizes)
                {
                    var cluster = PackingFamily.Cluster(workload, n, seed: n + Array.IndexOf(PackingFamily.Workloads, workload));
                    PlanText.Append(sb, $"family {model.Name} {workload} {n}", Recommender.Recommend(cluster.Snapshot(), cluster.Pods(), [], [], model.Book, model.Options));
                    Flush();
                }
            }
        Console.WriteLine("plans: benchmark instances written");

        foreach (int seed in new[] { 42, 1, 7 })
        {
            await using var demo = await DemoCluster.StartAsync(new DemoClusterOptions { Seed = seed, Churn = false });
            var snapshots = FeedServer.EmbeddedSnapshots();
            for (int step = 0; step < 12; step++)
            {
                var prices = PriceFeedParser.Parse(snapshots[step % snapshots.Count].Body, DateTimeOffset.UnixEpoch, "demo");
                var model = DemoModel(demo.Api.Store);
                var snap = model.Snapshot();
                var (pdbs, daemonSets) = (model.Pdbs.All(), model.DaemonSets.All());
                PlanText.Append(sb, $"demo seed {seed} step {step}", Recommender.Recommend(snap, model.Pods(), pdbs, daemonSets, prices, new RecommenderOptions()));
                // Two pools being provisioned (one of a class that may be offered, one of a class that is not).
                InFlightNode[] inFlight = [new("pool-a", "gp.vs1.xlarge-iad"), new("pool-b", "mh.vs1.2xlarge-iad"), new("pool-c", "no.such-class")];
                PlanText.Append(sb, $"demo seed {seed} step {step} in-flight", Recommender.Recommend(snap, model.Pods(), pdbs, daemonSets, prices, iad, inFlight));
                PlanText.Append(sb, $"demo seed {seed} step {step} gp only", Recommender.Recommend(snap, model.Pods(), pdbs, daemonSets, prices,
                    new RecommenderOptions { Categories = ["gp"], ReplaceThresholdPercent = 5, MultiNodeCandidates = 4 }));
                WhatIfs(sb, $"demo seed {seed} step {step}", model, prices);
                Flush();
                for (int k = 0; k < 3; k++) demo.Step();
            }
        }
        Console.WriteLine("plans: demo written");

        var data = SyntheticData.Build(nodes, pods);
        var big = RecommenderBench.Load(data);
        data = null;
        PlanText.Append(sb, $"synthetic {nodes} nodes {pods} pods", Recommender.Recommend(big.Snapshot(), big.Pods(), [], [], book, iad));
        Flush();
        Console.WriteLine($"wrote {path}");
    }

    private static ClusterModel DemoModel(ObjectStore store)
    {
        var t = ResourceTable.Default;
        var model = new ClusterModel(t);
        foreach (var n in store.List("nodes").Items) model.UpsertNode(new NodeDecoder(t).DecodeComplete(n.Json.Span, out _));
        foreach (var p in store.List("pods").Items)
            if (new PodDecoder(t).DecodeComplete(p.Json.Span, out _) is { Phase: not (PodPhase.Succeeded or PodPhase.Failed) } pod) model.UpsertPod(pod);
        foreach (var x in store.List("poddisruptionbudgets").Items) model.Pdbs.Upsert(new PdbDecoder().DecodeComplete(x.Json.Span, out _));
        foreach (var x in store.List("daemonsets").Items) model.DaemonSets.Upsert(new DaemonSetDecoder(t).DecodeComplete(x.Json.Span, out _));
        return model;
    }

    /// <summary>What-if answers on the demo: removals, replacements (roomy and too small), added pods, a category and a region.</summary>
    private static void WhatIfs(StringBuilder sb, string instance, ClusterModel model, PriceBook prices)
    {
        var status = new ReflectorStatus("nodes");
        status.MarkSynced(null, DateTimeOffset.UnixEpoch);
        using var feed = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: prices);
        var options = new RecommenderOptions();
        var loop = new RecommenderLoop(new(model, feed, [status]), new(() => options, TimeSpan.Zero), NullLogger.Instance);
        var api = new KarpetrackApi(model, feed, loop, [status], () => options);
        var names = model.Snapshot().Nodes.Select(n => n.Name).Order(StringComparer.Ordinal).ToArray();
        var requests = new List<V1.SimulateRequest>
        {
            new() { RemoveNodes = { names[0], names[1] } },
            new() { ReplaceNodes = { new V1.NodeReplacement { Node = names[2], ServerClass = "gp.vs1.medium-iad" } }, RemoveNodes = { names[3] } },
            new() { ReplaceNodes = { new V1.NodeReplacement { Node = names[4], ServerClass = "mh.vs1.2xlarge-iad" } } },
            new()
            {
                AddPods =
                {
                    new V1.SimulatedPod { Name = "web", Cpu = "1500m", Memory = "3Gi", Labels = { ["app"] = "web" } },
                    new V1.SimulatedPod { Name = "big", Cpu = "12", Memory = "40Gi", Namespace = "batch" },
                    new V1.SimulatedPod { Name = "pinned", Cpu = "500m", Memory = "1Gi", NodeSelector = { ["karpetrack.io/category"] = "mh" } },
                    new V1.SimulatedPod { Name = "huge", Cpu = "512", Memory = "4Ti" },
                },
            },
            new() { RemoveNodes = { names[5] }, Categories = { "ch" }, AddPods = { new V1.SimulatedPod { Name = "x", Cpu = "3", Memory = "2Gi" } } },
            new() { AddPods = { new V1.SimulatedPod { Name = "y", Cpu = "2", Memory = "2Gi" } }, Region = "us-central-dfw-1" },
            new(),
        };
        // More than the free room holds, so that new nodes are bought (in the cluster's region and in another).
        var many = new V1.SimulateRequest { RemoveNodes = { names[6] } };
        for (int i = 0; i < 40; i++) many.AddPods.Add(new V1.SimulatedPod { Name = $"wave-{i}", Cpu = $"{500 + 250 * (i % 7)}m", Memory = $"{1 + i % 5}Gi" });
        requests.Add(many);
        requests.Add(new V1.SimulateRequest(many) { Region = "us-central-dfw-1", RemoveNodes = { } });
        foreach (var (request, i) in requests.Select((r, i) => (r, i)))
        {
            var r = api.Simulate(request);
            sb.Append($"== {instance} what-if {i}\n{Google.Protobuf.JsonFormatter.Default.Format(r)}\n");
        }
    }
}
