using System.IO.Compression;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Karpetrack;

/// <summary>
/// The HTTP endpoints, dispatched by path in one request delegate. Minimal-API endpoints would
/// compile each handler through expression trees at start and keep routing and
/// System.Linq.Expressions loaded: megabytes of resident memory for five fixed paths.
/// </summary>
internal sealed class HttpEndpoints(Collector collector, JsonApi json, WebView web, ReflectorStatus[] reflectors, Supervisor supervisor, ClusterModel model)
{
    public void Map(WebApplication app)
    {
        app.Run(ctx =>
        {
            var path = ctx.Request.Path.Value ?? "";
            if (JsonApi.Handles(path)) return json.HandleAsync(ctx);
            bool page = web.Handles(path);
            if (!page && path is not ("/metrics" or "/healthz" or "/readyz" or "/sync"))
                return Text(ctx, StatusCodes.Status404NotFound, "text/plain; charset=utf-8", "not found\n");
            if (!HttpMethods.IsGet(ctx.Request.Method))
            {
                ctx.Response.Headers.Allow = "GET";
                return Text(ctx, StatusCodes.Status405MethodNotAllowed, "text/plain; charset=utf-8", "only GET is served here\n");
            }
            return path switch
            {
                _ when page => web.ServeAsync(ctx),
                "/metrics" => Metrics(ctx),
                "/healthz" => Text(ctx, StatusCodes.Status200OK, "text/plain; charset=utf-8", "ok\n"),
                "/readyz" => Ready(ctx),
                _ => Text(ctx, StatusCodes.Status200OK, "application/json", Sync()),
            };
        });
    }

    private static Task Text(HttpContext ctx, int status, string contentType, string body)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = contentType;
        return ctx.Response.WriteAsync(body, ctx.RequestAborted);
    }

    private async Task Metrics(HttpContext ctx)
    {
        ctx.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        var accept = ctx.Request.Headers.AcceptEncoding.ToString();
        if (accept.Contains("gzip", StringComparison.OrdinalIgnoreCase))
        {
            ctx.Response.Headers.ContentEncoding = "gzip";
            // Buffer between the compressor and the socket: every write to the response stream is a flush.
            // 64 KB stays below the large object heap: a bigger buffer per scrape piled up there until a
            // full collection (BENCHMARKS.md).
            await using var buffered = new BufferedStream(ctx.Response.Body, 64 * 1024);
            await using (var gzip = new GZipStream(buffered, CompressionLevel.Fastest, leaveOpen: true))
                await collector.WriteAsync(gzip, ctx.RequestAborted);
            await buffered.FlushAsync(ctx.RequestAborted);
        }
        else
        {
            await collector.WriteAsync(ctx.Response, ctx.RequestAborted);
        }
    }

    private Task Ready(HttpContext ctx)
    {
        var notSynced = reflectors.Where(r => !r.Synced).Select(r => r.Resource).ToArray();
        var failing = supervisor.Health().Where(l => l.Failing).ToArray();
        if (notSynced.Length == 0 && failing.Length == 0) return Text(ctx, StatusCodes.Status200OK, "text/plain; charset=utf-8", "ok\n");
        var body = new StringBuilder();
        if (notSynced.Length > 0) body.Append($"waiting for the initial list of: {string.Join(", ", notSynced)}\n");
        foreach (var l in failing) body.Append($"background loop {l.Loop} is failing ({l.Restarts} restarts): {l.LastError}\n");
        return Text(ctx, StatusCodes.Status503ServiceUnavailable, "text/plain; charset=utf-8", body.ToString());
    }

    private string Sync()
    {
        var now = DateTimeOffset.UtcNow;
        // JsonNode rather than the reflection-based serializer, which the NativeAOT binary lacks.
        var body = new JsonObject();
        foreach (var r in reflectors)
        {
            var restarts = new JsonObject();
            foreach (var (reason, count) in r.Restarts) restarts[reason] = count;
            body[r.Resource] = new JsonObject
            {
                ["synced"] = r.Synced,
                ["last_event"] = r.LastEventAt?.ToString("O"),
                ["last_event_age_seconds"] = r.LastEventAt is { } t ? Math.Round((now - t).TotalSeconds, 3) : null,
                ["resource_version"] = r.ResourceVersion,
                ["events"] = r.Events,
                ["restarts"] = restarts,
                ["decode_errors"] = r.DecodeErrors,
            };
        }
        var loops = new JsonObject();
        foreach (var l in supervisor.Health())
            loops[l.Loop] = new JsonObject { ["restarts"] = l.Restarts, ["failing"] = l.Failing, ["last_error"] = l.LastError };
        body["loops"] = loops;
        // Memory facts for diagnosing a large RSS without attaching tools.
        var gc = GC.GetGCMemoryInfo();
        var generations = new JsonArray();
        foreach (var g in gc.GenerationInfo) generations.Add((JsonNode)g.SizeAfterBytes);
        body["runtime"] = new JsonObject
        {
            ["working_set_bytes"] = Environment.WorkingSet,
            ["gc_heap_bytes"] = gc.HeapSizeBytes,
            ["gc_committed_bytes"] = gc.TotalCommittedBytes,
            ["gc_fragmented_bytes"] = gc.FragmentedBytes,
            ["gc_collections"] = new JsonArray(GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)),
            ["gc_generation_bytes"] = generations,
            ["pods"] = model.PodCount,
            ["gc_settings"] = GcSettings(),
        };
        return body.ToJsonString(SyncJson.Options);
    }

    /// <summary>
    /// The GC settings in force, as the runtime reports them (those set in the binary, the runtime configuration or the
    /// environment, and the defaults): what a memory figure was taken under.
    /// </summary>
    private static JsonObject GcSettings()
    {
        var settings = new JsonObject();
        foreach (var (name, value) in GC.GetConfigurationVariables().OrderBy(kv => kv.Key, StringComparer.Ordinal))
            settings[name] = value switch
            {
                long l => l,
                ulong u => u,
                int i => i,
                bool b => b,
                _ => value?.ToString(),
            };
        return settings;
    }

    private static class SyncJson
    {
        public static readonly JsonSerializerOptions Options = new() { WriteIndented = true };
    }
}
