using System.Buffers;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Karpetrack;

namespace Karpetrack.Bench;

/// <summary>In-process figures: decode throughput, retained memory per pod, event apply rate, scrape render time.</summary>
internal static class ExporterBench
{
    private const string Section = "Exporter (in process)";

    /// <summary>
    /// `Karpetrack.Bench decode`: the LIST decode and the watch decode-and-apply of <see cref="Run"/>, five rounds each,
    /// printed and not written to BENCHMARKS.md (for comparing two builds back to back).
    /// </summary>
    public static void RunDecode(SyntheticData data)
    {
        var table = ResourceTable.Default;
        var body = data.PodList();
        var events = new MemoryStream();
        for (int i = 0; i < Math.Min(100_000, data.Pods.Length); i++)
        {
            events.Write("""{"type":"MODIFIED","object":"""u8);
            events.Write(data.Pods[i]);
            events.Write("}\n"u8);
        }
        var eventBytes = events.ToArray();
        var model = new ClusterModel(table);
        var nodeDecoder = new NodeDecoder(table);
        foreach (var n in data.Nodes) model.UpsertNode(nodeDecoder.DecodeComplete(n, out _));
        for (int round = 0; round < 5; round++)
        {
            var sw = Stopwatch.StartNew();
            int count = 0;
            using (var window = new StreamWindow(new MemoryStream(body, writable: false)))
                new ListParser<PodRecord>(new PodDecoder(table)).ParseAsync(window, (_, _) => count++, default).GetAwaiter().GetResult();
            double list = sw.Elapsed.TotalSeconds;
            sw.Restart();
            int applied = 0;
            using (var window = new StreamWindow(new MemoryStream(eventBytes, writable: false)))
                new WatchParser<PodRecord>(new PodDecoder(table)).ParseAsync(window, (_, p, _, _) => { model.UpsertPod(p!); applied++; }, default).GetAwaiter().GetResult();
            double watch = sw.Elapsed.TotalSeconds;
            Console.WriteLine($"round {round}: LIST decode {body.Length / 1e6 / list:F0} MB/s ({count} pods, {list:F2} s); watch decode+apply {applied / watch / 1000:F0}k events/s ({watch:F2} s)");
        }
    }

