using Microsoft.Extensions.Logging;

namespace Karpetrack.Simulation;

/// <summary>
/// What --demo adds to the composition root: the embedded cluster, the S3-style price feed and the fake
/// Spot API, wired to each other, and the loop that moves the demo market.
/// </summary>
public sealed class DemoWiring : IAsyncDisposable
{
    private DemoWiring(DemoCluster cluster, FeedServer feed, SpotApiServer spotApi)
    {
        Cluster = cluster;
        Feed = feed;
        SpotApi = spotApi;
    }

    public DemoCluster Cluster { get; }
    public FeedServer Feed { get; }
    public SpotApiServer SpotApi { get; }

    public static async Task<DemoWiring> StartAsync(KarpetrackOptions options, ILoggerFactory loggers, CancellationToken ct)
    {
        var demo = await DemoCluster.StartAsync(new DemoClusterOptions { Seed = options.DemoSeed, ChurnInterval = options.DemoChurnInterval },
            loggers.CreateLogger("demo"), ct);
        // The demo market starts at the oldest real snapshot and moves a week per interval.
        var feed = await FeedServer.StartAsync(ct: ct);
        // The demo's nodes live in us-east-iad-1: so does the fake API's "demo" cloudspace.
        // Its pools' nodes join the demo cluster (and leave it), its market starts where the demo feed does,
        // and it knows the pools of the demo's Karpetrack-managed nodes.
        var spotApi = await SpotApiServer.StartAsync(new SpotApiServerOptions
        {
            Snapshot = FeedServer.EmbeddedSnapshots()[0].Body,
            NodeJoined = n => demo.JoinNode(n.NodeName, n.ServerClass, n.Labels, n.Taints),
            NodeLeft = name => demo.RemoveNode(name),
        }, ct);
        foreach (var m in demo.ManagedNodes) spotApi.AdoptPool(m.Pool, m.ServerClass, 0.27m, m.CustomLabels, [m.Node]);
        return new DemoWiring(demo, feed, spotApi);
    }

    /// <summary>The price feed options pointed at the demo feed, refreshed at least every 10 s.</summary>
    public PriceFeedOptions FeedOptions(PriceFeedOptions configured) => configured with
    {
        Endpoint = Feed.Endpoint.ToString(), Bucket = FeedServer.Bucket, Key = FeedServer.Key, Region = "us-east-1",
        Refresh = TimeSpan.FromTicks(Math.Min(configured.Refresh.Ticks, TimeSpan.FromSeconds(10).Ticks)),
    };

    /// <summary>The Spot API options pointed at the fake Spot API.</summary>
    public SpotApiOptions SpotApiOptions(SpotApiOptions configured) =>
        configured with { ApiUrl = SpotApi.BaseAddress, AuthUrl = SpotApi.BaseAddress, Org = SpotApi.OrgNamespace };

    /// <summary>The demo market: the feed moves a week per interval, and the fake Spot API's market with it (pools bidding below it are pre-empted).</summary>
    public async Task AdvanceMarketAsync(TimeSpan interval, Serilog.ILogger logger, CancellationToken ct)
    {
        if (interval <= TimeSpan.Zero) return;
        var snapshots = FeedServer.EmbeddedSnapshots();
        try
        {
            while (true)
            {
                await Task.Delay(interval, ct);
                var name = Feed.Advance();
                logger.Information("demo market moved to {Snapshot}", name);
                var body = snapshots.FirstOrDefault(x => x.Name == name).Body;
                if (body is null) continue;
                var book = PriceFeedParser.Parse(body, DateTimeOffset.UtcNow, name);
                foreach (var (cls, pc) in book.Classes) SpotApi.SetMarketPrice(cls, pc.Prices.Market);
            }
        }
        catch (OperationCanceledException) { }
    }

    public async ValueTask DisposeAsync()
    {
        await Cluster.DisposeAsync();
        await Feed.DisposeAsync();
        await SpotApi.DisposeAsync();
    }
}
