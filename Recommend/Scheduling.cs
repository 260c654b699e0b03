using System.Text;
using System.Text.Json;

namespace Karpetrack;

/// <summary>What a pod says about where it may run and whether it may be moved, shared by every pod of one shape.</summary>
[Flags]
public enum PodTraits : byte
{
    None = 0,
    DoNotDisrupt = 1,        // karpenter.sh/do-not-disrupt or karpetrack.io/do-not-disrupt = "true"
    SafeToEvictFalse = 2,    // cluster-autoscaler.kubernetes.io/safe-to-evict = "false"
    SafeToEvictTrue = 4,     // cluster-autoscaler.kubernetes.io/safe-to-evict = "true"
    LocalStorage = 8,        // an emptyDir not in memory, or a hostPath
}

/// <summary>A pod's toleration: which taints it accepts on a node.</summary>
public sealed record Toleration(string? Key, string Operator, string? Value, string? Effect)
{
    /// <summary>
    /// As ToleratesTaint upstream: the effects agree (or the toleration names none), the keys agree (or it names
    /// none), and then Exists accepts any value, Equal (the default) only the same one; another operator, nothing.
    /// </summary>
    public bool Tolerates(Taint t)
    {
        if (!string.IsNullOrEmpty(Effect) && Effect != t.Effect) return false;
        if (!string.IsNullOrEmpty(Key) && Key != t.Key) return false;
        return Operator switch
        {
            "Exists" => true,
            "" or "Equal" => (Value ?? "") == (t.Value ?? ""),
            _ => false,
        };
    }
}

/// <summary>
/// A required pod anti-affinity term on kubernetes.io/hostname: no two matching pods on one node. The term applies to
/// the namespaces listed, else to its pod's own; a namespaceSelector widens it (an empty one to every namespace; the
/// model does not watch namespace labels, so any namespaceSelector counts as every namespace: it may repel too much,
/// never too little).
/// </summary>
public sealed record HostnameAntiAffinity(LabelSelector Selector, IReadOnlyList<string> Namespaces, bool AllNamespaces = false)
{
    /// <summary>Whether the term, on a pod of namespace <paramref name="own"/>, looks at pods of <paramref name="other"/>.</summary>
    public bool Covers(string own, string other) => AllNamespaces || (Namespaces.Count == 0 ? other == own : Namespaces.Contains(other));
}

/// <summary>
/// The scheduling facts of one pod shape: where pods of this shape may run (node selector, required
/// node affinity, tolerations), what they refuse to share a node with, and the labels and traits the
/// disruption rules read. Parsed once per distinct shape, not per pod.
/// </summary>
public sealed class PodShape
{
    public required string Namespace { get; init; }
    public required OwnerKind Owner { get; init; }
    public string? OwnerName { get; init; }
    public required string NamePrefix { get; init; }
    public required PodTraits Traits { get; init; }
    public required int Priority { get; init; }
    public required IReadOnlyDictionary<string, string> Labels { get; init; }
    public required IReadOnlyDictionary<string, string> NodeSelector { get; init; }
    public required IReadOnlyList<LabelSelector> RequiredNodeTerms { get; init; }   // required node affinity: ORed terms; none = any node
    public required IReadOnlyList<Toleration> Tolerations { get; init; }
    public required IReadOnlyList<HostnameAntiAffinity> AntiAffinity { get; init; }

    public static readonly PodShape Empty = new()
    {
        Namespace = "", Owner = OwnerKind.None, NamePrefix = "", Traits = PodTraits.None, Priority = 0,
        Labels = SmallMap<string>.Empty, NodeSelector = SmallMap<string>.Empty,
        RequiredNodeTerms = [], Tolerations = [], AntiAffinity = [],
    };

    /// <summary>A taint the scheduler enforces: NoSchedule and NoExecute keep untolerating pods off; PreferNoSchedule is a preference.</summary>
    public static bool KeepsPodsOff(Taint t) => t.Effect is "NoSchedule" or "NoExecute";

    /// <summary>Whether a node with these labels and taints may host a pod of this shape.</summary>
    /// <remarks>
    /// Asked for every (constraint class, node) of a packing over the open nodes (millions on a large cluster): the rules
    /// run without building a message (<see cref="FirstMisfit"/>), and the common case enumerates nothing.
    /// </remarks>
    public bool AllowsNode(IReadOnlyDictionary<string, string> labels, IReadOnlyList<Taint> taints) => FirstMisfit(labels, taints, out _, out _) == Misfit.None;

