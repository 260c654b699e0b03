using System.Buffers.Text;
using System.Text;
using System.Text.Json;

namespace Karpetrack;

/// <summary>Outcome of decoding one object from a buffer that may end mid-object.</summary>
public enum Decode { Ok, Incomplete }

/// <summary>
/// Decodes one Kubernetes object from a reader positioned on its StartObject token, leaving the
/// reader on the matching EndObject. Returns <see cref="Decode.Incomplete"/> when the buffer ends
/// first (the caller refills and retries from the object's start). Bad field values do not stop
/// decoding: the first problem is reported in <paramref name="error"/> and the rest is skipped.
/// </summary>
public interface IObjectDecoder<T> where T : class
{
    /// <param name="data">The span the reader was created over, so that raw slices of the object can be kept.</param>
    Decode TryDecode(ref Utf8JsonReader r, ReadOnlySpan<byte> data, out T value, ref string? error);

    /// <summary>The object's resourceVersion, for bookmarks and resuming.</summary>
    string? ResourceVersionOf(T value);

    /// <summary>A short name for logs ("ns/name").</summary>
    string Describe(T value);
}

/// <summary>Small helpers shared by the decoders; every Read can run out of buffer.</summary>
internal static class Json
{
    /// <summary>Skips the value the reader is on (or, on a property name, the value after it).</summary>
    public static bool Skip(ref Utf8JsonReader r) =>
        r.TokenType is JsonTokenType.PropertyName or JsonTokenType.StartObject or JsonTokenType.StartArray
            ? r.TrySkip()
            : true;

    public static void Fail(ref string? error, string path, string problem) => error ??= $"{path}: {problem}";

    public static string? String(ref Utf8JsonReader r, ref string? error, string path, StringPool? pool = null)
    {
        if (r.TokenType == JsonTokenType.String) return pool is null ? r.GetString() : pool.Get(ref r);
        if (r.TokenType != JsonTokenType.Null) Fail(ref error, path, $"expected a string, got {r.TokenType}");
        return null;
    }

    public static bool Bool(ref Utf8JsonReader r, ref string? error, string path)
    {
        if (r.TokenType == JsonTokenType.True) return true;
        if (r.TokenType is JsonTokenType.False or JsonTokenType.Null) return false;
        Fail(ref error, path, $"expected a boolean, got {r.TokenType}");
        return false;
    }

    /// <summary>Reads a quantity given as a JSON string or number.</summary>
    public static bool Quantity(ref Utf8JsonReader r, out Quantity q, ref string? error, string path)
    {
        q = Karpetrack.Quantity.Zero;
        if (r.TokenType is not (JsonTokenType.String or JsonTokenType.Number))
        {
            Fail(ref error, path, $"expected a quantity, got {r.TokenType}");
            return false;
        }
        Span<char> chars = stackalloc char[64];
        int n;
        if (!r.ValueIsEscaped && !r.HasValueSequence && r.ValueSpan.Length <= chars.Length)
        {
            var bytes = r.ValueSpan;
            for (int i = 0; i < bytes.Length; i++) chars[i] = (char)bytes[i];
            n = bytes.Length;
        }
        else if (r.TokenType == JsonTokenType.String)
        {
            var s = r.GetString() ?? "";
            if (s.Length > chars.Length) { Fail(ref error, path, "quantity is too long"); return false; }
            s.AsSpan().CopyTo(chars);
            n = s.Length;
        }
        else { Fail(ref error, path, "quantity is too long"); return false; }

        if (!Karpetrack.Quantity.TryParse(chars[..n], out q, out var why))
        {
            Fail(ref error, path, why!);
            return false;
        }
        return true;
    }