    public static void Run(SyntheticData data, Report report)
    {
        var table = ResourceTable.Default;
        var body = data.PodList();
        Console.WriteLine($"decode: one {body.Length / 1e6:F0} MB PodList");

        // 1. Decode throughput: the streaming list parser and pod decoder, pods discarded.
        var times = new List<double>();
        for (int run = 0; run < 3; run++)
        {
            var sw = Stopwatch.StartNew();
            int count = 0;
            using var window = new StreamWindow(new MemoryStream(body, writable: false));
            new ListParser<PodRecord>(new PodDecoder(table)).ParseAsync(window, (_, _) => count++, default).GetAwaiter().GetResult();
            times.Add(sw.Elapsed.TotalSeconds);
            if (count != data.Pods.Length) throw new InvalidOperationException($"decoded {count} of {data.Pods.Length}");
        }
        double best = times.Min();
        report.Row(Section, "LIST decode throughput (best of 3, one thread)", "≥ 250 MB/s", $"{body.Length / 1e6 / best:F0} MB/s, {data.Pods.Length / best / 1000:F0}k pods/s", body.Length / 1e6 / best >= 250);

        // 2. Retained memory per pod: the model after a full sync, minus the model with nodes only.
        long baseline = Settle();
        var model = new ClusterModel(table);
        var nodeDecoder = new NodeDecoder(table);
        foreach (var n in data.Nodes) model.UpsertNode(nodeDecoder.DecodeComplete(n, out _));
        model.Snapshot();
        long withNodes = Settle();
        using (var window = new StreamWindow(new MemoryStream(body, writable: false)))
            new ListParser<PodRecord>(new PodDecoder(table)).ParseAsync(window, (p, _) => model.UpsertPod(p), default).GetAwaiter().GetResult();
        model.Snapshot();
        long withPods = Settle();
        double perPod = (double)(withPods - withNodes) / data.Pods.Length;
        report.Row(Section, "Retained per pod (managed heap after full GC)", "≤ 128 B", $"{perPod:F0} B ({(withPods - withNodes) / 1e6:F1} MB for {data.Pods.Length} pods)", perPod <= 128);
        report.Row(Section, $"Retained for {data.Nodes.Length} nodes (labels, tallies, views)", "(none)", $"{(withNodes - baseline) / 1e6:F1} MB, {(withNodes - baseline) / data.Nodes.Length} B/node", null);
        GC.KeepAlive(model);

        // 3. Watch events: decode + apply MODIFIED events from a stream, and apply alone.
        var events = new MemoryStream();
        int eventCount = Math.Min(100_000, data.Pods.Length);
        for (int i = 0; i < eventCount; i++)
        {
            events.Write("""{"type":"MODIFIED","object":"""u8);
            events.Write(data.Pods[i]);
            events.Write("}\n"u8);
        }
        var eventBytes = events.ToArray();
        var swEvents = Stopwatch.StartNew();
        int applied = 0;
        using (var window = new StreamWindow(new MemoryStream(eventBytes, writable: false)))
            new WatchParser<PodRecord>(new PodDecoder(table)).ParseAsync(window, (t, p, _, _) => { model.UpsertPod(p!); applied++; }, default).GetAwaiter().GetResult();
        double eps = applied / swEvents.Elapsed.TotalSeconds;
        report.Row(Section, "Watch events decoded and applied (one thread)", "≥ 50k/s", $"{eps / 1000:F0}k events/s ({eventBytes.Length / 1e6 / swEvents.Elapsed.TotalSeconds:F0} MB/s)", eps >= 50_000);

        var records = new List<PodRecord>(eventCount);
        using (var window = new StreamWindow(new MemoryStream(eventBytes, writable: false)))
            new WatchParser<PodRecord>(new PodDecoder(table)).ParseAsync(window, (_, p, _, _) => records.Add(p!), default).GetAwaiter().GetResult();
        var swApply = Stopwatch.StartNew();
        foreach (var r in records) model.UpsertPod(r);
        report.Row(Section, "Model updates alone (pre-decoded events)", "(none)", $"{records.Count / swApply.Elapsed.TotalSeconds / 1e6:F2}M events/s", null);

        // 4. Scrape render at 5,000 nodes: unchanged cluster, and with 20 pod events between scrapes.
        // The service's own telemetry as a started service registers it: build, process and runtime, and every component's families.
        var log = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
        var telemetry = Telemetry.ForService();
        using var prices = new PriceFeed(new PriceFeedOptions(), log, telemetry: telemetry);
        ReflectorStatus[] statuses = [.. new[] { "nodes", "pods", "poddisruptionbudgets", "daemonsets" }.Select(r => new ReflectorStatus(r, telemetry))];
        var actuator = new Actuator(new ActuationOptions { Mode = ActuationMode.DryRun }, model, prices, statuses, log, telemetry: telemetry);
        var loop = new RecommenderLoop(new(model, prices, statuses), new(() => new RecommenderOptions(), TimeSpan.Zero), log, telemetry: telemetry);
        _ = new GrpcCalls(new GrpcServerOptions(), telemetry);
        using var spot = new SpotApiClient(new SpotApiOptions(), "unused", log, telemetry: telemetry);
        _ = new Supervisor(log, telemetry: telemetry);
        var collector = new Collector(model, [["servers.ngpc.rxt.io/class"]], prices, loop, telemetry);
        var sink = new ArrayBufferWriter<byte>(8 << 20);
        collector.Render(sink);
        long size = sink.WrittenCount;
        int series = Encoding.UTF8.GetString(sink.WrittenSpan).Split('\n').Count(l => l.Length > 0 && l[0] != '#');
        var steady = Time(300, () => { sink.ResetWrittenCount(); collector.Render(sink); });
        var rng = new Random(3);
        var churned = Time(300, () =>
        {
            for (int k = 0; k < 20; k++) model.UpsertPod(records[rng.Next(records.Count)]);
            sink.ResetWrittenCount();
            collector.Render(sink);
        });
        report.Row(Section, $"Scrape render, {data.Nodes.Length} nodes, {series} series, {size / 1e6:F1} MB", "p50 ≤ 5 ms, p99 ≤ 15 ms",
            $"p50 {steady.P50:F2} ms, p99 {steady.P99:F2} ms", steady.P50 <= 5 && steady.P99 <= 15);
        report.Row(Section, "Scrape render with 20 pod events between scrapes", "p50 ≤ 5 ms, p99 ≤ 15 ms",
            $"p50 {churned.P50:F2} ms, p99 {churned.P99:F2} ms", churned.P50 <= 5 && churned.P99 <= 15);

        // The whole /metrics body: the cluster part above, then the telemetry (its scrape callbacks and prometheus-net's writer).
        using var whole = new MemoryStream(8 << 20);
        var full = Time(300, () => { whole.SetLength(0); collector.WriteAsync(whole, CancellationToken.None).GetAwaiter().GetResult(); });
        using var own = new MemoryStream(64 * 1024);
        var alone = Time(300, () => { own.SetLength(0); telemetry.WriteAsync(own, CancellationToken.None).GetAwaiter().GetResult(); });
        report.Row(Section, $"Whole scrape: the above plus the service's telemetry ({own.Length / 1e3:F0} KB, prometheus-net)", "p50 ≤ 5 ms, p99 ≤ 15 ms",
            $"p50 {full.P50:F2} ms, p99 {full.P99:F2} ms (telemetry alone: p50 {alone.P50:F2} ms, p99 {alone.P99:F2} ms)", full.P50 <= 5 && full.P99 <= 15);
    }

    internal static (double P50, double P99) Time(int runs, Action action)
    {
        for (int i = 0; i < 10; i++) action();
        var samples = new List<double>(runs);
        for (int i = 0; i < runs; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            action();
            samples.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        samples.Sort();
        return (Report.Percentile(samples, 0.50), Report.Percentile(samples, 0.99));
    }

    private static long Settle()
    {
        for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
        return GC.GetTotalMemory(forceFullCollection: true);
    }

}
