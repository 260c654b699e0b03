using System.Globalization;
using System.Text.Json;

namespace Karpetrack;

public enum SelectorOp { Equals, NotEquals, In, NotIn, Exists, DoesNotExist, GreaterThan, LessThan, Invalid }

/// <summary>
/// One requirement on a label (labels.Requirement upstream). <see cref="SelectorOp.Invalid"/> stands for a
/// requirement the API would refuse (an unknown operator, a wrong number of values): it matches nothing, as an
/// upstream selector that fails to convert selects nothing.
/// </summary>
public sealed record LabelRequirement(string Key, SelectorOp Op, IReadOnlyList<string> Values)
{
    public bool Matches(IReadOnlyDictionary<string, string> labels)
    {
        bool has = labels.TryGetValue(Key, out var v);
        return Op switch
        {
            SelectorOp.Exists => has,
            SelectorOp.DoesNotExist => !has,
            SelectorOp.Equals or SelectorOp.In => has && Values.Contains(v!),
            // Without the label, "not equal" and "not in" hold: kubectl -l 'tier!=db' lists the pods with no tier.
            SelectorOp.NotEquals or SelectorOp.NotIn => !has || !Values.Contains(v!),
            SelectorOp.GreaterThan => has && Integers(v!, out var a, out var b) && a > b,
            SelectorOp.LessThan => has && Integers(v!, out var c, out var d) && c < d,
            _ => false,
        };
    }

    /// <summary>The label's value and the one value of the requirement, both as integers (a value that is none matches nothing).</summary>
    private bool Integers(string label, out long value, out long bound)
    {
        bound = 0;
        return long.TryParse(label, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value)
            && Values.Count == 1 && long.TryParse(Values[0], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out bound);
    }

    /// <summary>As <c>kubectl -l</c> writes it.</summary>
    public override string ToString() => Op switch
    {
        SelectorOp.Equals => $"{Key}={Values[0]}",
        SelectorOp.NotEquals => $"{Key}!={Values[0]}",
        SelectorOp.In => $"{Key} in ({string.Join(",", Values)})",
        SelectorOp.NotIn => $"{Key} notin ({string.Join(",", Values)})",
        SelectorOp.Exists => Key,
        SelectorOp.DoesNotExist => "!" + Key,
        SelectorOp.GreaterThan => $"{Key}>{Values[0]}",
        SelectorOp.LessThan => $"{Key}<{Values[0]}",
        _ => $"{Key} (invalid)",
    };
}

/// <summary>
/// A Kubernetes label selector: requirements, ANDed. Its two written forms both land here: the string form
/// (`app=web,tier in (a,b),!canary`) as <c>kubectl -l</c> takes it, used by --node-selector and by the embedded
/// API server; and the API's JSON forms: a metav1.LabelSelector (matchLabels and matchExpressions: budgets,
/// anti-affinity terms) and a node selector term (node affinity, whose operators add Gt and Lt).
/// </summary>
public sealed class LabelSelector
{
    public IReadOnlyList<LabelRequirement> Requirements { get; }
    private readonly bool nothing;

    private LabelSelector(IReadOnlyList<LabelRequirement> requirements, bool nothing = false)
    {
        Requirements = requirements;
        this.nothing = nothing;
    }

    /// <summary>No requirement: selects every object (an empty selector, or an empty string).</summary>
    public static LabelSelector Everything { get; } = new([]);

    /// <summary>Selects no object: a budget without a selector, an empty node selector term, a shape that cannot be read.</summary>
    public static LabelSelector Nothing { get; } = new([], nothing: true);

    public bool IsEmpty => Requirements.Count == 0 && !nothing;

    public bool Matches(IReadOnlyDictionary<string, string> labels)
    {
        if (nothing) return false;
        foreach (var r in Requirements) if (!r.Matches(labels)) return false;
        return true;
    }

    public override string ToString() => nothing ? "(nothing)" : string.Join(",", Requirements);

    // ---- the API's JSON forms ------------------------------------------------------------------