    /// <summary>Reads a {resourceName: quantity} map into <paramref name="into"/> (tracked resources only).</summary>
    public static Decode ResourceMap(ref Utf8JsonReader r, ResourceTable table, long[] into, ref string? error, string path)
    {
        if (r.TokenType == JsonTokenType.Null) return Decode.Ok;
        if (r.TokenType != JsonTokenType.StartObject)
        {
            Fail(ref error, path, $"expected an object, got {r.TokenType}");
            return Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        }
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            int idx = r.ValueIsEscaped ? table.IndexOf(r.GetString()!) : table.IndexOf(r.ValueSpan);
            if (!r.Read()) return Decode.Incomplete;
            if (idx < 0)
            {
                if (!Skip(ref r)) return Decode.Incomplete;
                continue;
            }
            if (Quantity(ref r, out var q, ref error, $"{path}.{table.Name(idx)}"))
            {
                if (q.Value < 0) Fail(ref error, $"{path}.{table.Name(idx)}", $"negative quantity {q}");
                else into[idx] = table.ToStored(idx, q);
            }
            else if (!Skip(ref r)) return Decode.Incomplete;
        }
    }

    /// <summary>Reads a {string: string} map (labels, annotations).</summary>
    /// <param name="pool">Shares key and value strings with other objects, when given.</param>
    /// <param name="keep">Which keys to keep, when not all; the others are skipped unread.</param>
    public static Decode StringMap(ref Utf8JsonReader r, Dictionary<string, string> into, ref string? error, string path,
        StringPool? pool = null, Func<string, bool>? keep = null)
    {
        if (r.TokenType == JsonTokenType.Null) return Decode.Ok;
        if (r.TokenType != JsonTokenType.StartObject)
        {
            Fail(ref error, path, $"expected an object, got {r.TokenType}");
            return Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        }
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            var key = pool is null ? r.GetString()! : pool.Get(ref r);
            if (!r.Read()) return Decode.Incomplete;
            if (keep is not null && !keep(key))
            {
                if (!Skip(ref r)) return Decode.Incomplete;
                continue;
            }
            var value = String(ref r, ref error, $"{path}[{key}]", pool);
            if (value is not null) into[key] = value;
            else if (!Skip(ref r)) return Decode.Incomplete;
        }
    }

    /// <summary>Expects an object or null; on anything else records an error and skips it.</summary>
    public static bool ExpectObject(ref Utf8JsonReader r, ref string? error, string path)
    {
        if (r.TokenType == JsonTokenType.StartObject) return true;
        if (r.TokenType != JsonTokenType.Null) Fail(ref error, path, $"expected an object, got {r.TokenType}");
        return false;
    }

    public static bool ExpectArray(ref Utf8JsonReader r, ref string? error, string path)
    {
        if (r.TokenType == JsonTokenType.StartArray) return true;
        if (r.TokenType != JsonTokenType.Null) Fail(ref error, path, $"expected an array, got {r.TokenType}");
        return false;
    }

    public static DateTimeOffset? Time(ref Utf8JsonReader r)
    {
        if (r.TokenType != JsonTokenType.String) return null;
        return r.TryGetDateTimeOffset(out var t) ? t : null;
    }

    public static Guid Uid(ref Utf8JsonReader r, ref string? error)
    {
        if (r.TokenType == JsonTokenType.String && !r.ValueIsEscaped && !r.HasValueSequence
            && Utf8Parser.TryParse(r.ValueSpan, out Guid g, out int used) && used == r.ValueSpan.Length)
            return g;
        if (r.TokenType == JsonTokenType.String)
        {
            // Not every server uses RFC 4122 uids; derive a stable id from the text instead.
            var s = r.GetString() ?? "";
            return StableGuid(s);
        }
        Fail(ref error, "metadata.uid", $"expected a string, got {r.TokenType}");
        return Guid.Empty;
    }

    /// <summary>The id <see cref="Uid(ref Utf8JsonReader, ref string?)"/> gives the same uid text.</summary>
    public static Guid UidOf(string uid) => Guid.TryParseExact(uid, "D", out var g) ? g : StableGuid(uid);

    public static Guid StableGuid(string s)
    {
        Span<byte> hash = stackalloc byte[32];
        System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(s), hash);
        return new Guid(hash[..16]);
    }
}

/// <summary>
/// Hands out one string per distinct short JSON string value, so that objects decoded one by one
/// share their repeated keys and values. Bounded: when full it starts over, so values of objects
/// long gone cannot pile up; a value is then at worst allocated again, never wrong.
/// </summary>
public sealed class StringPool(int capacity = 65_536)
{
    private const int MaxChars = 256;
    private readonly HashSet<string> strings = new(StringComparer.Ordinal);

    public int Count { get { lock (strings) return strings.Count; } }

    /// <summary>The reader's current string value, shared with earlier equal ones.</summary>
    public string Get(ref Utf8JsonReader r)
    {
        if (r.HasValueSequence || r.ValueIsEscaped || r.ValueSpan.Length > MaxChars) return r.GetString()!;
        Span<char> chars = stackalloc char[MaxChars];
        // Invalid UTF-8 goes the ordinary way, to fail exactly as GetString does.
        if (System.Text.Unicode.Utf8.ToUtf16(r.ValueSpan, chars, out _, out int n, replaceInvalidSequences: false) != System.Buffers.OperationStatus.Done)
            return r.GetString()!;
        var text = chars[..n];
        lock (strings)
        {
            var lookup = strings.GetAlternateLookup<ReadOnlySpan<char>>();
            if (lookup.TryGetValue(text, out var shared)) return shared;
            if (strings.Count >= capacity) strings.Clear();
            var fresh = new string(text);
            strings.Add(fresh);
            return fresh;
        }
    }
}

/// <summary>A Kubernetes Status object (ERROR watch events, error bodies).</summary>
public sealed record KubeStatus(int Code, string? Reason, string? Message, int? RetryAfterSeconds)
{
    public static KubeStatus? TryParse(ReadOnlySpan<byte> json)
    {
        try
        {
            var r = new Utf8JsonReader(json, isFinalBlock: true, default);
            if (!r.Read() || r.TokenType != JsonTokenType.StartObject) return null;
            return Decode(ref r);
        }
        catch (JsonException) { return null; }
    }

    /// <summary>Decodes a complete Status object; the reader is on its StartObject.</summary>
    public static KubeStatus? Decode(ref Utf8JsonReader r)
    {
        int code = 0; string? reason = null, message = null, kind = null; int? retry = null;
        int depth = r.CurrentDepth;
        while (r.Read() && !(r.TokenType == JsonTokenType.EndObject && r.CurrentDepth == depth))
        {
            if (r.TokenType != JsonTokenType.PropertyName) continue;
            if (r.CurrentDepth == depth + 1)
            {
                if (r.ValueTextEquals("code"u8)) { r.Read(); if (r.TokenType == JsonTokenType.Number) r.TryGetInt32(out code); }
                else if (r.ValueTextEquals("reason"u8)) { r.Read(); reason = r.TokenType == JsonTokenType.String ? r.GetString() : null; }
                else if (r.ValueTextEquals("message"u8)) { r.Read(); message = r.TokenType == JsonTokenType.String ? r.GetString() : null; }
                else if (r.ValueTextEquals("kind"u8)) { r.Read(); kind = r.TokenType == JsonTokenType.String ? r.GetString() : null; }
                else if (r.ValueTextEquals("details"u8)) { r.Read(); }
                else { r.Read(); r.TrySkip(); }
            }
            else if (r.ValueTextEquals("retryAfterSeconds"u8))
            {
                r.Read();
                if (r.TokenType == JsonTokenType.Number && r.TryGetInt32(out var s)) retry = s;
            }
            else { r.Read(); r.TrySkip(); }
        }
        return kind is null or "Status" ? new KubeStatus(code, reason, message, retry) : null;
    }
}

