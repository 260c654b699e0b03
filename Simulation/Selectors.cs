using System.Text;
using System.Text.RegularExpressions;

namespace Karpetrack.Simulation;

/// <summary>A selector the client sent that the apiserver would refuse with 400 BadRequest.</summary>
public sealed class SelectorException(string message) : Exception(message);

public sealed record FieldRequirement(string Field, bool Equal, string Value);

/// <summary>Field selector: <c>f=v</c>, <c>f==v</c>, <c>f!=v</c> joined by commas, backslash escapes.</summary>
public sealed record FieldSelector(IReadOnlyList<FieldRequirement> Requirements)
{
    public static readonly FieldSelector Everything = new([]);

    public bool IsEmpty => Requirements.Count == 0;

    public bool Matches(IReadOnlyDictionary<string, string> fields)
    {
        foreach (var r in Requirements)
        {
            var value = fields.GetValueOrDefault(r.Field, "");
            if ((value == r.Value) != r.Equal) return false;
        }
        return true;
    }

    public static FieldSelector Parse(string? text, ResourceType type)
    {
        if (string.IsNullOrWhiteSpace(text)) return Everything;
        var requirements = new List<FieldRequirement>();
        foreach (var term in SplitUnescaped(text))
        {
            var (field, equal, raw) = SplitTerm(term, text);
            field = field.Trim();
            if (!type.SelectableFields.Contains(field))
                throw new SelectorException($"field label not supported: {field}");
            requirements.Add(new FieldRequirement(field, equal, Unescape(raw)));
        }
        return new FieldSelector(requirements);
    }

    private static List<string> SplitUnescaped(string text)
    {
        var parts = new List<string>();
        var start = 0;
        for (var i = 0; i < text.Length; i++)
        {
            if (text[i] == '\\') { i++; continue; }
            if (text[i] == ',') { parts.Add(text[start..i]); start = i + 1; }
        }
        parts.Add(text[start..]);
        return parts;
    }

    private static (string Field, bool Equal, string Value) SplitTerm(string term, string whole)
    {
        for (var i = 0; i < term.Length; i++)
        {
            if (term[i] == '\\') { i++; continue; }
            if (term[i] == '!' && i + 1 < term.Length && term[i + 1] == '=') return (term[..i], false, term[(i + 2)..]);
            if (term[i] == '=')
                return i + 1 < term.Length && term[i + 1] == '='
                    ? (term[..i], true, term[(i + 2)..])
                    : (term[..i], true, term[(i + 1)..]);
        }
        throw new SelectorException($"invalid selector: '{whole}'; can't understand '{term}'");
    }

    private static string Unescape(string s)
    {
        if (!s.Contains('\\')) return s;
        var sb = new StringBuilder(s.Length);
        for (var i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && i + 1 < s.Length)
            {
                var next = s[i + 1];
                if (next is not ('\\' or ',' or '='))
                    throw new SelectorException($"invalid field selector: invalid escape sequence: \\{next}");
                sb.Append(next);
                i++;
            }
            else sb.Append(s[i]);
        }
        return sb.ToString();
    }
}
