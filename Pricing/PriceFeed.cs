using System.Globalization;
using System.Reflection;
using System.Text.Json;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

public sealed record PriceFeedOptions
{
    public string Bucket { get; init; } = "ngpc-prod-public-data";
    public string Key { get; init; } = "percentiles.json";
    public string Region { get; init; } = "us-east-2";
    public string? Endpoint { get; init; }
    public TimeSpan Refresh { get; init; } = TimeSpan.FromMinutes(5);
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(20);
    /// <summary>A book older than this is flagged stale (karpetrack_pricing_stale).</summary>
    public TimeSpan StaleAfter { get; init; } = TimeSpan.FromMinutes(30);
}

public sealed class PriceFeedException(string message) : Exception(message);

/// <summary>
/// Keeps the current price book: polls the S3 feed with a conditional GET (ETag; 304 keeps the
/// book), keeps the last good book on any error, falls back to the embedded snapshot at start.
/// </summary>
public sealed class PriceFeed : IDisposable
{
    private readonly PriceFeedOptions options;
    private readonly IAmazonS3 s3;
    private readonly ILogger log;
    private readonly TimeProvider clock;
    private readonly object gate = new();
    private readonly Prometheus.Counter errorsFamily;
    private readonly Dictionary<(string Source, string Reason), Prometheus.Counter.Child> errors = [];
    private readonly Dictionary<string, DateTimeOffset> lastSuccess = [];
    private PriceBook book;
    private PriceBook? feedBook;
    private IReadOnlyDictionary<string, SpotClassFacts>? spotFacts;
    private DateTimeOffset? spotFactsAt;
    private bool feedSettled, spotExpected, spotSettled;
    private readonly TaskCompletionSource complete = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public PriceFeed(PriceFeedOptions options, ILogger log, TimeProvider? clock = null, PriceBook? initial = null, Telemetry? telemetry = null)
    {
        this.options = options;
        this.log = log;
        this.clock = clock ?? TimeProvider.System;
        s3 = CreateClient(options);
        book = initial ?? PriceFeedParser.Embedded();
        // A book from the feed given at start (tests, benchmarks) is a first read already.
        if (!book.Embedded) { feedBook = book; feedSettled = true; complete.TrySetResult(); }
        telemetry ??= new Telemetry();
        var lastSuccessFamily = telemetry.GaugeOnceSet("karpetrack_pricing_last_success_timestamp_seconds",
            "Unix time of the last successful read per price source (feed, spot_api).", "source");
        errorsFamily = telemetry.Counter("karpetrack_pricing_errors_total",
            "Failed price reads by source and reason; the last good price book is kept.", "source", "reason");
        foreach (var source in Sources)
            foreach (var reason in ErrorReasons)
                errors[(source, reason)] = errorsFamily.WithLabels(source, reason);
        var stale = telemetry.Gauge("karpetrack_pricing_stale", "1 while serving the embedded snapshot or a price book older than the staleness limit.");
        telemetry.OnScrape(() =>
        {
            foreach (var (source, at) in LastSuccess) lastSuccessFamily.WithLabels(source).Set(at.ToUnixTimeMilliseconds() / 1000.0);
            stale.Set(Stale ? 1 : 0);
        });
    }

    public static IAmazonS3 CreateClient(PriceFeedOptions options)
    {
        var config = new AmazonS3Config
        {
            Timeout = options.Timeout,
            MaxErrorRetry = 2,
        };
        if (!string.IsNullOrEmpty(options.Endpoint))
        {
            config.ServiceURL = options.Endpoint;
            config.ForcePathStyle = true;
            config.AuthenticationRegion = options.Region;
        }
        else
        {
            config.RegionEndpoint = Amazon.RegionEndpoint.GetBySystemName(options.Region);
        }
        return new AmazonS3Client(new AnonymousAWSCredentials(), config);
    }

    public PriceBook Current { get { lock (gate) return book; } }

