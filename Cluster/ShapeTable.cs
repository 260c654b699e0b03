using System.Runtime.InteropServices;

namespace Karpetrack;

/// <summary>
/// Interned pod shapes, keyed by the raw bytes that define them (namespace, owner, name prefix,
/// traits, labels, node selector, affinity, tolerations) and parsed once per distinct shape. The
/// parts many shapes have in common (namespace, node selector, affinity, tolerations) are shared
/// between shapes too, each parsed once per distinct JSON.
/// </summary>
internal sealed class ShapeTable
{
    private struct Entry
    {
        public ShapeKey Key;
        public PodShape Shape;
        public int Count;
        public int Namespace;        // id in namespaces
        public byte[]? Selector, Affinity, Tolerations;   // keys of the shared parts, to release them
    }

    private readonly Dictionary<ShapeKey, int> ids = [];
    private readonly List<Entry> entries = [];
    private readonly Stack<int> free = new();
    private readonly InternTable<string> namespaces = new();
    private readonly SharedParts<IReadOnlyDictionary<string, string>> selectors = new();
    private readonly SharedParts<PodShape.AffinityRules> affinities = new();
    private readonly SharedParts<IReadOnlyList<Toleration>> tolerations = new();

    public int Count => ids.Count;

    public PodShape this[int id] => entries[id].Shape;

    /// <summary>The namespace id of a shape: what per-node namespace tallies are keyed by.</summary>
    public int NamespaceOf(int id) => entries[id].Namespace;

    public string NamespaceName(int namespaceId) => namespaces[namespaceId];

    public int Add(PodRecord pod, string prefix, bool overhead)
    {
        var key = ShapeKey.Of(pod, prefix, overhead);
        if (ids.TryGetValue(key, out var id))
        {
            CollectionsMarshal.AsSpan(entries)[id].Count++;
            return id;
        }
        int ns = namespaces.Add(pod.Namespace);
        var e = new Entry { Key = key, Count = 1, Namespace = ns };
        var canonicalNamespace = namespaces[ns];
        try
        {
            // DaemonSet and mirror pods are never moved or provisioned for: their placement rules
            // (a DaemonSet pod's affinity names its node) would only make every one a shape of its own.
            var a = overhead ? PodShape.AffinityRules.None : affinities.Acquire(pod.AffinityJson, PodShape.ParseAffinity, out e.Affinity);
            var t = overhead ? [] : tolerations.Acquire(pod.TolerationsJson, PodShape.ParseTolerations, out e.Tolerations);
            var s = overhead ? SmallMap<string>.Empty : selectors.Acquire(pod.NodeSelectorJson, Scheduling.StringMap, out e.Selector);
            e.Shape = new PodShape
            {
                Namespace = canonicalNamespace, Owner = pod.Owner, OwnerName = pod.OwnerName, NamePrefix = prefix, Traits = pod.Traits,
                Priority = pod.Priority, Labels = overhead ? SmallMap<string>.Empty : Scheduling.StringMap(pod.LabelsJson), NodeSelector = s,
                RequiredNodeTerms = a.RequiredNodeTerms, Tolerations = t, AntiAffinity = a.AntiAffinity,
            };
        }
        catch (System.Text.Json.JsonException)
        {
            ReleaseParts(e);
            e.Selector = e.Affinity = e.Tolerations = null;
            // The decoder already checked the JSON is well formed; a shape we cannot read places nowhere.
            e.Shape = new PodShape
            {
                Namespace = canonicalNamespace, Owner = pod.Owner, OwnerName = pod.OwnerName, NamePrefix = prefix, Traits = pod.Traits,
                Priority = pod.Priority, Labels = SmallMap<string>.Empty, NodeSelector = SmallMap<string>.Empty,
                RequiredNodeTerms = [LabelSelector.Nothing], Tolerations = [], AntiAffinity = [],
            };
        }
        if (free.TryPop(out id)) entries[id] = e;
        else { id = entries.Count; entries.Add(e); }
        ids[key] = id;
        return id;
    }

    public void Release(int id)
    {
        ref var e = ref CollectionsMarshal.AsSpan(entries)[id];
        if (--e.Count > 0) return;
        ids.Remove(e.Key);
        namespaces.Release(e.Namespace);
        ReleaseParts(e);
        e = new Entry { Shape = PodShape.Empty };
        free.Push(id);
    }

    private void ReleaseParts(in Entry e)
    {
        if (e.Selector is not null) selectors.Release(e.Selector);
        if (e.Affinity is not null) affinities.Release(e.Affinity);
        if (e.Tolerations is not null) tolerations.Release(e.Tolerations);
    }

    /// <summary>
    /// A 128-bit digest of what defines a shape: the raw JSON is not kept per shape. XxHash128 with a
    /// seed drawn per process: accidental collisions are out of reach at 128 bits, and nobody who can
    /// create pods can search for a colliding shape without the seed. (SHA-256 cost a tenth of the
    /// reflector's time while draining a watch backlog, most of it in OpenSSL's per-call set-up.)
    /// </summary>
    private readonly record struct ShapeKey(long A, long B)
    {
        private static readonly long Seed = BitConverter.ToInt64(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8));

        public static ShapeKey Of(PodRecord p, string prefix, bool overhead)
        {
            var utf8 = System.Text.Encoding.UTF8;
            ReadOnlySpan<byte> labels = overhead ? [] : p.LabelsJson, selector = overhead ? [] : p.NodeSelectorJson;
            ReadOnlySpan<byte> affinity = overhead ? [] : p.AffinityJson, tolerations = overhead ? [] : p.TolerationsJson;
            int size = 64 + utf8.GetMaxByteCount(p.Namespace.Length + (p.OwnerName?.Length ?? 0) + prefix.Length)
                + labels.Length + selector.Length + affinity.Length + tolerations.Length;
            var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(size);
            try
            {
                int at = 0;
                void Part(ReadOnlySpan<byte> b)
                {
                    System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(at), b.Length);
                    at += 4;
                    b.CopyTo(buffer.AsSpan(at));
                    at += b.Length;
                }
                void Text(string t)
                {
                    int n = utf8.GetBytes(t, buffer.AsSpan(at + 4));
                    System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(buffer.AsSpan(at), n);
                    at += 4 + n;
                }
                Text(p.Namespace);
                Part([(byte)p.Owner, (byte)p.Traits, overhead ? (byte)1 : (byte)0]);
                Part(BitConverter.GetBytes(p.Priority));
                Text(p.OwnerName ?? "");
                Text(prefix);
                Part(labels);
                Part(selector);
                Part(affinity);
                Part(tolerations);
                var digest = System.IO.Hashing.XxHash128.HashToUInt128(buffer.AsSpan(0, at), Seed);
                return new ShapeKey((long)(ulong)(digest >> 64), (long)(ulong)digest);
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }
}
