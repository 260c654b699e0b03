using System.Globalization;
using System.IO.Compression;
using System.IO.Hashing;
using System.Text;
using Google.Protobuf;
using Grpc.Core;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack;

/// <summary>
/// The gRPC API as JSON over HTTP/1.1 on the metrics port, for curl and the web view: one route table
/// calling the same service methods as gRPC, messages in the proto3 JSON mapping (Google.Protobuf's
/// JsonFormatter and JsonParser).
///
/// Why not Microsoft.AspNetCore.Grpc.JsonTranscoding with google.api.http rules: it serialises
/// through reflection-based System.Text.Json, and in the NativeAOT binary we ship every transcoded
/// call (10.0.15, probed) fails with HTTP 500 ("JsonPropertyInfo`1[Nullable`1[Double]] is missing native
/// code"); its publish reports IL2104/IL3053. JsonFormatter walks the generated descriptors and works there.
/// </summary>
public sealed class JsonApi
{
    public const string Prefix = "/v1/";
    /// <summary>As gRPC's receive limit: a Simulate body larger than this is refused before it is parsed.</summary>
    public const int MaxRequestBytes = 4 * 1024 * 1024;

    // Defaults are written out: a curl user and the web view see every field, 0 and false included.
    private static readonly JsonFormatter Formatter = new(JsonFormatter.Settings.Default.WithFormatDefaultValues(true));
    private static readonly JsonParser Parser = new(JsonParser.Settings.Default.WithIgnoreUnknownFields(false));

    // Quotes and apostrophes as they are: the body is JSON for people with curl, never embedded in HTML.
    private static readonly System.Text.Json.JsonWriterOptions Relaxed = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly KarpetrackApi api;
    private readonly CancellationToken stopping;
    private readonly Route[] routes;

    /// <param name="stopping">Fires when the service stops: open watch streams end then, as gRPC's do.</param>
    public JsonApi(KarpetrackApi api, CancellationToken stopping)
    {
        this.api = api;
        this.stopping = stopping;
        routes =
        [
            new("GET", ["summary"], "karpetrack.v1.Karpetrack/GetSummary", async (ctx, _, call) =>
                await Reply(ctx, await api.GetSummary(Query<V1.GetSummaryRequest>(ctx), call))),
            new("GET", ["recommendations"], "karpetrack.v1.Karpetrack/ListRecommendations", async (ctx, _, call) =>
                await Reply(ctx, await api.ListRecommendations(Query<V1.ListRecommendationsRequest>(ctx), call))),
            new("GET", ["recommendations", "watch"], "karpetrack.v1.Karpetrack/WatchRecommendations", (ctx, _, call) =>
                WatchAsync(ctx, Query<V1.WatchRecommendationsRequest>(ctx), call)),
            new("GET", ["nodes"], "karpetrack.v1.Karpetrack/ListNodes", async (ctx, _, call) =>
                await Reply(ctx, await api.ListNodes(Query<V1.ListNodesRequest>(ctx), call))),
            new("GET", ["nodes", "*", "explain"], "karpetrack.v1.Karpetrack/ExplainNode", async (ctx, args, call) =>
                await Reply(ctx, await api.ExplainNode(Query(ctx, new V1.ExplainNodeRequest { Node = args[0] }), call))),
            new("POST", ["simulate"], "karpetrack.v1.Karpetrack/Simulate", async (ctx, _, call) =>
                await Reply(ctx, await api.Simulate(await Body<V1.SimulateRequest>(ctx), call))),
            new("POST", ["recommendations", "*", "approve"], "karpetrack.v1.Karpetrack/ApproveRecommendation", async (ctx, args, call) =>
                await Reply(ctx, await api.ApproveRecommendation(new V1.ApproveRecommendationRequest { Id = args[0] }, call))),
        ];
    }

    /// <summary>(method, path) of every route, for the README and the tests.</summary>
    public IEnumerable<(string Method, string Path)> Routes =>
        routes.Select(r => (r.Method, Prefix + string.Join("/", r.Segments.Select(s => s == "*" ? "{}" : s))));