    /// <summary>Null when allowed, else the first reason the node is not a fit (for explanations).</summary>
    public string? WhyNot(IReadOnlyDictionary<string, string> labels, IReadOnlyList<Taint> taints) =>
        FirstMisfit(labels, taints, out var selector, out var taint) switch
        {
            Misfit.NodeSelector => $"nodeSelector {selector.Key}={selector.Value}",
            Misfit.NodeAffinity => "required node affinity",
            Misfit.Taint => $"taint {taint!.Key}={taint.Value}:{taint.Effect}",
            _ => null,
        };

    private enum Misfit { None, NodeSelector, NodeAffinity, Taint }

    /// <summary>The scheduling rules, in the order explanations give them: nodeSelector, required node affinity, taints.</summary>
    private Misfit FirstMisfit(IReadOnlyDictionary<string, string> labels, IReadOnlyList<Taint> taints, out KeyValuePair<string, string> selector, out Taint? taint)
    {
        selector = default;
        taint = null;
        if (NodeSelector.Count > 0)
            foreach (var kv in NodeSelector)
                if (!labels.TryGetValue(kv.Key, out var x) || x != kv.Value) { selector = kv; return Misfit.NodeSelector; }
        if (RequiredNodeTerms.Count > 0 && !AnyTermMatches(labels)) return Misfit.NodeAffinity;
        for (int i = 0; i < taints.Count; i++)
            if (KeepsPodsOff(taints[i]) && !Tolerates(taints[i])) { taint = taints[i]; return Misfit.Taint; }
        return Misfit.None;
    }

    // A loop, not Any with a lambda: the lambda's closure over `labels` was allocated on every call of FirstMisfit (72 MB a
    // 5,000-node run), affinity or not.
    private bool AnyTermMatches(IReadOnlyDictionary<string, string> labels)
    {
        for (int i = 0; i < RequiredNodeTerms.Count; i++) if (RequiredNodeTerms[i].Matches(labels)) return true;
        return false;
    }

    private bool Tolerates(Taint t)
    {
        for (int i = 0; i < Tolerations.Count; i++) if (Tolerations[i].Tolerates(t)) return true;
        return false;
    }

    /// <summary>
    /// For pods that repel their own kind (the usual one-per-node spread): the namespace and selector
    /// of that term, shared by every pod it keeps apart (StatefulSet members have shapes of their own
    /// but one key). Null when the shape carries no such term. Computed once per shape.
    /// </summary>
    public string? SelfAntiAffinityKey => (selfKey ??= ComputeSelfKey() ?? "") is { Length: > 0 } key ? key : null;

    private string? selfKey;   // "" once computed and absent

    private string? ComputeSelfKey()
    {
        foreach (var term in AntiAffinity)
        {
            if (!term.Covers(Namespace, Namespace) || !term.Selector.Matches(Labels)) continue;
            return (term.AllNamespaces ? "*" : Namespace) + "|" + term.Selector;
        }
        return null;
    }

    /// <summary>True when this shape's anti-affinity forbids sharing a node with a pod of <paramref name="other"/>.</summary>
    public bool Repels(PodShape other)
    {
        foreach (var term in AntiAffinity)
            if (term.Covers(Namespace, other.Namespace) && term.Selector.Matches(other.Labels))
                return true;
        return false;
    }

    /// <summary>Parses the raw JSON slices the pod decoder captured.</summary>
    public static PodShape Parse(string ns, OwnerKind owner, string? ownerName, string prefix, PodTraits traits, int priority,
        ReadOnlySpan<byte> labels, ReadOnlySpan<byte> nodeSelector, ReadOnlySpan<byte> affinity, ReadOnlySpan<byte> tolerations)
    {
        var a = ParseAffinity(affinity);
        var tols = ParseTolerations(tolerations);
        return new PodShape
        {
            Namespace = ns, Owner = owner, OwnerName = ownerName, NamePrefix = prefix, Traits = traits, Priority = priority,
            Labels = Scheduling.StringMap(labels), NodeSelector = Scheduling.StringMap(nodeSelector),
            RequiredNodeTerms = a.RequiredNodeTerms, Tolerations = tols, AntiAffinity = a.AntiAffinity,
        };
    }

