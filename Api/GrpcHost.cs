using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.IO.Pipelines;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Health.V1;
using Grpc.HealthCheck;
using Grpc.Net.Compression;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using ServingStatus = Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus;

namespace Karpetrack;

public sealed record GrpcServerOptions
{
    /// <summary>The gRPC default receive limit; larger messages (also once inflated) end the call with RESOURCE_EXHAUSTED.</summary>
    public int MaxReceiveMessageBytes { get; init; } = 4 * 1024 * 1024;
    /// <summary>Calls in flight over all connections; one more is refused with RESOURCE_EXHAUSTED.</summary>
    public int MaxConcurrentCalls { get; init; } = 1000;
    /// <summary>How long a request message may take to arrive whole (unary and server-streaming calls: the whole request).</summary>
    public TimeSpan ReadTimeout { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// The gRPC API on Grpc.AspNetCore (service, grpc.health.v1 and reflection v1/v1alpha from the
/// libraries), plus what those lack: a bound on calls in progress, call counts for /metrics, a read
/// deadline per request message, a bound on inflated messages, health that follows the caches and
/// the shutdown, and streams that end with UNAVAILABLE before the process exits.
/// </summary>
public sealed class GrpcCalls
{
    private readonly GrpcServerOptions options;
    private readonly CancellationTokenSource stopping = new();
    private readonly TaskCompletionSource drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly object gate = new();
    private readonly Prometheus.Counter callsFamily;
    private readonly Dictionary<(string Method, StatusCode Code), Prometheus.Counter.Child> calls = [];
    private int open;
    private bool stopped;   // under gate: health stays NOT_SERVING once the shutdown has begun

    public GrpcCalls(GrpcServerOptions options, Telemetry? telemetry = null)
    {
        this.options = options;
        // Not serving until the caches have synced (ServeHealthAsync); "" is the server as a whole.
        Health.SetStatus("", ServingStatus.NotServing);
        Health.SetStatus(KarpetrackApi.ServiceName, ServingStatus.NotServing);
        telemetry ??= new Telemetry();
        var openCalls = telemetry.Gauge("karpetrack_grpc_open_calls", "gRPC calls in progress (streams included).");
        callsFamily = telemetry.Counter("karpetrack_grpc_calls_total",
            "gRPC calls finished, by method path (\"unknown\" for paths not served) and status code name.", "method", "code");
        telemetry.OnScrape(() => openCalls.Set(OpenCalls));
    }

    /// <summary>The library's grpc.health.v1 service; its statuses are set here.</summary>
    public HealthServiceImpl Health { get; } = new();

    /// <summary>Calls between their first byte and their status: the abuse tests expect this back at zero.</summary>
    public int OpenCalls => Volatile.Read(ref open);

    /// <summary>Calls finished, by method path ("unknown" for paths not served) and status code.</summary>
    public IReadOnlyDictionary<(string Method, StatusCode Code), long> Calls
    {
        get { lock (gate) return calls.ToDictionary(kv => kv.Key, kv => (long)kv.Value.Value); }
    }

    /// <summary>Grpc.AspNetCore with our limits, the health and reflection services, and the API itself.</summary>
    public void AddServices(IServiceCollection services, KarpetrackApi api)
    {
        services.AddSingleton(api);
        services.AddSingleton(Health);
        services.AddSingleton(new StoppingInterceptor(stopping.Token));
        services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = options.MaxReceiveMessageBytes;
            o.EnableDetailedErrors = false;
            o.CompressionProviders = [new BoundedGzip(options.MaxReceiveMessageBytes)];
            o.Interceptors.Add<StoppingInterceptor>();
        });
        services.AddGrpcReflection();
    }

    /// <summary>
    /// Routes gRPC calls on the connections <paramref name="isGrpc"/> accepts (the HTTP/2 port) through
    /// <see cref="HandleAsync"/>; on the other port the gRPC routes are ignored and the rest of the pipeline serves.
    /// </summary>
    public void Map(WebApplication app, Func<ConnectionInfo, bool> isGrpc)
    {
        app.UseRouting();
        app.Use((ctx, next) =>
        {
            if (isGrpc(ctx.Connection)) return HandleAsync(ctx, next);
            ctx.SetEndpoint(null);
            return next(ctx);
        });
        // Here, not where WebApplication would add it: after the last middleware, the HTTP endpoints' terminal one.
        app.UseEndpoints(_ => { });
        app.MapGrpcService<KarpetrackApi>();
        app.MapGrpcService<HealthServiceImpl>();
        app.MapGrpcReflectionService();
    }

