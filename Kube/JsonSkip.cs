using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Text.Json;

namespace Karpetrack;

/// <summary>
/// Skips the JSON values the decoders do not keep (managedFields, env, probes, container statuses: most of a pod's
/// bytes) without tokenising them. <see cref="Utf8JsonReader.TrySkip"/> reads every token of the value through the
/// reader's state machine; this checks the value against the JSON grammar in one pass over its bytes (strings by a
/// 16-byte vector scan for a quote, a backslash or a control byte) and then moves the reader to the value's closing
/// bracket, so that the reader itself reads that last token and leaves the container exactly as a skip would.
/// <para>
/// It accepts only what the reader accepts (default options: no comments, no trailing commas, the reader's maximum
/// depth; like the reader, it checks escapes but not the UTF-8 of string contents). Anything else - malformed input, a
/// value cut by the end of the buffer, nesting near the depth limit - it leaves to <see cref="Utf8JsonReader.TrySkip"/>
/// from the same position, so a value that is not whole yet is reported as such and bad input fails with the reader's
/// own error, as before. The reader's line and byte-in-line counters (shown in its error messages) are moved on over
/// the skipped bytes as its own skip would move them.
/// </para>
/// <para>
/// The reader has no public way to move its position, so this reaches its private <c>_buffer</c> and <c>_consumed</c>
/// fields (<see cref="UnsafeAccessorAttribute"/>, understood by NativeAOT). A self-check at start-up skips a known
/// document both ways; if the fields are missing or behave otherwise (a different System.Text.Json), every skip is
/// the reader's own.
/// </para>
/// </summary>
internal static class JsonSkip
{
    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_buffer")]
    private static extern ref ReadOnlySpan<byte> BufferOf(ref Utf8JsonReader r);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_consumed")]
    private static extern ref int ConsumedOf(ref Utf8JsonReader r);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_lineNumber")]
    private static extern ref long LineNumberOf(ref Utf8JsonReader r);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_bytePositionInLine")]
    private static extern ref long BytePositionInLineOf(ref Utf8JsonReader r);

    /// <summary>Whether the fast path is in use (false: the self-check failed, every skip is the reader's).</summary>
    public static bool Enabled { get; } = SelfCheck();

    /// <summary>
    /// <see cref="Utf8JsonReader.TrySkip"/>: on a property name skips its value, on the start of an object or array
    /// skips to its end, on anything else does nothing. False when the value is not whole in the buffer; the reader may
    /// then have moved past the property name (callers start the object over, as they do on any incomplete read).
    /// </summary>
    public static bool Skip(ref Utf8JsonReader r) => Enabled ? SkipFast(ref r) : r.TrySkip();

    /// <summary>
    /// How many containers this thread's fast path has skipped itself (not handed to the reader's TrySkip): lets tests
    /// see that the fast path, and not the fallback, did the work.
    /// </summary>
    [ThreadStatic] internal static int FastSkips;

