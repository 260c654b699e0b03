using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.IO.Pipelines;
using System.Text;
using Google.Protobuf;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>The gRPC status codes (grpc/grpc doc/statuscodes.md).</summary>
public enum GrpcStatus
{
    Ok = 0, Cancelled = 1, Unknown = 2, InvalidArgument = 3, DeadlineExceeded = 4, NotFound = 5, AlreadyExists = 6,
    PermissionDenied = 7, ResourceExhausted = 8, FailedPrecondition = 9, Aborted = 10, OutOfRange = 11,
    Unimplemented = 12, Internal = 13, Unavailable = 14, DataLoss = 15, Unauthenticated = 16,
}

/// <summary>Ends a call with a status; thrown by handlers and by the framing code alike.</summary>
public sealed class GrpcException(GrpcStatus status, string message) : Exception(message)
{
    public GrpcStatus Status { get; } = status;
}

public sealed record GrpcServerOptions
{
    /// <summary>The gRPC default receive limit; larger messages end the call with RESOURCE_EXHAUSTED.</summary>
    public int MaxReceiveMessageBytes { get; init; } = 4 * 1024 * 1024;
    /// <summary>Calls in flight over all connections; one more is refused with RESOURCE_EXHAUSTED.</summary>
    public int MaxConcurrentCalls { get; init; } = 1000;
}

/// <summary>Wire facts shared by our server and client: framing, grpc-message encoding, grpc-timeout.</summary>
public static class GrpcWire
{
    public const string ContentType = "application/grpc";
    public const string AcceptEncoding = "gzip,identity";

    /// <summary>
    /// Percent-encodes exactly what the spec requires (bytes outside 0x20–0x7E, and '%'): grpc-js decodes
    /// with decodeURI, which leaves a more eager encoding (%3D, %2F, %3A) undecoded.
    /// </summary>
    public static string EncodeMessage(string message)
    {
        var bytes = Encoding.UTF8.GetBytes(message);
        var sb = new StringBuilder(bytes.Length);
        foreach (var b in bytes)
        {
            if (b < 0x20 || b > 0x7E || b == (byte)'%') sb.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            else sb.Append((char)b);
        }
        return sb.ToString();
    }

