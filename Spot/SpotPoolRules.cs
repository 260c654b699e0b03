using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>What a bid rejection asks for: the bid that would satisfy it (null: none can be read) and which rule spoke.</summary>
internal sealed record BidCorrection(decimal? Bid, string Rule);

/// <summary>
/// The node-pool rules the client knows (§2.6): validation before sending, the wire form of a
/// create and a scale, defensive reading, and reading a bid rejection for the bid it asks for.
/// </summary>
internal static partial class SpotPoolRules
{
    public const string CloudspaceLabel = "ngpc.rxt.io/cloudspace";

    [GeneratedRegex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    private static partial Regex LowercaseUuid();

    [GeneratedRegex(@"greater than or equal to the (minimum bid|market) price of (\d+(?:\.\d+)?)")]
    private static partial Regex AtLeast();

    [GeneratedRegex(@"is not on the bid ladder")]
    private static partial Regex OffLadder();

    [GeneratedRegex(@"must be a multiple of (\d+(?:\.\d+)?)")]
    private static partial Regex MultipleOf();

    [GeneratedRegex(@"up to three decimal places")]
    private static partial Regex ThreeDecimals();

    public static bool IsLowercaseUuid(string name) => LowercaseUuid().IsMatch(name);

    /// <summary>Why the server would refuse this spec (or why we never send it), null when none.</summary>
    public static string? Problem(SpotNodePoolSpec spec, decimal? maxBid)
    {
        if (!IsLowercaseUuid(spec.Name)) return $"the name \"{spec.Name}\" is not a lowercase UUID";
        if (string.IsNullOrWhiteSpace(spec.ServerClass)) return "no server class";
        if (string.IsNullOrWhiteSpace(spec.CloudSpace)) return "no cloudspace";
        if (spec.Desired < 1) return $"desired {spec.Desired} is below 1";
        if (spec.BidPrice <= 0) return $"bid {spec.BidPrice.ToString(CultureInfo.InvariantCulture)} is not positive";
        if (decimal.Round(spec.BidPrice, 3) != spec.BidPrice) return $"bid {spec.BidPrice.ToString(CultureInfo.InvariantCulture)} has more than three decimals";
        if (maxBid is { } max && spec.BidPrice > max) return $"bid {FormatBid(spec.BidPrice)} is above the maximum {FormatBid(max)}";
        if (!spec.CustomLabels.TryGetValue(Actuator.ManagedLabel, out var managed) || managed != "true")
            return $"custom labels lack {Actuator.ManagedLabel}=true, without which Karpetrack could never touch the pool again";
        return null;
    }

    /// <summary>
    /// The shortest invariant form: 0.02 → "0.02", 0.020 → "0.02", 1 → "1". The CRD pattern
    /// `^\d+(\.\d{1,3})?$` takes all of these, and the live object stores "0.01" (§2.6).
    /// </summary>
    public static string FormatBid(decimal bid) => bid.ToString("0.###", CultureInfo.InvariantCulture);

    public static byte[] CreateBody(SpotNodePoolSpec spec, string ns, decimal bid)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteString("apiVersion", "ngpc.rxt.io/v1");
            w.WriteString("kind", "SpotNodePool");
            w.WriteStartObject("metadata");
            w.WriteString("name", spec.Name);
            w.WriteString("namespace", ns);
            w.WriteStartObject("labels");
            w.WriteString(CloudspaceLabel, spec.CloudSpace);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteStartObject("spec");
            w.WriteString("serverClass", spec.ServerClass);
            w.WriteNumber("desired", spec.Desired);
            w.WriteString("bidPrice", FormatBid(bid));   // a string: the CRD refuses a JSON number
            w.WriteString("cloudSpace", spec.CloudSpace);
            // Said explicitly: Spot's autoscaler must not resize a pool Karpetrack sizes.
            w.WriteStartObject("autoscaling");
            w.WriteBoolean("enabled", false);
            w.WriteEndObject();
            w.WriteStartObject("customLabels");
            foreach (var (k, v) in spec.CustomLabels.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteString(k, v);
            w.WriteEndObject();
            if (spec.CustomTaints is { Count: > 0 } taints)
            {
                w.WriteStartArray("customTaints");
                foreach (var t in taints)
                {
                    w.WriteStartObject();
                    w.WriteString("key", t.Key);
                    if (t.Value is not null) w.WriteString("value", t.Value);
                    w.WriteString("effect", t.Effect);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    /// <summary>
    /// Reads the bid a rejection asks for. The rules changed four times in a year (§2.6), so the
    /// message is the authority: a stated minimum (min bid or market) is rounded up onto the ladder,
    /// an off-ladder bid goes to the next rung, a step rule rounds up to that step, and the
    /// three-decimal rule to the next thousandth. Null: not a bid rejection.
    /// </summary>
    public static BidCorrection? CorrectBid(string? message, decimal sent)
    {
        if (string.IsNullOrEmpty(message)) return null;
        if (AtLeast().Match(message) is { Success: true } m)
        {
            var rule = m.Groups[1].Value == "market" ? "market price" : "minimum bid";
            return new BidCorrection(Number(m.Groups[2].Value) is { } min ? BidLadder.RoundUp(min) : null, rule);
        }
        if (OffLadder().IsMatch(message)) return new BidCorrection(BidLadder.RoundUp(sent), "bid ladder");
        if (MultipleOf().Match(message) is { Success: true } step)
        {
            return new BidCorrection(Number(step.Groups[1].Value) is { } s and > 0 ? Math.Ceiling(sent / s) * s : null, "bid step");
        }
        if (ThreeDecimals().IsMatch(message))
            return new BidCorrection(sent > 0 ? Math.Ceiling(sent * 1000m) / 1000m : null, "three decimals");
        return null;
    }

    private static decimal? Number(string s) =>
        decimal.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var d) ? d : null;

    /// <summary>Defensive pool reading: a malformed item is reported, never thrown.</summary>
    public static bool TryParse(JsonElement item, out SpotNodePool? pool, out string? why)
    {
        pool = null;
        why = null;
        if (item.ValueKind != JsonValueKind.Object) { why = $"an item is a {item.ValueKind}, not an object"; return false; }
        if (!item.TryGetProperty("metadata", out var meta) || meta.ValueKind != JsonValueKind.Object) { why = "an item has no metadata"; return false; }
        var name = SpotApiClient.Str(meta, "name");
        if (string.IsNullOrEmpty(name)) { why = "an item has no metadata.name"; return false; }
        if (SpotApiClient.Str(meta, "resourceVersion") is not { Length: > 0 } rv) { why = $"{name}: no metadata.resourceVersion"; return false; }
        if (!item.TryGetProperty("spec", out var spec) || spec.ValueKind != JsonValueKind.Object) { why = $"{name}: no spec"; return false; }
        if (SpotApiClient.Str(spec, "serverClass") is not { Length: > 0 } serverClass) { why = $"{name}: no spec.serverClass"; return false; }
        if (!spec.TryGetProperty("desired", out var d) || d.ValueKind != JsonValueKind.Number || !d.TryGetInt32(out var desired) || desired < 0)
        { why = $"{name}: spec.desired is not a count"; return false; }
        string? bid = spec.TryGetProperty("bidPrice", out var b) ? b.ValueKind switch
        {
            JsonValueKind.String => b.GetString(),
            JsonValueKind.Number => b.GetRawText(),   // not what the CRD allows, but readable
            _ => null,
        } : null;
        if (string.IsNullOrEmpty(bid)) { why = $"{name}: no spec.bidPrice"; return false; }
        var labels = Map(meta, "labels");
        var cloudSpace = SpotApiClient.Str(spec, "cloudSpace") ?? labels.GetValueOrDefault(CloudspaceLabel) ?? "";
        var status = item.TryGetProperty("status", out var st) && st.ValueKind == JsonValueKind.Object ? st : default;
        int won = status.ValueKind == JsonValueKind.Object && status.TryGetProperty("wonCount", out var wc) && wc.ValueKind == JsonValueKind.Number && wc.TryGetInt32(out var w) ? w : 0;
        DateTimeOffset? created = SpotApiClient.Str(meta, "creationTimestamp") is { } ts
            && DateTimeOffset.TryParse(ts, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var c) ? c : null;
        pool = new SpotNodePool(name, SpotApiClient.Str(meta, "namespace") ?? "", serverClass, desired, bid, cloudSpace, labels, Map(spec, "customLabels"),
            status.ValueKind == JsonValueKind.Object ? SpotApiClient.Str(status, "bidStatus") : null, won, rv, created)
        {
            DeletionTimestamp = SpotApiClient.Str(meta, "deletionTimestamp") is { } dt
                && DateTimeOffset.TryParse(dt, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var del) ? del : null,
        };
        return true;
    }

    private static IReadOnlyDictionary<string, string> Map(JsonElement parent, string key)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        if (parent.TryGetProperty(key, out var o) && o.ValueKind == JsonValueKind.Object)
            foreach (var p in o.EnumerateObject())
                if (p.Value.ValueKind == JsonValueKind.String) map[p.Name] = p.Value.GetString()!;
        return map;
    }
}
