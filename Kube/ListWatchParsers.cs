using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>
/// A growable byte window over a response stream, so a parser can see whole objects without the
/// whole body ever being in memory. Buffers come from the given pool (the shared one unless said): the initial list
/// passes a pool of its own, dropped with its large buffers once the list is done (BENCHMARKS.md, "Where the memory is").
/// </summary>
internal sealed class StreamWindow : IDisposable
{
    private readonly Stream stream;
    private readonly int maxSize;
    private readonly ArrayPool<byte> pool;
    private byte[] buffer;
    private int start, end;

    public StreamWindow(Stream stream, int initialSize = 256 * 1024, int maxSize = 64 * 1024 * 1024, ArrayPool<byte>? pool = null)
    {
        this.stream = stream;
        this.maxSize = maxSize;
        this.pool = pool ?? ArrayPool<byte>.Shared;
        buffer = this.pool.Rent(initialSize);
    }

    /// <summary>
    /// A window that starts with bytes already read from <paramref name="stream"/> (a prefetched LIST page): it takes
    /// <paramref name="pooled"/>, rented from <paramref name="pool"/> (the shared pool unless given), as its buffer, so nothing is copied.
    /// </summary>
    public StreamWindow(Stream stream, byte[] pooled, int filled, bool eof, int maxSize = 64 * 1024 * 1024, ArrayPool<byte>? pool = null)
    {
        this.stream = stream;
        this.maxSize = maxSize;
        this.pool = pool ?? ArrayPool<byte>.Shared;
        buffer = pooled;
        end = filled;
        TotalRead = filled;
        Eof = eof;
    }

    public bool Eof { get; private set; }
    public long TotalRead { get; private set; }

    public ReadOnlySpan<byte> Data => buffer.AsSpan(start, end - start);

    public void Consume(int n) => start += n;

    /// <summary>Reads more bytes; grows the window when the unconsumed part fills it (one object larger than the buffer).</summary>
    public async ValueTask<bool> FillAsync(CancellationToken ct)
    {
        if (Eof) return false;
        if (start > 0)
        {
            Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
            end -= start;
            start = 0;
        }
        if (end == buffer.Length)
        {
            if (buffer.Length >= maxSize) throw new InvalidDataException($"a single JSON object is larger than {maxSize} bytes");
            var bigger = pool.Rent(Math.Min(maxSize, buffer.Length * 2));
            Buffer.BlockCopy(buffer, 0, bigger, 0, end);
            pool.Return(buffer);
            buffer = bigger;
        }
        int n = await stream.ReadAsync(buffer.AsMemory(end), ct).ConfigureAwait(false);
        if (n == 0) { Eof = true; return false; }
        end += n;
        TotalRead += n;
        return true;
    }

    /// <summary>
    /// Reads until at least <paramref name="minimum"/> unconsumed bytes are in the window or the stream
    /// ends; false when the stream ended before any new byte came.
    /// </summary>
    public async ValueTask<bool> FillAsync(int minimum, CancellationToken ct)
    {
        if (!await FillAsync(ct).ConfigureAwait(false)) return false;
        while (end - start < minimum && await FillAsync(ct).ConfigureAwait(false)) { }
        return true;
    }

    public void Dispose()
    {
        if (buffer.Length > 0) pool.Return(buffer);
        buffer = [];
    }
}

/// <summary>Metadata of one LIST page.</summary>
public sealed record ListPage(string? ResourceVersion, string? Continue, int Items);

/// <summary>
/// Streams a LIST body (`{"metadata":{...},"items":[...]}`) item by item. Items are decoded in place
/// from the window; an item cut by the window's end is retried after a refill.
/// </summary>
internal sealed class ListParser<T>(IObjectDecoder<T> decoder) where T : class
{
    private enum Phase { Start, Root, Items, Done }

    private const int RefillBytes = 64 * 1024;

    private Phase phase;
    private JsonReaderState state;
    private string? resourceVersion, continueToken;
    private int items;

    public delegate void ItemHandler(T item, string? error);

    private Action<ListPage>? onMetadata;

