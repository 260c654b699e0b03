using System.Runtime.InteropServices;

namespace Karpetrack;

/// <summary>A small thread-safe store of whole records by key, with relist reconciliation.</summary>
public sealed class KeyedStore<T>(Func<T, string> keyOf) : IReflectorTarget<T> where T : class
{
    private readonly object gate = new();
    private readonly Dictionary<string, T> items = new(StringComparer.Ordinal);
    private HashSet<string>? seen;

    public long Version { get; private set; }

    public T[] All()
    {
        lock (gate) return items.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Value).ToArray();
    }

    public void BeginRelist() { lock (gate) seen = new HashSet<string>(StringComparer.Ordinal); }

    public void Upsert(T item)
    {
        lock (gate)
        {
            var key = keyOf(item);
            seen?.Add(key);
            items[key] = item;
            Version++;
        }
    }

    public void Delete(T item)
    {
        lock (gate) { if (items.Remove(keyOf(item))) Version++; }
    }

    public int EndRelist()
    {
        lock (gate)
        {
            if (seen is null) return 0;
            var gone = items.Keys.Where(k => !seen.Contains(k)).ToList();
            foreach (var k in gone) items.Remove(k);
            seen = null;
            if (gone.Count > 0) Version++;
            return gone.Count;
        }
    }
}

/// <summary>A reference-counted intern table handing out small integer ids.</summary>
public sealed class InternTable<T> where T : IEquatable<T>
{
    private readonly Dictionary<T, int> ids = [];
    private readonly List<(T Value, int Count)> entries = [];
    private readonly Stack<int> free = new();

    public int Count => ids.Count;

    public T this[int id] => entries[id].Value;

    public int Add(T value)
    {
        if (ids.TryGetValue(value, out var id))
        {
            var e = entries[id];
            entries[id] = (e.Value, e.Count + 1);
            return id;
        }
        if (free.TryPop(out id)) entries[id] = (value, 1);
        else { id = entries.Count; entries.Add((value, 1)); }
        ids[value] = id;
        return id;
    }

    public void Release(int id)
    {
        var e = entries[id];
        if (e.Count > 1) { entries[id] = (e.Value, e.Count - 1); return; }
        ids.Remove(e.Value);
        entries[id] = (default!, 0);
        free.Push(id);
    }
}

/// <summary>
/// A map from uid to a small struct at 16 bytes plus the value per entry: entries sit densely in pages
/// (no per-entry hash code, link or free-list slack as in Dictionary), found through an open-addressed
/// index of entry positions (linear probing, backward-shift deletion, no tombstones). Removing an entry
/// moves the last one into its place, so positions are dense and change on removal.
/// </summary>
public sealed class UidTable<T> where T : struct
{
    private struct Entry
    {
        public Guid Key;
        public T Value;
    }

    // 1,024 entries a page keeps each page under the large-object threshold for values up to 64 bytes.
    private const int PageBits = 10, PageSize = 1 << PageBits, PageMask = PageSize - 1;
    private const int MinIndex = 16;

    private Entry[][] pages = [];
    private int[] index = new int[MinIndex];   // entry position + 1; 0 = empty
    private int shift = 64 - 4;                // 64 - log2(index.Length)
    private int count;

    public int Count => count;

    /// <summary>The key at a position in [0, Count).</summary>
    public Guid KeyAt(int position) => At(position).Key;

    /// <summary>The value at a position in [0, Count), by reference for in-place updates.</summary>
    public ref T ValueAt(int position) => ref At(position).Value;

    public bool TryGetValue(Guid key, out T value)
    {
        int slot = Find(key);
        if (slot < 0) { value = default; return false; }
        value = At(index[slot] - 1).Value;
        return true;
    }

    public bool ContainsKey(Guid key) => Find(key) >= 0;

    /// <summary>Inserts or replaces; true when the key was new.</summary>
    public bool Set(Guid key, T value)
    {
        int mask = index.Length - 1;
        for (int s = Home(key); ; s = (s + 1) & mask)
        {
            int at = index[s];
            if (at == 0) break;
            ref var e = ref At(at - 1);
            if (e.Key == key) { e.Value = value; return false; }
        }
        if ((long)(count + 1) * 4 > (long)index.Length * 3) Rehash(index.Length * 2);
        int position = count;
        if ((position >> PageBits) >= pages.Length || pages[position >> PageBits] is null) AddPage(position >> PageBits);
        ref var slotEntry = ref At(position);
        slotEntry.Key = key;
        slotEntry.Value = value;
        count++;
        Place(key, position + 1);
        return true;
    }

    public bool Remove(Guid key, out T value)
    {
        int slot = Find(key);
        if (slot < 0) { value = default; return false; }
        int position = index[slot] - 1;
        value = At(position).Value;
        RemoveSlot(slot, position);
        return true;
    }