/// <summary>Decodes Pods, applying the upstream effective-request rule (PodRequests) on the fly.</summary>
public sealed class PodDecoder(ResourceTable table) : IObjectDecoder<PodRecord>
{
    // Scratch vectors reused across pods: a decoder belongs to one reflector, which is single-threaded.
    private readonly long[] regular = new long[table.Count];
    private readonly long[] sidecars = new long[table.Count];
    private readonly long[] initMax = new long[table.Count];
    private readonly long[] container = new long[table.Count];
    private readonly long[] overhead = new long[table.Count];
    private readonly long[] podLevel = new long[table.Count];
    private readonly bool[] podLevelSet = new bool[table.Count];

    public string? ResourceVersionOf(PodRecord value) => value.ResourceVersion;

    public string Describe(PodRecord value) => $"{value.Namespace}/{value.Name}";

    public Decode TryDecode(ref Utf8JsonReader r, ReadOnlySpan<byte> data, out PodRecord pod, ref string? error)
    {
        pod = new PodRecord();
        Array.Clear(regular); Array.Clear(sidecars); Array.Clear(initMax);
        Array.Clear(overhead); Array.Clear(podLevel); Array.Clear(podLevelSet);
        if (!Json.ExpectObject(ref r, ref error, "pod")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) break;
            Decode d;
            if (r.ValueTextEquals("metadata"u8)) { if (!r.Read()) return Decode.Incomplete; d = Metadata(ref r, data, pod, ref error); }
            else if (r.ValueTextEquals("spec"u8)) { if (!r.Read()) return Decode.Incomplete; d = Spec(ref r, data, pod, ref error); }
            else if (r.ValueTextEquals("status"u8)) { if (!r.Read()) return Decode.Incomplete; d = Status(ref r, pod, ref error); }
            else d = r.TrySkip() ? Decode.Ok : Decode.Incomplete;
            if (d == Decode.Incomplete) return d;
        }
        pod.Requests = Effective();
        return Decode.Ok;
    }

    // Upstream PodRequests: regular containers summed; sidecars (restartable init containers) join
    // the running sum; classic init containers take a max per phase; pod-level requests win where
    // set; overhead is added last.
    private long[] Effective()
    {
        var v = new long[regular.Length];
        for (int i = 0; i < v.Length; i++)
        {
            long running = regular[i] + sidecars[i];
            v[i] = Math.Max(running, initMax[i]);
            if (podLevelSet[i]) v[i] = podLevel[i];
            v[i] += overhead[i];
        }
        return v;
    }

    /// <summary>Keeps the raw JSON of the value the reader is on (an object or array), skipping past it.</summary>
    private static Decode Raw(ref Utf8JsonReader r, ReadOnlySpan<byte> data, out byte[] raw, ref string? error, string path, bool stringMap = false)
    {
        raw = [];
        if (r.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray)) return Decode.Ok;
        long start = r.TokenStartIndex;
        if (!r.TrySkip()) return Decode.Incomplete;
        var slice = data[(int)start..(int)r.BytesConsumed];
        if (stringMap && !IsStringMap(slice)) { Json.Fail(ref error, path, "expected a map of strings"); return Decode.Ok; }
        // Parsed later, once per pod shape, where invalid UTF-8 would throw: refuse it here, with the object.
        if (!System.Text.Unicode.Utf8.IsValid(slice)) { Json.Fail(ref error, path, "not valid UTF-8"); return Decode.Ok; }
        raw = slice.ToArray();
        return Decode.Ok;
    }

    /// <summary>An object whose every value is a string (labels, nodeSelector), as the API server guarantees.</summary>
    private static bool IsStringMap(ReadOnlySpan<byte> json)
    {
        var r = new Utf8JsonReader(json, isFinalBlock: true, default);
        if (!r.Read() || r.TokenType != JsonTokenType.StartObject) return false;
        while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
            if (!r.Read() || r.TokenType != JsonTokenType.String) return false;
        return r.TokenType == JsonTokenType.EndObject;
    }

    private static Decode Metadata(ref Utf8JsonReader r, ReadOnlySpan<byte> data, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "metadata")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("name"u8)) { if (!r.Read()) return Decode.Incomplete; pod.Name = Json.String(ref r, ref error, "metadata.name") ?? ""; }
            else if (r.ValueTextEquals("namespace"u8)) { if (!r.Read()) return Decode.Incomplete; pod.Namespace = Json.String(ref r, ref error, "metadata.namespace") ?? ""; }
            else if (r.ValueTextEquals("uid"u8)) { if (!r.Read()) return Decode.Incomplete; pod.Uid = Json.Uid(ref r, ref error); }
            else if (r.ValueTextEquals("resourceVersion"u8)) { if (!r.Read()) return Decode.Incomplete; pod.ResourceVersion = Json.String(ref r, ref error, "metadata.resourceVersion"); }
            else if (r.ValueTextEquals("deletionTimestamp"u8)) { if (!r.Read()) return Decode.Incomplete; pod.Terminating = r.TokenType != JsonTokenType.Null; }
            else if (r.ValueTextEquals("ownerReferences"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (OwnerReferences(ref r, pod, ref error) == Decode.Incomplete) return Decode.Incomplete;
            }
            else if (r.ValueTextEquals("annotations"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (Annotations(ref r, pod, ref error) == Decode.Incomplete) return Decode.Incomplete;
            }
            else if (r.ValueTextEquals("labels"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (Raw(ref r, data, out pod.LabelsJson, ref error, "metadata.labels", stringMap: true) == Decode.Incomplete) return Decode.Incomplete;
            }
            else if (!r.TrySkip()) return Decode.Incomplete;
        }
    }

    private static Decode Annotations(ref Utf8JsonReader r, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "metadata.annotations")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            // Mirror pods carry this annotation; the kubelet creates them for static pods.
            if (r.ValueTextEquals("kubernetes.io/config.mirror"u8)) pod.Owner = OwnerKind.Mirror;
            PodTraits ifTrue = PodTraits.None, ifFalse = PodTraits.None;
            if (r.ValueTextEquals("karpenter.sh/do-not-disrupt"u8) || r.ValueTextEquals("karpetrack.io/do-not-disrupt"u8)) ifTrue = PodTraits.DoNotDisrupt;
            else if (r.ValueTextEquals("cluster-autoscaler.kubernetes.io/safe-to-evict"u8)) { ifTrue = PodTraits.SafeToEvictTrue; ifFalse = PodTraits.SafeToEvictFalse; }
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.String && (ifTrue | ifFalse) != PodTraits.None)
            {
                if (r.ValueTextEquals("true"u8)) pod.Traits |= ifTrue;
                else if (r.ValueTextEquals("false"u8)) pod.Traits |= ifFalse;
            }
            else if (!Json.Skip(ref r)) return Decode.Incomplete;
        }
    }

    private static Decode OwnerReferences(ref Utf8JsonReader r, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectArray(ref r, ref error, "metadata.ownerReferences")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        bool haveController = false;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndArray) return Decode.Ok;
            if (!Json.ExpectObject(ref r, ref error, "metadata.ownerReferences[]")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
            string? kind = null, name = null; bool controller = false;
            while (true)
            {
                if (!r.Read()) return Decode.Incomplete;
                if (r.TokenType == JsonTokenType.EndObject) break;
                if (r.ValueTextEquals("kind"u8)) { if (!r.Read()) return Decode.Incomplete; kind = Json.String(ref r, ref error, "ownerReferences.kind"); }
                else if (r.ValueTextEquals("name"u8)) { if (!r.Read()) return Decode.Incomplete; name = Json.String(ref r, ref error, "ownerReferences.name"); }
                else if (r.ValueTextEquals("controller"u8)) { if (!r.Read()) return Decode.Incomplete; controller = Json.Bool(ref r, ref error, "ownerReferences.controller"); }
                else if (!r.TrySkip()) return Decode.Incomplete;
            }
            if (pod.Owner == OwnerKind.Mirror || haveController) continue;
            if (controller || pod.Owner == OwnerKind.None)
            {
                haveController = controller;
                pod.OwnerName = name;
                pod.Owner = kind switch
                {
                    "DaemonSet" => OwnerKind.DaemonSet,
                    "Node" => OwnerKind.Mirror,
                    "ReplicaSet" => OwnerKind.ReplicaSet,
                    "StatefulSet" => OwnerKind.StatefulSet,
                    "Job" => OwnerKind.Job,
                    _ => OwnerKind.Other,
                };
            }
        }
    }

    private Decode Spec(ref Utf8JsonReader r, ReadOnlySpan<byte> data, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "spec")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            Decode d = Decode.Ok;
            if (r.ValueTextEquals("nodeName"u8)) { if (!r.Read()) return Decode.Incomplete; pod.NodeName = Json.String(ref r, ref error, "spec.nodeName"); }
            else if (r.ValueTextEquals("containers"u8)) { if (!r.Read()) return Decode.Incomplete; d = Containers(ref r, init: false, ref error); }
            else if (r.ValueTextEquals("initContainers"u8)) { if (!r.Read()) return Decode.Incomplete; d = Containers(ref r, init: true, ref error); }
            else if (r.ValueTextEquals("overhead"u8)) { if (!r.Read()) return Decode.Incomplete; d = Json.ResourceMap(ref r, table, overhead, ref error, "spec.overhead"); }
            else if (r.ValueTextEquals("resources"u8)) { if (!r.Read()) return Decode.Incomplete; d = PodResources(ref r, ref error); }
            else if (r.ValueTextEquals("nodeSelector"u8)) { if (!r.Read()) return Decode.Incomplete; d = Raw(ref r, data, out pod.NodeSelectorJson, ref error, "spec.nodeSelector", stringMap: true); }
            else if (r.ValueTextEquals("affinity"u8)) { if (!r.Read()) return Decode.Incomplete; d = Raw(ref r, data, out pod.AffinityJson, ref error, "spec.affinity"); }
            else if (r.ValueTextEquals("tolerations"u8)) { if (!r.Read()) return Decode.Incomplete; d = Raw(ref r, data, out pod.TolerationsJson, ref error, "spec.tolerations"); }
            else if (r.ValueTextEquals("priority"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (r.TokenType == JsonTokenType.Number && r.TryGetInt32(out var prio)) pod.Priority = prio;
            }
            else if (r.ValueTextEquals("volumes"u8)) { if (!r.Read()) return Decode.Incomplete; d = Volumes(ref r, pod, ref error); }
            else if (!r.TrySkip()) return Decode.Incomplete;
            if (d == Decode.Incomplete) return d;
        }
    }

    // Local storage keeps a node from being drained safely: an emptyDir not backed by memory, or a hostPath.
    private static Decode Volumes(ref Utf8JsonReader r, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectArray(ref r, ref error, "spec.volumes")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndArray) return Decode.Ok;
            if (!Json.ExpectObject(ref r, ref error, "spec.volumes[]")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
            while (true)
            {
                if (!r.Read()) return Decode.Incomplete;
                if (r.TokenType == JsonTokenType.EndObject) break;
                if (r.ValueTextEquals("hostPath"u8)) { pod.Traits |= PodTraits.LocalStorage; if (!r.TrySkip()) return Decode.Incomplete; }
                else if (r.ValueTextEquals("emptyDir"u8))
                {
                    if (!r.Read()) return Decode.Incomplete;
                    bool memory = false;
                    if (r.TokenType == JsonTokenType.StartObject)
                    {
                        while (true)
                        {
                            if (!r.Read()) return Decode.Incomplete;
                            if (r.TokenType == JsonTokenType.EndObject) break;
                            if (r.ValueTextEquals("medium"u8))
                            {
                                if (!r.Read()) return Decode.Incomplete;
                                memory = r.TokenType == JsonTokenType.String && r.ValueTextEquals("Memory"u8);
                            }
                            else if (!r.TrySkip()) return Decode.Incomplete;
                        }
                    }
                    if (!memory) pod.Traits |= PodTraits.LocalStorage;
                }
                else if (!r.TrySkip()) return Decode.Incomplete;
            }
        }
    }

    private Decode PodResources(ref Utf8JsonReader r, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "spec.resources")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("requests"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                Array.Fill(container, -1);
                if (Json.ResourceMap(ref r, table, container, ref error, "spec.resources.requests") == Decode.Incomplete) return Decode.Incomplete;
                // Pod-level resources only cover cpu, memory and hugepages (PodLevelResources).
                for (int i = 0; i < container.Length; i++)
                {
                    var name = table.Name(i);
                    if (container[i] >= 0 && (i == ResourceTable.Cpu || i == ResourceTable.Memory || name.StartsWith("hugepages-", StringComparison.Ordinal)))
                    {
                        podLevel[i] = container[i];
                        podLevelSet[i] = true;
                    }
                }
                Array.Clear(container);
            }
            else if (!r.TrySkip()) return Decode.Incomplete;
        }
    }

    private Decode Containers(ref Utf8JsonReader r, bool init, ref string? error)
    {
        string path = init ? "spec.initContainers" : "spec.containers";
        if (!Json.ExpectArray(ref r, ref error, path)) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndArray) return Decode.Ok;
            if (!Json.ExpectObject(ref r, ref error, path + "[]")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
            Array.Clear(container);
            bool restartAlways = false;
            while (true)
            {
                if (!r.Read()) return Decode.Incomplete;
                if (r.TokenType == JsonTokenType.EndObject) break;
                if (r.ValueTextEquals("resources"u8))
                {
                    if (!r.Read()) return Decode.Incomplete;
                    if (ContainerResources(ref r, path, ref error) == Decode.Incomplete) return Decode.Incomplete;
                }
                else if (init && r.ValueTextEquals("restartPolicy"u8))
                {
                    if (!r.Read()) return Decode.Incomplete;
                    restartAlways = Json.String(ref r, ref error, path + ".restartPolicy") == "Always";
                }
                else if (!r.TrySkip()) return Decode.Incomplete;
            }
            for (int i = 0; i < container.Length; i++)
            {
                if (!init) regular[i] += container[i];
                else if (restartAlways)
                {
                    sidecars[i] += container[i];
                    initMax[i] = Math.Max(initMax[i], sidecars[i]);
                }
                else initMax[i] = Math.Max(initMax[i], container[i] + sidecars[i]);
            }
        }
    }

    private Decode ContainerResources(ref Utf8JsonReader r, string path, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, path + ".resources")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("requests"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (Json.ResourceMap(ref r, table, container, ref error, path + ".resources.requests") == Decode.Incomplete) return Decode.Incomplete;
            }
            else if (!r.TrySkip()) return Decode.Incomplete;
        }
    }

    private static Decode Status(ref Utf8JsonReader r, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "status")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("phase"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                pod.Phase = Json.String(ref r, ref error, "status.phase") switch
                {
                    "Pending" => PodPhase.Pending,
                    "Running" => PodPhase.Running,
                    "Succeeded" => PodPhase.Succeeded,
                    "Failed" => PodPhase.Failed,
                    _ => PodPhase.Unknown,
                };
            }
            else if (r.ValueTextEquals("conditions"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (!Json.ExpectArray(ref r, ref error, "status.conditions")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
                while (true)
                {
                    if (!r.Read()) return Decode.Incomplete;
                    if (r.TokenType == JsonTokenType.EndArray) break;
                    if (!Json.ExpectObject(ref r, ref error, "status.conditions[]")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
                    bool scheduled = false, isFalse = false, unschedulable = false;
                    while (true)
                    {
                        if (!r.Read()) return Decode.Incomplete;
                        if (r.TokenType == JsonTokenType.EndObject) break;
                        if (r.ValueTextEquals("type"u8)) { if (!r.Read()) return Decode.Incomplete; scheduled = r.TokenType == JsonTokenType.String && r.ValueTextEquals("PodScheduled"u8); }
                        else if (r.ValueTextEquals("status"u8)) { if (!r.Read()) return Decode.Incomplete; isFalse = r.TokenType == JsonTokenType.String && r.ValueTextEquals("False"u8); }
                        else if (r.ValueTextEquals("reason"u8)) { if (!r.Read()) return Decode.Incomplete; unschedulable = r.TokenType == JsonTokenType.String && r.ValueTextEquals("Unschedulable"u8); }
                        else if (!r.TrySkip()) return Decode.Incomplete;
                    }
                    if (scheduled && isFalse && unschedulable) pod.Unschedulable = true;
                }
            }
            else if (!r.TrySkip()) return Decode.Incomplete;
        }
    }
}

