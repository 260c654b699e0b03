using System.Globalization;
using System.Reflection;
using System.Text.Json;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>A Spot server class: shape and place, as the feed and the Spot API describe it.</summary>
public sealed record ServerClass(
    string Name,
    string Region,
    string Category,          // short code: gp, ch, mh, gpu, bm
    string CategoryName,      // as published: General Purpose, Compute Heavy, …
    decimal Cpu,
    long MemoryBytes,         // the feed's decimal GB × 10^9, never truncated
    string DisplayName,
    string Description,
    string Generation);

/// <summary>What a class costs per hour, in USD; null where no source told us.</summary>
public sealed record ClassPrices(
    decimal Market,
    decimal? P20,
    decimal? P50,
    decimal? P80,
    decimal? MinBid = null,
    decimal? OnDemand = null,
    long? DiskBytes = null,
    string? Availability = null)
{
    /// <summary>A Spot node is billed at the market price but never below the class's minimum bid.</summary>
    public decimal SpotPrice => MinBid is { } floor && floor > Market ? floor : Market;
}

public sealed record PricedClass(ServerClass Class, ClassPrices Prices);

/// <summary>The category codes and names of the feed, with the short aliases users type.</summary>
public static class Categories
{
    private static readonly (string Code, string Name)[] Known =
    [
        ("gp", "General Purpose"), ("ch", "Compute Heavy"), ("mh", "Memory Heavy"), ("gpu", "GPU"), ("bm", "Bare Metal"),
    ];

    public static string? CodeOf(string nameOrAlias)
    {
        var s = nameOrAlias.Trim();
        foreach (var (code, name) in Known)
            if (string.Equals(s, code, StringComparison.OrdinalIgnoreCase) || string.Equals(s, name, StringComparison.OrdinalIgnoreCase))
                return code;
        return null;
    }

    public static string NameOf(string code) => Known.FirstOrDefault(k => k.Code == code).Name ?? code;
}

/// <summary>An immutable, complete price catalogue: never half a book.</summary>
public sealed class PriceBook
{
    public PriceBook(IReadOnlyDictionary<string, PricedClass> classes, DateTimeOffset fetchedAt, string source, bool embedded, string? etag = null)
    {
        Classes = classes;
        FetchedAt = fetchedAt;
        Source = source;
        Embedded = embedded;
        ETag = etag;
        KnowsMinBids = classes.Values.Any(c => c.Prices.MinBid is not null);
    }

    public IReadOnlyDictionary<string, PricedClass> Classes { get; }

    /// <summary>
    /// Whether minimum bids are known (the Spot API told us; the public feed has none): then a class
    /// without one cannot be bid on, rather than merely unknown.
    /// </summary>
    public bool KnowsMinBids { get; }
    public DateTimeOffset FetchedAt { get; }
    public string Source { get; }
    public bool Embedded { get; }
    public string? ETag { get; }

    /// <summary>Hourly price of a node of that class and capacity type; null when unknown (unpriced, never free).</summary>
    public decimal? NodePrice(string serverClass, string capacityType)
    {
        if (!Classes.TryGetValue(serverClass, out var c)) return null;
        if (string.Equals(capacityType, "ondemand", StringComparison.OrdinalIgnoreCase)) return c.Prices.OnDemand;
        return c.Prices.SpotPrice;
    }

    /// <summary>Overlays what the Spot API knows (minimum bid, on-demand price, disk, availability) onto the feed.</summary>
    public PriceBook WithSpotApi(IReadOnlyDictionary<string, SpotClassFacts> facts, DateTimeOffset at)
    {
        var merged = new Dictionary<string, PricedClass>(Classes, StringComparer.Ordinal);
        foreach (var (name, f) in facts)
        {
            if (merged.TryGetValue(name, out var c))
            {
                merged[name] = c with
                {
                    Prices = c.Prices with
                    {
                        MinBid = f.MinBid ?? c.Prices.MinBid,
                        OnDemand = f.OnDemand ?? c.Prices.OnDemand,
                        DiskBytes = f.DiskBytes ?? c.Prices.DiskBytes,
                        Availability = f.Availability ?? c.Prices.Availability,
                    },
                };
            }
            else if (f.Class is not null && f.Market is { } market)
            {
                merged[name] = new PricedClass(f.Class, new ClassPrices(market, null, null, null, f.MinBid, f.OnDemand, f.DiskBytes, f.Availability));
            }
        }
        return new PriceBook(merged, FetchedAt, Source, Embedded, ETag);
    }
}

