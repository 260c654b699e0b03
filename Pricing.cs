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
