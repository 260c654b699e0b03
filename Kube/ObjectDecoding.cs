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

/// <summary>namespace, name and resourceVersion: what every namespaced object record carries.</summary>
public abstract class ObjectRecord
{
    public string Namespace = "";
    public string Name = "";
    public string? ResourceVersion;
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
            else { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
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
            else if (!Json.Skip(ref r)) return Decode.Incomplete;
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

/// <summary>Small helpers shared by the decoders; every Read can run out of buffer.</summary>
internal static class Json
{
    /// <summary>Skips the value the reader is on (or, on a property name, the value after it).</summary>
    public static bool Skip(ref Utf8JsonReader r) =>
        r.TokenType is JsonTokenType.PropertyName or JsonTokenType.StartObject or JsonTokenType.StartArray
            ? JsonSkip.Skip(ref r)
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
        var problem = QuantityProblem(ref r, out q);
        if (problem is null) return true;
        Fail(ref error, path, problem);
        return false;
    }

    /// <summary>A quantity given as a JSON string or number; null when it was read, else what is wrong with it (no path built).</summary>
    private static string? QuantityProblem(ref Utf8JsonReader r, out Quantity q)
    {
        q = Karpetrack.Quantity.Zero;
        if (r.TokenType is not (JsonTokenType.String or JsonTokenType.Number)) return $"expected a quantity, got {r.TokenType}";
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
            if (s.Length > chars.Length) return "quantity is too long";
            s.AsSpan().CopyTo(chars);
            n = s.Length;
        }
        else return "quantity is too long";

        return Karpetrack.Quantity.TryParse(chars[..n], out q, out var why) ? null : why ?? "";
    }