    /// <summary>The parts of spec.affinity that Karpetrack reads: required node affinity and hostname anti-affinity.</summary>
    public sealed record AffinityRules(IReadOnlyList<LabelSelector> RequiredNodeTerms, IReadOnlyList<HostnameAntiAffinity> AntiAffinity)
    {
        public static readonly AffinityRules None = new([], []);
    }

    public static AffinityRules ParseAffinity(ReadOnlySpan<byte> affinity)
    {
        if (affinity.IsEmpty) return AffinityRules.None;
        var terms = new List<LabelSelector>();
        var anti = new List<HostnameAntiAffinity>();
        using var doc = JsonDocument.Parse(affinity.ToArray());
        var a = doc.RootElement;
        if (a.ValueKind == JsonValueKind.Object)
        {
            if (JsonElements.Has(a, "nodeAffinity", JsonValueKind.Object, out var na)
                && JsonElements.Has(na, "requiredDuringSchedulingIgnoredDuringExecution", JsonValueKind.Object, out var req))
            {
                if (JsonElements.Has(req, "nodeSelectorTerms", JsonValueKind.Array, out var nst))
                    foreach (var term in nst.EnumerateArray()) terms.Add(LabelSelector.FromNodeSelectorTerm(term));
                // A required node selector without terms matches no node (the scheduler ORs zero terms).
                if (terms.Count == 0) terms.Add(LabelSelector.Nothing);
            }
            if (JsonElements.Has(a, "podAntiAffinity", JsonValueKind.Object, out var pa)
                && JsonElements.Has(pa, "requiredDuringSchedulingIgnoredDuringExecution", JsonValueKind.Array, out var preq))
            {
                foreach (var term in preq.EnumerateArray())
                {
                    if (!JsonElements.Has(term, "topologyKey", JsonValueKind.String, out var tk) || tk.GetString() != "kubernetes.io/hostname") continue;
                    var selector = JsonElements.Has(term, "labelSelector", JsonValueKind.Object, out var ls) ? LabelSelector.FromJson(ls) : LabelSelector.Nothing;
                    var namespaces = new List<string>();
                    if (JsonElements.Has(term, "namespaces", JsonValueKind.Array, out var nss))
                        foreach (var n in nss.EnumerateArray()) if (JsonElements.Text(n) is { } s) namespaces.Add(s);
                    bool all = JsonElements.Has(term, "namespaceSelector", JsonValueKind.Object, out _);
                    anti.Add(new HostnameAntiAffinity(selector, namespaces.ToArray(), all));
                }
            }
        }
        return terms.Count == 0 && anti.Count == 0 ? AffinityRules.None : new AffinityRules(terms.ToArray(), anti.ToArray());
    }

    public static IReadOnlyList<Toleration> ParseTolerations(ReadOnlySpan<byte> tolerations)
    {
        if (tolerations.IsEmpty) return [];
        var tols = new List<Toleration>();
        using var doc = JsonDocument.Parse(tolerations.ToArray());
        if (doc.RootElement.ValueKind == JsonValueKind.Array)
            foreach (var t in doc.RootElement.EnumerateArray())
                tols.Add(new Toleration(Str(t, "key"), Str(t, "operator") ?? "Equal", Str(t, "value"), Str(t, "effect")));
        return tols.Count == 0 ? [] : tols.ToArray();
    }

    private static string? Str(JsonElement e, string name) => JsonElements.Has(e, name, JsonValueKind.String, out var v) ? v.GetString() : null;
}

