using System.Text.Json;
using System.Text.RegularExpressions;

namespace Karpetrack.Tests.Chart;

/// <summary>
/// The part of JSON Schema draft-07 that values.schema.json uses: type, enum, required, properties,
/// additionalProperties, items, minimum/maximum, minLength, minItems, pattern. Enough to know that
/// values.yaml and the test scenarios satisfy the schema Helm will enforce.
/// </summary>
internal static class SchemaCheck
{
    public static JsonElement Load() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(ChartRenderer.ChartDir, "values.schema.json"))).RootElement;

    public static List<string> Validate(JsonElement schema, object? value, string path = "")
    {
        var errors = new List<string>();
        Check(schema, value, path, errors);
        return errors;
    }

    private static void Check(JsonElement s, object? v, string path, List<string> errors)
    {
        var where = path.Length == 0 ? "(root)" : path;
        if (s.TryGetProperty("type", out var type))
        {
            var types = type.ValueKind == JsonValueKind.Array ? type.EnumerateArray().Select(t => t.GetString()!).ToList() : [type.GetString()!];
            if (!types.Any(t => Is(t, v)))
            {
                errors.Add($"{where}: {Describe(v)} is not {string.Join(" or ", types)}");
                return;
            }
        }
        if (s.TryGetProperty("enum", out var en) && !en.EnumerateArray().Any(e => SameScalar(e, v)))
            errors.Add($"{where}: {Describe(v)} is not one of {en.GetRawText()}");
        if (v is string str)
        {
            if (s.TryGetProperty("minLength", out var ml) && str.Length < ml.GetInt32()) errors.Add($"{where}: shorter than {ml.GetInt32()}");
            if (s.TryGetProperty("pattern", out var p) && !Regex.IsMatch(str, p.GetString()!)) errors.Add($"{where}: \"{str}\" does not match {p.GetString()}");
        }
        if (v is long or double)
        {
            var d = Convert.ToDouble(v, System.Globalization.CultureInfo.InvariantCulture);
            if (s.TryGetProperty("minimum", out var min) && d < min.GetDouble()) errors.Add($"{where}: {d} < {min.GetDouble()}");
            if (s.TryGetProperty("maximum", out var max) && d > max.GetDouble()) errors.Add($"{where}: {d} > {max.GetDouble()}");
        }
        if (v is List<object?> list)
        {
            if (s.TryGetProperty("minItems", out var mi) && list.Count < mi.GetInt32()) errors.Add($"{where}: fewer than {mi.GetInt32()} items");
            if (s.TryGetProperty("items", out var items))
                for (int i = 0; i < list.Count; i++) Check(items, list[i], $"{path}[{i}]", errors);
        }
        if (v is Dictionary<string, object?> map)
        {
            if (s.TryGetProperty("required", out var req))
                foreach (var r in req.EnumerateArray())
                    if (!map.ContainsKey(r.GetString()!)) errors.Add($"{where}: {r.GetString()} is required");
            var props = s.TryGetProperty("properties", out var pr) ? pr : default;
            foreach (var (k, child) in map)
            {
                var childPath = path.Length == 0 ? k : $"{path}.{k}";
                if (props.ValueKind == JsonValueKind.Object && props.TryGetProperty(k, out var ps)) Check(ps, child, childPath, errors);
                else if (s.TryGetProperty("additionalProperties", out var ap))
                {
                    if (ap.ValueKind == JsonValueKind.False) errors.Add($"{childPath}: not allowed by the schema");
                    else if (ap.ValueKind == JsonValueKind.Object) Check(ap, child, childPath, errors);
                }
            }
        }
    }

    private static bool Is(string type, object? v) => type switch
    {
        "string" => v is string,
        "integer" => v is long,
        "number" => v is long or double,
        "boolean" => v is bool,
        "object" => v is Dictionary<string, object?>,
        "array" => v is List<object?>,
        "null" => v is null,
        _ => throw new InvalidOperationException($"schema type {type} not handled"),
    };

    private static bool SameScalar(JsonElement e, object? v) => (e.ValueKind, v) switch
    {
        (JsonValueKind.String, string s) => e.GetString() == s,
        (JsonValueKind.Number, long l) => e.GetDouble() == l,
        (JsonValueKind.Number, double d) => e.GetDouble() == d,
        (JsonValueKind.True, bool b) => b,
        (JsonValueKind.False, bool b) => !b,
        (JsonValueKind.Null, null) => true,
        _ => false,
    };

    private static string Describe(object? v) => v switch
    {
        null => "null", string s => $"\"{s}\"", bool b => $"boolean {(b ? "true" : "false")}",
        long or double => $"number {v}", List<object?> => "an array", _ => "an object",
    };

    /// <summary>The schema node for a dotted values path, or null when the path is not described.</summary>
    public static JsonElement? At(JsonElement schema, IEnumerable<string> path)
    {
        var node = schema;
        foreach (var seg in path)
        {
            if (node.TryGetProperty("properties", out var props) && props.TryGetProperty(seg, out var next)) node = next;
            else if (node.TryGetProperty("additionalProperties", out var ap) && ap.ValueKind == JsonValueKind.Object) node = ap;
            else if (node.TryGetProperty("type", out var t) && t.GetString() == "object" && !node.TryGetProperty("properties", out _)) return node; // free-form
            else return null;
        }
        return node;
    }

    /// <summary>Dotted paths of the values the README documents: descend while the schema lists properties.</summary>
    public static List<string> DocumentedKeys(JsonElement schema, string prefix = "")
    {
        var keys = new List<string>();
        if (!schema.TryGetProperty("properties", out var props)) return [prefix];
        foreach (var p in props.EnumerateObject())
            keys.AddRange(DocumentedKeys(p.Value, prefix.Length == 0 ? p.Name : $"{prefix}.{p.Name}"));
        return keys;
    }
}