    /// <summary>True while serving the embedded snapshot, or a feed book older than StaleAfter.</summary>
    public bool Stale
    {
        get
        {
            var b = Current;
            return b.Embedded || clock.GetUtcNow() - b.FetchedAt > options.StaleAfter;
        }
    }

    /// <summary>
    /// True once the whole price book has been asked for: the first read of the feed ended (a book, an unchanged one,
    /// or a definite failure, after which the embedded snapshot is the fallback) and, when the Spot API is expected
    /// (<see cref="ExpectSpotFacts"/>), its first read of server-class facts ended too. The first plan waits for it.
    /// </summary>
    public bool Complete { get { lock (gate) return feedSettled && (!spotExpected || spotSettled); } }

    /// <summary>Completes when <see cref="Complete"/> becomes true (never goes back).</summary>
    public Task Completed => complete.Task;

    /// <summary>Spot credentials are set: the book is complete only after the Spot API's first answer (or failure).</summary>
    public void ExpectSpotFacts() { lock (gate) spotExpected = true; }

    /// <summary>The Spot API's first read of facts ended, merged or failed (called after every read; only the first counts).</summary>
    public void SpotFactsSettled() { lock (gate) spotSettled = true; Settle(); }

    private void Settle()
    {
        if (Complete) complete.TrySetResult();
    }

    /// <summary>Failed reads so far by source and reason (pairs with none left out).</summary>
    public IReadOnlyDictionary<(string Source, string Reason), long> Errors
    {
        get { lock (gate) return errors.Where(kv => kv.Value.Value > 0).ToDictionary(kv => kv.Key, kv => (long)kv.Value.Value); }
    }

    public IReadOnlyDictionary<string, DateTimeOffset> LastSuccess { get { lock (gate) return new Dictionary<string, DateTimeOffset>(lastSuccess); } }

    public static readonly string[] Sources = ["feed", "spot_api"];

    // unauthorized, throttled and circuit_open come from the Spot API (SpotApiException.Reason).
    public static readonly string[] ErrorReasons = ["not_found", "access_denied", "timeout", "http", "network", "malformed", "too_large", "unauthorized", "throttled", "circuit_open"];

    public void RecordError(string source, string reason)
    {
        Prometheus.Counter.Child? counter;
        lock (gate)
        {
            if (!errors.TryGetValue((source, reason), out counter)) errors[(source, reason)] = counter = errorsFamily.WithLabels(source, reason);
        }
        counter.Inc();
    }

    /// <summary>Merges ServerClass facts from the Spot API into every book from now on.</summary>
    public void SetSpotFacts(IReadOnlyDictionary<string, SpotClassFacts> facts)
    {
        lock (gate)
        {
            spotFacts = facts;
            spotFactsAt = clock.GetUtcNow();
            lastSuccess["spot_api"] = spotFactsAt.Value;
            book = (feedBook ?? book).WithSpotApi(facts, spotFactsAt.Value);
        }
    }

    /// <summary>One conditional GET; returns true when a new book was published. The first one settles the feed (see <see cref="Complete"/>).</summary>
    public async Task<bool> RefreshAsync(CancellationToken ct)
    {
        try { return await ReadAsync(ct).ConfigureAwait(false); }
        finally
        {
            // Cancelled at shutdown is no answer; any other end of a read is one.
            if (!ct.IsCancellationRequested) { lock (gate) feedSettled = true; Settle(); }
        }
    }

