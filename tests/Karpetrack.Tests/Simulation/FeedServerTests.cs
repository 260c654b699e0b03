using System.Net;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Simulation;

/// <summary>The demo's S3-style feed must satisfy the real AWSSDK.S3 client: ETag as MD5, 304, NoSuchKey, HEAD.</summary>
public class FeedServerTests
{
    [Fact]
    public async Task AwsSdkReadsItConditionallyAndSeesEachReplayedSnapshot()
    {
        await using var server = await FeedServer.StartAsync();
        using var feed = new PriceFeed(new PriceFeedOptions { Endpoint = server.Endpoint.ToString(), Bucket = FeedServer.Bucket, Key = FeedServer.Key, Region = "us-east-1" },
            NullLogger.Instance);
        Assert.True(await feed.RefreshAsync(default));
        var first = feed.Current;
        Assert.False(first.Embedded);
        Assert.False(await feed.RefreshAsync(default));                 // 304 Not Modified on the same ETag
        Assert.Same(first.Classes, feed.Current.Classes);
        string? moved = null;
        for (int i = 0; i < 10 && moved is null; i++)
        {
            server.Advance();
            Assert.True(await feed.RefreshAsync(default));
            if (feed.Current.Classes.Values.Any(c => first.Classes[c.Class.Name].Prices.Market != c.Prices.Market)) moved = server.Current;
        }
        Assert.NotNull(moved);                                           // the replayed market really moves
        Assert.Empty(feed.Errors);
    }

    [Fact]
    public async Task AFeedWithAnAbsurdSizeIsRejectedAndTheLoopKeepsTheLastGoodBook()
    {
        await using var server = await FeedServer.StartAsync();
        using var feed = new PriceFeed(new PriceFeedOptions { Endpoint = server.Endpoint.ToString(), Bucket = FeedServer.Bucket, Key = FeedServer.Key, Region = "us-east-1" },
            NullLogger.Instance);
        Assert.True(await feed.RefreshAsync(default));
        var good = feed.Current;
        // Once an OverflowException that ended the price loop for good.
        var body = System.Text.Encoding.UTF8.GetString(FeedServer.EmbeddedSnapshots()[0].Body);
        server.Serve(System.Text.Encoding.UTF8.GetBytes(System.Text.RegularExpressions.Regex.Replace(body, "\"memory\": ?\"[0-9.]+GB\"", "\"memory\":\"10000000000GB\"")));
        Assert.False(await feed.RefreshAsync(default));
        Assert.Same(good, feed.Current);
        Assert.Equal(1, feed.Errors[("feed", "malformed")]);
        server.Advance();
        Assert.True(await feed.RefreshAsync(default));   // and reads the next good one
    }

    [Fact]
    public async Task MissingKeyIsNoSuchKeyAndHeadWorks()
    {
        await using var server = await FeedServer.StartAsync();
        using var feed = new PriceFeed(new PriceFeedOptions { Endpoint = server.Endpoint.ToString(), Bucket = FeedServer.Bucket, Key = "nope.json", Region = "us-east-1" },
            NullLogger.Instance);
        Assert.False(await feed.RefreshAsync(default));
        Assert.Equal(1, feed.Errors[("feed", "not_found")]);

        using var http = new HttpClient();
        using var head = await http.SendAsync(new HttpRequestMessage(HttpMethod.Head, new Uri(server.Endpoint, $"{FeedServer.Bucket}/{FeedServer.Key}")));
        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        Assert.Matches("^\"[0-9a-f]{32}\"$", head.Headers.ETag!.ToString());
        Assert.NotNull(head.Content.Headers.LastModified);
        using var missing = await http.GetAsync(new Uri(server.Endpoint, $"{FeedServer.Bucket}/missing"));
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Contains("<Code>NoSuchKey</Code>", await missing.Content.ReadAsStringAsync());
    }
}