    private delegate Task Handler(HttpContext ctx, string[] args, ServerCallContext call);

    private sealed record Route(string Method, string[] Segments, string GrpcMethod, Handler Handle);

    public static bool Handles(string path) => path.StartsWith(Prefix, StringComparison.Ordinal);

    public async Task HandleAsync(HttpContext ctx)
    {
        // Kestrel gives the path unescaped (a node name could hold %2F in theory); split the raw target instead.
        var raw = ctx.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestFeature>()?.RawTarget ?? ctx.Request.Path.Value ?? "";
        var query = raw.IndexOf('?');
        var segments = (query >= 0 ? raw[..query] : raw)[Prefix.Length..].Split('/');
        var matched = routes.Where(r => Matches(r, segments)).ToArray();
        if (matched.Length == 0)
        {
            await Error(ctx, StatusCodes.Status404NotFound, StatusCode.NotFound, $"no API route {ctx.Request.Path}; see the README's JSON API table");
            return;
        }
        var route = matched.FirstOrDefault(r => r.Method == ctx.Request.Method);
        if (route is null)
        {
            ctx.Response.Headers.Allow = string.Join(", ", matched.Select(r => r.Method));
            await Error(ctx, StatusCodes.Status405MethodNotAllowed, StatusCode.Unimplemented, $"{ctx.Request.Method} is not served on this path");
            return;
        }
        var args = route.Segments.Select((s, i) => (s, i)).Where(x => x.s == "*").Select(x => Uri.UnescapeDataString(segments[x.i])).ToArray();
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, stopping);
        var call = CallOf(ctx, route.GrpcMethod, cancel.Token);
        try
        {
            await route.Handle(ctx, args, call);
        }
        catch (RpcException e) when (!ctx.Response.HasStarted)
        {
            await Error(ctx, HttpStatusOf(e.StatusCode), e.StatusCode, e.Status.Detail);
        }
        catch (InvalidProtocolBufferException e) when (!ctx.Response.HasStarted)
        {
            // JsonParser's message names the field: "Unknown field: foo", "Invalid enum value: …".
            await Error(ctx, StatusCodes.Status400BadRequest, StatusCode.InvalidArgument, e.Message);
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            // The client went away, or the service is stopping: nothing left to say to either.
        }
    }

    private static bool Matches(Route r, string[] segments) =>
        r.Segments.Length == segments.Length
        && r.Segments.Zip(segments).All(p => p.First == "*" ? p.Second.Length > 0 : p.First == p.Second);

    /// <summary>The gRPC status mapped as google.rpc (and JsonTranscoding) map it to HTTP.</summary>
    public static int HttpStatusOf(StatusCode code) => code switch
    {
        StatusCode.OK => StatusCodes.Status200OK,
        StatusCode.InvalidArgument or StatusCode.FailedPrecondition or StatusCode.OutOfRange => StatusCodes.Status400BadRequest,
        StatusCode.Unauthenticated => StatusCodes.Status401Unauthorized,
        StatusCode.PermissionDenied => StatusCodes.Status403Forbidden,
        StatusCode.NotFound => StatusCodes.Status404NotFound,
        StatusCode.AlreadyExists or StatusCode.Aborted => StatusCodes.Status409Conflict,
        StatusCode.ResourceExhausted => StatusCodes.Status429TooManyRequests,
        StatusCode.Cancelled => 499,
        StatusCode.Unimplemented => StatusCodes.Status501NotImplemented,
        StatusCode.Unavailable => StatusCodes.Status503ServiceUnavailable,
        StatusCode.DeadlineExceeded => StatusCodes.Status504GatewayTimeout,
        _ => StatusCodes.Status500InternalServerError,
    };

    /// <summary>{"code": 5, "status": "NOT_FOUND", "message": "…"}: the gRPC status, as a JSON body.</summary>
    private static Task Error(HttpContext ctx, int http, StatusCode code, string message)
    {
        ctx.Response.StatusCode = http;
        ctx.Response.ContentType = "application/json";
        // Until the caches sync: a client may retry soon.
        if (http == StatusCodes.Status503ServiceUnavailable) ctx.Response.Headers.RetryAfter = "1";
        using var buffer = new MemoryStream();
        using (var w = new System.Text.Json.Utf8JsonWriter(buffer, Relaxed))
        {
            w.WriteStartObject();
            w.WriteNumber("code", (int)code);
            w.WriteString("status", GrpcCalls.StatusName(code));
            w.WriteString("message", message);
            w.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        return ctx.Response.Body.WriteAsync(buffer.ToArray(), ctx.RequestAborted).AsTask();
    }

    /// <summary>
    /// A request message from the query string, as JsonTranscoding reads one: each parameter names a
    /// field (snake_case or lowerCamelCase) and holds its value in JSON text; an unknown name is a 400.
    /// </summary>
    private static T Query<T>(HttpContext ctx, T? into = null) where T : class, IMessage<T>, new()
    {
        var message = into ?? new T();
        var descriptor = message.Descriptor;
        foreach (var (name, values) in ctx.Request.Query)
        {
            var field = descriptor.FindFieldByName(name) ?? descriptor.Fields.InFieldNumberOrder().FirstOrDefault(f => f.JsonName == name)
                ?? throw new RpcException(new Status(StatusCode.InvalidArgument, $"unknown query parameter \"{name}\" (fields: {string.Join(", ", descriptor.Fields.InFieldNumberOrder().Select(f => f.Name))})"));
            if (field.IsRepeated || field.IsMap || field.FieldType == Google.Protobuf.Reflection.FieldType.Message)
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"query parameter \"{name}\" cannot be given in a query string"));
            var value = values.ToString();
            var json = field.FieldType switch
            {
                Google.Protobuf.Reflection.FieldType.String => JsonString(value),
                Google.Protobuf.Reflection.FieldType.Enum => JsonString(EnumValue(field, value)),
                _ => value,
            };
            try
            {
                var one = Parser.Parse<T>($"{{{JsonString(field.JsonName)}:{json}}}");
                message.MergeFrom(one);
            }
            catch (InvalidProtocolBufferException e)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"query parameter \"{name}\": \"{value}\" is not valid ({e.Message})"));
            }
            catch (InvalidJsonException)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"query parameter \"{name}\": \"{value}\" is not a valid {field.FieldType.ToString().ToLowerInvariant()}"));
            }
        }
        return message;
    }

    /// <summary>An enum value by its proto name, its short form (provision, delete_empty) or its number.</summary>
    private static string EnumValue(Google.Protobuf.Reflection.FieldDescriptor field, string value)
    {
        var values = field.EnumType.Values;
        if (int.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var number))
            return values.FirstOrDefault(v => v.Number == number)?.Name ?? value;
        var prefix = string.Concat(field.EnumType.Name.Select((c, i) => char.IsUpper(c) && i > 0 ? "_" + c : c.ToString())).ToUpperInvariant() + "_";
        var upper = value.Replace('-', '_').ToUpperInvariant();
        return values.FirstOrDefault(v => v.Name == upper || v.Name == prefix + upper)?.Name ?? value;
    }

    private static string JsonString(string s)
    {
        using var buffer = new MemoryStream();
        using (var w = new System.Text.Json.Utf8JsonWriter(buffer, Relaxed)) w.WriteStringValue(s);
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    private static async Task<T> Body<T>(HttpContext ctx) where T : IMessage<T>, new()
    {
        if (ctx.Request.ContentLength > MaxRequestBytes)
            throw new RpcException(new Status(StatusCode.ResourceExhausted, $"the request body is larger than {MaxRequestBytes} bytes"));
        var bytes = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int n;
        while ((n = await ctx.Request.Body.ReadAsync(chunk, ctx.RequestAborted)) > 0)
        {
            if (bytes.Length + n > MaxRequestBytes)
                throw new RpcException(new Status(StatusCode.ResourceExhausted, $"the request body is larger than {MaxRequestBytes} bytes"));
            bytes.Write(chunk, 0, n);
        }
        if (bytes.Length == 0) return new T();
        try
        {
            return Parser.Parse<T>(Encoding.UTF8.GetString(bytes.GetBuffer(), 0, (int)bytes.Length));
        }
        catch (InvalidJsonException e)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"the body is not valid JSON: {e.Message}"));
        }
    }

    /// <summary>
    /// The message as JSON, gzip when the client takes it, with an ETag: the web view polls with
    /// If-None-Match, and an unchanged answer (a quiet cluster) costs a 304, not the node map again.
    /// </summary>
    private static async Task Reply(HttpContext ctx, IMessage message)
    {
        var body = Encoding.UTF8.GetBytes(Formatter.Format(message) + "\n");
        var etag = $"\"{XxHash3.HashToUInt64(body):x16}\"";
        ctx.Response.Headers.ETag = etag;
        ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Response.Headers.Vary = "Accept-Encoding";
        if (ctx.Request.Headers.IfNoneMatch.ToString() == etag)
        {
            ctx.Response.StatusCode = StatusCodes.Status304NotModified;
            return;
        }
        ctx.Response.ContentType = "application/json";
        await StaticContent.WriteAsync(ctx, body);
    }

    /// <summary>WatchRecommendations as server-sent events: one `data:` line of JSON per event.</summary>
    private async Task WatchAsync(HttpContext ctx, V1.WatchRecommendationsRequest request, ServerCallContext call)
    {
        var writer = new EventStreamWriter(ctx);
        await api.WatchRecommendations(request, writer, call);
    }

    private sealed class EventStreamWriter(HttpContext ctx) : IServerStreamWriter<V1.RecommendationEvent>
    {
        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(V1.RecommendationEvent message) => WriteAsync(message, ctx.RequestAborted);

        public async Task WriteAsync(V1.RecommendationEvent message, CancellationToken cancellationToken)
        {
            if (!ctx.Response.HasStarted)
            {
                ctx.Response.ContentType = "text/event-stream";
                ctx.Response.Headers.CacheControl = "no-cache";
            }
            // The compact form: each event is one line, and `data:` lines cannot hold a line break.
            await ctx.Response.WriteAsync("data: " + JsonFormatter.Default.Format(message) + "\n\n", cancellationToken);
            await ctx.Response.Body.FlushAsync(cancellationToken);
        }
    }

    /// <summary>The call context the service methods see: the HTTP request's headers (authorization) and cancellation.</summary>
    private static LocalCallContext CallOf(HttpContext ctx, string method, CancellationToken token)
    {
        var headers = new Metadata();
        if (ctx.Request.Headers.Authorization.ToString() is { Length: > 0 } auth) headers.Add("authorization", auth);
        return new LocalCallContext(method, ctx.Request.Host.Value ?? "", ctx.Connection.RemoteIpAddress?.ToString() ?? "", headers, DateTime.MaxValue, token);
    }
}

/// <summary>Writes a body, gzip when the client accepts it and the body is worth compressing.</summary>
public static class StaticContent
{
    public static async Task WriteAsync(HttpContext ctx, byte[] body)
    {
        if (body.Length > 1024 && ctx.Request.Headers.AcceptEncoding.ToString().Contains("gzip", StringComparison.OrdinalIgnoreCase))
        {
            ctx.Response.Headers.ContentEncoding = "gzip";
            using var buffer = new MemoryStream(body.Length / 4);
            using (var gzip = new GZipStream(buffer, CompressionLevel.Fastest, leaveOpen: true)) gzip.Write(body);
            ctx.Response.ContentLength = buffer.Length;
            await ctx.Response.Body.WriteAsync(buffer.GetBuffer().AsMemory(0, (int)buffer.Length), ctx.RequestAborted);
            return;
        }
        ctx.Response.ContentLength = body.Length;
        await ctx.Response.Body.WriteAsync(body, ctx.RequestAborted);
    }
}