    /// <summary>The fast path alone, whether or not the self-check passed (for that check and for tests).</summary>
    internal static bool SkipFast(ref Utf8JsonReader r)
    {
        if (r.TokenType == JsonTokenType.PropertyName && !r.Read()) return false;
        if (r.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray)) return true;
        int maxDepth = r.CurrentState.Options.MaxDepth;
        if (maxDepth == 0) maxDepth = 64;   // the reader's default
        // The reader counts this container in its depth already; a container nested n levels inside it needs depth + 1 + n.
        int budget = Math.Min(maxDepth - (r.CurrentDepth + 1), 63);
        ref int consumed = ref ConsumedOf(ref r);
        int close = FindClose(BufferOf(ref r), consumed, r.TokenType == JsonTokenType.StartObject, budget);
        if (close < 0) return r.TrySkip();
        FastSkips++;
        // Count the skipped bytes in the reader's line / byte-in-line position (its error messages show them) as its own
        // skip would: a valid value has line feeds only in whitespace, each starting a new line.
        var skipped = BufferOf(ref r)[consumed..close];
        int lastLineFeed = skipped.LastIndexOf((byte)'\n');
        if (lastLineFeed < 0) BytePositionInLineOf(ref r) += skipped.Length;
        else
        {
            LineNumberOf(ref r) += skipped.Count((byte)'\n');
            BytePositionInLineOf(ref r) = skipped.Length - (lastLineFeed + 1);
        }
        // The reader now stands on the open container with only its closing bracket ahead: reading it pops the container.
        consumed = close;
        return r.Read();
    }

    /// <summary>
    /// Where the container whose contents start at <paramref name="i"/> (just after its '{' or '[') closes: the index of
    /// its matching '}' or ']' when everything up to it is valid JSON nested at most <paramref name="depthBudget"/> levels
    /// deeper, else -1 (malformed, too deep, or cut by the end of <paramref name="s"/>: the reader decides then).
    /// </summary>
    internal static int FindClose(ReadOnlySpan<byte> s, int i, bool isObject, int depthBudget)
    {
        ulong outer = 0;        // one bit per enclosing open container below the current one: 1 = object
        int depth = 0;          // containers opened inside the first
        bool inObject = isObject;
        byte c;

    ContainerStart:
        i = SkipWhitespace(s, i);
        if (i >= s.Length) return -1;
        if (s[i] == (inObject ? (byte)'}' : (byte)']')) goto Close;
        if (inObject) goto Key;
        goto Value;

    Key:
        if (s[i] != '"') return -1;
        i = StringEnd(s, i + 1);
        if (i < 0) return -1;
        i = SkipWhitespace(s, i);
        if (i >= s.Length || s[i] != ':') return -1;
        i = SkipWhitespace(s, i + 1);
        if (i >= s.Length) return -1;

    Value:
        c = s[i];
        switch (c)
        {
            case (byte)'"':
                i = StringEnd(s, i + 1);
                break;
            case (byte)'{' or (byte)'[':
                if (depth >= depthBudget) return -1;
                depth++;
                outer = (outer << 1) | (inObject ? 1UL : 0UL);
                inObject = c == '{';
                i++;
                goto ContainerStart;
            case (byte)'t':
                i = Literal(s, i, "true"u8);
                break;
            case (byte)'f':
                i = Literal(s, i, "false"u8);
                break;
            case (byte)'n':
                i = Literal(s, i, "null"u8);
                break;
            default:
                i = NumberEnd(s, i);
                break;
        }
        if (i < 0) return -1;

    AfterValue:
        // After a value (a scalar, or a container just closed): a comma and the next member, or this container's end.
        i = SkipWhitespace(s, i);
        if (i >= s.Length) return -1;
        c = s[i];
        if (c == ',')
        {
            i = SkipWhitespace(s, i + 1);
            if (i >= s.Length) return -1;
            if (inObject) goto Key;
            goto Value;
        }
        if (c != (inObject ? (byte)'}' : (byte)']')) return -1;

    Close:
        if (depth == 0) return i;
        depth--;
        inObject = (outer & 1) != 0;
        outer >>= 1;
        i++;
        goto AfterValue;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SkipWhitespace(ReadOnlySpan<byte> s, int i)
    {
        while ((uint)i < (uint)s.Length && s[i] is (byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t') i++;
        return i;
    }

    private static int Literal(ReadOnlySpan<byte> s, int i, ReadOnlySpan<byte> literal) =>
        s.Length - i >= literal.Length && s.Slice(i, literal.Length).SequenceEqual(literal) ? i + literal.Length : -1;

    /// <summary>The end of a number starting at <paramref name="i"/>: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; -1 when malformed or cut.</summary>
    private static int NumberEnd(ReadOnlySpan<byte> s, int i)
    {
        if (i < s.Length && s[i] == '-') i++;
        if (i >= s.Length) return -1;
        if (s[i] == '0') i++;
        else if (IsDigit(s[i])) i = Digits(s, i + 1);
        else return -1;
        if (i < s.Length && s[i] == '.')
        {
            i++;
            if (i >= s.Length || !IsDigit(s[i])) return -1;
            i = Digits(s, i + 1);
        }
        if (i < s.Length && s[i] is (byte)'e' or (byte)'E')
        {
            i++;
            if (i < s.Length && s[i] is (byte)'+' or (byte)'-') i++;
            if (i >= s.Length || !IsDigit(s[i])) return -1;
            i = Digits(s, i + 1);
        }
        // A number at the very end could go on in the next read: undecided.
        return i < s.Length ? i : -1;
    }

    private static int Digits(ReadOnlySpan<byte> s, int i)
    {
        while (i < s.Length && IsDigit(s[i])) i++;
        return i;
    }

    private static bool IsDigit(byte b) => (uint)(b - '0') <= 9;

    private static bool IsHex(byte b) => (uint)(b - '0') <= 9 || (uint)((b | 0x20) - 'a') <= 5;

    /// <summary>The index after the closing quote of a string whose contents start at <paramref name="i"/>; -1 when malformed or cut.</summary>
    private static int StringEnd(ReadOnlySpan<byte> s, int i)
    {
        while (true)
        {
            i = IndexOfQuoteBackslashOrControl(s, i);
            if (i < 0) return -1;
            byte c = s[i];
            if (c == '"') return i + 1;
            if (c != '\\' || i + 1 >= s.Length) return -1;   // a raw control byte, or a cut escape
            byte e = s[i + 1];
            if (e == 'u')
            {
                if (s.Length - i < 6 || !IsHex(s[i + 2]) || !IsHex(s[i + 3]) || !IsHex(s[i + 4]) || !IsHex(s[i + 5])) return -1;
                i += 6;
            }
            else if (e is (byte)'"' or (byte)'\\' or (byte)'/' or (byte)'b' or (byte)'f' or (byte)'n' or (byte)'r' or (byte)'t') i += 2;
            else return -1;
        }
    }

    /// <summary>
    /// The first quote, backslash or byte below 0x20 at or after <paramref name="i"/>, -1 if none. Sixteen bytes at a
    /// time with the 128-bit vectors every x86-64 (SSE2) and Arm64 CPU has, so NativeAOT's default instruction set
    /// runs it as fast as the JIT does.
    /// </summary>
    private static int IndexOfQuoteBackslashOrControl(ReadOnlySpan<byte> s, int i)
    {
        ref byte start = ref MemoryMarshal.GetReference(s);
        if (Vector128.IsHardwareAccelerated)
        {
            var quote = Vector128.Create((byte)'"');
            var backslash = Vector128.Create((byte)'\\');
            var space = Vector128.Create((byte)0x20);
            while (i <= s.Length - Vector128<byte>.Count)
            {
                var v = Vector128.LoadUnsafe(ref start, (nuint)i);
                var hit = Vector128.Equals(v, quote) | Vector128.Equals(v, backslash) | Vector128.LessThan(v, space);
                uint bits = hit.ExtractMostSignificantBits();
                if (bits != 0) return i + BitOperations.TrailingZeroCount(bits);
                i += Vector128<byte>.Count;
            }
        }
        for (; i < s.Length; i++)
        {
            byte c = Unsafe.Add(ref start, i);
            if (c == '"' || c == '\\' || c < 0x20) return i;
        }
        return -1;
    }

    /// <summary>Skips the same values with the fast path and with the reader's own skip and compares where each ends.</summary>
    private static bool SelfCheck()
    {
        try
        {
            var doc = """{"a":{"b":[1,-2.5e3,true,false,null,"x\"\\\u00e9y",{}],"c":{"d":[]}},"e":[["f"]],"g":"h","i":1}"""u8;
            var fast = new Utf8JsonReader(doc, isFinalBlock: true, default);
            var slow = new Utf8JsonReader(doc, isFinalBlock: true, default);
            fast.Read(); slow.Read();
            while (true)
            {
                bool more = fast.Read();
                if (more != slow.Read()) return false;
                if (!more) return true;
                if (fast.TokenType != slow.TokenType || fast.BytesConsumed != slow.BytesConsumed || fast.CurrentDepth != slow.CurrentDepth) return false;
                if (fast.TokenType == JsonTokenType.EndObject && fast.CurrentDepth == 0) return true;
                if (fast.TokenType != JsonTokenType.PropertyName) continue;
                if (!SkipFast(ref fast) || !slow.TrySkip()) return false;
                if (fast.TokenType != slow.TokenType || fast.BytesConsumed != slow.BytesConsumed || fast.CurrentDepth != slow.CurrentDepth) return false;
            }
        }
        catch (Exception)
        {
            return false;   // MissingFieldException and the like: not the System.Text.Json this was written against
        }
    }
}