    /// <summary>SERVING once the caches have synced, unless the shutdown has begun.</summary>
    public async Task ServeHealthAsync(Func<bool> synced, CancellationToken ct)
    {
        try
        {
            // The caches have no sync event; a short poll bounds the delay and ends once they have synced.
            while (!synced()) await Task.Delay(TimeSpan.FromMilliseconds(100), ct);
        }
        catch (OperationCanceledException) { return; }
        lock (gate)
        {
            if (stopped) return;
            Health.SetStatus("", ServingStatus.Serving);
            Health.SetStatus(KarpetrackApi.ServiceName, ServingStatus.Serving);
        }
    }

    /// <summary>Health turns NOT_SERVING, streams end with UNAVAILABLE and new calls are refused, before Kestrel stops.</summary>
    public void BeginShutdown()
    {
        lock (gate)
        {
            if (stopped) return;
            stopped = true;
            // First, so that health watchers are told NOT_SERVING before their stream ends.
            Health.SetStatus("", ServingStatus.NotServing);
            Health.SetStatus(KarpetrackApi.ServiceName, ServingStatus.NotServing);
        }
        // Outside the lock: the streams' cancellation callbacks run on this thread.
        stopping.Cancel();
    }

    public async Task DrainAsync(TimeSpan timeout)
    {
        BeginShutdown();
        if (OpenCalls == 0) return;
        try { await drained.Task.WaitAsync(timeout); }
        catch (TimeoutException) { }
    }

    private async Task HandleAsync(HttpContext ctx, RequestDelegate next)
    {
        var endpoint = ctx.GetEndpoint();
        if (endpoint is null)
        {
            // The library routes every application/grpc POST (UNIMPLEMENTED for unknown paths): anything else
            // is not a gRPC request, which the spec answers with 415, and this port serves nothing but gRPC.
            ctx.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            Count("unknown", StatusCode.Internal);
            return;
        }
        var grpcMethod = endpoint.Metadata.GetMetadata<GrpcMethodMetadata>()?.Method;
        var method = grpcMethod?.FullName ?? "unknown";
        int now = Interlocked.Increment(ref open);
        try
        {
            // Refused here, before a request message is read, so that refused calls cost nothing.
            if (now > options.MaxConcurrentCalls)
            {
                Refuse(ctx, StatusCode.ResourceExhausted, $"more than {options.MaxConcurrentCalls} calls in progress");
                Count(method, StatusCode.ResourceExhausted);
                return;
            }
            if (stopping.IsCancellationRequested)
            {
                Refuse(ctx, StatusCode.Unavailable, "server shutting down");
                Count(method, StatusCode.Unavailable);
                return;
            }
            if (grpcMethod is not null) LimitReads(ctx, grpcMethod.Type is MethodType.Unary or MethodType.ServerStreaming);
            await next(ctx);
            Count(method, StatusOf(ctx));
        }
        finally
        {
            if (Interlocked.Decrement(ref open) == 0 && stopping.IsCancellationRequested) drained.TrySetResult();
        }
    }

    /// <summary>
    /// Our read deadline instead of Kestrel's minimum data rate: on HTTP/2 Kestrel enforces that rate on the
    /// whole connection and aborts it, every stream with it, and Grpc.AspNetCore turns it off for streaming
    /// requests anyway (a stream quiet between messages is not a slow upload). Neither bounds a call whose
    /// message stalls halfway; this does, for each call alone, and ends it with a status.
    /// </summary>
    private void LimitReads(HttpContext ctx, bool wholeRequest)
    {
        if (ctx.Features.Get<IHttpMinRequestBodyDataRateFeature>() is { } rate) rate.MinDataRate = null;
        ctx.Features.Set<IRequestBodyPipeFeature>(new BodyPipe(new ReadDeadlineReader(ctx.Request.BodyReader, options.ReadTimeout, wholeRequest)));
    }

    /// <summary>Trailers-Only: the fixed texts here are printable ASCII without '%', so they need no percent-encoding.</summary>
    private static void Refuse(HttpContext ctx, StatusCode code, string message)
    {
        ctx.Response.StatusCode = StatusCodes.Status200OK;
        ctx.Response.ContentType = "application/grpc";
        ctx.Response.Headers["grpc-status"] = ((int)code).ToString(CultureInfo.InvariantCulture);
        ctx.Response.Headers["grpc-message"] = message;
    }

