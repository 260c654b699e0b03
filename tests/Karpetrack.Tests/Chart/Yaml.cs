using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using YamlDotNet.RepresentationModel;

namespace Karpetrack.Tests.Chart;

/// <summary>
/// YAML to plain values (maps, lists, string, long, double, bool, null) and back, the way Helm sees it.
/// Plain scalars resolve as YAML 1.1 does in Helm (yes/no/on/off are booleans): a bare `off` in
/// values.yaml is a boolean there, and these tests should see the same.
/// </summary>
internal static partial class Yaml
{
    public static object? Parse(string text)
    {
        var docs = ParseAll(text);
        return docs.Count == 0 ? null : docs[0];
    }

    /// <summary>Every non-empty document of a multi-document stream.</summary>
    public static List<object?> ParseAll(string text)
    {
        var result = new List<object?>();
        // Split by hand: rendered templates leave empty documents that YamlDotNet would turn into empty scalars.
        foreach (var chunk in DocumentSeparator().Split(text))
        {
            if (chunk.Split('\n').All(l => l.Trim().Length == 0 || l.TrimStart().StartsWith('#'))) continue;
            var stream = new YamlStream();
            stream.Load(new StringReader(chunk));
            foreach (var doc in stream.Documents) result.Add(Convert(doc.RootNode));
        }
        return result;
    }

    [GeneratedRegex(@"^---[ \t]*\r?$", RegexOptions.Multiline)]
    private static partial Regex DocumentSeparator();

    private static object? Convert(YamlNode node) => node switch
    {
        YamlMappingNode m => m.Children.ToDictionary(p => ((YamlScalarNode)p.Key).Value ?? "", p => Convert(p.Value), StringComparer.Ordinal),
        YamlSequenceNode s => s.Children.Select(Convert).ToList(),
        YamlScalarNode s when s.Style is YamlDotNet.Core.ScalarStyle.Plain => Resolve(s.Value ?? ""),
        YamlScalarNode s => s.Value ?? "",
        _ => throw new InvalidOperationException($"unsupported YAML node {node.NodeType}"),
    };

    private static object? Resolve(string v)
    {
        switch (v)
        {
            case "" or "~" or "null" or "Null" or "NULL": return null;
            case "true" or "True" or "TRUE" or "yes" or "Yes" or "YES" or "y" or "Y" or "on" or "On" or "ON": return true;
            case "false" or "False" or "FALSE" or "no" or "No" or "NO" or "n" or "N" or "off" or "Off" or "OFF": return false;
        }
        if (IntPattern().IsMatch(v))
        {
            // YAML 1.1: a leading 0 means octal (defaultMode: 0440).
            if (v.Length > 1 && v[0] == '0') return System.Convert.ToInt64(v, 8);
            return long.Parse(v, CultureInfo.InvariantCulture);
        }
        if (FloatPattern().IsMatch(v)) return double.Parse(v, CultureInfo.InvariantCulture);
        return v;
    }

    [GeneratedRegex(@"^[-+]?[0-9]+$")]
    private static partial Regex IntPattern();

    [GeneratedRegex(@"^[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")]
    private static partial Regex FloatPattern();

    /// <summary>Block-style YAML with sorted keys, as Helm's toYaml writes it.</summary>
    public static string Emit(object? value)
    {
        var sb = new StringBuilder();
        EmitValue(sb, value, 0, inList: false);
        return sb.ToString();
    }

    private static void EmitValue(StringBuilder sb, object? value, int indent, bool inList)
    {
        switch (value)
        {
            case Dictionary<string, object?> { Count: > 0 } map:
            {
                bool first = true;
                foreach (var (k, v) in map.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    if (!(first && inList)) sb.Append(' ', indent);
                    first = false;
                    sb.Append(Scalar(k)).Append(':');
                    EmitChild(sb, v, indent);
                }
                break;
            }
            case List<object?> { Count: > 0 } list:
            {
                bool first = true;
                foreach (var item in list)
                {
                    if (!(first && inList)) sb.Append(' ', indent);
                    first = false;
                    sb.Append("- ");
                    if (item is Dictionary<string, object?> { Count: > 0 } or List<object?> { Count: > 0 }) EmitValue(sb, item, indent + 2, inList: true);
                    else sb.Append(Inline(item)).Append('\n');
                }
                break;
            }
            default:
                sb.Append(Inline(value)).Append('\n');
                break;
        }
    }

    private static void EmitChild(StringBuilder sb, object? v, int indent)
    {
        switch (v)
        {
            case Dictionary<string, object?> { Count: > 0 }:
                sb.Append('\n'); EmitValue(sb, v, indent + 2, inList: false); break;
            case List<object?> { Count: > 0 }:
                sb.Append('\n'); EmitValue(sb, v, indent, inList: false); break;
            default:
                sb.Append(' ').Append(Inline(v)).Append('\n'); break;
        }
    }

    private static string Inline(object? v) => v switch
    {
        null => "null",
        Dictionary<string, object?> => "{}",
        List<object?> => "[]",
        string s => Scalar(s),
        _ => GoTemplate.Format(v),
    };

    // Quote a string whenever reading it back plain would give something else (a bool, number, null) or break the syntax.
    private static string Scalar(string s)
    {
        if (SafePlain().IsMatch(s) && Resolve(s) is string) return s;
        return "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n") + "\"";
    }

    [GeneratedRegex(@"^[A-Za-z_/][A-Za-z0-9_./-]*$")]
    private static partial Regex SafePlain();
}
