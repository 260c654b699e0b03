using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>Defensive ServerClass reading: a malformed item is reported, never thrown.</summary>
internal static class ServerClassParser
{
    public static bool TryParse(JsonElement item, out SpotServerClass? result, out string? why)
    {
        result = null;
        why = null;
        if (item.ValueKind != JsonValueKind.Object) { why = $"an item is a {item.ValueKind}, not an object"; return false; }
        var name = item.TryGetProperty("metadata", out var meta) ? SpotApiClient.Str(meta, "name") : null;
        if (string.IsNullOrEmpty(name)) { why = "an item has no metadata.name"; return false; }
        if (!item.TryGetProperty("spec", out var spec) || spec.ValueKind != JsonValueKind.Object) { why = $"{name}: no spec"; return false; }
        var region = SpotApiClient.Str(spec, "region");
        if (string.IsNullOrEmpty(region)) { why = $"{name}: no spec.region"; return false; }
        try
        {
            var resources = Obj(spec, "resources");
            var cpu = Decimal(resources, "cpu", $"{name}: spec.resources.cpu");
            var memory = Bytes(resources, "memory", $"{name}: spec.resources.memory");
            var disk = Bytes(resources, "disk", $"{name}: spec.resources.disk");
            var minBid = Decimal(spec, "minBidPricePerHour", $"{name}: spec.minBidPricePerHour");
            decimal? onDemand = null;
            if (Obj(spec, "onDemandPricing") is { } od && Decimal(od, "cost", $"{name}: spec.onDemandPricing.cost") is { } cost)
            {
                var interval = SpotApiClient.Str(od, "interval");
                var hours = 1.0;
                if (!string.IsNullOrWhiteSpace(interval))
                {
                    try { hours = KarpetrackOptions.ParseDuration(interval, "interval").TotalHours; }
                    catch (OptionsException) { throw new FormatException($"{name}: spec.onDemandPricing.interval \"{interval}\" is not a duration"); }
                    if (hours <= 0) throw new FormatException($"{name}: spec.onDemandPricing.interval \"{interval}\" is not positive");
                }
                onDemand = Math.Round(cost / (decimal)hours, 6);
            }
            var status = Obj(item, "status");
            var pricing = status is { } st ? Obj(st, "spotPricing") : null;
            result = new SpotServerClass(
                name, region, SpotApiClient.Str(spec, "category"), SpotApiClient.Str(spec, "displayName"), SpotApiClient.Str(spec, "flavorType"),
                cpu, memory, disk, minBid, onDemand, SpotApiClient.Str(spec, "availability"),
                pricing is { } p ? Decimal(p, "marketPricePerHour", $"{name}: status.spotPricing.marketPricePerHour") : null,
                pricing is { } p2 ? Decimal(p2, "hammerPricePerHour", $"{name}: status.spotPricing.hammerPricePerHour") : null);
            return true;
        }
        catch (FormatException e)
        {
            why = e.Message;
            return false;
        }
    }

    private static JsonElement? Obj(JsonElement parent, string key) =>
        parent.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Object ? v : null;

    /// <summary>A price or count sent as a string (or, defensively, a number); absent or "" → null; garbage → FormatException.</summary>
    private static decimal? Decimal(JsonElement? parent, string key, string path)
    {
        if (parent is not { } p || !p.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        decimal d;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetDecimal(out var n)) d = n;
        else if (v.ValueKind == JsonValueKind.String)
        {
            var s = v.GetString()!.Trim();
            if (s.Length == 0) return null;
            if (!decimal.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out d)) throw new FormatException($"{path}: \"{s}\" is not a number");
        }
        else throw new FormatException($"{path}: a {v.ValueKind} is not a number");
        if (d < 0) throw new FormatException($"{path}: negative {d}");
        return d;
    }

    private static long? Bytes(JsonElement? parent, string key, string path)
    {
        if (parent is not { } p || SpotApiClient.Str(p, key) is not { } s || s.Trim().Length == 0) return null;
        return PriceFeedParser.ParseGigabytes(s) ?? throw new FormatException($"{path}: \"{s}\" is not a size like 100GB");
    }
}
