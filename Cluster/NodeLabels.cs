using System.Diagnostics.CodeAnalysis;

namespace Karpetrack;

/// <summary>
/// A node's labels (or kept annotations) as the model holds them: the keys and their index live in a
/// <see cref="LabelLayout"/> shared by every node with the same keys in the same order (a pool's nodes
/// differ in values, hardly ever in keys), and the node keeps only its values. About a quarter of a
/// Dictionary's bytes per node; lookups hash once, as a Dictionary's do. Immutable.
/// </summary>
public sealed class NodeLabels : IReadOnlyDictionary<string, string>
{
    private readonly LabelLayout layout;
    private readonly string[] values;

    public static readonly NodeLabels Empty = new(LabelLayout.None, []);

    private NodeLabels(LabelLayout layout, string[] values)
    {
        this.layout = layout;
        this.values = values;
    }

    /// <summary>The map's entries in its order, on a layout shared through <paramref name="layouts"/>.</summary>
    internal static NodeLabels Of(IReadOnlyDictionary<string, string> map, LabelLayouts layouts)
    {
        if (map.Count == 0) return Empty;
        var keys = new string[map.Count];
        var values = new string[map.Count];
        int i = 0;
        foreach (var (k, v) in map) { keys[i] = k; values[i++] = v; }
        return new NodeLabels(layouts.For(keys), values);
    }

    public int Count => values.Length;

    public string this[string key] => TryGetValue(key, out var v) ? v : throw new KeyNotFoundException($"{key} is not present");

    public IEnumerable<string> Keys => layout.Keys;

    public IEnumerable<string> Values => values;

    public bool ContainsKey(string key) => layout.IndexOf(key) >= 0;

    public bool TryGetValue(string key, [MaybeNullWhen(false)] out string value)
    {
        int i = layout.IndexOf(key);
        value = i >= 0 ? values[i] : null;
        return i >= 0;
    }

    public IEnumerator<KeyValuePair<string, string>> GetEnumerator()
    {
        var keys = layout.Keys;
        for (int i = 0; i < values.Length; i++) yield return new KeyValuePair<string, string>(keys[i], values[i]);
    }

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>One ordered set of label keys and the index from key to position, shared by the nodes that carry it.</summary>
internal sealed class LabelLayout
{
    public static readonly LabelLayout None = new([]);

    public readonly string[] Keys;
    private readonly Dictionary<string, int> index;

    public LabelLayout(string[] keys)
    {
        Keys = keys;
        index = new Dictionary<string, int>(keys.Length, StringComparer.Ordinal);
        for (int i = 0; i < keys.Length; i++) index.Add(keys[i], i);
    }

    public int IndexOf(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        return index.TryGetValue(key, out var i) ? i : -1;
    }
}

/// <summary>
/// The model's layouts by key sequence. Bounded: past <paramref name="capacity"/> distinct layouts it starts
/// afresh (the nodes that hold the old ones keep them; only sharing with later nodes is lost), so a cluster
/// whose nodes all carry different keys costs no more than a Dictionary each. Used under the model's lock.
/// </summary>
internal sealed class LabelLayouts(int capacity = 1024)
{
    private readonly Dictionary<string[], LabelLayout> layouts = new(KeySequence.Instance);

    public int Count => layouts.Count;

    public LabelLayout For(string[] keys)
    {
        if (layouts.TryGetValue(keys, out var layout)) return layout;
        if (layouts.Count >= capacity) layouts.Clear();
        layout = new LabelLayout(keys);
        layouts.Add(keys, layout);
        return layout;
    }

    private sealed class KeySequence : IEqualityComparer<string[]>
    {
        public static readonly KeySequence Instance = new();

        public bool Equals(string[]? a, string[]? b) =>
            ReferenceEquals(a, b) || (a is not null && b is not null && a.AsSpan().SequenceEqual(b, StringComparer.Ordinal));

        public int GetHashCode(string[] keys)
        {
            var h = new HashCode();
            foreach (var k in keys) h.Add(k, StringComparer.Ordinal);
            return h.ToHashCode();
        }
    }
}
