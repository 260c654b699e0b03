using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Karpetrack.Simulation;

public sealed record KubeApiServerOptions
{
    public string Host { get; init; } = "127.0.0.1";
    public int Port { get; init; }                        // 0 = ephemeral
    public int WatchHistoryLimit { get; init; } = 20_000; // events kept per resource; older resourceVersions get 410 Expired
    public TimeSpan BookmarkInterval { get; init; } = TimeSpan.FromSeconds(1);
    public TimeSpan ContinueTokenTtl { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary>Events queued per watcher before it counts as too slow and is closed.</summary>
    public int WatcherBufferSize { get; init; } = 100_000;
    /// <summary>
    /// Longest a gracefully deleted pod stays terminating before it is really gone: the kubelet's
    /// confirmation, shortened so that drains in the demo and the tests do not wait 30 s per pod.
    /// </summary>
    public TimeSpan MaxPodGracePeriod { get; init; } = TimeSpan.FromSeconds(2);
    /// <summary>The clock the grace periods run on; tests move it by hand.</summary>
    public TimeProvider Clock { get; init; } = TimeProvider.System;
}

/// <summary>
/// An in-process Kubernetes API server on loopback, speaking the real JSON wire protocol for
/// discovery, LIST (paged, consistent snapshots), GET and WATCH, plus server-side Tables for kubectl,
/// and the writes a controller and kubectl make (KubeApiWrites.cs). Objects also change through <see cref="Store"/>.
/// </summary>
public sealed partial class KubeApiServer : IAsyncDisposable
{
    private const int FlushThreshold = 256 * 1024;
    private static readonly byte[] NewLine = "\n"u8.ToArray();

    private readonly WebApplication _app;
    private readonly KubeApiServerOptions _options;
    private readonly ConcurrentDictionary<string, ListSnapshot> _snapshots = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();
    private int _disposed;

    private sealed record ListSnapshot(IReadOnlyList<StoredObject> Items, long ResourceVersion, DateTimeOffset CreatedUtc);

    private KubeApiServer(WebApplication app, KubeApiServerOptions options, ObjectStore store)
    {
        _app = app;
        _options = options;
        Store = store;
        Faults = new KubeApiFaults(store);
    }

    public Uri BaseAddress { get; private set; } = null!;
    public ObjectStore Store { get; }
    public KubeApiFaults Faults { get; }