    /// <summary>
    /// A metav1.LabelSelector: matchLabels (in key order, as upstream sorts them) and then matchExpressions, whose
    /// operators are In, NotIn, Exists and DoesNotExist. An empty object selects everything; anything but an
    /// object (the selector is missing, or null) selects nothing.
    /// </summary>
    public static LabelSelector FromJson(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object) return Nothing;
        var requirements = new List<LabelRequirement>();
        if (JsonElements.Has(e, "matchLabels", JsonValueKind.Object, out var ml))
        {
            // A key given twice keeps its last value, as a map decodes it.
            var labels = new SortedDictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in ml.EnumerateObject()) labels[p.Name] = JsonElements.Text(p.Value) ?? "";
            foreach (var (k, v) in labels) requirements.Add(new LabelRequirement(k, SelectorOp.Equals, [v]));
        }
        if (JsonElements.Has(e, "matchExpressions", JsonValueKind.Array, out var me))
            foreach (var x in me.EnumerateArray()) requirements.Add(Requirement(x, nodeSelector: false));
        return new LabelSelector(requirements);
    }

    /// <summary>
    /// A node selector term (matchExpressions on labels, matchFields on metadata.name, which is the node's hostname
    /// label). A term with neither selects no node.
    /// </summary>
    public static LabelSelector FromNodeSelectorTerm(JsonElement term)
    {
        var requirements = new List<LabelRequirement>();
        if (JsonElements.Has(term, "matchExpressions", JsonValueKind.Array, out var me))
            foreach (var x in me.EnumerateArray()) requirements.Add(Requirement(x, nodeSelector: true));
        if (JsonElements.Has(term, "matchFields", JsonValueKind.Array, out var mf))
            foreach (var x in mf.EnumerateArray()) requirements.Add(FieldRequirement(Requirement(x, nodeSelector: true)));
        return requirements.Count == 0 ? Nothing : new LabelSelector(requirements);
    }

    /// <summary>
    /// A matchFields requirement: the scheduler knows one field, metadata.name, and compares it with In or NotIn
    /// and exactly one value; anything else it refuses (invalid here).
    /// </summary>
    private static LabelRequirement FieldRequirement(LabelRequirement r) =>
        r.Key == "metadata.name" && r.Op is (SelectorOp.In or SelectorOp.NotIn) && r.Values.Count == 1
            ? r with { Key = "kubernetes.io/hostname" }
            : r with { Op = SelectorOp.Invalid };

    /// <summary>
    /// {key, operator, values}: a LabelSelectorRequirement, or with <paramref name="nodeSelector"/> a
    /// NodeSelectorRequirement (which also has Gt and Lt). In and NotIn need values, Exists and DoesNotExist none,
    /// Gt and Lt exactly one; otherwise, or with another operator, the requirement is invalid.
    /// </summary>
    private static LabelRequirement Requirement(JsonElement x, bool nodeSelector)
    {
        var key = JsonElements.Has(x, "key", JsonValueKind.String, out var k) ? k.GetString()! : "";
        var values = new List<string>();
        if (JsonElements.Has(x, "values", JsonValueKind.Array, out var vs))
            foreach (var v in vs.EnumerateArray()) values.Add(JsonElements.Text(v) ?? "");
        var op = (JsonElements.Has(x, "operator", JsonValueKind.String, out var o) ? o.GetString() : null, values.Count) switch
        {
            ("In", > 0) => SelectorOp.In,
            ("NotIn", > 0) => SelectorOp.NotIn,
            ("Exists", 0) => SelectorOp.Exists,
            ("DoesNotExist", 0) => SelectorOp.DoesNotExist,
            ("Gt", 1) when nodeSelector => SelectorOp.GreaterThan,
            ("Lt", 1) when nodeSelector => SelectorOp.LessThan,
            _ => SelectorOp.Invalid,
        };
        return new LabelRequirement(key, op, values);
    }

    // ---- the string form -----------------------------------------------------------------------

    /// <summary>Null when valid, else a one-line explanation.</summary>
    public static string? Validate(string text)
    {
        try { Parse(text); return null; }
        catch (FormatException e) { return e.Message; }
    }

    /// <summary>
    /// The string form: comma means AND; <c>k=v</c>, <c>k==v</c>, <c>k!=v</c>, <c>k in (a,b)</c>, <c>k notin (a,b)</c>,
    /// <c>k</c> (exists), <c>!k</c> (does not exist), and the integer comparisons <c>k&gt;n</c> and <c>k&lt;n</c>.
    /// </summary>
    public static LabelSelector Parse(string text)
    {
        var p = new StringReader(text);
        p.SkipSpaces();
        if (p.AtEnd) return Everything;
        var reqs = new List<LabelRequirement>();
        while (true)
        {
            // After a comma another requirement must follow: "a=b," is refused, as upstream refuses it.
            reqs.Add(p.Requirement());
            p.SkipSpaces();
            if (p.AtEnd) return new LabelSelector(reqs);
            if (p.Peek != ',') throw p.Error($"unexpected \"{p.Peek}\"");
            p.Advance(1);
            p.SkipSpaces();
        }
    }

    /// <summary>A cursor over the string form.</summary>
    private sealed class StringReader(string text)
    {
        private int i;

        public bool AtEnd => i >= text.Length;
        public char Peek => text[i];
        public void Advance(int n) => i += n;
        public void SkipSpaces() { while (i < text.Length && text[i] == ' ') i++; }
        public FormatException Error(string what) => new($"selector \"{text}\": {what}");

        private bool At(char c, int ahead = 0) => i + ahead < text.Length && text[i + ahead] == c;

        private string Word()
        {
            SkipSpaces();
            int start = i;
            while (i < text.Length && !" ,=!()<>".Contains(text[i])) i++;
            return text[start..i];
        }

        public LabelRequirement Requirement()
        {
            bool not = At('!');
            if (not) i++;
            var key = Word();
            CheckKey(key);
            SkipSpaces();
            if (not) return new LabelRequirement(key, SelectorOp.DoesNotExist, []);
            if (AtEnd || At(',')) return new LabelRequirement(key, SelectorOp.Exists, []);
            if (At('>') || At('<'))
            {
                var op = At('>') ? SelectorOp.GreaterThan : SelectorOp.LessThan;
                i++;
                var bound = Word();
                if (!long.TryParse(bound, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _))
                    throw Error($"{key} {(op == SelectorOp.GreaterThan ? ">" : "<")} needs an integer, got \"{bound}\"");
                return new LabelRequirement(key, op, [bound]);
            }
            if (At('=') || At('!'))
            {
                SelectorOp op;
                if (At('!'))
                {
                    if (!At('=', 1)) throw Error($"expected != after {key}");
                    op = SelectorOp.NotEquals;
                    i += 2;
                }
                else
                {
                    op = SelectorOp.Equals;
                    i += At('=', 1) ? 2 : 1;
                }
                var value = Word();
                CheckValue(value);
                return new LabelRequirement(key, op, [value]);
            }
            var word = Word();
            var set = word switch
            {
                "in" => SelectorOp.In,
                "notin" => SelectorOp.NotIn,
                _ => throw Error($"unexpected \"{word}\" after {key}"),
            };
            return new LabelRequirement(key, set, Values(word, key));
        }

        /// <summary>"(a,b)": an empty entry is the empty value, as upstream reads "()" and "(a,)".</summary>
        private List<string> Values(string op, string key)
        {
            SkipSpaces();
            if (!At('(')) throw Error($"expected ( after {op}");
            i++;
            var values = new List<string>();
            while (true)
            {
                var v = Word();
                CheckValue(v);
                values.Add(v);
                SkipSpaces();
                if (At(',')) { i++; continue; }
                if (At(')')) { i++; return values; }
                throw Error($"unterminated value list for {key}");
            }
        }

        private void CheckKey(string key)
        {
            if (key.Length == 0) throw Error("missing label key");
            var slash = key.LastIndexOf('/');
            var name = slash >= 0 ? key[(slash + 1)..] : key;
            if (slash >= 0 && (slash == 0 || slash > 253)) throw Error($"invalid key prefix in \"{key}\"");
            if (!IsLabelToken(name) || name.Length == 0) throw Error($"invalid label key \"{key}\"");
        }

        private void CheckValue(string value)
        {
            if (value.Length > 0 && !IsLabelToken(value)) throw Error($"invalid label value \"{value}\"");
        }

        private static bool IsLabelToken(string s) =>
            s.Length <= 63 && (s.Length == 0 || (char.IsAsciiLetterOrDigit(s[0]) && char.IsAsciiLetterOrDigit(s[^1])))
            && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');
    }
}

/// <summary>Reading the API's JSON leniently: a value of another kind than expected counts as missing, never throws.</summary>
internal static class JsonElements
{
    /// <summary>The property of that kind, when <paramref name="e"/> is an object that has it.</summary>
    public static bool Has(JsonElement e, string name, JsonValueKind kind, out JsonElement value)
    {
        value = default;
        return e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out value) && value.ValueKind == kind;
    }

    /// <summary>A string value, or null for any other kind.</summary>
    public static string? Text(JsonElement e) => e.ValueKind == JsonValueKind.String ? e.GetString() : null;
}