/// <summary>The node annotations Karpetrack reads: the decoder keeps these and drops the rest.</summary>
public static class NodeAnnotations
{
    /// <summary>Every karpetrack.io/ annotation is kept (the actuator's own markers among them).</summary>
    public const string KarpetrackPrefix = "karpetrack.io/";
    public const string DoNotDisrupt = KarpetrackPrefix + "do-not-disrupt";
    public const string ScaleDownDisabled = "cluster-autoscaler.kubernetes.io/scale-down-disabled";
}

/// <summary>Decodes Nodes: labels, annotations, allocatable, capacity, taints, readiness, cordon.</summary>
public sealed class NodeDecoder(ResourceTable table) : IObjectDecoder<NodeRecord>
{
    /// <summary>
    /// The node annotations Karpetrack reads; the rest (node IPs, CSI ids, CNI state, often kilobytes
    /// a node) are skipped at decode time.
    /// </summary>
    public static bool KeptAnnotation(string key) =>
        key.StartsWith(NodeAnnotations.KarpetrackPrefix, StringComparison.Ordinal) || key == NodeAnnotations.ScaleDownDisabled;

    // Thousands of nodes carry the same label keys and a few distinct values (class, pool, region):
    // one string each instead of one per node.
    private readonly StringPool pool = new();