    /// <param name="onMetadata">
    /// Called once the page's metadata is read, before its items when the server writes it first (the API server
    /// does): the continue token is then known while the items are still to be decoded.
    /// </param>
    public async Task<ListPage> ParseAsync(StreamWindow window, ItemHandler onItem, CancellationToken ct, Action<ListPage>? onMetadata = null)
    {
        phase = Phase.Start; state = default; resourceVersion = null; continueToken = null; items = 0;
        this.onMetadata = onMetadata;
        while (true)
        {
            int consumed = Step(window.Data, window.Eof, onItem);
            window.Consume(consumed);
            if (phase == Phase.Done) return new ListPage(resourceVersion, continueToken, items);
            // A body often arrives in reads smaller than one item (4 KB chunks): parse again only with
            // enough new bytes that the item cut at the window's end is rarely started over twice.
            if (!await window.FillAsync(window.Data.Length + RefillBytes, ct).ConfigureAwait(false))
            {
                window.Consume(Step(window.Data, true, onItem));
                if (phase == Phase.Done) return new ListPage(resourceVersion, continueToken, items);
                throw new InvalidDataException("the list response ended before its closing brace");
            }
        }
    }

    private int Step(ReadOnlySpan<byte> data, bool final, ItemHandler onItem)
    {
        var r = new Utf8JsonReader(data, final, state);
        int safe = 0;                      // bytes consumed up to a token boundary we can resume from
        var safeState = state;
        while (true)
        {
            switch (phase)
            {
                case Phase.Start:
                    if (!r.Read()) goto Suspend;
                    if (r.TokenType != JsonTokenType.StartObject) throw new InvalidDataException($"a list must be a JSON object, got {r.TokenType}");
                    phase = Phase.Root;
                    break;

                case Phase.Root:
                    safe = (int)r.BytesConsumed; safeState = r.CurrentState;
                    if (!r.Read()) goto Suspend;
                    if (r.TokenType == JsonTokenType.EndObject) { phase = Phase.Done; state = r.CurrentState; return (int)r.BytesConsumed; }
                    if (r.ValueTextEquals("items"u8))
                    {
                        if (!r.Read()) goto Restore;
                        if (r.TokenType == JsonTokenType.Null) break;
                        if (r.TokenType != JsonTokenType.StartArray) throw new InvalidDataException($"list items must be an array, got {r.TokenType}");
                        phase = Phase.Items;
                    }
                    else if (r.ValueTextEquals("metadata"u8))
                    {
                        if (!r.Read()) goto Restore;
                        if (!ListMetadata(ref r)) goto Restore;
                    }
                    else if (!r.TrySkip()) goto Restore;
                    break;

                case Phase.Items:
                    safe = (int)r.BytesConsumed; safeState = r.CurrentState;
                    if (!r.Read()) goto Suspend;
                    if (r.TokenType == JsonTokenType.EndArray) { phase = Phase.Root; break; }
                    string? error = null;
                    if (decoder.TryDecodeGuarded(ref r, data, out var item, ref error) == Decode.Incomplete) goto Restore;
                    items++;
                    onItem(item, error);
                    break;
            }
        }

    Suspend:
        // Read() ran out of data between tokens: the reader's own state is resumable.
        state = r.CurrentState;
        return (int)r.BytesConsumed;

    Restore:
        // Ran out in the middle of a value: resume from the token boundary before it.
        state = safeState;
        return safe;
    }

    private bool ListMetadata(ref Utf8JsonReader r)
    {
        if (r.TokenType != JsonTokenType.StartObject) return r.TokenType == JsonTokenType.Null || r.TrySkip();
        var copy = r;
        if (!copy.TrySkip()) return false;   // decode only once the whole object is in the window
        while (r.Read() && r.TokenType != JsonTokenType.EndObject)
        {
            if (r.ValueTextEquals("resourceVersion"u8)) { r.Read(); resourceVersion = r.TokenType == JsonTokenType.String ? r.GetString() : null; }
            else if (r.ValueTextEquals("continue"u8)) { r.Read(); continueToken = r.TokenType == JsonTokenType.String ? r.GetString() : null; }
            else r.TrySkip();
        }
        onMetadata?.Invoke(new ListPage(resourceVersion, continueToken, items));
        return true;
    }
}

public enum WatchEventType { Added, Modified, Deleted, Bookmark, Error }

/// <summary>Streams watch events (one JSON object per event, newline-delimited in practice).</summary>
internal sealed class WatchParser<T>(IObjectDecoder<T> decoder) where T : class
{
    private JsonReaderState state = new(new JsonReaderOptions { AllowMultipleValues = true });

    public delegate void EventHandler(WatchEventType type, T? item, KubeStatus? status, string? error);

    private bool framed;   // events seen ending in a newline

