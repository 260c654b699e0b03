using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Pricing;

/// <summary>A real S3 implementation (moto_server from the pyenv Python) started for the test class.</summary>
public sealed class MotoServer : IDisposable
{
    private readonly Process process;

    public MotoServer()
    {
        Port = FreePort();
        process = Process.Start(new ProcessStartInfo("moto_server", $"-H 127.0.0.1 -p {Port}")
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        }) ?? throw new InvalidOperationException("moto_server did not start");
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        using var http = new HttpClient();
        while (true)
        {
            try { if (http.GetAsync(Endpoint).Result.StatusCode != 0) break; }
            catch (AggregateException) when (DateTime.UtcNow < deadline) { Thread.Sleep(100); }
        }
    }

    public int Port { get; }
    public string Endpoint => $"http://127.0.0.1:{Port}";

    public static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    /// <summary>Puts an object with boto3, as a user's tooling would, not with our own SDK code.</summary>
    public void Put(string bucket, string key, string file)
    {
        var script = $"import boto3;s=boto3.client('s3',endpoint_url='{Endpoint}',region_name='us-east-1',aws_access_key_id='test',aws_secret_access_key='test');" +
                     $"\ntry:\n s.create_bucket(Bucket='{bucket}')\nexcept Exception: pass\ns.upload_file('{file}','{bucket}','{key}',ExtraArgs={{'ACL':'public-read'}})";
        var p = Process.Start(new ProcessStartInfo("python3", ["-c", script]) { RedirectStandardError = true })!;
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException("boto3 put failed: " + err);
    }

    public void Dispose()
    {
        try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        process.Dispose();
    }
}

public class S3FeedTests(MotoServer moto) : IClassFixture<MotoServer>
{
    private PriceFeed Feed(string bucket, string key = "percentiles.json", string? endpoint = null, TimeSpan? timeout = null) =>
        new(new PriceFeedOptions { Bucket = bucket, Key = key, Endpoint = endpoint ?? moto.Endpoint, Region = "us-east-1", Timeout = timeout ?? TimeSpan.FromSeconds(10) },
            NullLogger.Instance);

    private static string Snapshot(string date) => Path.Combine(PriceFeedParserTests.SnapshotDir, $"percentiles-{date}.json");

    [Fact]
    public async Task ReadsTheFeedThenAnsweresUnchangedWith304()
    {
        moto.Put("feed-a", "percentiles.json", Snapshot("2026-07-06"));
        using var feed = Feed("feed-a");
        Assert.True(feed.Current.Embedded);
        Assert.True(feed.Stale);
        Assert.True(await feed.RefreshAsync(default));
        var first = feed.Current;
        Assert.False(first.Embedded);
        Assert.False(feed.Stale);
        Assert.NotNull(first.ETag);
        Assert.Equal(101, first.Classes.Count);

        Assert.False(await feed.RefreshAsync(default));            // 304: same ETag, the book is kept
        Assert.Equal(first.ETag, feed.Current.ETag);
        Assert.Empty(feed.Errors);

        moto.Put("feed-a", "percentiles.json", Snapshot("2026-08-17"));
        Assert.True(await feed.RefreshAsync(default));
        Assert.NotEqual(first.ETag, feed.Current.ETag);
    }

    [Fact]
    public async Task MissingKeyKeepsTheLastGoodBookAndCounts()
    {
        moto.Put("feed-b", "percentiles.json", Snapshot("2026-07-06"));
        using var feed = Feed("feed-b", key: "nope.json");
        Assert.False(await feed.RefreshAsync(default));
        Assert.True(feed.Current.Embedded);
        Assert.Equal(1, feed.Errors[("feed", "not_found")]);
    }

    [Fact]
    public async Task MalformedObjectKeepsTheLastGoodBook()
    {
        moto.Put("feed-c", "percentiles.json", Snapshot("2026-07-06"));
        using var feed = Feed("feed-c");
        Assert.True(await feed.RefreshAsync(default));
        var good = feed.Current;
        var bad = Path.GetTempFileName();
        File.WriteAllText(bad, """{"regions":{"r":{"serverclasses":{"x-iad":{"market_price":"-1"}}}}}""");
        moto.Put("feed-c", "percentiles.json", bad);
        Assert.False(await feed.RefreshAsync(default));
        Assert.Same(good, feed.Current);
        Assert.Equal(1, feed.Errors[("feed", "malformed")]);
    }

    [Fact]
    public async Task ServerDownKeepsTheBook()
    {
        using var feed = Feed("feed-d", endpoint: $"http://127.0.0.1:{MotoServer.FreePort()}");
        Assert.False(await feed.RefreshAsync(default));
        Assert.True(feed.Current.Embedded);
        Assert.Contains(feed.Errors.Keys, k => k.Reason is "network" or "http");
    }

    [Fact]
    public async Task SlowServerTimesOut()
    {
        // Accepts connections and never answers.
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var accepted = new List<Socket>();
        _ = Task.Run(async () => { try { while (true) accepted.Add(await listener.AcceptSocketAsync()); } catch (Exception) { } });
        try
        {
            using var feed = Feed("feed-e", endpoint: $"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}", timeout: TimeSpan.FromMilliseconds(800));
            // The server never answers: only the feed's own timeout ends the refresh (the deadline here is
            // only how long the test waits for that before it fails).
            Assert.False(await feed.RefreshAsync(default).WaitAsync(TimeSpan.FromSeconds(60)));
            Assert.True(feed.Current.Embedded);
            Assert.Contains(feed.Errors.Keys, k => k.Reason is "timeout" or "network");
        }
        finally
        {
            listener.Stop();
            foreach (var s in accepted) s.Dispose();
        }
    }
}