    public string? ResourceVersionOf(NodeRecord value) => value.ResourceVersion;

    public string Describe(NodeRecord value) => value.Name;

    public Decode TryDecode(ref Utf8JsonReader r, ReadOnlySpan<byte> data, out NodeRecord node, ref string? error)
    {
        node = new NodeRecord { Allocatable = new long[table.Count], Capacity = new long[table.Count] };
        if (!Json.ExpectObject(ref r, ref error, "node")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            Decode d;
            if (r.ValueTextEquals("metadata"u8)) { if (!r.Read()) return Decode.Incomplete; d = Metadata(ref r, node, ref error); }
            else if (r.ValueTextEquals("spec"u8)) { if (!r.Read()) return Decode.Incomplete; d = Spec(ref r, node, ref error); }
            else if (r.ValueTextEquals("status"u8)) { if (!r.Read()) return Decode.Incomplete; d = Status(ref r, node, ref error); }
            else d = r.TrySkip() ? Decode.Ok : Decode.Incomplete;
            if (d == Decode.Incomplete) return d;
        }
    }

    private Decode Metadata(ref Utf8JsonReader r, NodeRecord node, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "metadata")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            Decode d = Decode.Ok;
            if (r.ValueTextEquals("name"u8)) { if (!r.Read()) return Decode.Incomplete; node.Name = Json.String(ref r, ref error, "metadata.name", pool) ?? ""; }
            else if (r.ValueTextEquals("resourceVersion"u8)) { if (!r.Read()) return Decode.Incomplete; node.ResourceVersion = Json.String(ref r, ref error, "metadata.resourceVersion"); }
            else if (r.ValueTextEquals("deletionTimestamp"u8)) { if (!r.Read()) return Decode.Incomplete; node.Deleting = r.TokenType != JsonTokenType.Null; }
            else if (r.ValueTextEquals("creationTimestamp"u8)) { if (!r.Read()) return Decode.Incomplete; node.Created = Json.Time(ref r); }
            else if (r.ValueTextEquals("labels"u8)) { if (!r.Read()) return Decode.Incomplete; d = Json.StringMap(ref r, node.Labels, ref error, "metadata.labels", pool); }
            else if (r.ValueTextEquals("annotations"u8)) { if (!r.Read()) return Decode.Incomplete; d = Json.StringMap(ref r, node.Annotations, ref error, "metadata.annotations", pool, KeptAnnotation); }
            else if (!r.TrySkip()) return Decode.Incomplete;
            if (d == Decode.Incomplete) return d;
        }
    }

    private Decode Spec(ref Utf8JsonReader r, NodeRecord node, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "spec")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("unschedulable"u8)) { if (!r.Read()) return Decode.Incomplete; node.Unschedulable = Json.Bool(ref r, ref error, "spec.unschedulable"); }
            else if (r.ValueTextEquals("taints"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (!Json.ExpectArray(ref r, ref error, "spec.taints")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
                var taints = new List<Taint>();
                while (true)
                {
                    if (!r.Read()) return Decode.Incomplete;
                    if (r.TokenType == JsonTokenType.EndArray) break;
                    if (!Json.ExpectObject(ref r, ref error, "spec.taints[]")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
                    string? key = null, value = null, effect = null;
                    while (true)
                    {
                        if (!r.Read()) return Decode.Incomplete;
                        if (r.TokenType == JsonTokenType.EndObject) break;
                        if (r.ValueTextEquals("key"u8)) { if (!r.Read()) return Decode.Incomplete; key = Json.String(ref r, ref error, "spec.taints.key", pool); }
                        else if (r.ValueTextEquals("value"u8)) { if (!r.Read()) return Decode.Incomplete; value = Json.String(ref r, ref error, "spec.taints.value", pool); }
                        else if (r.ValueTextEquals("effect"u8)) { if (!r.Read()) return Decode.Incomplete; effect = Json.String(ref r, ref error, "spec.taints.effect", pool); }
                        else if (!r.TrySkip()) return Decode.Incomplete;
                    }
                    if (key is not null) taints.Add(new Taint(key, value, effect ?? ""));
                }
                node.Taints = taints.ToArray();
            }
            else if (!r.TrySkip()) return Decode.Incomplete;
        }
    }

    private Decode Status(ref Utf8JsonReader r, NodeRecord node, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "status")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            Decode d = Decode.Ok;
            if (r.ValueTextEquals("allocatable"u8)) { if (!r.Read()) return Decode.Incomplete; d = Json.ResourceMap(ref r, table, node.Allocatable, ref error, "status.allocatable"); }
            else if (r.ValueTextEquals("capacity"u8)) { if (!r.Read()) return Decode.Incomplete; d = Json.ResourceMap(ref r, table, node.Capacity, ref error, "status.capacity"); }
            else if (r.ValueTextEquals("conditions"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (!Json.ExpectArray(ref r, ref error, "status.conditions")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
                while (true)
                {
                    if (!r.Read()) return Decode.Incomplete;
                    if (r.TokenType == JsonTokenType.EndArray) break;
                    if (!Json.ExpectObject(ref r, ref error, "status.conditions[]")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
                    bool ready = false, isTrue = false;
                    while (true)
                    {
                        if (!r.Read()) return Decode.Incomplete;
                        if (r.TokenType == JsonTokenType.EndObject) break;
                        if (r.ValueTextEquals("type"u8)) { if (!r.Read()) return Decode.Incomplete; ready = r.TokenType == JsonTokenType.String && r.ValueTextEquals("Ready"u8); }
                        else if (r.ValueTextEquals("status"u8)) { if (!r.Read()) return Decode.Incomplete; isTrue = r.TokenType == JsonTokenType.String && r.ValueTextEquals("True"u8); }
                        else if (!r.TrySkip()) return Decode.Incomplete;
                    }
                    if (ready) node.Ready = isTrue;
                }
            }
            else if (!r.TrySkip()) return Decode.Incomplete;
            if (d == Decode.Incomplete) return d;
        }
    }
}

/// <summary>namespace, name and resourceVersion: what every namespaced object record carries.</summary>
public abstract class ObjectRecord
{
    public string Namespace = "";
    public string Name = "";
    public string? ResourceVersion;
}

/// <summary>A PodDisruptionBudget trimmed to what the disruption rules read.</summary>
public sealed class PdbRecord : ObjectRecord
{
    public LabelSelectorSpec Selector = LabelSelectorSpec.Nothing;
    public int DisruptionsAllowed;
    public int CurrentHealthy;
    public int DesiredHealthy;
    public int ExpectedPods;
}

/// <summary>A DaemonSet: which nodes its pods land on and what they request, from its pod template.</summary>
public sealed class DaemonSetRecord : ObjectRecord
{
    public PodRecord Template = new();
}

/// <summary>
/// The decoder skeleton of a namespaced object read from its metadata, spec and status: written once,
/// each kind says only which fields of its spec and status it keeps (<see cref="ReadField"/>).
/// </summary>
public abstract class SpecStatusDecoder<T>(string kind) : IObjectDecoder<T> where T : ObjectRecord, new()
{
    protected enum Part { Spec, Status }

    public string? ResourceVersionOf(T value) => value.ResourceVersion;

    public string Describe(T value) => $"{value.Namespace}/{value.Name}";

    public Decode TryDecode(ref Utf8JsonReader r, ReadOnlySpan<byte> data, out T value, ref string? error)
    {
        value = new T();
        if (!Json.ExpectObject(ref r, ref error, kind)) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("metadata"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (Meta.Read(ref r, out value.Namespace, out value.Name, out value.ResourceVersion, ref error) == Decode.Incomplete) return Decode.Incomplete;
                continue;
            }
            Part part;
            if (r.ValueTextEquals("spec"u8)) part = Part.Spec;
            else if (r.ValueTextEquals("status"u8)) part = Part.Status;
            else { if (!r.TrySkip()) return Decode.Incomplete; continue; }
            if (!r.Read()) return Decode.Incomplete;
            if (!Json.ExpectObject(ref r, ref error, part == Part.Spec ? "spec" : "status")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
            while (true)
            {
                if (!r.Read()) return Decode.Incomplete;
                if (r.TokenType == JsonTokenType.EndObject) break;
                if (ReadField(part, ref r, data, value, ref error) == Decode.Incomplete) return Decode.Incomplete;
            }
        }
    }

    /// <summary>Reads one field of the spec or the status, the reader on its name; a field it does not keep it skips.</summary>
    protected abstract Decode ReadField(Part part, ref Utf8JsonReader r, ReadOnlySpan<byte> data, T value, ref string? error);
}

/// <summary>Decodes policy/v1 PodDisruptionBudgets.</summary>
public sealed class PdbDecoder() : SpecStatusDecoder<PdbRecord>("poddisruptionbudget")
{
    protected override Decode ReadField(Part part, ref Utf8JsonReader r, ReadOnlySpan<byte> data, PdbRecord pdb, ref string? error)
    {
        if (part == Part.Spec && r.ValueTextEquals("selector"u8))
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType != JsonTokenType.StartObject) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
            long start = r.TokenStartIndex;
            if (!r.TrySkip()) return Decode.Incomplete;
            using var doc = JsonDocument.Parse(data[(int)start..(int)r.BytesConsumed].ToArray());
            pdb.Selector = LabelSelectorSpec.Parse(doc.RootElement);
            return Decode.Ok;
        }
        if (part == Part.Status)
        {
            int ignored = 0;
            ref int target = ref ignored;
            if (r.ValueTextEquals("disruptionsAllowed"u8)) target = ref pdb.DisruptionsAllowed;
            else if (r.ValueTextEquals("currentHealthy"u8)) target = ref pdb.CurrentHealthy;
            else if (r.ValueTextEquals("desiredHealthy"u8)) target = ref pdb.DesiredHealthy;
            else if (r.ValueTextEquals("expectedPods"u8)) target = ref pdb.ExpectedPods;
            else return r.TrySkip() ? Decode.Ok : Decode.Incomplete;
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.Number && r.TryGetInt32(out var n)) target = n;
            return Decode.Ok;
        }
        return r.TrySkip() ? Decode.Ok : Decode.Incomplete;
    }
}