    /// <summary>Decoding never fails: a bad escape stays as it is.</summary>
    public static string DecodeMessage(string encoded)
    {
        var bytes = new List<byte>(encoded.Length);
        for (int i = 0; i < encoded.Length; i++)
        {
            if (encoded[i] == '%' && i + 2 < encoded.Length
                && byte.TryParse(encoded.AsSpan(i + 1, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var b))
            {
                bytes.Add(b);
                i += 2;
            }
            else bytes.Add((byte)encoded[i]);
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>`grpc-timeout`: 1–8 digits and a unit (H M S m u n); null when malformed.</summary>
    public static TimeSpan? ParseTimeout(string value)
    {
        if (value.Length < 2 || value.Length > 9) return null;
        var digits = value.AsSpan(0, value.Length - 1);
        foreach (var c in digits) if (!char.IsAsciiDigit(c)) return null;
        long n = long.Parse(digits, NumberStyles.None, CultureInfo.InvariantCulture);
        return value[^1] switch
        {
            'H' => TimeSpan.FromHours(n),
            'M' => TimeSpan.FromMinutes(n),
            'S' => TimeSpan.FromSeconds(n),
            'm' => TimeSpan.FromMilliseconds(n),
            'u' => TimeSpan.FromMicroseconds(n),
            'n' => TimeSpan.FromTicks(n / 100),
            _ => null,
        };
    }

    /// <summary>The coarsest unit that keeps 8 digits, rounding up so the deadline is never shortened.</summary>
    public static string FormatTimeout(TimeSpan t)
    {
        long ms = Math.Max(1, (long)Math.Ceiling(t.TotalMilliseconds));
        if (ms < 100_000_000) return ms.ToString(CultureInfo.InvariantCulture) + "m";
        long s = (ms + 999) / 1000;
        if (s < 100_000_000) return s.ToString(CultureInfo.InvariantCulture) + "S";
        return Math.Min(99_999_999, (s + 3599) / 3600).ToString(CultureInfo.InvariantCulture) + "H";
    }

    /// <summary>One length-prefixed message; compressed with gzip when asked (a fresh stream per message).</summary>
    public static byte[] Frame(IMessage message, bool gzip)
    {
        var payload = message.ToByteArray();
        if (gzip) payload = Gzip(payload);
        var frame = new byte[5 + payload.Length];
        frame[0] = gzip ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)payload.Length);
        payload.CopyTo(frame, 5);
        return frame;
    }

    public static byte[] Gzip(ReadOnlySpan<byte> data)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true)) gz.Write(data);
        return ms.ToArray();
    }

    /// <summary>Inflates at most <paramref name="limit"/> bytes, so a small compressed frame cannot expand without bound.</summary>
    public static byte[] Gunzip(byte[] data, int limit)
    {
        try
        {
            using var gz = new GZipStream(new MemoryStream(data), CompressionMode.Decompress);
            using var ms = new MemoryStream();
            var buffer = new byte[16 * 1024];
            int n;
            while ((n = gz.Read(buffer)) > 0)
            {
                if (ms.Length + n > limit)
                    throw new GrpcException(GrpcStatus.ResourceExhausted, $"decompressed message larger than the limit of {limit} bytes");
                ms.Write(buffer, 0, n);
            }
            return ms.ToArray();
        }
        catch (InvalidDataException e)
        {
            throw new GrpcException(GrpcStatus.Internal, "message is not valid gzip: " + e.Message);
        }
    }

    /// <summary>
    /// Reads one frame; null at a clean end of stream. Framing errors are INTERNAL, a message over the
    /// limit RESOURCE_EXHAUSTED (checked from the prefix, before the body is read).
    /// </summary>
    public static async ValueTask<byte[]?> ReadFrameAsync(PipeReader reader, string? encoding, int limit, CancellationToken ct)
    {
        var head = await reader.ReadAtLeastAsync(5, ct);
        if (head.Buffer.Length == 0 && head.IsCompleted) { reader.AdvanceTo(head.Buffer.End); return null; }
        if (head.Buffer.Length < 5)
        {
            reader.AdvanceTo(head.Buffer.Start, head.Buffer.End);
            throw new GrpcException(GrpcStatus.Internal, "truncated message prefix");
        }
        Span<byte> prefix = stackalloc byte[5];
        head.Buffer.Slice(0, 5).CopyTo(prefix);
        reader.AdvanceTo(head.Buffer.GetPosition(5));
        byte flag = prefix[0];
        uint length = BinaryPrimitives.ReadUInt32BigEndian(prefix[1..]);
        if (flag > 1) throw new GrpcException(GrpcStatus.Internal, $"invalid compressed flag {flag}");
        if (flag == 1 && encoding is null or "identity")
            throw new GrpcException(GrpcStatus.Internal, "compressed message without grpc-encoding");
        if (length > (uint)limit)
            throw new GrpcException(GrpcStatus.ResourceExhausted, $"message of {length} bytes is larger than the limit of {limit} bytes");
        var body = new byte[length];
        if (length > 0)
        {
            var read = await reader.ReadAtLeastAsync((int)length, ct);
            if (read.Buffer.Length < length)
            {
                reader.AdvanceTo(read.Buffer.Start, read.Buffer.End);
                throw new GrpcException(GrpcStatus.Internal, $"truncated message: {read.Buffer.Length} of {length} bytes");
            }
            read.Buffer.Slice(0, length).CopyTo(body);
            reader.AdvanceTo(read.Buffer.GetPosition(length));
        }
        return flag == 1 ? Gunzip(body, limit) : body;
    }

    public static T Parse<T>(MessageParser<T> parser, byte[] data) where T : IMessage<T>
    {
        try { return parser.ParseFrom(data); }
        catch (InvalidProtocolBufferException e) { throw new GrpcException(GrpcStatus.Internal, "cannot decode the request message: " + e.Message); }
    }
}

/// <summary>One call in progress: reads requests, writes responses, knows its deadline and cancellation.</summary>
public sealed class GrpcCall
{
    private readonly HttpContext http;
    private readonly string? requestEncoding;
    private readonly bool compressResponses;
    private readonly int limit;

    internal GrpcCall(HttpContext http, string method, string? requestEncoding, bool compressResponses, int limit, CancellationToken cancelled)
    {
        this.http = http;
        Method = method;
        this.requestEncoding = requestEncoding;
        this.compressResponses = compressResponses;
        this.limit = limit;
        Cancelled = cancelled;
    }

    public string Method { get; }
    /// <summary>A request header (gRPC metadata), or null.</summary>
    public string? Header(string name) => http.Request.Headers.TryGetValue(name, out var v) ? v.ToString() : null;
    /// <summary>Client cancel, deadline or server shutdown.</summary>
    public CancellationToken Cancelled { get; }
    public int MessagesSent { get; private set; }

    public async ValueTask<T?> ReadAsync<T>(MessageParser<T> parser) where T : class, IMessage<T>
    {
        var data = await GrpcWire.ReadFrameAsync(http.Request.BodyReader, requestEncoding, limit, Cancelled);
        return data is null ? null : GrpcWire.Parse(parser, data);
    }

