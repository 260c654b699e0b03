using System.Buffers;
using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Bench;

/// <summary>
/// `Karpetrack.Bench cache [--rounds N] [--hold]`: a print-only probe of what the model and the collector's per-node
/// cache retain over the 5,000-node synthetic cluster, and what scrapes and model updates cost, for comparing two
/// builds back to back (nothing is written to BENCHMARKS.md). Retained sizes are GC.GetTotalMemory after full
/// collections, before and after each part is built; scrape times render into a reused buffer (as the exporter
/// bench does), with the embedded price book, so the price and idle-cost lines and the cost sums are cached too.
/// --hold waits for a line on stdin at the end, with everything alive, for a heap dump (dotnet-gcdump).
/// </summary>
internal static class CacheProbe
{
    public static void Run(string[] args, int nodes, int pods)
    {
        int rounds = Arg(args, "--rounds", 3);
        bool hold = args.Contains("--hold");
        Console.WriteLine($"cache: load {Load()}");
        var data = SyntheticData.Build(nodes, pods);
        var table = ResourceTable.Default;
        var podDecoder = new PodDecoder(table);
        var records = new PodRecord[Math.Min(20_000, data.Pods.Length)];
        for (int i = 0; i < records.Length; i++) records[i] = podDecoder.DecodeComplete(data.Pods[i], out _);
        var nodeDecoder = new NodeDecoder(table);
        var nodeRecords = data.Nodes.Select(n => nodeDecoder.DecodeComplete(n, out _)).ToArray();
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance);
        var book = prices.Current;

        var sink = new ArrayBufferWriter<byte>(8 << 20);
        long m0 = Settle();
        var model = new ClusterModel(table);
        foreach (var n in data.Nodes) model.UpsertNode(nodeDecoder.DecodeComplete(n, out _));
        foreach (var p in data.Pods) model.UpsertPod(podDecoder.DecodeComplete(p, out _));
        model.Snapshot();
        long m1 = Settle();
        var collector = new Collector(model, [], prices);
        long a0 = GC.GetAllocatedBytesForCurrentThread();
        collector.Render(sink);
        long firstAlloc = GC.GetAllocatedBytesForCurrentThread() - a0;
        long m2 = Settle();
        long body = sink.WrittenCount;
        Console.WriteLine($"retained: model {(m1 - m0) / 1e6:F2} MB ({nodes} nodes, {pods} pods); collector after the first scrape {(m2 - m1) / 1e6:F2} MB " +
                          $"({(m2 - m1) / nodes} B/node; lines {collector.CachedLineBytes() / 1e6:F2} MB; body {body / 1e6:F2} MB); first scrape allocated {firstAlloc / 1e6:F1} MB");

        var rng = new Random(3);
        for (int round = 0; round < rounds; round++)
        {
            var steady = Time(300, () => { sink.ResetWrittenCount(); collector.Render(sink); }, out long steadyAlloc);
            var churn = Time(300, () =>
            {
                for (int k = 0; k < 20; k++) model.UpsertPod(records[rng.Next(records.Length)]);
                sink.ResetWrittenCount();
                collector.Render(sink);
            }, out long churnAlloc);
            // A node object changes (as a status heartbeat that alters a label would): its view and its chunk are rebuilt.
            var nodeChurn = Time(300, () =>
            {
                for (int k = 0; k < 5; k++) model.UpsertNode(nodeRecords[rng.Next(nodeRecords.Length)]);
                sink.ResetWrittenCount();
                collector.Render(sink);
            }, out long nodeAlloc);
            // Every node rendered afresh: what a new price book costs the next scrape.
            var cold = Time(10, () => { sink.ResetWrittenCount(); new Collector(model, [], prices).Render(sink); }, out long coldAlloc);
            // Best of three passes, and the gen2 collections during all three: a full collection of the ~900 MB heap
            // (the synthetic JSON is alive) landing in a 20 ms pass would otherwise decide the figure.
            double apply = 0;
            var passes = new List<string>();
            int gen2 = GC.CollectionCount(2);
            for (int pass = 0; pass < 3; pass++)
            {
                int g0 = GC.CollectionCount(0), g1 = GC.CollectionCount(1);
                var sw = Stopwatch.StartNew();
                foreach (var r in records) model.UpsertPod(r);
                double rate = records.Length / sw.Elapsed.TotalSeconds;
                apply = Math.Max(apply, rate);
                passes.Add($"{rate / 1e6:F2} ({GC.CollectionCount(0) - g0}/{GC.CollectionCount(1) - g1})");
            }
            gen2 = GC.CollectionCount(2) - gen2;
            long m3 = Settle();
            Console.WriteLine($"round {round}: scrape p50/p99 {steady.P50:F2}/{steady.P99:F2} ms ({steadyAlloc / 1e3:F0} KB); " +
                              $"+20 pod events {churn.P50:F2}/{churn.P99:F2} ms ({churnAlloc / 1e3:F0} KB); " +
                              $"+5 node updates {nodeChurn.P50:F2}/{nodeChurn.P99:F2} ms ({nodeAlloc / 1e3:F0} KB); " +
                              $"cold {cold.P50:F1}/{cold.P99:F1} ms ({coldAlloc / 1e6:F1} MB); model updates {apply / 1e6:F2}M/s (best of 3: {string.Join(", ", passes)} gen0/gen1; {gen2} gen2 GCs); " +
                              $"model+collector retained {(m3 - m0) / 1e6:F2} MB; load {Load()}");
            GC.KeepAlive(data);   // the baseline counted it: it must stay alive until the last measurement
        }
        if (hold)
        {
            // Only the model, the collector and the price book stay alive: the dump shows them and little else.
            data = null!;
            records = null!;
            nodeRecords = null!;
            Settle();
            Console.WriteLine($"holding: pid {Environment.ProcessId}; press Enter to end");
            Console.ReadLine();
        }
        GC.KeepAlive(model);
        GC.KeepAlive(collector);
        GC.KeepAlive(book);
    }

    /// <summary>p50 and p99 in ms over <paramref name="runs"/> calls after 10 warm-up calls, and the bytes one call allocates on average.</summary>
    private static (double P50, double P99) Time(int runs, Action action, out long allocatedPerCall)
    {
        for (int i = 0; i < Math.Min(10, runs); i++) action();
        var samples = new List<double>(runs);
        long a0 = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < runs; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            action();
            samples.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        allocatedPerCall = (GC.GetAllocatedBytesForCurrentThread() - a0) / runs;
        samples.Sort();
        return (Report.Percentile(samples, 0.50), Report.Percentile(samples, 0.99));
    }

    private static long Settle()
    {
        for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
        return GC.GetTotalMemory(forceFullCollection: true);
    }

    private static int Arg(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture) : fallback;
    }

    private static string Load() => File.ReadAllText("/proc/loadavg").Split(' ')[0];
}