/// <summary>Decodes apps/v1 DaemonSets; the pod template goes through the pod decoder.</summary>
public sealed class DaemonSetDecoder(ResourceTable table) : SpecStatusDecoder<DaemonSetRecord>("daemonset")
{
    private readonly PodDecoder pods = new(table);

    protected override Decode ReadField(Part part, ref Utf8JsonReader r, ReadOnlySpan<byte> data, DaemonSetRecord ds, ref string? error)
    {
        if (part != Part.Spec || !r.ValueTextEquals("template"u8)) return r.TrySkip() ? Decode.Ok : Decode.Incomplete;
        if (!r.Read()) return Decode.Incomplete;
        if (pods.TryDecode(ref r, data, out var template, ref error) == Decode.Incomplete) return Decode.Incomplete;
        ds.Template = template;
        return Decode.Ok;
    }
}

/// <summary>namespace, name and resourceVersion of any object's metadata.</summary>
internal static class Meta
{
    public static Decode Read(ref Utf8JsonReader r, out string ns, out string name, out string? rv, ref string? error)
    {
        ns = ""; name = ""; rv = null;
        if (!Json.ExpectObject(ref r, ref error, "metadata")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("name"u8)) { if (!r.Read()) return Decode.Incomplete; name = Json.String(ref r, ref error, "metadata.name") ?? ""; }
            else if (r.ValueTextEquals("namespace"u8)) { if (!r.Read()) return Decode.Incomplete; ns = Json.String(ref r, ref error, "metadata.namespace") ?? ""; }
            else if (r.ValueTextEquals("resourceVersion"u8)) { if (!r.Read()) return Decode.Incomplete; rv = Json.String(ref r, ref error, "metadata.resourceVersion"); }
            else if (!r.TrySkip()) return Decode.Incomplete;
        }
    }
}