    public async ValueTask WriteAsync(IMessage message)
    {
        if (!http.Response.HasStarted) StartResponse();
        var writer = http.Response.BodyWriter;
        if (compressResponses)
        {
            writer.Write(GrpcWire.Frame(message, gzip: true));
        }
        else
        {
            int size = message.CalculateSize();
            var head = writer.GetSpan(5);
            head[0] = 0;
            BinaryPrimitives.WriteUInt32BigEndian(head[1..], (uint)size);
            writer.Advance(5);
            message.WriteTo(writer);
        }
        MessagesSent++;
        // The flush is what lets streamed messages arrive one by one.
        await writer.FlushAsync(Cancelled);
    }

    internal void StartResponse()
    {
        var r = http.Response;
        r.StatusCode = 200;
        r.ContentType = GrpcWire.ContentType;
        r.Headers["grpc-accept-encoding"] = GrpcWire.AcceptEncoding;
        if (compressResponses) r.Headers["grpc-encoding"] = "gzip";
    }
}

/// <summary>
/// gRPC over Kestrel HTTP/2, hand-written (the NuGet mirror has no Grpc.AspNetCore): routes calls
/// by path, enforces content-type, encodings, deadlines, message size and the concurrent-call bound,
/// and ends every call with a status, in trailers or Trailers-Only. Counts what it did for /metrics.
/// </summary>
public sealed class GrpcServer
{
    private readonly Dictionary<string, Func<GrpcCall, Task>> methods = new(StringComparer.Ordinal);
    private readonly GrpcServerOptions options;
    private readonly Microsoft.Extensions.Logging.ILogger log;
    private readonly CancellationTokenSource shutdown = new();
    private readonly object gate = new();
    private readonly Dictionary<(string Method, GrpcStatus Code), long> calls = [];
    private int open;

    public GrpcServer(GrpcServerOptions options, Microsoft.Extensions.Logging.ILogger log)
    {
        this.options = options;
        this.log = log;
    }

    /// <summary>Calls between their first byte and their status: the abuse tests expect this back at zero.</summary>
    public int OpenCalls => Volatile.Read(ref open);
    public CancellationToken ShuttingDown => shutdown.Token;
    public IEnumerable<string> Paths => methods.Keys;

    /// <summary>Calls finished, by method path ("unknown" for paths we do not serve) and status code.</summary>
    public IReadOnlyDictionary<(string Method, GrpcStatus Code), long> Calls { get { lock (gate) return new Dictionary<(string, GrpcStatus), long>(calls); } }

    public void Unary<TReq, TResp>(string path, MessageParser<TReq> parser, Func<TReq, GrpcCall, Task<TResp>> handler)
        where TReq : class, IMessage<TReq> where TResp : IMessage
    {
        methods[path] = async call =>
        {
            var request = await ReadSingleAsync(call, parser);
            var response = await handler(request, call).WaitAsync(call.Cancelled);
            await call.WriteAsync(response);
        };
    }

    public void ServerStreaming<TReq>(string path, MessageParser<TReq> parser, Func<TReq, GrpcCall, Task> handler)
        where TReq : class, IMessage<TReq>
    {
        methods[path] = async call =>
        {
            var request = await call.ReadAsync(parser) ?? throw new GrpcException(GrpcStatus.Internal, "expected one request message, got none");
            await handler(request, call);
        };
    }

    /// <summary>Bidirectional streams read and write through the call themselves.</summary>
    public void Duplex(string path, Func<GrpcCall, Task> handler) => methods[path] = handler;

    private static async Task<TReq> ReadSingleAsync<TReq>(GrpcCall call, MessageParser<TReq> parser) where TReq : class, IMessage<TReq>
    {
        var request = await call.ReadAsync(parser) ?? throw new GrpcException(GrpcStatus.Internal, "expected one request message, got none");
        if (await call.ReadAsync(parser) is not null) throw new GrpcException(GrpcStatus.Internal, "expected one request message, got more");
        return request;
    }

    /// <summary>Streams end with UNAVAILABLE ("shutting down") and new calls are refused, before Kestrel stops.</summary>
    public void BeginShutdown()
    {
        if (!shutdown.IsCancellationRequested) shutdown.Cancel();
    }

    public async Task DrainAsync(TimeSpan timeout)
    {
        BeginShutdown();
        var until = DateTime.UtcNow + timeout;
        while (OpenCalls > 0 && DateTime.UtcNow < until) await Task.Delay(20);
    }