    /// <summary>Parses events until the stream ends cleanly.</summary>
    public async Task ParseAsync(StreamWindow window, EventHandler onEvent, CancellationToken ct)
    {
        while (true)
        {
            var data = window.Data;
            if (framed)
            {
                // Whole lines only: the event cut at the window's end waits for its newline instead
                // of being parsed now and again after the next read.
                int last = data.LastIndexOf((byte)'\n');
                data = last < 0 ? default : data[..(last + 1)];
            }
            int consumed = Step(data, window.Eof, onEvent);
            window.Consume(consumed);
            if (consumed > 0 && window.Data.Length > 0 && window.Data[0] == (byte)'\n') framed = true;
            if (!await FillToLineAsync(window, ct).ConfigureAwait(false))
            {
                if (window.Data.Length > 0 && !IsWhitespace(window.Data))
                {
                    consumed = Step(window.Data, true, onEvent);
                    window.Consume(consumed);
                    if (window.Data.Length > 0 && !IsWhitespace(window.Data))
                        throw new InvalidDataException("the watch stream ended in the middle of an event");
                }
                return;
            }
        }
    }

    private static bool IsWhitespace(ReadOnlySpan<byte> s) => s.Trim(" \t\r\n"u8).IsEmpty;

    /// <summary>
    /// Reads at least once, then, on a newline-framed stream (the apiserver ends every event with one),
    /// on until the event cut at the window's end is whole. HTTP reads are often smaller than an event
    /// (4 KB chunks), and parsing after each would start the same event over several times; a whole
    /// event always comes with its newline, so this never holds one back.
    /// </summary>
    private async ValueTask<bool> FillToLineAsync(StreamWindow window, CancellationToken ct)
    {
        int partial = window.Data.Length - window.Data.TrimStart(" \t\r\n"u8).Length;   // where the cut event starts
        int scanned = window.Data.Length;
        if (!await window.FillAsync(ct).ConfigureAwait(false)) return false;
        while (framed && window.Data[Math.Max(partial, scanned)..].IndexOf((byte)'\n') < 0)
        {
            scanned = window.Data.Length;
            if (!await window.FillAsync(ct).ConfigureAwait(false)) break;
        }
        return true;
    }

    private int Step(ReadOnlySpan<byte> data, bool final, EventHandler onEvent)
    {
        var r = new Utf8JsonReader(data, final, state);
        while (true)
        {
            int safe = (int)r.BytesConsumed;
            var safeState = r.CurrentState;
            if (!r.Read()) { state = r.CurrentState; return (int)r.BytesConsumed; }
            if (r.TokenType != JsonTokenType.StartObject) throw new InvalidDataException($"a watch event must be a JSON object, got {r.TokenType}");
            var result = Event(ref r, data, onEvent);
            if (result == Decode.Incomplete) { state = safeState; return safe; }
        }
    }

    private Decode Event(ref Utf8JsonReader r, ReadOnlySpan<byte> data, EventHandler onEvent)
    {
        WatchEventType? type = null;
        T? item = null;
        KubeStatus? status = null;
        string? error = null;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) break;
            if (r.ValueTextEquals("type"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                type = r.TokenType != JsonTokenType.String ? null
                    : r.ValueTextEquals("ADDED"u8) ? WatchEventType.Added
                    : r.ValueTextEquals("MODIFIED"u8) ? WatchEventType.Modified
                    : r.ValueTextEquals("DELETED"u8) ? WatchEventType.Deleted
                    : r.ValueTextEquals("BOOKMARK"u8) ? WatchEventType.Bookmark
                    : r.ValueTextEquals("ERROR"u8) ? WatchEventType.Error
                    : null;
                if (type is null) error ??= $"unknown watch event type {Describe(ref r)}";
            }
            else if (r.ValueTextEquals("object"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (type == WatchEventType.Error)
                {
                    var copy = r;
                    if (!copy.TrySkip()) return Decode.Incomplete;
                    status = r.TokenType == JsonTokenType.StartObject ? KubeStatus.Decode(ref r) : null;
                }
                else if (decoder.TryDecodeGuarded(ref r, data, out var decoded, ref error) == Decode.Incomplete) return Decode.Incomplete;
                else item = decoded;
            }
            else if (!r.TrySkip()) return Decode.Incomplete;
        }
        if (type is null) onEvent(WatchEventType.Error, null, null, error ?? "watch event without a type");
        else onEvent(type.Value, item, status, error);
        return Decode.Ok;
    }

    private static string Describe(ref Utf8JsonReader r) => r.TokenType == JsonTokenType.String ? $"\"{r.GetString()}\"" : r.TokenType.ToString();
}
