namespace Karpetrack;

/// <summary>
/// A Kubernetes label selector in its string form (`app=web,tier in (a,b),!canary`), as
/// `kubectl -l` takes it: comma means AND; `=`, `==`, `!=`, `in`, `notin`, exists, `!key`, and the
/// integer comparisons `>` and `<`. Used by the client (--node-selector) and by the embedded API server.
/// </summary>
public sealed class LabelSelector
{
    public enum Op { Equals, NotEquals, In, NotIn, Exists, NotExists, GreaterThan, LessThan }

    public sealed record Requirement(string Key, Op Op, IReadOnlyList<string> Values);

    public IReadOnlyList<Requirement> Requirements { get; }

    private LabelSelector(IReadOnlyList<Requirement> requirements) => Requirements = requirements;

    public static LabelSelector Everything { get; } = new([]);

    public bool IsEmpty => Requirements.Count == 0;

    /// <summary>Null when valid, else a one-line explanation.</summary>
    public static string? Validate(string text)
    {
        try { Parse(text); return null; }
        catch (FormatException e) { return e.Message; }
    }

    public static LabelSelector Parse(string text)
    {
        var reqs = new List<Requirement>();
        int i = 0;
        string s = text;
        void SkipSpaces() { while (i < s.Length && s[i] == ' ') i++; }
        string Word()
        {
            SkipSpaces();
            int start = i;
            while (i < s.Length && !" ,=!()<>".Contains(s[i])) i++;
            return s[start..i];
        }
        while (true)
        {
            SkipSpaces();
            if (i >= s.Length) break;
            bool not = false;
            if (s[i] == '!') { not = true; i++; }
            var key = Word();
            CheckKey(key, text);
            SkipSpaces();
            if (not)
            {
                reqs.Add(new Requirement(key, Op.NotExists, []));
            }
            else if (i >= s.Length || s[i] == ',')
            {
                reqs.Add(new Requirement(key, Op.Exists, []));
            }
            else if (s[i] is '>' or '<')
            {
                var op = s[i] == '>' ? Op.GreaterThan : Op.LessThan;
                i++;
                var value = Word();
                if (!long.TryParse(value, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out _))
                    throw new FormatException($"selector \"{text}\": {key} {(op == Op.GreaterThan ? ">" : "<")} needs an integer, got \"{value}\"");
                reqs.Add(new Requirement(key, op, [value]));
            }
            else if (s[i] == '=' || s[i] == '!')
            {
                Op op;
                if (s[i] == '!')
                {
                    if (i + 1 >= s.Length || s[i + 1] != '=') throw new FormatException($"selector \"{text}\": expected != after {key}");
                    op = Op.NotEquals; i += 2;
                }
                else
                {
                    op = Op.Equals; i += (i + 1 < s.Length && s[i + 1] == '=') ? 2 : 1;
                }
                var value = Word();
                CheckValue(value, text);
                reqs.Add(new Requirement(key, op, [value]));
            }
            else
            {
                var word = Word();
                Op op = word switch
                {
                    "in" => Op.In,
                    "notin" => Op.NotIn,
                    _ => throw new FormatException($"selector \"{text}\": unexpected \"{word}\" after {key}"),
                };
                SkipSpaces();
                if (i >= s.Length || s[i] != '(') throw new FormatException($"selector \"{text}\": expected ( after {word}");
                i++;
                var values = new List<string>();
                while (true)
                {
                    var v = Word();
                    CheckValue(v, text);
                    values.Add(v);
                    SkipSpaces();
                    if (i < s.Length && s[i] == ',') { i++; continue; }
                    if (i < s.Length && s[i] == ')') { i++; break; }
                    throw new FormatException($"selector \"{text}\": unterminated value list for {key}");
                }
                reqs.Add(new Requirement(key, op, values));
            }
            SkipSpaces();
            if (i < s.Length)
            {
                if (s[i] != ',') throw new FormatException($"selector \"{text}\": unexpected \"{s[i]}\"");
                i++;
            }
        }
        return new LabelSelector(reqs);
    }

    private static void CheckKey(string key, string text)
    {
        if (key.Length == 0) throw new FormatException($"selector \"{text}\": missing label key");
        var slash = key.LastIndexOf('/');
        var name = slash >= 0 ? key[(slash + 1)..] : key;
        if (slash >= 0 && (slash == 0 || slash > 253)) throw new FormatException($"selector \"{text}\": invalid key prefix in \"{key}\"");
        if (!IsLabelToken(name) || name.Length == 0) throw new FormatException($"selector \"{text}\": invalid label key \"{key}\"");
    }

    private static void CheckValue(string value, string text)
    {
        if (value.Length > 0 && !IsLabelToken(value)) throw new FormatException($"selector \"{text}\": invalid label value \"{value}\"");
    }

    private static bool IsLabelToken(string s) =>
        s.Length <= 63 && (s.Length == 0 || (char.IsAsciiLetterOrDigit(s[0]) && char.IsAsciiLetterOrDigit(s[^1])))
        && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    public bool Matches(IReadOnlyDictionary<string, string> labels)
    {
        foreach (var r in Requirements)
        {
            bool has = labels.TryGetValue(r.Key, out var v);
            bool ok = r.Op switch
            {
                Op.Exists => has,
                Op.NotExists => !has,
                Op.Equals => has && v == r.Values[0],
                Op.NotEquals => !has || v != r.Values[0],
                Op.In => has && r.Values.Contains(v!),
                Op.NotIn => !has || !r.Values.Contains(v!),
                Op.GreaterThan => has && long.TryParse(v, out var a) && a > long.Parse(r.Values[0], System.Globalization.CultureInfo.InvariantCulture),
                Op.LessThan => has && long.TryParse(v, out var b) && b < long.Parse(r.Values[0], System.Globalization.CultureInfo.InvariantCulture),
                _ => false,
            };
            if (!ok) return false;
        }
        return true;
    }
}
