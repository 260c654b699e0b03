using System.Diagnostics;
using System.Net;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Bench;

/// <summary>
/// The gRPC API over loopback h2c, with a plan built directly (5,000 nodes, 1,000 recommendations):
/// ListRecommendations latency, and how fast 100 watchers see a new plan.
/// </summary>
internal static class GrpcBench
{
    private const string Section = "grpc";

    public static async Task RunAsync(Report report, int nodes = 5_000, int recommendations = 1_000, int watchers = 100)
    {
        var model = new ClusterModel(ResourceTable.Default);
        for (int i = 0; i < nodes; i++)
        {
            model.UpsertNode(new NodeRecord
            {
                Name = $"node-{i:D5}", Ready = true, Capacity = [8000, 32L << 30], Allocatable = [7900, 30L << 30],
                Labels = new(StringComparer.Ordinal) { [SpotLabels.ServerClass] = "gp.vs1.2xlarge-iad", [SpotLabels.CapacityType] = "spot" },
            });
        }
        var status = new ReflectorStatus("nodes");
        status.MarkSynced(null, DateTimeOffset.UtcNow);
        var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: PriceFeedParser.Embedded());
        var options = new RecommenderOptions();
        var loop = new RecommenderLoop(new(model, prices, [status]), new(() => options, TimeSpan.Zero), NullLogger.Instance);
        loop.Publish(Plan(nodes, recommendations, 0));

        // The service's own wiring (limits, interceptor, read deadlines) on a loopback h2c listener.
        var calls = new GrpcCalls(new GrpcServerOptions());
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.Http2.MaxStreamsPerConnection = 256;
            k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http2);
        });
        calls.AddServices(builder.Services, new KarpetrackApi(model, prices, loop, [status], () => options));
        await using var app = builder.Build();
        calls.Map(app, _ => true);
        await app.StartAsync();
        var address = new Uri(app.Urls.First());
        using var channel = GrpcCli.Channel(address.ToString());
        var client = new V1.Karpetrack.KarpetrackClient(channel);

        // ListRecommendations, one caller at a time.
        var request = new V1.ListRecommendationsRequest();
        int size = 0;
        for (int i = 0; i < 200; i++) size = (await client.ListRecommendationsAsync(request)).CalculateSize();
        var times = new double[2000];
        for (int i = 0; i < times.Length; i++)
        {
            var t = Stopwatch.GetTimestamp();
            await client.ListRecommendationsAsync(request);
            times[i] = Stopwatch.GetElapsedTime(t).TotalMilliseconds;
        }
        Array.Sort(times);
        double p50 = times[times.Length / 2], p99 = times[(int)(times.Length * 0.99)];
        report.Row(Section, $"ListRecommendations, {nodes:N0} nodes, {recommendations:N0} recommendations ({size / 1024.0:N0} KiB), client to last byte, p50", "≤ 10 ms", $"{p50:F2} ms", p50 <= 10);
        report.Row(Section, "… p99", "≤ 50 ms", $"{p99:F2} ms", p99 <= 50);

        // 100 watchers: each waits for SYNCED, then a new plan (one recommendation changed, one added) is published.
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var synced = new CountdownEvent(watchers);
        long publishedAt = 0;
        var latencies = new double[watchers];
        var tasks = Enumerable.Range(0, watchers).Select(w => Task.Run(async () =>
        {
            bool ready = false;
            using var watch = client.WatchRecommendations(new V1.WatchRecommendationsRequest(), cancellationToken: cts.Token);
            await foreach (var ev in watch.ResponseStream.ReadAllAsync(cts.Token))
            {
                if (!ready)
                {
                    if (ev.Kind == V1.RecommendationEvent.Types.Kind.Synced) { ready = true; synced.Signal(); }
                    continue;
                }
                if (ev.Kind is V1.RecommendationEvent.Types.Kind.Added or V1.RecommendationEvent.Types.Kind.Changed or V1.RecommendationEvent.Types.Kind.Removed)
                {
                    latencies[w] = Stopwatch.GetElapsedTime(Interlocked.Read(ref publishedAt)).TotalMilliseconds;
                    return;
                }
            }
        })).ToArray();
        synced.Wait(cts.Token);
        await Task.Delay(200);
        Interlocked.Exchange(ref publishedAt, Stopwatch.GetTimestamp());
        loop.Publish(Plan(nodes, recommendations, 1));
        await Task.WhenAll(tasks);
        await cts.CancelAsync();
        Array.Sort(latencies);
        report.Row(Section, $"{watchers} concurrent watchers: plan published → first event received, slowest watcher (p50 {latencies[watchers / 2]:F1} ms)",
            "≤ 100 ms", $"{latencies[^1]:F1} ms", latencies[^1] <= 100);
        await app.StopAsync();
    }

    /// <summary>A plan of the given size; generation g changes the first recommendation's savings and adds one.</summary>
    private static Plan Plan(int nodes, int count, int generation)
    {
        var recs = new List<Recommendation>();
        for (int i = 0; i < count + generation; i++)
        {
            var node = $"node-{i * (nodes / count) % nodes:D5}";
            var moves = Enumerable.Range(0, 8).Select(k => new PodMove("shop", $"app-{i}-{k}", node, $"node-{(i * 7 + k + 1) % nodes:D5}")).ToList();
            decimal price = i == 0 ? 0.05m + generation * 0.01m : 0.05m;
            recs.Add(new Recommendation($"con-{i:D6}", RecommendationType.Consolidate, [node], [], moves, [], price, 0, 0, moves.Count, -1,
                [$"the {moves.Count} pods of {node} fit on the remaining nodes; removing it saves {price} $/h"]));
        }
        return new Plan(recs, new Dictionary<string, IReadOnlyList<Blocker>>(), [], 0, 0, "us-east-iad-1");
    }
}
