using System.Text;
using System.Text.RegularExpressions;

namespace Karpetrack.Simulation;

/// <summary>A selector the client sent that the apiserver would refuse with 400 BadRequest.</summary>
public sealed class SelectorException(string message) : Exception(message);

public enum LabelOperator { Equals, NotEquals, In, NotIn, Exists, DoesNotExist, GreaterThan, LessThan }

public sealed record LabelRequirement(string Key, LabelOperator Operator, IReadOnlyList<string> Values)
{
    public bool Matches(IReadOnlyDictionary<string, string> labels)
    {
        var has = labels.TryGetValue(Key, out var value);
        return Operator switch
        {
            LabelOperator.Equals => has && value == Values[0],
            LabelOperator.NotEquals => !has || value != Values[0],
            LabelOperator.In => has && Values.Contains(value!),
            LabelOperator.NotIn => !has || !Values.Contains(value!),
            LabelOperator.Exists => has,
            LabelOperator.DoesNotExist => !has,
            LabelOperator.GreaterThan => has && long.TryParse(value, out var g) && g > long.Parse(Values[0], System.Globalization.CultureInfo.InvariantCulture),
            LabelOperator.LessThan => has && long.TryParse(value, out var l) && l < long.Parse(Values[0], System.Globalization.CultureInfo.InvariantCulture),
            _ => false,
        };
    }
}

/// <summary>Label selector in the apimachinery string syntax: requirements joined by commas (AND).</summary>
public sealed partial record LabelSelector(IReadOnlyList<LabelRequirement> Requirements)
{
    public static readonly LabelSelector Everything = new([]);

    public bool IsEmpty => Requirements.Count == 0;

    public bool Matches(IReadOnlyDictionary<string, string> labels)
    {
        foreach (var r in Requirements)
            if (!r.Matches(labels)) return false;
        return true;
    }

    [GeneratedRegex("^[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?$")]
    private static partial Regex QualifiedName();

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")]
    private static partial Regex DnsSubdomain();

    public static LabelSelector Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return Everything;
        var requirements = new List<LabelRequirement>();
        foreach (var part in SplitTopLevel(text))
            requirements.Add(ParseRequirement(part.Trim(), text));
        return new LabelSelector(requirements);
    }

    // Commas separate requirements except inside the parentheses of in/notin.
    private static IEnumerable<string> SplitTopLevel(string text)
    {
        var depth = 0;
        var start = 0;
        for (var i = 0; i < text.Length; i++)
        {
            switch (text[i])
            {
                case '(': depth++; break;
                case ')': depth--; break;
                case ',' when depth == 0:
                    yield return text[start..i];
                    start = i + 1;
                    break;
            }
        }
        if (depth != 0) throw new SelectorException($"unable to parse requirement: found '(' without matching ')' in \"{text}\"");
        yield return text[start..];
    }

    private static LabelRequirement ParseRequirement(string req, string whole)
    {
        if (req.Length == 0) throw new SelectorException($"unable to parse requirement: found '', expected: identifier in \"{whole}\"");
        if (req[0] == '!')
        {
            var k = req[1..].Trim();
            ValidateKey(k);
            return new LabelRequirement(k, LabelOperator.DoesNotExist, []);
        }

        var i = 0;
        while (i < req.Length && !char.IsWhiteSpace(req[i]) && req[i] is not ('=' or '!' or '<' or '>' or '(' or ')')) i++;
        var key = req[..i];
        ValidateKey(key);
        var rest = req[i..].TrimStart();
        if (rest.Length == 0) return new LabelRequirement(key, LabelOperator.Exists, []);

        if (rest.StartsWith("==", StringComparison.Ordinal)) return Single(key, LabelOperator.Equals, rest[2..]);
        if (rest.StartsWith("!=", StringComparison.Ordinal)) return Single(key, LabelOperator.NotEquals, rest[2..]);
        if (rest.StartsWith('=')) return Single(key, LabelOperator.Equals, rest[1..]);
        if (rest.StartsWith('>') || rest.StartsWith('<'))
        {
            var n = rest[1..].Trim();
            if (!long.TryParse(n, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out _))
                throw new SelectorException($"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: \"{n}\"");
            return new LabelRequirement(key, rest[0] == '>' ? LabelOperator.GreaterThan : LabelOperator.LessThan, [n]);
        }
        foreach (var (word, op) in new[] { ("notin", LabelOperator.NotIn), ("in", LabelOperator.In) })
        {
            if (!rest.StartsWith(word, StringComparison.Ordinal)) continue;
            var list = rest[word.Length..].Trim();
            if (list.Length < 2 || list[0] != '(' || list[^1] != ')')
                throw new SelectorException($"unable to parse requirement: found '{list}', expected: '(' in \"{whole}\"");
            var values = list[1..^1].Split(',').Select(v => v.Trim()).ToArray();
            foreach (var v in values) ValidateValue(v);
            return new LabelRequirement(key, op, values);
        }
        throw new SelectorException($"unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt in \"{whole}\"");
    }

    private static LabelRequirement Single(string key, LabelOperator op, string value)
    {
        value = value.Trim();
        ValidateValue(value);
        return new LabelRequirement(key, op, [value]);
    }

    private static void ValidateKey(string key)
    {
        var slash = key.IndexOf('/');
        var name = slash < 0 ? key : key[(slash + 1)..];
        if (slash >= 0)
        {
            var prefix = key[..slash];
            if (prefix.Length == 0 || prefix.Length > 253 || !DnsSubdomain().IsMatch(prefix))
                throw new SelectorException($"unable to parse requirement: Invalid value: \"{key}\": prefix part must be a lowercase RFC 1123 subdomain");
        }
        if (name.Length == 0 || name.Length > 63 || !QualifiedName().IsMatch(name))
            throw new SelectorException($"unable to parse requirement: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character");
    }

    private static void ValidateValue(string value)
    {
        if (value.Length == 0) return;
        if (value.Length > 63 || !QualifiedName().IsMatch(value))
            throw new SelectorException($"unable to parse requirement: Invalid value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character");
    }
}

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
