using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>Where a reflector puts what it sees. Relists reconcile: objects not seen again are deleted.</summary>
public interface IReflectorTarget<in T>
{
    void BeginRelist();
    void Upsert(T item);
    void Delete(T item);
    int EndRelist();
}

/// <summary>
/// One watched resource's sync state, read by /readyz, /sync, the recommender and the actuator, and
/// published as its karpetrack_cache_* and watch families (one series per resource).
/// </summary>
public sealed class ReflectorStatus
{
    private readonly object gate = new();
    private readonly TimeProvider clock;
    private readonly Prometheus.Counter restartsFamily;
    private readonly Dictionary<string, Prometheus.Counter.Child> restarts = new(StringComparer.Ordinal);
    private readonly Prometheus.Counter.Child decodeErrors;
    private readonly Prometheus.Gauge.Child synced, age;

    /// <param name="clock">What karpetrack_cache_age_seconds counts against (the reflector stamps events with its own).</param>
    public ReflectorStatus(string resource, Telemetry? telemetry = null, TimeProvider? clock = null)
    {
        Resource = resource;
        this.clock = clock ?? TimeProvider.System;
        telemetry ??= new Telemetry();
        age = telemetry.GaugeOnceSet("karpetrack_cache_age_seconds",
            "Seconds since the last list, watch event or bookmark actually received for the resource.", "resource").WithLabels(resource);
        synced = telemetry.Gauge("karpetrack_cache_synced", "1 once the resource's initial list has completed, else 0.", "resource").WithLabels(resource);
        restartsFamily = telemetry.Counter("karpetrack_watch_restarts_total",
            "Watch restarts by reason: closed (normal end), expired (410, relist), throttled (429), http_error, network_error, decode_error.", "resource", "reason");
        // Every reason from the start, zero included, so that rate() works from the first scrape.
        foreach (var reason in RestartReasons) restarts[reason] = restartsFamily.WithLabels(resource, reason);
        decodeErrors = telemetry.Counter("karpetrack_decode_errors_total", "Malformed objects skipped while decoding lists and watch events.", "resource").WithLabels(resource);
        telemetry.OnScrape(() =>
        {
            if (LastEventAt is { } at) age.Set(Math.Max(0, Math.Round((this.clock.GetUtcNow() - at).TotalSeconds, 3)));
        });
    }

    public string Resource { get; }
    public bool Synced { get; private set; }
    public DateTimeOffset? LastEventAt { get; private set; }
    public string? ResourceVersion { get; private set; }
    public long DecodeErrors => (long)decodeErrors.Value;
    public long Events { get; private set; }

    /// <summary>
    /// Since when the cache has had no open watch nor a completed list (null while one is open): a cache that once synced
    /// but cannot reach the API server any more is frozen, however "synced" it says it is.
    /// </summary>
    public DateTimeOffset? OutOfTouchSince { get; private set; }

    /// <summary>Synced, and not out of touch with the API server for longer than <paramref name="limit"/> (by this status's clock).</summary>
    public bool InTouch(TimeSpan limit)
    {
        var now = clock.GetUtcNow();
        lock (gate) return Synced && (OutOfTouchSince is not { } since || now - since <= limit);
    }

    public void MarkSynced(string? rv, DateTimeOffset now)
    {
        lock (gate) { Synced = true; ResourceVersion = rv; LastEventAt = now; OutOfTouchSince = null; }
        synced.Set(1);
    }

    /// <summary>A watch stream is open (the server answered it): the cache follows the API server again.</summary>
    public void WatchOpened()
    {
        lock (gate) OutOfTouchSince = null;
    }

    public void Received(string? rv, DateTimeOffset now)
    {
        lock (gate)
        {
            if (rv is not null) ResourceVersion = rv;
            LastEventAt = now;
            Events++;
        }
    }

    public void Restarted(string reason)
    {
        Prometheus.Counter.Child? counter;
        lock (gate)
        {
            if (!restarts.TryGetValue(reason, out counter)) restarts[reason] = counter = restartsFamily.WithLabels(Resource, reason);
            OutOfTouchSince ??= clock.GetUtcNow();
        }
        counter.Inc();
    }

    public void DecodeError() => decodeErrors.Inc();