public static class DecoderExtensions
{
    /// <summary>Decodes one complete object (a whole JSON document), reporting the first problem found.</summary>
    public static T DecodeComplete<T>(this IObjectDecoder<T> decoder, ReadOnlySpan<byte> json, out string? error) where T : class
    {
        var r = new Utf8JsonReader(json, isFinalBlock: true, default);
        error = null;
        if (!r.Read()) throw new InvalidDataException("empty JSON document");
        decoder.TryDecodeGuarded(ref r, json, out var value, ref error);
        return value;
    }

    /// <summary>
    /// <see cref="IObjectDecoder{T}.TryDecode"/>, with a value the reader cannot convert (a string of
    /// invalid UTF-8, a number where a string belongs) reported as the object's error instead of
    /// thrown: the reader has not moved, so the rest of the object is skipped and the stream goes on.
    /// </summary>
    public static Decode TryDecodeGuarded<T>(this IObjectDecoder<T> decoder, ref Utf8JsonReader r, ReadOnlySpan<byte> data, out T value, ref string? error) where T : class
    {
        int depth = r.CurrentDepth;
        value = null!;
        try
        {
            return decoder.TryDecode(ref r, data, out value, ref error);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            error ??= $"unreadable value: {e.Message}";
            while (!(r.TokenType == JsonTokenType.EndObject && r.CurrentDepth == depth))
                if (!r.Read()) return Decode.Incomplete;
            return Decode.Ok;
        }
    }
}