    public async Task HandleAsync(HttpContext ctx)
    {
        var request = ctx.Request;
        var path = request.Path.Value ?? "";
        var contentType = request.ContentType ?? "";
        if (!HttpMethods.IsPost(request.Method) || !contentType.StartsWith(GrpcWire.ContentType, StringComparison.OrdinalIgnoreCase))
        {
            // Not a gRPC request: the spec answers with HTTP 415; the status headers help gRPC-aware clients.
            ctx.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            ctx.Response.Headers["grpc-status"] = ((int)GrpcStatus.Internal).ToString(CultureInfo.InvariantCulture);
            ctx.Response.Headers["grpc-message"] = GrpcWire.EncodeMessage($"content-type \"{contentType}\" is not application/grpc");
            Count("unknown", GrpcStatus.Internal);
            return;
        }

        var method = methods.ContainsKey(path) ? path : "unknown";
        int now = Interlocked.Increment(ref open);
        try
        {
            GrpcStatus status;
            string message = "";
            if (now > options.MaxConcurrentCalls)
                (status, message) = (GrpcStatus.ResourceExhausted, $"more than {options.MaxConcurrentCalls} concurrent calls");
            else if (shutdown.IsCancellationRequested)
                (status, message) = (GrpcStatus.Unavailable, "server shutting down");
            else
                (status, message) = await RunAsync(ctx, path);

            if (ctx.RequestAborted.IsCancellationRequested && status == GrpcStatus.Cancelled)
            {
                Count(method, GrpcStatus.Cancelled);
                return;   // the client reset the stream: nobody is there to read a status
            }
            Finish(ctx, status, message);
            Count(method, status);
        }
        finally
        {
            Interlocked.Decrement(ref open);
        }
    }

    private async Task<(GrpcStatus, string)> RunAsync(HttpContext ctx, string path)
    {
        if (!methods.TryGetValue(path, out var handler))
            return (GrpcStatus.Unimplemented, $"unknown method {path}");

        var encoding = ctx.Request.Headers["grpc-encoding"].ToString();
        if (encoding.Length == 0) encoding = "identity";
        if (encoding is not ("identity" or "gzip"))
        {
            ctx.Response.Headers["grpc-accept-encoding"] = GrpcWire.AcceptEncoding;
            return (GrpcStatus.Unimplemented, $"message encoding \"{encoding}\" is not supported (gzip, identity are)");
        }
        // Answer in gzip only to a client that compresses itself and lists gzip: never an encoding the peer did not list.
        var accepts = ctx.Request.Headers["grpc-accept-encoding"].ToString().Split(',', StringSplitOptions.TrimEntries);
        bool compress = encoding == "gzip" && accepts.Contains("gzip");

        TimeSpan? timeout = null;
        var timeoutHeader = ctx.Request.Headers["grpc-timeout"].ToString();
        if (timeoutHeader.Length > 0)
        {
            timeout = GrpcWire.ParseTimeout(timeoutHeader);
            if (timeout is null) return (GrpcStatus.Internal, $"malformed grpc-timeout \"{timeoutHeader}\"");
        }
        using var deadline = new CancellationTokenSource();
        if (timeout is { } t) deadline.CancelAfter(t);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, deadline.Token, shutdown.Token);
        var call = new GrpcCall(ctx, path, encoding, compress, options.MaxReceiveMessageBytes, linked.Token);
        try
        {
            await handler(call);
            return (GrpcStatus.Ok, "");
        }
        catch (GrpcException e)
        {
            return (e.Status, e.Message);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ConnectionResetException || linked.IsCancellationRequested)
        {
            if (ctx.RequestAborted.IsCancellationRequested) return (GrpcStatus.Cancelled, "cancelled by the client");
            if (deadline.IsCancellationRequested) return (GrpcStatus.DeadlineExceeded, $"deadline of {timeoutHeader} exceeded");
            if (shutdown.IsCancellationRequested) return (GrpcStatus.Unavailable, "server shutting down");
            log.LogWarning(e, "gRPC {Method} failed", path);
            return (GrpcStatus.Unknown, e.Message);
        }
        catch (InvalidOperationException e) when (e.Message.Contains("request body", StringComparison.OrdinalIgnoreCase))
        {
            return (GrpcStatus.Internal, e.Message);
        }
        catch (Exception e)
        {
            log.LogError(e, "gRPC {Method} failed", path);
            return (GrpcStatus.Unknown, "internal error: " + e.GetType().Name);
        }
    }

    private static void Finish(HttpContext ctx, GrpcStatus status, string message)
    {
        var r = ctx.Response;
        var code = ((int)status).ToString(CultureInfo.InvariantCulture);
        if (!r.HasStarted)
        {
            // Trailers-Only: one HEADERS frame with END_STREAM carrying the status.
            r.StatusCode = 200;
            r.ContentType = GrpcWire.ContentType;
            r.Headers["grpc-status"] = code;
            if (message.Length > 0) r.Headers["grpc-message"] = GrpcWire.EncodeMessage(message);
            return;
        }
        r.AppendTrailer("grpc-status", code);
        if (message.Length > 0) r.AppendTrailer("grpc-message", GrpcWire.EncodeMessage(message));
    }

    private void Count(string method, GrpcStatus status)
    {
        lock (gate) calls[(method, status)] = calls.GetValueOrDefault((method, status)) + 1;
    }
}