public static class Scheduling
{
    public static IReadOnlyDictionary<string, string> StringMap(ReadOnlySpan<byte> json)
    {
        if (json.IsEmpty) return SmallMap<string>.Empty;
        using var doc = JsonDocument.Parse(json.ToArray());
        if (doc.RootElement.ValueKind != JsonValueKind.Object) return SmallMap<string>.Empty;
        var keys = new List<string>();
        var values = new List<string>();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String) continue;
            // Label keys repeat across thousands of shapes: one string each.
            var key = string.Intern(p.Name);
            var value = p.Value.GetString()!;
            int at = keys.IndexOf(key);
            if (at >= 0) values[at] = value;   // a repeated key: the last value wins where the first stood, as in a Dictionary
            else { keys.Add(key); values.Add(value); }
        }
        return keys.Count == 0 ? SmallMap<string>.Empty : new SmallMap<string>(keys.ToArray(), values.ToArray());
    }

    /// <summary>
    /// Packs a generated-name suffix (`7d9f8`, `0`, `x2k4q`) of up to 12 characters of [a-z0-9-]
    /// into a long, so the model keeps pod names without keeping strings. -1 when it does not fit.
    /// </summary>
    public static long PackSuffix(ReadOnlySpan<char> s)
    {
        if (s.Length == 0 || s.Length > 12) return -1;
        long v = 0;
        foreach (var c in s)
        {
            int d = c switch { >= 'a' and <= 'z' => c - 'a' + 1, >= '0' and <= '9' => c - '0' + 27, '-' => 37, _ => -1 };
            if (d < 0) return -1;
            v = v * 38 + d;
        }
        return v;
    }

    public static string UnpackSuffix(long v)
    {
        if (v <= 0) return "";
        Span<char> buf = stackalloc char[MaxSuffixLength];
        return new string(buf[..WriteSuffix(v, buf)]);
    }

    /// <summary>The most characters a packed suffix unpacks to.</summary>
    public const int MaxSuffixLength = 12;

    /// <summary>Unpacks <paramref name="v"/> into <paramref name="buf"/> (at least <see cref="MaxSuffixLength"/> long); the length written (0 for none).</summary>
    public static int WriteSuffix(long v, Span<char> buf)
    {
        int n = 0;
        while (v > 0)
        {
            int d = (int)(v % 38);
            buf[n++] = d <= 26 ? (char)('a' + d - 1) : d <= 36 ? (char)('0' + d - 27) : '-';
            v /= 38;
        }
        buf[..n].Reverse();
        return n;
    }

    /// <summary>Splits a pod name into a shared prefix (owner name and dash) and a packable suffix.</summary>
    public static (string Prefix, long Suffix) SplitName(string name, string? ownerName)
    {
        if (ownerName is { Length: > 0 } && name.Length > ownerName.Length + 1 && name.StartsWith(ownerName, StringComparison.Ordinal) && name[ownerName.Length] == '-')
        {
            long packed = PackSuffix(name.AsSpan(ownerName.Length + 1));
            if (packed > 0) return (name[..(ownerName.Length + 1)], packed);
        }
        return (name, 0);
    }
}

/// <summary>
/// A small immutable map from strings, kept as two arrays in the order it was built: a pod's handful
/// of labels, or a node's namespaces, in about half a Dictionary's bytes. Lookups scan, which for a
/// handful of keys is as fast as hashing.
/// </summary>
public sealed class SmallMap<TValue> : IReadOnlyDictionary<string, TValue>
{
    private readonly string[] keys;
    private readonly TValue[] values;

    public static readonly SmallMap<TValue> Empty = new([], []);

    /// <summary>Each key once; values in the same order. Both arrays are kept, not copied.</summary>
    internal SmallMap(string[] keys, TValue[] values)
    {
        if (keys.Length != values.Length) throw new ArgumentException("one value per key", nameof(values));
        this.keys = keys;
        this.values = values;
    }

    public int Count => keys.Length;

    public TValue this[string key] => TryGetValue(key, out var v) ? v : throw new KeyNotFoundException($"{key} is not present");

    public IEnumerable<string> Keys => keys;

    public IEnumerable<TValue> Values => values;

    public bool ContainsKey(string key) => IndexOf(key) >= 0;

    public bool TryGetValue(string key, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out TValue value)
    {
        int i = IndexOf(key);
        value = i >= 0 ? values[i] : default;
        return i >= 0;
    }

    private int IndexOf(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        for (int i = 0; i < keys.Length; i++)
            if (string.Equals(keys[i], key, StringComparison.Ordinal)) return i;
        return -1;
    }

    public IEnumerator<KeyValuePair<string, TValue>> GetEnumerator()
    {
        for (int i = 0; i < keys.Length; i++) yield return new KeyValuePair<string, TValue>(keys[i], values[i]);
    }

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}
