using System.Globalization;
using System.Reflection;
using System.Text.Json;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

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
