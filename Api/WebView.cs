using System.IO.Compression;
using System.IO.Hashing;

namespace Karpetrack;

/// <summary>
/// The web view at `/`: a page, a script and a stylesheet embedded in the binary (clusters are often
/// air-gapped: nothing is fetched from elsewhere, and the Content-Security-Policy says so). Relative
/// URLs throughout, so it works through `kubectl port-forward` and behind a sub-path proxy. The page
/// reads the JSON API and nothing else.
/// </summary>
public sealed class WebView
{
    /// <summary>Only this origin: no CDN, fonts or scripts from elsewhere, no inline script.</summary>
    public const string Policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

    private sealed record Asset(string ContentType, byte[] Body, byte[] Gzip, string ETag);

    private readonly Dictionary<string, Asset> assets;

    private WebView(Dictionary<string, Asset> assets) => this.assets = assets;

    /// <summary>Reads the embedded assets once and compresses them once: a page load costs no CPU beyond the copy.</summary>
    public static WebView Load()
    {
        var assembly = typeof(WebView).Assembly;
        Asset Read(string name, string type)
        {
            using var stream = assembly.GetManifestResourceStream("web." + name)
                ?? throw new InvalidOperationException($"the web asset {name} is not embedded in the binary");
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            var body = copy.ToArray();
            using var zipped = new MemoryStream();
            using (var gzip = new GZipStream(zipped, CompressionLevel.SmallestSize, leaveOpen: true)) gzip.Write(body);
            return new Asset(type, body, zipped.ToArray(), $"\"{XxHash3.HashToUInt64(body):x16}\"");
        }
        return new WebView(new Dictionary<string, Asset>(StringComparer.Ordinal)
        {
            ["/"] = Read("index.html", "text/html; charset=utf-8"),
            ["/ui/app.js"] = Read("app.js", "text/javascript; charset=utf-8"),
            ["/ui/app.css"] = Read("app.css", "text/css; charset=utf-8"),
        });
    }

    public bool Handles(string path) => assets.ContainsKey(path);

    public Task ServeAsync(HttpContext ctx)
    {
        var asset = assets[ctx.Request.Path.Value!];
        var headers = ctx.Response.Headers;
        headers.ContentSecurityPolicy = Policy;
        headers.XContentTypeOptions = "nosniff";
        headers.ETag = asset.ETag;
        // Revalidated on each load (a 304 when the binary has not changed), never stale after an upgrade.
        headers.CacheControl = "no-cache";
        headers.Vary = "Accept-Encoding";
        if (ctx.Request.Headers.IfNoneMatch.ToString() == asset.ETag)
        {
            ctx.Response.StatusCode = StatusCodes.Status304NotModified;
            return Task.CompletedTask;
        }
        ctx.Response.ContentType = asset.ContentType;
        var gzip = ctx.Request.Headers.AcceptEncoding.ToString().Contains("gzip", StringComparison.OrdinalIgnoreCase);
        if (gzip) headers.ContentEncoding = "gzip";
        var body = gzip ? asset.Gzip : asset.Body;
        ctx.Response.ContentLength = body.Length;
        return ctx.Response.Body.WriteAsync(body, ctx.RequestAborted).AsTask();
    }
}