    public static async Task<KubeApiServer> StartAsync(KubeApiServerOptions options, CancellationToken ct = default)
    {
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Listen(IPAddress.Parse(options.Host), options.Port);
            // Watches stay open for minutes and the benchmark pushes hundreds of MB per LIST.
            k.Limits.MinResponseDataRate = null;
            k.Limits.KeepAliveTimeout = TimeSpan.FromMinutes(10);
        });
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5));
        var app = builder.Build();
        var store = new ObjectStore(options.WatchHistoryLimit, options.WatcherBufferSize, clock: options.Clock);
        var server = new KubeApiServer(app, options, store);
        app.Run(server.HandleJournaledAsync);
        await app.StartAsync(ct).ConfigureAwait(false);
        var address = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
            .Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.BaseAddress = new Uri(address);
        return server;
    }

    /// <summary>Writes a kubeconfig pointing at this server and returns its absolute path.</summary>
    /// <summary>Both selectors of a LIST or WATCH, or null after answering 400 for a bad one.</summary>
    private static async Task<(LabelSelector, FieldSelector)?> SelectorsAsync(HttpContext ctx, IQueryCollection q, ResourceType type)
    {
        try
        {
            return (ParseLabels(q["labelSelector"]), FieldSelector.Parse(q["fieldSelector"], type));
        }
        catch (SelectorException e)
        {
            await WriteStatusAsync(ctx, 400, "BadRequest", e.Message).ConfigureAwait(false);
            return null;
        }
    }

    /// <summary>The product's selector parser; a bad selector becomes a 400, as kube-apiserver answers.</summary>
    private static LabelSelector ParseLabels(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return LabelSelector.Everything;
        try { return LabelSelector.Parse(text); }
        catch (FormatException e) { throw new SelectorException(e.Message); }
    }

    public string WriteKubeconfig(string path)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var server = BaseAddress.GetLeftPart(UriPartial.Authority);
        File.WriteAllText(full, $"""
            apiVersion: v1
            kind: Config
            clusters:
            - name: karpetrack-sim
              cluster:
                server: {server}
            users:
            - name: karpetrack-sim
              user:
                token: karpetrack-sim-token
            contexts:
            - name: karpetrack-sim
              context:
                cluster: karpetrack-sim
                user: karpetrack-sim
                namespace: default
            current-context: karpetrack-sim
            preferences: {"{}"}

            """);
        return full;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        // Watch loops see their channel complete and end the response with a proper final chunk.
        Store.CompleteAllWatches();
        _stopping.Cancel();
        try { await _app.StopAsync(CancellationToken.None).ConfigureAwait(false); }
        finally
        {
            await _app.DisposeAsync().ConfigureAwait(false);
            _stopping.Dispose();
        }
    }

    // ---------------------------------------------------------------- routing

    /// <summary>
    /// Told of every request (its method, path and query) before it is served, on the request's own thread: a test can
    /// change the store at the exact moment a request arrives (a pod recreated between a client's read and its write).
    /// </summary>
    public event Action<string, string>? Requesting;

    private async Task HandleAsync(HttpContext ctx)
    {
        var req = ctx.Request;
        var path = req.Path.Value ?? "/";
        var pathAndQuery = path + req.QueryString.Value;
        Requesting?.Invoke(req.Method, pathAndQuery);

        if (Faults.TakeFailure(pathAndQuery) is { } failure)
        {
            await WriteInjectedFailureAsync(ctx, failure).ConfigureAwait(false);
            return;
        }
        var isGet = HttpMethods.IsGet(req.Method);
        if (!isGet && path.TrimEnd('/') is "/version" or "/api" or "/apis" or "/healthz" or "/livez" or "/readyz")
        {
            await WriteStatusAsync(ctx, 405, "MethodNotAllowed", "the server does not allow this method on the requested resource").ConfigureAwait(false);
            return;
        }

        switch (path.TrimEnd('/'))
        {
            case "/version": await WriteJsonAsync(ctx, 200, WriteVersion).ConfigureAwait(false); return;
            case "/api": await WriteJsonAsync(ctx, 200, w => WriteApiVersions(w, ctx)).ConfigureAwait(false); return;
            case "/apis": await WriteJsonAsync(ctx, 200, WriteGroupList).ConfigureAwait(false); return;
            case "/healthz" or "/livez" or "/readyz":
                ctx.Response.ContentType = "text/plain; charset=utf-8";
                await ctx.Response.WriteAsync("ok").ConfigureAwait(false);
                return;
        }

        var segments = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        string group, version;
        ArraySegment<string> rest;
        if (segments.Length >= 2 && segments[0] == "api")
        {
            (group, version, rest) = ("", segments[1], segments[2..]);
        }
        else if (segments.Length >= 3 && segments[0] == "apis")
        {
            (group, version, rest) = (segments[1], segments[2], segments[3..]);
        }
        else
        {
            await NotFoundPathAsync(ctx).ConfigureAwait(false);
            return;
        }

        if (rest.Count == 0)
        {
            if (!isGet) { await WriteStatusAsync(ctx, 405, "MethodNotAllowed", "the server does not allow this method on the requested resource").ConfigureAwait(false); return; }
            var types = Store.Resources.Where(t => t.Group == group && t.Version == version).ToArray();
            if (types.Length == 0 && !(group == "" && version == "v1")) { await NotFoundPathAsync(ctx).ConfigureAwait(false); return; }
            await WriteJsonAsync(ctx, 200, w => WriteResourceList(w, group == "" ? version : $"{group}/{version}", types)).ConfigureAwait(false);
            return;
        }

        string? ns = null;
        string resource;
        string? name = null, subresource = null;
        if (rest.Count >= 3 && rest[0] == "namespaces")
        {
            ns = rest[1];
            resource = rest[2];
            if (rest.Count >= 4) name = rest[3];
            if (rest.Count == 5) subresource = rest[4];
            else if (rest.Count > 5) { await NotFoundPathAsync(ctx).ConfigureAwait(false); return; }
        }
        else if (rest.Count <= 3)
        {
            resource = rest[0];
            if (rest.Count >= 2) name = rest[1];
            if (rest.Count == 3) subresource = rest[2];
        }
        else
        {
            await NotFoundPathAsync(ctx).ConfigureAwait(false);
            return;
        }

        var type = Store.Find(group, version, resource);
        if (type is null || (ns is not null && !type.Namespaced))
        {
            await NotFoundPathAsync(ctx).ConfigureAwait(false);
            return;
        }

        if (!isGet)
            await WriteVerbAsync(ctx, type, ns, name, subresource).ConfigureAwait(false);
        else if (subresource is not null)
            await NotFoundPathAsync(ctx).ConfigureAwait(false);
        else if (name is not null)
            await GetOneAsync(ctx, type, ns, name).ConfigureAwait(false);
        else if (req.Query["watch"] is var watch && (watch == "1" || watch == "true"))
            await WatchAsync(ctx, type, ns).ConfigureAwait(false);
        else
            await ListAsync(ctx, type, ns).ConfigureAwait(false);
    }

    private static bool WantsTable(HttpRequest req) =>
        req.Headers.Accept.ToString().Contains("as=Table", StringComparison.Ordinal);

    // ---------------------------------------------------------------- GET

    private async Task GetOneAsync(HttpContext ctx, ResourceType type, string? ns, string name)
    {
        var obj = Store.Get(type.Resource, ns, name);
        if (obj is null)
        {
            await WriteStatusAsync(ctx, 404, "NotFound", $"{type.Resource} \"{name}\" not found", w =>
            {
                w.WriteString("name", name);
                if (type.Group.Length > 0) w.WriteString("group", type.Group);
                w.WriteString("kind", type.Resource);
            }).ConfigureAwait(false);
            return;
        }
        if (WantsTable(ctx.Request))
        {
            var include = KubeTables.ParseInclude(ctx.Request.Query["includeObject"]);
            await WriteJsonAsync(ctx, 200, w => KubeTables.WriteTable(w, type, [obj], obj.ResourceVersion, null, null, true, include, _options.Clock.GetUtcNow())).ConfigureAwait(false);
            return;
        }
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = obj.Utf8.Length;
        await ctx.Response.Body.WriteAsync(obj.Utf8).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- LIST

    private sealed record ContinueToken(string Snapshot, long ResourceVersion, int Offset);

    private readonly ConcurrentDictionary<(string Resource, string LabelSelector), int> _lists = new();

    /// <summary>LIST requests (not watches) seen so far for a resource with exactly this label selector ("" for none), pages included.</summary>
    public int ListsOf(string resource, string labelSelector = "") => _lists.GetValueOrDefault((resource, labelSelector));

    private async Task ListAsync(HttpContext ctx, ResourceType type, string? ns)
    {
        var q = ctx.Request.Query;
        _lists.AddOrUpdate((type.Resource, q["labelSelector"].ToString()), 1, (_, n) => n + 1);
        string rv = q["resourceVersion"].ToString(), rvMatch = q["resourceVersionMatch"].ToString(), cont = q["continue"].ToString();

        if (q.ContainsKey("sendInitialEvents"))
        {
            await InvalidAsync(ctx, type, "sendInitialEvents", "sendInitialEvents is forbidden for list").ConfigureAwait(false);
            return;
        }
        if (rvMatch.Length > 0)
        {
            string? problem = rv.Length == 0 ? "resourceVersionMatch is forbidden unless resourceVersion is provided"
                : cont.Length > 0 ? "resourceVersionMatch is forbidden when continue is provided"
                : rvMatch == "Exact" && rv == "0" ? "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""
                : rvMatch is not ("Exact" or "NotOlderThan") ? $"\"{rvMatch}\": supported values: \"Exact\", \"NotOlderThan\""
                : null;
            if (problem is not null) { await InvalidAsync(ctx, type, "resourceVersionMatch", problem).ConfigureAwait(false); return; }
        }

        if (await SelectorsAsync(ctx, q, type).ConfigureAwait(false) is not var (labels, fields)) return;

        var limit = 0;
        if (q["limit"].ToString() is { Length: > 0 } ls && (!int.TryParse(ls, NumberStyles.None, CultureInfo.InvariantCulture, out limit)))
        {
            await WriteStatusAsync(ctx, 400, "BadRequest", $"invalid limit: {ls}").ConfigureAwait(false);
            return;
        }

        IReadOnlyList<StoredObject> matched;
        long snapshotRv;
        var offset = 0;
        string? snapshotId = null;
        if (cont.Length > 0)
        {
            var token = DecodeContinue(cont);
            if (token is null)
            {
                await WriteStatusAsync(ctx, 400, "BadRequest", "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)").ConfigureAwait(false);
                return;
            }
            if (!_snapshots.TryGetValue(token.Snapshot, out var snap) || _options.Clock.GetUtcNow() - snap.CreatedUtc > _options.ContinueTokenTtl)
            {
                _snapshots.TryRemove(token.Snapshot, out _);
                await WriteStatusAsync(ctx, 410, "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
                    .ConfigureAwait(false);
                return;
            }
            (matched, snapshotRv, offset, snapshotId) = (snap.Items, snap.ResourceVersion, token.Offset, token.Snapshot);
        }
        else
        {
            var (all, current) = Store.List(type.Resource);
            if (rv.Length > 0 && rv != "0")
            {
                if (!long.TryParse(rv, NumberStyles.None, CultureInfo.InvariantCulture, out var asked))
                {
                    await WriteStatusAsync(ctx, 400, "BadRequest", $"invalid resource version: {rv}").ConfigureAwait(false);
                    return;
                }
                if (asked > current)
                {
                    await WriteStatusAsync(ctx, 504, "Timeout", $"Too large resource version: {asked}, current: {current}", w =>
                    {
                        w.WriteStartArray("causes");
                        w.WriteStartObject();
                        w.WriteString("reason", "ResourceVersionTooLarge");
                        w.WriteString("message", "Too large resource version");
                        w.WriteEndObject();
                        w.WriteEndArray();
                        w.WriteNumber("retryAfterSeconds", 1);
                    }).ConfigureAwait(false);
                    return;
                }
                // Only the newest state is kept, so an exact read of an older version is gone.
                if (rvMatch == "Exact" && asked != current)
                {
                    await WriteStatusAsync(ctx, 410, "Expired", $"too old resource version: {asked} ({current})").ConfigureAwait(false);
                    return;
                }
            }
            snapshotRv = current;
            matched = Filter(all, ns, labels, fields);
        }

        var count = limit > 0 ? Math.Min(limit, matched.Count - offset) : matched.Count - offset;
        count = Math.Max(count, 0);
        var remaining = matched.Count - offset - count;
        string? next = null;
        if (remaining > 0)
        {
            if (snapshotId is null)
            {
                SweepSnapshots();
                snapshotId = Guid.NewGuid().ToString("N");
                _snapshots[snapshotId] = new ListSnapshot(matched, snapshotRv, _options.Clock.GetUtcNow());
            }
            next = EncodeContinue(new ContinueToken(snapshotId, snapshotRv, offset + count));
        }
        else if (snapshotId is not null)
        {
            _snapshots.TryRemove(snapshotId, out _);
        }

        if (WantsTable(ctx.Request))
        {
            var include = KubeTables.ParseInclude(ctx.Request.Query["includeObject"]);
            var page = Slice(matched, offset, count);
            await WriteJsonAsync(ctx, 200, w => KubeTables.WriteTable(w, type, page, snapshotRv, next, remaining > 0 ? remaining : null, true, include, _options.Clock.GetUtcNow())).ConfigureAwait(false);
            return;
        }
        await WriteListAsync(ctx, type, matched, offset, count, snapshotRv, next, remaining).ConfigureAwait(false);
    }

    private static IEnumerable<StoredObject> Slice(IReadOnlyList<StoredObject> items, int offset, int count)
    {
        for (var i = offset; i < offset + count; i++) yield return items[i];
    }

    private static IReadOnlyList<StoredObject> Filter(IReadOnlyList<StoredObject> all, string? ns, LabelSelector labels, FieldSelector fields)
    {
        if (ns is null && labels.IsEmpty && fields.IsEmpty) return all;
        var result = new List<StoredObject>();
        foreach (var o in all)
            if (Matches(o, ns, labels, fields)) result.Add(o);
        return result;
    }

    private static bool Matches(StoredObject o, string? ns, LabelSelector labels, FieldSelector fields) =>
        (ns is null || o.Namespace == ns) && labels.Matches(o.Labels) && fields.Matches(o.Fields);

    private void SweepSnapshots()
    {
        var now = _options.Clock.GetUtcNow();
        foreach (var (id, snap) in _snapshots)
            if (now - snap.CreatedUtc > _options.ContinueTokenTtl) _snapshots.TryRemove(id, out _);
    }

    private static string EncodeContinue(ContinueToken t)
    {
        var json = $"{{\"v\":\"meta.k8s.io/v1\",\"rv\":{t.ResourceVersion},\"start\":\"{t.Offset}\",\"snapshot\":\"{t.Snapshot}\"}}";
        return Convert.ToBase64String(Encoding.UTF8.GetBytes(json)).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }

    private static ContinueToken? DecodeContinue(string token)
    {
        try
        {
            var b64 = token.Replace('-', '+').Replace('_', '/');
            b64 = b64.PadRight(b64.Length + (4 - b64.Length % 4) % 4, '=');
            using var doc = JsonDocument.Parse(Convert.FromBase64String(b64));
            var root = doc.RootElement;
            if (root.GetProperty("v").GetString() != "meta.k8s.io/v1") return null;
            return new ContinueToken(root.GetProperty("snapshot").GetString()!, root.GetProperty("rv").GetInt64(),
                int.Parse(root.GetProperty("start").GetString()!, CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is FormatException or JsonException or KeyNotFoundException or InvalidOperationException or OverflowException)
        {
            return null;
        }
    }

    /// <summary>
    /// Writes the list envelope and the stored bytes of each item straight into the response pipe,
    /// with an exact Content-Length: no per-request serialization, no intermediate strings.
    /// </summary>
    private static async Task WriteListAsync(HttpContext ctx, ResourceType type, IReadOnlyList<StoredObject> items,
        int offset, int count, long rv, string? next, int remaining)
    {
        var head = new StringBuilder(160)
            .Append("{\"kind\":\"").Append(type.Kind).Append("List\",\"apiVersion\":\"").Append(type.GroupVersion)
            .Append("\",\"metadata\":{\"resourceVersion\":\"").Append(rv.ToString(CultureInfo.InvariantCulture)).Append('"');
        if (next is not null)
            head.Append(",\"continue\":\"").Append(next).Append("\",\"remainingItemCount\":").Append(remaining.ToString(CultureInfo.InvariantCulture));
        head.Append("},\"items\":[");
        var headBytes = Encoding.UTF8.GetBytes(head.ToString());
        long length = headBytes.Length + 2 + Math.Max(count - 1, 0);
        for (var i = offset; i < offset + count; i++) length += items[i].Utf8.Length;

        var response = ctx.Response;
        response.StatusCode = 200;
        response.ContentType = "application/json";
        response.ContentLength = length;
        var writer = response.BodyWriter;
        writer.Write(headBytes);
        var pending = headBytes.Length;
        for (var i = offset; i < offset + count; i++)
        {
            if (i > offset) { writer.Write(","u8); pending++; }
            var bytes = items[i].Utf8;
            writer.Write(bytes);
            pending += bytes.Length;
            if (pending >= FlushThreshold)
            {
                var flushed = await writer.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
                if (flushed.IsCanceled || flushed.IsCompleted) return;
                pending = 0;
            }
        }
        writer.Write("]}"u8);
        await writer.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- WATCH

    private async Task WatchAsync(HttpContext ctx, ResourceType type, string? ns)
    {
        var q = ctx.Request.Query;
        if (q.ContainsKey("sendInitialEvents"))
        {
            // Watch-list is not implemented; rejecting it makes client-go fall back to LIST+WATCH.
            await InvalidAsync(ctx, type, "sendInitialEvents", "sendInitialEvents is not supported by this server").ConfigureAwait(false);
            return;
        }
        if (q.ContainsKey("resourceVersionMatch"))
        {
            await InvalidAsync(ctx, type, "resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided").ConfigureAwait(false);
            return;
        }

        if (await SelectorsAsync(ctx, q, type).ConfigureAwait(false) is not var (labels, fields)) return;

        var rv = q["resourceVersion"].ToString();
        long? from = null;
        if (rv.Length > 0 && rv != "0")
        {
            if (!long.TryParse(rv, NumberStyles.None, CultureInfo.InvariantCulture, out var parsed))
            {
                await WriteStatusAsync(ctx, 400, "BadRequest", $"invalid resource version: {rv}").ConfigureAwait(false);
                return;
            }
            from = parsed;
        }

        TimeSpan? timeout = null;
        if (q["timeoutSeconds"].ToString() is { Length: > 0 } ts)
        {
            if (!int.TryParse(ts, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds))
            {
                await WriteStatusAsync(ctx, 400, "BadRequest", $"invalid timeoutSeconds: {ts}").ConfigureAwait(false);
                return;
            }
            timeout = TimeSpan.FromSeconds(seconds);
        }
        var bookmarks = q["allowWatchBookmarks"] is var ab && (ab == "true" || ab == "1");
        var table = WantsTable(ctx.Request);
        var include = KubeTables.ParseInclude(q["includeObject"]);

        var response = ctx.Response;
        response.StatusCode = 200;
        response.ContentType = "application/json";
        var writer = response.BodyWriter;

        Watcher watcher;
        IReadOnlyList<StoredObject> initial;
        IReadOnlyList<StoredEvent> replay;
        try
        {
            (watcher, initial, replay, _) = Store.OpenWatch(type.Resource, from);
        }
        catch (ResourceVersionTooOldException e)
        {
            WriteErrorEvent(writer, 410, "Expired", e.Message);
            await writer.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
            return;
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, watcher.Aborted, _stopping.Token);
        if (timeout is { } t) stop.CancelAfter(t);
        var firstTable = true;
        var bookmarkLoop = bookmarks ? BookmarkLoopAsync(watcher, stop.Token) : Task.CompletedTask;
        try
        {
            await response.StartAsync(stop.Token).ConfigureAwait(false);
            var pending = 0;
            foreach (var o in initial)
            {
                if (!Matches(o, ns, labels, fields)) continue;
                pending += WriteEvent(writer, type, "ADDED", o.Utf8, o, table, include, ref firstTable);
                if (pending >= FlushThreshold)
                {
                    await writer.FlushAsync(stop.Token).ConfigureAwait(false);
                    pending = 0;
                }
            }
            foreach (var ev in replay)
                pending += WriteChange(writer, type, ev, ns, labels, fields, table, include, ref firstTable);
            await writer.FlushAsync(stop.Token).ConfigureAwait(false);

            var reader = watcher.Reader;
            while (await reader.WaitToReadAsync(stop.Token).ConfigureAwait(false))
            {
                var delivery = Store.WatchDelivery;
                if (!delivery.IsCompleted) await delivery.WaitAsync(stop.Token).ConfigureAwait(false);
                // Drain what is queued, then flush once: per-event delivery when quiet, batching when busy.
                pending = 0;
                while (pending < FlushThreshold && reader.TryRead(out var item))
                {
                    pending += item switch
                    {
                        ChangeItem c => WriteChange(writer, type, c.Event, ns, labels, fields, table, include, ref firstTable),
                        BookmarkItem b => WriteBookmark(writer, type, b.ResourceVersion),
                        RawItem r => WriteRaw(writer, r.Line),
                        _ => 0,
                    };
                }
                await writer.FlushAsync(stop.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            // timeoutSeconds, client gone, server stopping or an injected abort: handled below.
        }
        finally
        {
            Store.CloseWatch(watcher);
            await stop.CancelAsync().ConfigureAwait(false);
            await bookmarkLoop.ConfigureAwait(false);
        }

        // An injected fault or restart drops the connection mid-stream, as a crashing apiserver would;
        // a timeout or shutdown ends the chunked body properly.
        if (watcher.Aborted.IsCancellationRequested) ctx.Abort();
    }

    private async Task BookmarkLoopAsync(Watcher watcher, CancellationToken ct)
    {
        using var timer = new PeriodicTimer(_options.BookmarkInterval);
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
                Store.RequestBookmark(watcher);
        }
        catch (OperationCanceledException)
        {
        }
    }

    private int WriteChange(PipeWriter writer, ResourceType type, StoredEvent ev, string? ns, LabelSelector labels,
        FieldSelector fields, bool table, KubeTables.IncludeObject include, ref bool firstTable)
    {
        switch (ev.Type)
        {
            case WatchEventType.Added:
                return Matches(ev.Object, ns, labels, fields) ? WriteEvent(writer, type, "ADDED", ev.Object.Utf8, ev.Object, table, include, ref firstTable) : 0;
            case WatchEventType.Deleted:
                return Matches(ev.Object, ns, labels, fields) ? WriteEvent(writer, type, "DELETED", ev.Object.Utf8, ev.Object, table, include, ref firstTable) : 0;
            default:
                var now = Matches(ev.Object, ns, labels, fields);
                var before = ev.Previous is not null && Matches(ev.Previous, ns, labels, fields);
                if (now) return WriteEvent(writer, type, before ? "MODIFIED" : "ADDED", ev.Object.Utf8, ev.Object, table, include, ref firstTable);
                if (!before) return 0;
                // Left the selection: the watcher gets the state it last matched, at this event's version.
                var prev = ev.PreviousAtThisVersion();
                var stand = new StoredObject(ev.Previous!.Type, ev.Previous.Namespace, ev.Previous.Name, ev.ResourceVersion, prev, ev.Previous.Labels, ev.Previous.Fields);
                return WriteEvent(writer, type, "DELETED", prev, stand, table, include, ref firstTable);
        }
    }

    private int WriteEvent(PipeWriter writer, ResourceType type, string eventType, byte[] utf8, StoredObject obj,
        bool table, KubeTables.IncludeObject include, ref bool firstTable)
    {
        var head = eventType switch
        {
            "ADDED" => "{\"type\":\"ADDED\",\"object\":"u8,
            "MODIFIED" => "{\"type\":\"MODIFIED\",\"object\":"u8,
            _ => "{\"type\":\"DELETED\",\"object\":"u8,
        };
        writer.Write(head);
        var written = head.Length + 2;
        if (table)
        {
            var before = writer.UnflushedBytes;
            using (var w = new Utf8JsonWriter(writer))
                KubeTables.WriteTable(w, type, [obj], obj.ResourceVersion, null, null, firstTable, include, _options.Clock.GetUtcNow());
            firstTable = false;
            written += (int)(writer.UnflushedBytes - before);
        }
        else
        {
            writer.Write(utf8);
            written += utf8.Length;
        }
        writer.Write("}\n"u8);
        return written;
    }

    private static int WriteBookmark(PipeWriter writer, ResourceType type, long rv)
    {
        var line = Encoding.UTF8.GetBytes(
            $"{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"{type.Kind}\",\"apiVersion\":\"{type.GroupVersion}\",\"metadata\":{{\"resourceVersion\":\"{rv}\"}}}}}}\n");
        writer.Write(line);
        return line.Length;
    }

    private static int WriteRaw(PipeWriter writer, byte[] line)
    {
        writer.Write(line);
        return line.Length;
    }

    private static void WriteErrorEvent(PipeWriter writer, int code, string reason, string message)
    {
        using (var w = new Utf8JsonWriter(writer))
        {
            w.WriteStartObject();
            w.WriteString("type", "ERROR");
            w.WritePropertyName("object");
            WriteStatusObject(w, code, reason, message, null);
            w.WriteEndObject();
        }
        writer.Write(NewLine);
    }

    // ---------------------------------------------------------------- discovery

    private static void WriteVersion(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteString("major", "1");
        w.WriteString("minor", "32");
        w.WriteString("gitVersion", "v1.32.4");
        w.WriteString("gitCommit", "59526cd4867447956156ae3a602fcbac10a2c335");
        w.WriteString("gitTreeState", "clean");
        w.WriteString("buildDate", "2025-04-22T16:02:27Z");
        w.WriteString("goVersion", "go1.23.6");
        w.WriteString("compiler", "gc");
        w.WriteString("platform", "linux/amd64");
        w.WriteEndObject();
    }

    private static void WriteApiVersions(Utf8JsonWriter w, HttpContext ctx)
    {
        w.WriteStartObject();
        w.WriteString("kind", "APIVersions");
        w.WriteStartArray("versions");
        w.WriteStringValue("v1");
        w.WriteEndArray();
        w.WriteStartArray("serverAddressByClientCIDRs");
        w.WriteStartObject();
        w.WriteString("clientCIDR", "0.0.0.0/0");
        w.WriteString("serverAddress", $"{ctx.Connection.LocalIpAddress}:{ctx.Connection.LocalPort}");
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private void WriteGroupList(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteString("kind", "APIGroupList");
        w.WriteString("apiVersion", "v1");
        w.WriteStartArray("groups");
        foreach (var g in Store.Resources.Where(t => t.Group.Length > 0).GroupBy(t => t.Group).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            w.WriteStartObject();
            w.WriteString("name", g.Key);
            w.WriteStartArray("versions");
            var versions = g.Select(t => t.Version).Distinct().ToArray();
            foreach (var v in versions)
            {
                w.WriteStartObject();
                w.WriteString("groupVersion", $"{g.Key}/{v}");
                w.WriteString("version", v);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartObject("preferredVersion");
            w.WriteString("groupVersion", $"{g.Key}/{versions[0]}");
            w.WriteString("version", versions[0]);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteResourceList(Utf8JsonWriter w, string groupVersion, IEnumerable<ResourceType> types)
    {
        w.WriteStartObject();
        w.WriteString("kind", "APIResourceList");
        w.WriteString("apiVersion", "v1");
        w.WriteString("groupVersion", groupVersion);
        w.WriteStartArray("resources");
        foreach (var t in types.OrderBy(t => t.Resource, StringComparer.Ordinal))
        {
            w.WriteStartObject();
            w.WriteString("name", t.Resource);
            w.WriteString("singularName", t.SingularName);
            w.WriteBoolean("namespaced", t.Namespaced);
            w.WriteString("kind", t.Kind);
            // Every verb served; deletecollection is not, so it is not advertised.
            w.WriteStartArray("verbs");
            foreach (var verb in (ReadOnlySpan<string>)["create", "delete", "get", "list", "patch", "update", "watch"]) w.WriteStringValue(verb);
            w.WriteEndArray();
            if (t.ShortNames.Count > 0)
            {
                w.WriteStartArray("shortNames");
                foreach (var s in t.ShortNames) w.WriteStringValue(s);
                w.WriteEndArray();
            }
            w.WriteEndObject();
            if (t == ResourceType.Pods)
            {
                // kubectl drain evicts through policy/v1 only when discovery lists this subresource.
                w.WriteStartObject();
                w.WriteString("name", "pods/eviction");
                w.WriteString("singularName", "");
                w.WriteBoolean("namespaced", true);
                w.WriteString("group", "policy");
                w.WriteString("version", "v1");
                w.WriteString("kind", "Eviction");
                w.WriteStartArray("verbs");
                w.WriteStringValue("create");
                w.WriteEndArray();
                w.WriteEndObject();
            }
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    // ---------------------------------------------------------------- responses

    private static async Task WriteJsonAsync(HttpContext ctx, int status, Action<Utf8JsonWriter> write)
    {
        var response = ctx.Response;
        response.StatusCode = status;
        // Also the answer to an aggregated-discovery Accept: plain JSON makes the client fall back to legacy discovery.
        response.ContentType = "application/json";
        using (var w = new Utf8JsonWriter(response.BodyWriter))
            write(w);
        await response.BodyWriter.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>A metav1.Status: Success when <paramref name="reason"/> is null, else a Failure with its reason and message.</summary>
    private static void WriteStatusObject(Utf8JsonWriter w, int code, string? reason, string? message, Action<Utf8JsonWriter>? details)
    {
        w.WriteStartObject();
        w.WriteString("kind", "Status");
        w.WriteString("apiVersion", "v1");
        w.WriteStartObject("metadata");
        w.WriteEndObject();
        w.WriteString("status", reason is null ? "Success" : "Failure");
        if (reason is not null)
        {
            w.WriteString("message", message);
            w.WriteString("reason", reason);
        }
        if (details is not null)
        {
            w.WriteStartObject("details");
            details(w);
            w.WriteEndObject();
        }
        w.WriteNumber("code", code);
        w.WriteEndObject();
    }

    private static Task WriteStatusAsync(HttpContext ctx, int code, string reason, string message, Action<Utf8JsonWriter>? details = null) =>
        WriteJsonAsync(ctx, code, w => WriteStatusObject(w, code, reason, message, details));

    private static Task NotFoundPathAsync(HttpContext ctx) =>
        WriteStatusAsync(ctx, 404, "NotFound", "the server could not find the requested resource", w =>
        {
            w.WriteStartArray("causes");
            w.WriteStartObject();
            w.WriteString("reason", "UnexpectedServerResponse");
            w.WriteString("message", "404 page not found");
            w.WriteEndObject();
            w.WriteEndArray();
        });

    private static Task InvalidAsync(HttpContext ctx, ResourceType type, string field, string problem) =>
        WriteStatusAsync(ctx, 422, "Invalid", $"ListOptions.meta.k8s.io \"\" is invalid: {field}: Forbidden: {problem}", w =>
        {
            w.WriteString("group", "meta.k8s.io");
            w.WriteString("kind", "ListOptions");
            w.WriteStartArray("causes");
            w.WriteStartObject();
            w.WriteString("reason", "FieldValueForbidden");
            w.WriteString("message", $"Forbidden: {problem}");
            w.WriteString("field", field);
            w.WriteEndObject();
            w.WriteEndArray();
        });

    private static Task WriteInjectedFailureAsync(HttpContext ctx, FailureRule rule)
    {
        var (reason, message) = rule.StatusCode switch
        {
            429 => ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
            500 => ("InternalError", "an error on the server (\"injected fault\") has prevented the request from succeeding"),
            503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
            504 => ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request"),
            404 => ("NotFound", "the server could not find the requested resource"),
            410 => ("Expired", "too old resource version"),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "forbidden: injected fault"),
            409 => ("Conflict", "the object has been modified; please apply your changes to the latest version and try again"),
            _ => ("BadRequest", "injected fault"),
        };
        var retrySeconds = rule.RetryAfter is { } ra ? (int)Math.Max(1, Math.Ceiling(ra.TotalSeconds)) : (int?)null;
        if (rule.StatusCode == 429) retrySeconds ??= 1;
        if (retrySeconds is { } s) ctx.Response.Headers.RetryAfter = s.ToString(CultureInfo.InvariantCulture);
        return WriteStatusAsync(ctx, rule.StatusCode, reason, message,
            retrySeconds is { } rs ? w => w.WriteNumber("retryAfterSeconds", rs) : null);
    }
}