    /// <summary>Reads a {resourceName: quantity} map into <paramref name="into"/> (tracked resources only).</summary>
    public static Decode ResourceMap(ref Utf8JsonReader r, ResourceTable table, long[] into, ref string? error, string path)
    {
        // null is an empty map; anything else but an object is noted and skipped.
        if (!ExpectObject(ref r, ref error, path)) return Skip(ref r) ? Decode.Ok : Decode.Incomplete;
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
            // The plain forms ("250m", "2", "128Mi", "1G") are most requests: read straight to the stored integer, without
            // the exact decimal arithmetic of Quantity (4 % of the sync's CPU); anything else goes the full way.
            if (r.TokenType == JsonTokenType.String && !r.ValueIsEscaped && !r.HasValueSequence && PlainStored(r.ValueSpan, table.IsMilli(idx), out long stored))
            {
                into[idx] = stored;
                continue;
            }
            // The value's path ("spec.containers[].resources.requests.cpu") is built only for an error message: this runs for
            // every request of every container of every pod, and building it each time was most of a decoded pod's garbage.
            var problem = QuantityProblem(ref r, out var q);
            if (problem is null)
            {
                if (q.Value < 0) error ??= $"{path}.{table.Name(idx)}: negative quantity {q}";
                else into[idx] = table.ToStored(idx, q);
            }
            else
            {
                error ??= $"{path}.{table.Name(idx)}: {problem}";
                if (!Skip(ref r)) return Decode.Incomplete;
            }
        }
    }

    /// <summary>
    /// A quantity of the plain form - an integer without sign or leading zero, then nothing, an SI suffix m, k, M, G, T or a
    /// binary one Ki, Mi, Gi, Ti - as the stored integer (<see cref="ResourceTable.ToStored"/>: ceil of the value in
    /// millis or in units); false for any other form or a result that would not fit, which then takes the exact path.
    /// </summary>
    internal static bool PlainStored(ReadOnlySpan<byte> text, bool milli, out long stored)
    {
        stored = 0;
        int i = 0;
        ulong n = 0;
        while (i < text.Length && (uint)(text[i] - '0') <= 9)
        {
            if (i == 15 || (i == 1 && text[0] == '0')) return false;   // long, or a leading zero: the exact path
            n = n * 10 + (uint)(text[i] - '0');
            i++;
        }
        if (i == 0) return false;
        // value = n × 10^exp10 × 2^shift
        int exp10 = 0, shift = 0;
        var suffix = text[i..];
        if (suffix.Length == 0) { }
        else if (suffix.Length == 1)
        {
            switch (suffix[0])
            {
                case (byte)'m': exp10 = -3; break;
                case (byte)'k': exp10 = 3; break;
                case (byte)'M': exp10 = 6; break;
                case (byte)'G': exp10 = 9; break;
                case (byte)'T': exp10 = 12; break;
                default: return false;
            }
        }
        else if (suffix.Length == 2 && suffix[1] == 'i')
        {
            switch (suffix[0])
            {
                case (byte)'K': shift = 10; break;
                case (byte)'M': shift = 20; break;
                case (byte)'G': shift = 30; break;
                case (byte)'T': shift = 40; break;
                default: return false;
            }
        }
        else return false;
        if (milli) exp10 += 3;
        if (exp10 < 0)
        {
            // Only "m" on a unit resource: a ceiling division by 1000.
            stored = (long)((n + 999) / 1000);
            return true;
        }
        ulong scale = 1;
        for (int k = 0; k < exp10; k++) scale *= 10;   // at most 10^15
        if (Math.BigMul(n, scale, out ulong low) != 0 || low > (ulong)long.MaxValue >> shift) return false;
        stored = (long)(low << shift);
        return true;
    }

    /// <summary>Reads a {string: string} map (labels, annotations).</summary>
    /// <param name="pool">Shares key and value strings with other objects, when given.</param>
    /// <param name="keep">Which keys to keep, when not all; the others are skipped unread.</param>
    public static Decode StringMap(ref Utf8JsonReader r, Dictionary<string, string> into, ref string? error, string path,
        StringPool? pool = null, Func<string, bool>? keep = null)
    {
        // null is an empty map; anything else but an object is noted and skipped.
        if (!ExpectObject(ref r, ref error, path)) return Skip(ref r) ? Decode.Ok : Decode.Incomplete;
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

    /// <summary>
    /// Reads a status.conditions array (the reader on its first token) and looks at the conditions of one
    /// type: <paramref name="last"/> says whether the last of them has the given status (and reason, unless
    /// empty), null when there is none; <paramref name="any"/> whether any of them has.
    /// </summary>
    public static Decode Conditions(ref Utf8JsonReader r, ref string? error, ReadOnlySpan<byte> type, ReadOnlySpan<byte> status,
        ReadOnlySpan<byte> reason, out bool? last, out bool any)
    {
        last = null;
        any = false;
        if (!ExpectArray(ref r, ref error, "status.conditions")) return Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndArray) return Decode.Ok;
            if (!ExpectObject(ref r, ref error, "status.conditions[]")) { if (!Skip(ref r)) return Decode.Incomplete; continue; }
            bool typeIs = false, statusIs = false, reasonIs = reason.IsEmpty;
            while (true)
            {
                if (!r.Read()) return Decode.Incomplete;
                if (r.TokenType == JsonTokenType.EndObject) break;
                if (r.ValueTextEquals("type"u8)) { if (!r.Read()) return Decode.Incomplete; typeIs = r.TokenType == JsonTokenType.String && r.ValueTextEquals(type); }
                else if (r.ValueTextEquals("status"u8)) { if (!r.Read()) return Decode.Incomplete; statusIs = r.TokenType == JsonTokenType.String && r.ValueTextEquals(status); }
                else if (!reason.IsEmpty && r.ValueTextEquals("reason"u8)) { if (!r.Read()) return Decode.Incomplete; reasonIs = r.TokenType == JsonTokenType.String && r.ValueTextEquals(reason); }
                else if (!Json.Skip(ref r)) return Decode.Incomplete;
            }
            if (!typeIs) continue;
            last = statusIs && reasonIs;
            any |= statusIs && reasonIs;
        }
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
