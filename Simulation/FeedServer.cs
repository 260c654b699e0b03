using System.Net;
using System.Reflection;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Karpetrack.Simulation;

/// <summary>
/// The demo's price feed, served S3-style (path-style GET and HEAD, an MD5 ETag as S3 sends for
/// single-part objects, Last-Modified, 304 on a matching If-None-Match or If-Modified-Since, 404
/// NoSuchKey as XML). It replays the real weekly snapshots so prices move while you watch.
/// </summary>
public sealed class FeedServer : IAsyncDisposable
{
    public const string Bucket = "ngpc-prod-public-data";
    public const string Key = "percentiles.json";

    private readonly WebApplication app;
    private readonly IReadOnlyList<(string Name, byte[] Body)> snapshots;
    private readonly object gate = new();
    private int index;
    private byte[] body = [];
    private string etag = "";
    private DateTimeOffset modified;

    private FeedServer(WebApplication app, IReadOnlyList<(string, byte[])> snapshots)
    {
        this.app = app;
        this.snapshots = snapshots;
        Publish(0);
    }

    public Uri Endpoint { get; private set; } = new("http://127.0.0.1/");

    /// <summary>Which snapshot is served now (its file name).</summary>
    public string Current { get { lock (gate) return snapshots[index].Name; } }

    public int Gets { get; private set; }

    public static IReadOnlyList<(string Name, byte[] Body)> EmbeddedSnapshots()
    {
        var asm = typeof(FeedServer).Assembly;
        return asm.GetManifestResourceNames()
            .Where(n => n.Contains("percentiles-", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal)
            .Select(n =>
            {
                using var s = asm.GetManifestResourceStream(n)!;
                using var ms = new MemoryStream();
                s.CopyTo(ms);
                return (n.Replace("data.percentiles.", ""), ms.ToArray());
            })
            .ToList();
    }

    public static async Task<FeedServer> StartAsync(IReadOnlyList<(string Name, byte[] Body)>? snapshots = null, int startAt = 0, CancellationToken ct = default)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        var server = new FeedServer(app, snapshots ?? EmbeddedSnapshots());
        server.Publish(startAt);
        // A RequestDelegate, not a delegate with bound parameters: those are compiled at run time.
        app.MapMethods("/{bucket}/{**key}", ["GET", "HEAD"], (RequestDelegate)(ctx =>
            server.Handle(ctx, (string)ctx.Request.RouteValues["bucket"]!, (string?)ctx.Request.RouteValues["key"] ?? "")));
        await app.StartAsync(ct).ConfigureAwait(false);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Endpoint = new Uri(address);
        return server;
    }

    /// <summary>Moves to the next snapshot (wrapping around), as if the feed was republished.</summary>
    public string Advance()
    {
        lock (gate)
        {
            Publish((index + 1) % snapshots.Count);
            return snapshots[index].Name;
        }
    }

    /// <summary>Serves arbitrary bytes, for tests of malformed feeds.</summary>
    public void Serve(byte[] content)
    {
        lock (gate) Set(content);
    }

    private void Publish(int i)
    {
        lock (gate)
        {
            index = i;
            Set(snapshots[i].Body);
        }
    }

    private void Set(byte[] content)
    {
        body = content;
        etag = "\"" + Convert.ToHexStringLower(MD5.HashData(content)) + "\"";
        // Second precision, as HTTP dates carry; always later than the previous version.
        var now = DateTimeOffset.UtcNow;
        var next = new DateTimeOffset(now.Ticks - now.Ticks % TimeSpan.TicksPerSecond, TimeSpan.Zero);
        modified = next > modified ? next : modified.AddSeconds(1);
    }

    private async Task Handle(HttpContext ctx, string bucket, string key)
    {
        byte[] content; string tag; DateTimeOffset lastModified;
        lock (gate) { content = body; tag = etag; lastModified = modified; Gets++; }
        var res = ctx.Response;
        res.Headers["x-amz-request-id"] = Guid.NewGuid().ToString("N")[..16].ToUpperInvariant();
        if (bucket != Bucket || key != Key)
        {
            res.StatusCode = 404;
            res.ContentType = "application/xml";
            if (HttpMethods.IsHead(ctx.Request.Method)) return;
            var code = bucket != Bucket ? "NoSuchBucket" : "NoSuchKey";
            var message = bucket != Bucket ? "The specified bucket does not exist" : "The specified key does not exist.";
            await res.WriteAsync($"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message><Key>{WebUtility.HtmlEncode(key)}</Key><RequestId>{res.Headers["x-amz-request-id"]}</RequestId><HostId>demo</HostId></Error>");
            return;
        }
        res.Headers.ETag = tag;
        res.Headers.LastModified = lastModified.ToString("R");
        var ifNoneMatch = ctx.Request.Headers.IfNoneMatch.ToString();
        bool notModified = ifNoneMatch.Length > 0
            ? ifNoneMatch.Split(',').Any(t => t.Trim() == tag || t.Trim() == "*")
            : DateTimeOffset.TryParse(ctx.Request.Headers.IfModifiedSince.ToString(), out var since) && lastModified <= since;
        if (notModified)
        {
            res.StatusCode = 304;
            return;
        }
        res.ContentType = "application/json";
        res.ContentLength = content.Length;
        if (!HttpMethods.IsHead(ctx.Request.Method)) await res.Body.WriteAsync(content);
    }

    public async ValueTask DisposeAsync()
    {
        await app.StopAsync().ConfigureAwait(false);
        await app.DisposeAsync().ConfigureAwait(false);
    }
}