    /// <summary>Restarts so far by reason (reasons with none left out).</summary>
    public IReadOnlyDictionary<string, long> Restarts
    {
        get
        {
            lock (gate)
                return restarts.Where(kv => kv.Value.Value > 0).ToDictionary(kv => kv.Key, kv => (long)kv.Value.Value, StringComparer.Ordinal);
        }
    }

    public long TotalRestarts
    {
        get { lock (gate) return restarts.Values.Sum(c => (long)c.Value); }
    }

    /// <summary>The reasons a watch can restart; all are exported, zero included, so rate() works from the start.</summary>
    public static readonly string[] RestartReasons = ["closed", "expired", "throttled", "http_error", "network_error", "decode_error"];
}

public sealed record ReflectorOptions
{
    public int PageSize { get; init; } = 500;
    public TimeSpan MinWatchTimeout { get; init; } = TimeSpan.FromMinutes(5);
    public TimeSpan MaxWatchTimeout { get; init; } = TimeSpan.FromMinutes(10);
    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromMilliseconds(800);
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(30);
    public TimeSpan BackoffReset { get; init; } = TimeSpan.FromMinutes(2);
    /// <summary>A watch that closes this fast without any event counts as a failure (client-go does the same).</summary>
    public TimeSpan MinHealthyWatch { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How much of the next LIST page is read ahead while the current one is decoded: one page of 500 pods is about
    /// 2.5 MB, so the default holds a whole such page (memory stays bounded to one page ahead); 0 still requests it ahead.
    /// </summary>
    public int PrefetchBytes { get; init; } = 4 << 20;
}

/// <summary>
/// List + watch for one resource, as client-go's reflector does it: a paged LIST, then a WATCH from
/// the list's resourceVersion with bookmarks; a watch that ends cleanly resumes from the last
/// resourceVersion seen; 410 relists and reconciles; 429 waits for Retry-After; other errors back
/// off exponentially with jitter and relist.
/// </summary>
public sealed class Reflector<T> where T : class
{
    private readonly KubeClient client;
    private readonly string path;
    private readonly string? labelSelector, fieldSelector;
    private readonly IObjectDecoder<T> decoder;
    private readonly IReflectorTarget<T> target;
    private readonly ReflectorOptions options;
    private readonly ILogger log;
    private readonly TimeProvider clock;
    private readonly Random random;
    private readonly HashSet<string> loggedBadObjects = new(StringComparer.Ordinal);

    public Reflector(KubeClient client, string path, string? labelSelector, string? fieldSelector,
        IObjectDecoder<T> decoder, IReflectorTarget<T> target, ReflectorStatus status,
        ReflectorOptions options, ILogger log, TimeProvider? clock = null, int? seed = null)
    {
        this.client = client;
        this.path = path;
        this.labelSelector = string.IsNullOrWhiteSpace(labelSelector) ? null : labelSelector;
        this.fieldSelector = string.IsNullOrWhiteSpace(fieldSelector) ? null : fieldSelector;
        this.decoder = decoder;
        this.target = target;
        this.options = options;
        this.log = log;
        this.clock = clock ?? TimeProvider.System;
        random = seed is { } s ? new Random(s) : Random.Shared;
        Status = status;
    }

    public ReflectorStatus Status { get; }