    private async Task<bool> ReadAsync(CancellationToken ct)
    {
        string? etag;
        lock (gate) etag = feedBook?.ETag;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(options.Timeout);
            var request = new GetObjectRequest { BucketName = options.Bucket, Key = options.Key };
            if (etag is not null) request.EtagToNotMatch = etag;
            using var response = await s3.GetObjectAsync(request, timeout.Token).ConfigureAwait(false);
            if (response.ContentLength > PriceFeedParser.MaxBytes)
            {
                RecordError("feed", "too_large");
                log.LogWarning("price feed s3://{Bucket}/{Key} is {Bytes} bytes, over the {Limit}-byte limit; keeping the last good price book", options.Bucket, options.Key, response.ContentLength, PriceFeedParser.MaxBytes);
                return false;
            }
            var body = await ReadLimitedAsync(response.ResponseStream, PriceFeedParser.MaxBytes, timeout.Token).ConfigureAwait(false);
            if (body is null)
            {
                RecordError("feed", "too_large");
                log.LogWarning("price feed s3://{Bucket}/{Key} is over the {Limit}-byte limit; keeping the last good price book", options.Bucket, options.Key, PriceFeedParser.MaxBytes);
                return false;
            }
            var parsed = PriceFeedParser.Parse(body, clock.GetUtcNow(), $"s3://{options.Bucket}/{options.Key}", etag: response.ETag);
            lock (gate)
            {
                feedBook = parsed;
                book = spotFacts is null ? parsed : parsed.WithSpotApi(spotFacts, spotFactsAt!.Value);
                lastSuccess["feed"] = parsed.FetchedAt;
            }
            log.LogInformation("price book updated from {Source}: {Count} server classes (ETag {ETag})", parsed.Source, parsed.Classes.Count, response.ETag);
            return true;
        }
        catch (AmazonS3Exception e) when (e.StatusCode == System.Net.HttpStatusCode.NotModified)
        {
            // Unchanged: the book we have is current, so it is fresh again.
            lock (gate)
            {
                if (feedBook is not null)
                {
                    feedBook = new PriceBook(feedBook.Classes, clock.GetUtcNow(), feedBook.Source, false, feedBook.ETag);
                    book = spotFacts is null ? feedBook : feedBook.WithSpotApi(spotFacts, spotFactsAt!.Value);
                }
                lastSuccess["feed"] = clock.GetUtcNow();
            }
            return false;
        }
        catch (PriceFeedException e)
        {
            RecordError("feed", "malformed");
            log.LogWarning("price feed s3://{Bucket}/{Key} rejected: {Reason}; keeping the last good price book", options.Bucket, options.Key, e.Message);
            return false;
        }
        catch (AmazonS3Exception e)
        {
            var reason = e.ErrorCode == "NoSuchKey" || e.StatusCode == System.Net.HttpStatusCode.NotFound ? "not_found"
                : e.StatusCode is System.Net.HttpStatusCode.Forbidden ? "access_denied" : "http";
            RecordError("feed", reason);
            log.LogWarning("price feed s3://{Bucket}/{Key}: {Status} {Code}; keeping the last good price book", options.Bucket, options.Key, (int)e.StatusCode, e.ErrorCode);
            return false;
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            RecordError("feed", "timeout");
            log.LogWarning("price feed s3://{Bucket}/{Key}: no answer within {Timeout}; keeping the last good price book", options.Bucket, options.Key, options.Timeout);
            return false;
        }
        catch (Exception e) when (e is AmazonClientException or HttpRequestException or IOException or System.Net.Sockets.SocketException or TimeoutException)
        {
            RecordError("feed", e is TimeoutException || e.InnerException is TimeoutException ? "timeout" : "network");
            log.LogWarning("price feed s3://{Bucket}/{Key}: {Error}; keeping the last good price book", options.Bucket, options.Key, e.Message);
            return false;
        }
    }

    private static async Task<byte[]?> ReadLimitedAsync(Stream s, int limit, CancellationToken ct)
    {
        using var ms = new MemoryStream();
        var buf = new byte[64 * 1024];
        int n;
        while ((n = await s.ReadAsync(buf, ct).ConfigureAwait(false)) > 0)
        {
            if (ms.Length + n > limit) return null;
            ms.Write(buf, 0, n);
        }
        return ms.ToArray();
    }

    public async Task RunAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            await RefreshAsync(ct).ConfigureAwait(false);
            try { await Task.Delay(options.Refresh, clock, ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
        }
    }

    public void Dispose() => s3.Dispose();
}