    /// <summary>The status the library wrote, in the trailers or (Trailers-Only) the headers; CANCELLED when the client went away.</summary>
    private static StatusCode StatusOf(HttpContext ctx)
    {
        if (ctx.RequestAborted.IsCancellationRequested) return StatusCode.Cancelled;
        var trailers = ctx.Features.Get<IHttpResponseTrailersFeature>()?.Trailers;
        var text = trailers is not null && trailers.TryGetValue("grpc-status", out var t) ? t.ToString() : ctx.Response.Headers["grpc-status"].ToString();
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var code) ? (StatusCode)code : StatusCode.Unknown;
    }

    private void Count(string method, StatusCode status)
    {
        Prometheus.Counter.Child? counter;
        lock (gate)
        {
            if (!calls.TryGetValue((method, status), out counter)) calls[(method, status)] = counter = callsFamily.WithLabels(method, StatusName(status));
        }
        counter.Inc();
    }

    /// <summary>The spec's upper-case names (OK, NOT_FOUND, …), as other gRPC exporters label them.</summary>
    public static string StatusName(StatusCode s) => s switch
    {
        StatusCode.OK => "OK", StatusCode.Cancelled => "CANCELLED", StatusCode.Unknown => "UNKNOWN", StatusCode.InvalidArgument => "INVALID_ARGUMENT",
        StatusCode.DeadlineExceeded => "DEADLINE_EXCEEDED", StatusCode.NotFound => "NOT_FOUND", StatusCode.AlreadyExists => "ALREADY_EXISTS",
        StatusCode.PermissionDenied => "PERMISSION_DENIED", StatusCode.ResourceExhausted => "RESOURCE_EXHAUSTED",
        StatusCode.FailedPrecondition => "FAILED_PRECONDITION", StatusCode.Aborted => "ABORTED", StatusCode.OutOfRange => "OUT_OF_RANGE",
        StatusCode.Unimplemented => "UNIMPLEMENTED", StatusCode.Internal => "INTERNAL", StatusCode.Unavailable => "UNAVAILABLE",
        StatusCode.DataLoss => "DATA_LOSS", StatusCode.Unauthenticated => "UNAUTHENTICATED",
        // A status outside the spec's table (a peer's bug): its number, not a name it does not have.
        _ => ((int)s).ToString(CultureInfo.InvariantCulture),
    };

    private sealed class BodyPipe(PipeReader reader) : IRequestBodyPipeFeature
    {
        public PipeReader Reader => reader;
    }

    /// <summary>
    /// The request body with a deadline: a message must arrive whole within the timeout of its first byte
    /// (with <c>wholeRequest</c>, the request and its end within the timeout of the first read), however
    /// its bytes trickle in. Past it the call ends with DEADLINE_EXCEEDED. Between messages a stream may be quiet.
    /// </summary>
    private sealed class ReadDeadlineReader(PipeReader inner, TimeSpan timeout, bool wholeRequest) : PipeReader
    {
        private long started = -1;
        private ReadOnlySequence<byte> handedOut;

        public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            if (wholeRequest && started < 0) started = Stopwatch.GetTimestamp();
            if (started < 0) return Keep(await inner.ReadAsync(cancellationToken));
            var left = timeout - Stopwatch.GetElapsedTime(started);
            if (left <= TimeSpan.Zero) throw TimedOut();
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(left);
            try
            {
                return Keep(await inner.ReadAsync(deadline.Token));
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw TimedOut();
            }
        }

        public override bool TryRead(out ReadResult result)
        {
            if (!inner.TryRead(out result)) return false;
            Keep(result);
            return true;
        }

        public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
        {
            if (!wholeRequest)
            {
                // Bytes left unconsumed are a message in progress: its deadline runs from the first of them.
                if (handedOut.Slice(consumed).IsEmpty) started = -1;
                else if (started < 0) started = Stopwatch.GetTimestamp();
            }
            handedOut = default;
            inner.AdvanceTo(consumed, examined);
        }

        public override void CancelPendingRead() => inner.CancelPendingRead();

        public override void Complete(Exception? exception = null) => inner.Complete(exception);

        private ReadResult Keep(ReadResult result)
        {
            handedOut = result.Buffer;
            return result;
        }

        private RpcException TimedOut() => new(new Status(StatusCode.DeadlineExceeded,
            $"the request message did not arrive whole within {timeout.TotalSeconds:0.###}s (--grpc-read-timeout)"));
    }

    /// <summary>
    /// gzip with a bound on the inflated size: Grpc.AspNetCore checks only the compressed length against
    /// MaxReceiveMessageSize, so 4 MiB of compressed zeros would inflate to gigabytes in memory.
    /// </summary>
    private sealed class BoundedGzip(int limit) : ICompressionProvider
    {
        public string EncodingName => "gzip";

        public Stream CreateCompressionStream(Stream stream, CompressionLevel? compressionLevel) =>
            new GZipStream(stream, compressionLevel ?? CompressionLevel.Fastest, leaveOpen: true);

        public Stream CreateDecompressionStream(Stream stream) => new Inflating(new GZipStream(stream, CompressionMode.Decompress), limit);
    }

    /// <summary>Reads an inflating stream up to the limit; bad gzip is INTERNAL (the library would say UNKNOWN).</summary>
    private sealed class Inflating(Stream inner, int limit) : Stream
    {
        private long total;

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int n;
            try { n = inner.Read(buffer); }
            catch (InvalidDataException e) { throw new RpcException(new Status(StatusCode.Internal, "the message is not valid gzip: " + e.Message)); }
            total += n;
            if (total > limit) throw new RpcException(new Status(StatusCode.ResourceExhausted, $"the inflated message is larger than the limit of {limit} bytes"));
            return n;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => total; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }

    /// <summary>
    /// Ends every call with UNAVAILABLE when the shutdown begins: handlers see a cancellation token (and
    /// request streams a read) that also fires then. The library's own handlers (health Watch, reflection)
    /// would otherwise keep their streams open until Kestrel gives up and resets them without a status.
    /// </summary>
    private sealed class StoppingInterceptor(CancellationToken stopping) : Interceptor
    {
        public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
            UnaryServerMethod<TRequest, TResponse> continuation)
        {
            using var call = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, stopping);
            await MirrorGzipAsync(context);
            try { return await continuation(request, Wrap(context, call.Token)); }
            catch (Exception e) when (e is not RpcException && Stopped(context)) { throw Unavailable(); }
        }

        public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
            ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
        {
            using var call = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, stopping);
            await MirrorGzipAsync(context);
            try { await continuation(request, responseStream, Wrap(context, call.Token)); }
            catch (Exception e) when (e is not RpcException && Stopped(context)) { throw Unavailable(); }
            // A stream that returned because of the shutdown (health Watch does) did not end its work.
            if (Stopped(context)) throw Unavailable();
        }

        public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
            ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
        {
            using var call = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, stopping);
            await MirrorGzipAsync(context);
            try { return await continuation(new StoppingReader<TRequest>(requestStream, call.Token), Wrap(context, call.Token)); }
            catch (Exception e) when (e is not RpcException && Stopped(context)) { throw Unavailable(); }
        }

        public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
            IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
        {
            using var call = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, stopping);
            await MirrorGzipAsync(context);
            try { await continuation(new StoppingReader<TRequest>(requestStream, call.Token), responseStream, Wrap(context, call.Token)); }
            catch (Exception e) when (e is not RpcException && Stopped(context)) { throw Unavailable(); }
            if (Stopped(context)) throw Unavailable();
        }

        private static StoppingContext Wrap(ServerCallContext context, CancellationToken token)
        {
            // The library finds the call's HttpContext (to resolve the service) under this documented key
            // when the context handed down is not its own.
            context.UserState["__HttpContext"] = context.GetHttpContext();
            return new StoppingContext(context, token);
        }

        /// <summary>Stopped by the shutdown, not by the client or the deadline.</summary>
        private bool Stopped(ServerCallContext context) => stopping.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested;

        private static RpcException Unavailable() => new(new Status(StatusCode.Unavailable, "server shutting down"));

        /// <summary>
        /// Answers in gzip a client that sends gzip and accepts it (the library compresses only with one
        /// algorithm for every call): never an encoding the client did not list, nor CPU for clients that did not ask.
        /// </summary>
        private static Task MirrorGzipAsync(ServerCallContext context)
        {
            var headers = context.GetHttpContext().Request.Headers;
            if (headers["grpc-encoding"] != "gzip") return Task.CompletedTask;
            if (!headers["grpc-accept-encoding"].ToString().Split(',', StringSplitOptions.TrimEntries).Contains("gzip")) return Task.CompletedTask;
            return context.WriteResponseHeadersAsync(new Metadata { { "grpc-internal-encoding-request", "gzip" } });
        }
    }

    /// <summary>The call's context with a cancellation token that also fires at shutdown; everything else is the call's own.</summary>
    private sealed class StoppingContext(ServerCallContext call, CancellationToken token) : ServerCallContext
    {
        protected override string MethodCore => call.Method;
        protected override string HostCore => call.Host;
        protected override string PeerCore => call.Peer;
        protected override DateTime DeadlineCore => call.Deadline;
        protected override Metadata RequestHeadersCore => call.RequestHeaders;
        protected override CancellationToken CancellationTokenCore => token;
        protected override Metadata ResponseTrailersCore => call.ResponseTrailers;
        protected override Status StatusCore { get => call.Status; set => call.Status = value; }
        protected override WriteOptions? WriteOptionsCore { get => call.WriteOptions; set => call.WriteOptions = value; }
        protected override AuthContext AuthContextCore => call.AuthContext;
        protected override IDictionary<object, object> UserStateCore => call.UserState;
        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => call.CreatePropagationToken(options);
        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => call.WriteResponseHeadersAsync(responseHeaders);
    }

    /// <summary>A request stream whose reads also end at shutdown (reflection reads without a token).</summary>
    private sealed class StoppingReader<T>(IAsyncStreamReader<T> inner, CancellationToken token) : IAsyncStreamReader<T>
    {
        public T Current => inner.Current;

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            if (!cancellationToken.CanBeCanceled) return await inner.MoveNext(token);
            using var both = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, token);
            return await inner.MoveNext(both.Token);
        }
    }
}