/// <summary>
/// Facts about a class read from the authenticated Spot API (ServerClasses). Biddable is false when
/// the class has no minimum bid: the admission webhook then rejects every bid (bare metal, §2.6).
/// </summary>
public sealed record SpotClassFacts(decimal? MinBid, decimal? OnDemand, long? DiskBytes, string? Availability, decimal? Market, ServerClass? Class, bool Biddable = true);

public sealed class PriceFeedException(string message) : Exception(message);

/// <summary>
/// Parses the public `percentiles.json` feed (spot-api.md §3.2) exactly: market prices are strings,
/// percentiles numbers with float noise, memory like `"3.75GB"` in decimal gigabytes. Any problem
/// rejects the whole feed with one clear message.
/// </summary>
public static class PriceFeedParser
{
    /// <summary>Larger bodies are rejected unread: the real feed is about 30 KB.</summary>
    public const int MaxBytes = 8 * 1024 * 1024;

    /// <summary>Bounds far beyond any server sold today; past them a feed is garbage, not a bigger server.</summary>
    public const decimal MaxCpu = 4096;
    public const long MaxMemoryBytes = 64_000_000_000_000;   // 64 TB

    public static PriceBook Parse(ReadOnlySpan<byte> json, DateTimeOffset fetchedAt, string source, bool embedded = false, string? etag = null)
    {
        if (json.IsEmpty) throw new PriceFeedException("the feed is empty");
        if (json.Length > MaxBytes) throw new PriceFeedException($"the feed is {json.Length} bytes, more than the {MaxBytes}-byte limit");
        // JsonDocument checks UTF-8 only when a string is read, and then throws outside our errors.
        if (!System.Text.Unicode.Utf8.IsValid(json)) throw new PriceFeedException("the feed is not valid UTF-8");
        JsonDocument doc;
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 16 });
            doc = JsonDocument.ParseValue(ref reader);
        }
        catch (JsonException e)
        {
            throw new PriceFeedException($"the feed is not valid JSON: {e.Message}");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("regions", out var regions) || regions.ValueKind != JsonValueKind.Object)
                throw new PriceFeedException("the feed has no \"regions\" object");
            var classes = new Dictionary<string, PricedClass>(StringComparer.Ordinal);
            foreach (var region in regions.EnumerateObject())
            {
                var path = $"regions.{region.Name}";
                if (region.Value.ValueKind != JsonValueKind.Object) throw new PriceFeedException($"{path}: expected an object");
                string generation = region.Value.TryGetProperty("generation", out var g) && g.ValueKind == JsonValueKind.String ? g.GetString()! : "";
                if (!region.Value.TryGetProperty("serverclasses", out var scs) || scs.ValueKind != JsonValueKind.Object)
                    throw new PriceFeedException($"{path}.serverclasses: missing or not an object");
                foreach (var sc in scs.EnumerateObject())
                {
                    var priced = ParseClass(sc, region.Name, generation, $"{path}.serverclasses.{sc.Name}");
                    if (!classes.TryAdd(sc.Name, priced)) throw new PriceFeedException($"{path}: server class {sc.Name} appears twice");
                }
            }
            if (classes.Count == 0) throw new PriceFeedException("the feed lists no server classes");
            return new PriceBook(classes, fetchedAt, source, embedded, etag);
        }
    }

    private static PricedClass ParseClass(JsonProperty sc, string region, string generation, string path)
    {
        var e = sc.Value;
        if (e.ValueKind != JsonValueKind.Object) throw new PriceFeedException($"{path}: expected an object");
        string Str(string key)
        {
            if (!e.TryGetProperty(key, out var v)) throw new PriceFeedException($"{path}.{key}: missing");
            if (v.ValueKind != JsonValueKind.String) throw new PriceFeedException($"{path}.{key}: expected a string, got {v.ValueKind}");
            return v.GetString()!;
        }
        decimal Price(string key, bool required)
        {
            if (!e.TryGetProperty(key, out var v))
            {
                if (required) throw new PriceFeedException($"{path}.{key}: missing");
                return -1;
            }
            decimal d;
            if (v.ValueKind == JsonValueKind.Number && v.TryGetDecimal(out var n)) d = n;
            else if (v.ValueKind == JsonValueKind.String && decimal.TryParse(v.GetString(), NumberStyles.AllowDecimalPoint | NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var s)) d = s;
            else throw new PriceFeedException($"{path}.{key}: \"{v}\" is not a price");
            if (d < 0) throw new PriceFeedException($"{path}.{key}: negative price {d}");
            if (d > 1000) throw new PriceFeedException($"{path}.{key}: implausible price {d} $/h");
            // The feed's percentiles carry binary-float noise (0.026000000000000002): prices have at most 6 decimals.
            return Math.Round(d, 6);
        }

        var market = Price("market_price", required: true);
        decimal? Optional(string key) { var p = Price(key, required: false); return p < 0 ? null : p; }
        var cpuText = Str("cpu");
        if (!decimal.TryParse(cpuText, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var cpu) || cpu <= 0)
            throw new PriceFeedException($"{path}.cpu: \"{cpuText}\" is not a positive CPU count");
        if (cpu > MaxCpu) throw new PriceFeedException($"{path}.cpu: implausible CPU count {cpuText} (at most {MaxCpu})");
        var memText = Str("memory");
        var memory = ParseGigabytes(memText) ?? throw new PriceFeedException($"{path}.memory: \"{memText}\" is not a size like 3.75GB");
        if (memory > MaxMemoryBytes) throw new PriceFeedException($"{path}.memory: implausible size {memText} (at most {MaxMemoryBytes / 1_000_000_000_000} TB)");
        var categoryName = Str("category");
        var code = Categories.CodeOf(categoryName) ?? throw new PriceFeedException($"{path}.category: unknown category \"{categoryName}\"");
        var cls = new ServerClass(sc.Name, region, code, categoryName, cpu, memory, Str("display_name"),
            e.TryGetProperty("description", out var d) && d.ValueKind == JsonValueKind.String ? d.GetString()! : "", generation);
        return new PricedClass(cls, new ClassPrices(market, Optional("20_percentile"), Optional("50_percentile"), Optional("80_percentile")));
    }

    /// <summary>`"3.75GB"` → 3,750,000,000 bytes (decimal gigabytes, not GiB, not truncated).</summary>
    public static long? ParseGigabytes(string text)
    {
        var t = text.Trim();
        decimal factor;
        if (t.EndsWith("GB", StringComparison.Ordinal)) factor = 1_000_000_000m;
        else if (t.EndsWith("MB", StringComparison.Ordinal)) factor = 1_000_000m;
        else if (t.EndsWith("TB", StringComparison.Ordinal)) factor = 1_000_000_000_000m;
        else return null;
        if (!decimal.TryParse(t[..^2], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var v) || v <= 0) return null;
        // A size past the int64 range is not a size: null, never an OverflowException.
        return v <= long.MaxValue / factor ? (long)(v * factor) : null;
    }

    /// <summary>The snapshot compiled into the binary: the fallback when the feed cannot be read at start.</summary>
    public static PriceBook Embedded()
    {
        var asm = Assembly.GetExecutingAssembly();
        var name = asm.GetManifestResourceNames().Where(n => n.Contains("percentiles-", StringComparison.Ordinal)).Max()
            ?? throw new InvalidOperationException("no embedded price snapshot");
        using var s = asm.GetManifestResourceStream(name)!;
        using var ms = new MemoryStream();
        s.CopyTo(ms);
        var date = name[(name.IndexOf("percentiles-", StringComparison.Ordinal) + 12)..].Replace(".json", "");
        var at = DateTimeOffset.ParseExact(date, "yyyy-MM-dd", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
        return Parse(ms.ToArray(), at, $"embedded snapshot {date}", embedded: true);
    }
}

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

    public PriceFeed(PriceFeedOptions options, ILogger log, TimeProvider? clock = null, PriceBook? initial = null, Telemetry? telemetry = null)
    {
        this.options = options;
        this.log = log;
        this.clock = clock ?? TimeProvider.System;
        s3 = CreateClient(options);
        book = initial ?? PriceFeedParser.Embedded();
        if (!book.Embedded) feedBook = book;
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

    /// <summary>One conditional GET; returns true when a new book was published.</summary>
    public async Task<bool> RefreshAsync(CancellationToken ct)
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