    /// <summary>Removes the entry at a position; the last entry moves into it (walk positions downward to remove while scanning).</summary>
    public void RemoveAt(int position)
    {
        if ((uint)position >= (uint)count) throw new ArgumentOutOfRangeException(nameof(position));
        RemoveSlot(Find(At(position).Key), position);
    }

    public void Clear()
    {
        pages = [];
        index = new int[MinIndex];
        shift = 64 - 4;
        count = 0;
    }

    private void RemoveSlot(int slot, int position)
    {
        Unplace(slot);
        int last = count - 1;
        if (position != last)
        {
            ref var moved = ref At(last);
            index[Find(moved.Key)] = position + 1;
            At(position) = moved;
        }
        At(last) = default;
        count--;
        // Give back pages beyond the one that holds the last entry and one spare.
        int keep = count == 0 ? 1 : ((count - 1) >> PageBits) + 2;
        for (int page = keep; page < pages.Length && pages[page] is not null; page++) pages[page] = null!;
    }

    private ref Entry At(int position) => ref pages[position >> PageBits][position & PageMask];

    private void AddPage(int page)
    {
        if (page >= pages.Length) Array.Resize(ref pages, Math.Max(4, pages.Length * 2));
        pages[page] = new Entry[PageSize];
    }

    private int Home(Guid key)
    {
        var bytes = MemoryMarshal.AsBytes(new ReadOnlySpan<Guid>(in key));
        ulong a = MemoryMarshal.Read<ulong>(bytes), b = MemoryMarshal.Read<ulong>(bytes[8..]);
        // Fibonacci hashing of both halves: uids are random, but a test's or a simulator's need not be.
        return (int)(((a ^ System.Numerics.BitOperations.RotateLeft(b, 31)) * 0x9E3779B97F4A7C15UL) >> shift);
    }

    private int Find(Guid key)
    {
        int mask = index.Length - 1;
        for (int s = Home(key); ; s = (s + 1) & mask)
        {
            int at = index[s];
            if (at == 0) return -1;
            if (At(at - 1).Key == key) return s;
        }
    }

    private void Place(Guid key, int entry)
    {
        int mask = index.Length - 1;
        int s = Home(key);
        while (index[s] != 0) s = (s + 1) & mask;
        index[s] = entry;
    }

    private void Unplace(int hole)
    {
        int mask = index.Length - 1;
        index[hole] = 0;
        for (int j = (hole + 1) & mask; index[j] != 0; j = (j + 1) & mask)
        {
            int home = Home(At(index[j] - 1).Key);
            // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
            if (((j - home) & mask) >= ((j - hole) & mask))
            {
                index[hole] = index[j];
                index[j] = 0;
                hole = j;
            }
        }
    }

    private void Rehash(int size)
    {
        index = new int[size];
        shift = 64 - System.Numerics.BitOperations.Log2((uint)size);
        for (int p = 0; p < count; p++) Place(At(p).Key, p + 1);
    }
}

/// <summary>
/// Reference-counted values parsed from JSON, shared by everything whose JSON is byte-for-byte equal:
/// the thousands of pod shapes that carry the same default tolerations hold one parsed list.
/// </summary>
internal sealed class SharedParts<T> where T : class
{
    private sealed class Part(byte[] key, T value)
    {
        public readonly byte[] Key = key;
        public readonly T Value = value;
        public int Count = 1;
    }

    private readonly Dictionary<byte[], Part> parts = new(ContentComparer.Instance);

    public int Count => parts.Count;

    /// <summary>
    /// The shared value for this JSON, parsed on first sight. <paramref name="key"/> is what to release
    /// it with; null for empty JSON, whose value is not counted (parse it to a shared empty value).
    /// </summary>
    public T Acquire(byte[] json, Func<ReadOnlySpan<byte>, T> parse, out byte[]? key)
    {
        if (json.Length == 0) { key = null; return parse(json); }
        if (parts.TryGetValue(json, out var part)) part.Count++;
        else
        {
            // Parse before storing: JSON that fails to parse leaves nothing behind. The key is a copy,
            // so the caller's buffer is never retained.
            part = new Part(json.AsSpan().ToArray(), parse(json));
            parts.Add(part.Key, part);
        }
        key = part.Key;
        return part.Value;
    }

    public void Release(byte[] key)
    {
        var part = parts[key];
        if (--part.Count == 0) parts.Remove(key);
    }

    private sealed class ContentComparer : IEqualityComparer<byte[]>
    {
        public static readonly ContentComparer Instance = new();

        public bool Equals(byte[]? a, byte[]? b) => ReferenceEquals(a, b) || (a is not null && b is not null && a.AsSpan().SequenceEqual(b));

        public int GetHashCode(byte[] b)
        {
            var h = new HashCode();
            h.AddBytes(b);
            return h.ToHashCode();
        }
    }
}