    public async Task RunAsync(CancellationToken ct)
    {
        string? lastRv = null;
        bool needList = true;
        if (!JsonSkip.Enabled) log.LogWarning("{Resource}: the fast JSON skip failed its self-check; decoding skips values token by token (slower, same results)", path);
        var backoff = new Backoff(options, random, clock);
        while (!ct.IsCancellationRequested)
        {
            try
            {
                if (needList)
                {
                    lastRv = await ListAsync(ct).ConfigureAwait(false);
                    needList = false;
                }
                var started = clock.GetTimestamp();
                var (rv, events) = await WatchAsync(lastRv!, rv => lastRv = rv, ct).ConfigureAwait(false);
                lastRv = rv;
                Status.Restarted("closed");
                if (events == 0 && clock.GetElapsedTime(started) < options.MinHealthyWatch)
                {
                    // A watch that ends at once is a server problem, not a timeout: back off, then relist.
                    needList = true;
                    await backoff.WaitAsync(null, ct).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (KubeApiException e) when (e.IsExpired)
            {
                Status.Restarted("expired");
                log.LogInformation("{Resource}: resourceVersion expired ({Message}); relisting", path, e.Message);
                needList = true;
            }
            catch (KubeApiException e) when (e.StatusCode == 429)
            {
                Status.Restarted("throttled");
                log.LogWarning("{Resource}: throttled by the API server; retrying after {Delay}", path, e.RetryAfter?.ToString() ?? "backoff");
                await backoff.WaitAsync(e.RetryAfter, ct).ConfigureAwait(false);
            }
            catch (KubeApiException e)
            {
                Status.Restarted("http_error");
                log.LogWarning("{Resource}: {Message}; relisting after backoff", path, e.Message);
                needList = true;
                await backoff.WaitAsync(null, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is InvalidDataException or JsonException)
            {
                Status.Restarted("decode_error");
                log.LogWarning("{Resource}: unreadable response: {Message}; relisting after backoff", path, e.Message);
                needList = true;
                await backoff.WaitAsync(null, ct).ConfigureAwait(false);
            }
            catch (KubeConfigException e)
            {
                // The credential went bad after start-up (an exec plugin's login expired): keep trying.
                Status.Restarted("http_error");
                log.LogWarning("{Resource}: no credential: {Message}; retrying after backoff", path, e.Message);
                needList = true;
                await backoff.WaitAsync(null, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException)
            {
                Status.Restarted("network_error");
                log.LogWarning("{Resource}: {Error}; retrying after backoff", path, e.Message);
                // A dropped connection mid-watch resumes the watch; a failed list lists again.
                await backoff.WaitAsync(null, ct).ConfigureAwait(false);
            }
        }
    }

    private string Query(params (string Key, string? Value)[] extra)
    {
        var sb = new StringBuilder(path);
        char sep = '?';
        void Add(string k, string? v)
        {
            if (v is null) return;
            sb.Append(sep).Append(k).Append('=').Append(Uri.EscapeDataString(v));
            sep = '&';
        }
        Add("labelSelector", labelSelector);
        Add("fieldSelector", fieldSelector);
        foreach (var (k, v) in extra) Add(k, v);
        return sb.ToString();
    }

    private async Task<string> ListAsync(CancellationToken ct)
    {
        var parser = new ListParser<T>(decoder);
        target.BeginRelist();
        string? rv = null;
        int total = 0;
        // A relist decodes every object once more: keep its garbage from piling up to the gen0 budget.
        var pacer = new AllocationPacer(8 << 20);
        // Pipelined: the next page is requested as soon as this one's continue token is read (before its items), and
        // read ahead by at most one page's bytes while this one is decoded. A page ahead that fails throws only when
        // its turn comes, after every item of the page before it is applied.
        // The pages' buffers (the read-ahead, up to 4 MB a page, and the windows) come from a pool of this list's own:
        // from the shared pool they stayed on the large object heap, 0-40 MB, long after the list (BENCHMARKS.md, "Where
        // the memory is"); this one is dropped with them when the list is done, and the next gen2 collection frees them.
        var buffers = ArrayPool<byte>.Create(maxArrayLength: 64 << 20, maxArraysPerBucket: 4);
        ListPrefetch? next = Request(null, 0);
        try
        {
            while (next is not null)
            {
                pacer.Tick();
                await using var current = next;
                next = null;
                using var window = await current.OpenWindowAsync().ConfigureAwait(false);
                var page = await parser.ParseAsync(window, (item, error) =>
                {
                    if (error is not null) { BadObject(item, error); return; }
                    target.Upsert(item);
                }, current.Token, onMetadata: m =>
                {
                    if (!string.IsNullOrEmpty(m.Continue)) next ??= Request(m.Continue, options.PrefetchBytes);
                }).ConfigureAwait(false);
                rv ??= page.ResourceVersion;
                total += page.Items;
                // A server that writes its metadata after the items: the next page is requested only now.
                if (!string.IsNullOrEmpty(page.Continue)) next ??= Request(page.Continue, 0);
            }
        }
        finally
        {
            if (next is not null) await next.DisposeAsync().ConfigureAwait(false);
        }

        int deleted = target.EndRelist();
        if (rv is null) throw new InvalidDataException("the list response carried no metadata.resourceVersion");
        Status.MarkSynced(rv, clock.GetUtcNow());
        log.LogInformation("{Resource}: listed {Count} objects at resourceVersion {ResourceVersion} ({Deleted} gone since the last list)", path, total, rv, deleted);
        return rv;

        ListPrefetch Request(string? continueToken, int readAhead)
        {
            var query = Query(("limit", options.PageSize.ToString(System.Globalization.CultureInfo.InvariantCulture)), ("continue", continueToken));
            return new ListPrefetch(t => client.GetAsync(query, t), readAhead, client.RequestTimeout, ct, buffers);
        }
    }

    private async Task<(string Rv, long Events)> WatchAsync(string fromRv, Action<string> onRv, CancellationToken ct)
    {
        var timeout = options.MinWatchTimeout + TimeSpan.FromSeconds(random.NextDouble() * (options.MaxWatchTimeout - options.MinWatchTimeout).TotalSeconds);
        int timeoutSeconds = Math.Max(1, (int)timeout.TotalSeconds);
        using var watchCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // The server closes the stream after timeoutSeconds; a silent, stuck connection is cut a bit later.
        watchCts.CancelAfter(TimeSpan.FromSeconds(timeoutSeconds + 30));
        var query = Query(("watch", "1"), ("resourceVersion", fromRv), ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeoutSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        using var response = await client.GetAsync(query, watchCts.Token).ConfigureAwait(false);
        Status.WatchOpened();
        await using var stream = await response.Content.ReadAsStreamAsync(watchCts.Token).ConfigureAwait(false);
        using var window = new StreamWindow(stream, initialSize: 64 * 1024);
        var parser = new WatchParser<T>(decoder);
        string rv = fromRv;
        long events = 0;
        KubeStatus? failure = null;
        await parser.ParseAsync(window, (type, item, status, error) =>
        {
            if (failure is not null) return;
            events++;
            if (type == WatchEventType.Error)
            {
                failure = status ?? new KubeStatus(500, "InternalError", error ?? "watch ERROR event without a status", null);
                return;
            }
            if (item is not null && decoder.ResourceVersionOf(item) is { Length: > 0 } itemRv)
            {
                rv = itemRv;
                onRv(rv);
            }
            Status.Received(rv, clock.GetUtcNow());
            if (type == WatchEventType.Bookmark || item is null) return;
            if (error is not null && type != WatchEventType.Deleted) { BadObject(item, error); return; }
            if (type == WatchEventType.Deleted) target.Delete(item);
            else target.Upsert(item);
        }, watchCts.Token).ConfigureAwait(false);
        if (failure is not null)
            throw new KubeApiException(failure.Code == 0 ? 500 : failure.Code, failure.Reason, $"watch {path}: {failure.Message}", null);
        return (rv, events);
    }

    private void BadObject(T item, string error)
    {
        Status.DecodeError();
        var name = decoder.Describe(item);
        // Logged once per object (bounded), counted every time.
        if (loggedBadObjects.Count < 10_000 && loggedBadObjects.Add(name))
            log.LogWarning("{Resource}: skipping malformed object {Name}: {Error}", path, name, error);
    }

    /// <summary>Exponential backoff with full jitter in [d, 2d), reset after a quiet period (client-go's numbers).</summary>
    private sealed class Backoff(ReflectorOptions options, Random random, TimeProvider clock)
    {
        private TimeSpan current = TimeSpan.Zero;
        private long lastFailure;

        public async Task WaitAsync(TimeSpan? retryAfter, CancellationToken ct)
        {
            long now = clock.GetTimestamp();
            if (lastFailure != 0 && clock.GetElapsedTime(lastFailure, now) > options.BackoffReset) current = TimeSpan.Zero;
            lastFailure = now;
            current = current == TimeSpan.Zero ? options.InitialBackoff : TimeSpan.FromTicks(Math.Min(current.Ticks * 2, options.MaxBackoff.Ticks));
            var delay = current + TimeSpan.FromTicks((long)(random.NextDouble() * current.Ticks));
            if (retryAfter is { } ra && ra > delay) delay = ra;
            await Task.Delay(delay, clock, ct).ConfigureAwait(false);
        }
    }
}
