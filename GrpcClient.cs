using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Text;
using Google.Protobuf;
using Pb = Karpetrack.Api.V1;

namespace Karpetrack;

/// <summary>
/// Our own small gRPC client over HttpClient (h2c, or h2 for https://): unary and server-streaming
/// calls, statuses from trailers or Trailers-Only headers, raised as <see cref="GrpcException"/>.
/// Request metadata (e.g. "authorization") goes out as HTTP/2 headers, as gRPC defines it.
/// </summary>
public sealed class GrpcClient : IDisposable
{
    private readonly HttpClient http;
    private readonly Uri baseUri;

    public GrpcClient(string server, HttpMessageHandler? handler = null)
    {
        baseUri = server.Contains("://", StringComparison.Ordinal) ? new Uri(server) : new Uri("http://" + server);
        http = new HttpClient(handler ?? new SocketsHttpHandler { EnableMultipleHttp2Connections = true }) { Timeout = Timeout.InfiniteTimeSpan };
    }

    public Uri BaseUri => baseUri;

    public async Task<TResp> UnaryAsync<TResp>(string path, IMessage request, MessageParser<TResp> parser, TimeSpan? deadline = null,
        IReadOnlyList<KeyValuePair<string, string>>? metadata = null, CancellationToken ct = default)
        where TResp : class, IMessage<TResp>
    {
        TResp? result = null;
        await foreach (var m in StreamAsync(path, request, parser, deadline, metadata, ct))
        {
            if (result is not null) throw new GrpcException(GrpcStatus.Internal, "more than one response message in a unary call");
            result = m;
        }
        return result ?? throw new GrpcException(GrpcStatus.Internal, "no response message in a unary call");
    }

    public async IAsyncEnumerable<TResp> StreamAsync<TResp>(string path, IMessage request, MessageParser<TResp> parser, TimeSpan? deadline = null,
        IReadOnlyList<KeyValuePair<string, string>>? metadata = null,
        [EnumeratorCancellation] CancellationToken ct = default) where TResp : class, IMessage<TResp>
    {
        // Checked before anything is sent: a bad key is the caller's bug, not a call that failed.
        if (metadata is not null) foreach (var (key, value) in metadata) CheckMetadata(key, value);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        if (deadline is { } d) timeout.CancelAfter(d);
        // A hand-built request ignores HttpClient's default version: set it on each message.
        using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(baseUri, path.TrimStart('/')))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(GrpcWire.Frame(request, gzip: false)),
        };
        message.Content.Headers.ContentType = new MediaTypeHeaderValue(GrpcWire.ContentType);
        message.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        message.Headers.TryAddWithoutValidation("grpc-accept-encoding", GrpcWire.AcceptEncoding);
        message.Headers.UserAgent.Add(new ProductInfoHeaderValue("karpetrack-grpc", BuildInfo.Version));
        if (deadline is { } dl) message.Headers.TryAddWithoutValidation("grpc-timeout", GrpcWire.FormatTimeout(dl));
        if (metadata is not null) foreach (var (key, value) in metadata) message.Headers.TryAddWithoutValidation(key, value);

        HttpResponseMessage response;
        try
        {
            response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new GrpcException(GrpcStatus.DeadlineExceeded, "deadline exceeded");
        }
        catch (HttpRequestException e)
        {
            throw new GrpcException(GrpcStatus.Unavailable, $"cannot reach {baseUri}: {e.Message}");
        }
        using (response)
        {
            if (response.StatusCode != HttpStatusCode.OK) throw new GrpcException(FromHttp(response.StatusCode), $"HTTP status {(int)response.StatusCode}");
            // Trailers-Only: the status is in the headers and there is no body.
            if (StatusOf(response.Headers) is { } early)
            {
                if (early.Status != GrpcStatus.Ok) throw early;
                yield break;
            }
            var encoding = response.Headers.TryGetValues("grpc-encoding", out var enc) ? enc.FirstOrDefault() : null;
            var stream = await response.Content.ReadAsStreamAsync(timeout.Token);
            var reader = PipeReader.Create(stream);
            while (true)
            {
                byte[]? frame;
                try
                {
                    frame = await GrpcWire.ReadFrameAsync(reader, encoding, int.MaxValue, timeout.Token);
                }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                {
                    throw new GrpcException(GrpcStatus.DeadlineExceeded, "deadline exceeded");
                }
                catch (Exception e) when (e is IOException or HttpRequestException)
                {
                    throw new GrpcException(GrpcStatus.Unavailable, "stream broken: " + e.Message);
                }
                if (frame is null) break;
                yield return parser.ParseFrom(frame);
            }
            var status = StatusOf(response.TrailingHeaders) ?? new GrpcException(GrpcStatus.Unknown, "no grpc-status in the trailers");
            if (status.Status != GrpcStatus.Ok) throw status;
        }
    }

    /// <summary>
    /// gRPC's rules for custom metadata: lowercase keys of [0-9a-z_.-], none of the names the protocol
    /// itself uses, printable ASCII values. Binary ("-bin") values would need base64 and are not needed yet.
    /// </summary>
    private static void CheckMetadata(string key, string value)
    {
        if (key.Length == 0 || !key.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-' or '_' or '.'))
            throw new ArgumentException($"metadata key \"{key}\" is not lowercase [0-9a-z_.-]", nameof(key));
        if (key.StartsWith("grpc-", StringComparison.Ordinal) || key is "content-type" or "te" or "user-agent" || key.EndsWith("-bin", StringComparison.Ordinal))
            throw new ArgumentException($"metadata key \"{key}\" is reserved or binary", nameof(key));
        if (!value.All(c => c is >= ' ' and <= '~'))
            throw new ArgumentException($"the value of metadata \"{key}\" is not printable ASCII", nameof(value));
    }

    private static GrpcException? StatusOf(HttpHeaders headers)
    {
        if (!headers.TryGetValues("grpc-status", out var values)) return null;
        var text = values.FirstOrDefault() ?? "";
        var message = headers.TryGetValues("grpc-message", out var m) ? GrpcWire.DecodeMessage(m.FirstOrDefault() ?? "") : "";
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var code)
            ? new GrpcException((GrpcStatus)code, message)
            : new GrpcException(GrpcStatus.Unknown, $"unparsable grpc-status \"{text}\"");
    }

    /// <summary>The client-side mapping for answers without grpc-status.</summary>
    private static GrpcStatus FromHttp(HttpStatusCode code) => (int)code switch
    {
        400 => GrpcStatus.Internal, 401 => GrpcStatus.Unauthenticated, 403 => GrpcStatus.PermissionDenied, 404 => GrpcStatus.Unimplemented,
        429 or 502 or 503 or 504 => GrpcStatus.Unavailable, 431 => GrpcStatus.Internal, _ => GrpcStatus.Unknown,
    };

    public void Dispose() => http.Dispose();
}

/// <summary>`karpetrack recommendations …`, `karpetrack explain NODE …` and `karpetrack approve ID …`: the API from a terminal.</summary>
public static class GrpcCli
{
    public const string DefaultServer = "127.0.0.1:9102";
    public const string TokenVariable = "KARPETRACK_APPROVE_TOKEN";
    private const string Service = "/" + KarpetrackApi.ServiceName + "/";

    public static bool IsCommand(string arg) => arg is "recommendations" or "explain" or "approve";

    /// <summary>Node is the NODE of explain; Id the recommendation of approve.</summary>
    private sealed record CliArgs(string Command, string? Node, string? Id, string? TokenFile, string Server, bool Watch, bool Json,
        Pb.RecommendationType Type, string Filter, double MinSavings);

    public static string Usage =>
        $"""
        Usage: karpetrack recommendations [--server host:port] [--watch] [--json] [--type T] [--node NODE] [--min-savings DOLLARS_PER_HOUR]
               karpetrack explain NODE [--server host:port] [--json]
               karpetrack approve ID [--server host:port] [--token-file FILE] [--json]
        --server defaults to $KARPETRACK_SERVER, else 127.0.0.1:9102; an https:// URL uses TLS.
        --type is provision, replace, consolidate or delete_empty.
        approve sends the bearer token of --token-file, else of ${TokenVariable}.

        """;

    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken ct = default)
    {
        CliArgs a;
        try { a = Parse(args); }
        catch (OptionsException e)
        {
            error.WriteLine($"karpetrack: {e.Message}");
            error.Write(Usage);
            return 2;
        }
        string? token = null;
        if (a.Command == "approve")
        {
            try { token = ApproveToken(a.TokenFile); }
            catch (OptionsException e)
            {
                // One line, no usage: the command was right, the credentials are missing.
                error.WriteLine($"karpetrack: {e.Message}");
                return 2;
            }
        }
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
        Console.CancelKeyPress += onCancel;
        using var client = new GrpcClient(a.Server);
        try
        {
            if (a.Command == "approve")
            {
                var metadata = new[] { KeyValuePair.Create("authorization", "Bearer " + token) };
                var approved = await client.UnaryAsync(Service + "ApproveRecommendation", new Pb.ApproveRecommendationRequest { Id = a.Id }, Pb.ApproveRecommendationResponse.Parser,
                    TimeSpan.FromSeconds(30), metadata, cts.Token);
                output.Write(a.Json ? JsonFormatter.Default.Format(approved) + "\n" : $"{approved.Id}: {approved.ActuationState}\n");
                return 0;
            }
            if (a.Command == "explain")
            {
                var e = await client.UnaryAsync(Service + "ExplainNode", new Pb.ExplainNodeRequest { Node = a.Node }, Pb.NodeExplanation.Parser, TimeSpan.FromSeconds(30), ct: cts.Token);
                output.Write(a.Json ? JsonFormatter.Default.Format(e) + "\n" : FormatExplanation(e));
                return 0;
            }
            if (!a.Watch)
            {
                var request = new Pb.ListRecommendationsRequest { Type = a.Type, Node = a.Filter, MinSavingsPerHour = a.MinSavings };
                var list = await client.UnaryAsync(Service + "ListRecommendations", request, Pb.ListRecommendationsResponse.Parser, TimeSpan.FromSeconds(30), ct: cts.Token);
                output.Write(a.Json ? JsonFormatter.Default.Format(list) + "\n" : FormatTable(list.Recommendations));
                return 0;
            }
            var watch = new Pb.WatchRecommendationsRequest { Type = a.Type, Node = a.Filter, MinSavingsPerHour = a.MinSavings };
            var initial = new List<Pb.Recommendation>();
            bool synced = false;
            await foreach (var ev in client.StreamAsync(Service + "WatchRecommendations", watch, Pb.RecommendationEvent.Parser, ct: cts.Token))
            {
                if (a.Json) { output.WriteLine(JsonFormatter.Default.Format(ev)); output.Flush(); continue; }
                if (!synced)
                {
                    if (ev.Kind == Pb.RecommendationEvent.Types.Kind.Added) { initial.Add(ev.Recommendation); continue; }
                    if (ev.Kind == Pb.RecommendationEvent.Types.Kind.Synced) { synced = true; output.Write(FormatTable(initial)); output.Flush(); continue; }
                }
                if (ev.Kind == Pb.RecommendationEvent.Types.Kind.Heartbeat) continue;
                var r = ev.Recommendation;
                output.WriteLine($"{ev.At.ToDateTime():HH:mm:ss} {ev.Kind.ToString().ToUpperInvariant(),-8} {TypeName(r.Type),-12} {r.Id} {Savings(r)} {string.Join(",", r.Nodes)}");
                output.Flush();
            }
            return 0;
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            return 0;
        }
        catch (GrpcException e)
        {
            error.WriteLine($"karpetrack: {Collector.GrpcStatusName(e.Status)}: {e.Message}");
            return 1;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    private static CliArgs Parse(string[] args)
    {
        var command = args[0];
        string? node = null, id = null, tokenFile = null, server = null, filter = "";
        bool watch = false, json = false;
        var type = Pb.RecommendationType.Unspecified;
        double minSavings = 0;
        for (int i = 1; i < args.Length; i++)
        {
            var arg = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new OptionsException($"{arg} needs a value");
            switch (arg)
            {
                case "--server": server = Value(); break;
                case "--json": json = true; break;
                case "--token-file" when command == "approve": tokenFile = Value(); break;
                case "--watch" when command == "recommendations": watch = true; break;
                case "--node" when command == "recommendations": filter = Value(); break;
                case "--type" when command == "recommendations":
                    var t = Value();
                    type = t switch
                    {
                        "provision" => Pb.RecommendationType.Provision, "replace" => Pb.RecommendationType.Replace,
                        "consolidate" => Pb.RecommendationType.Consolidate, "delete_empty" or "delete-empty" => Pb.RecommendationType.DeleteEmpty,
                        _ => throw new OptionsException($"--type: \"{t}\" is not provision, replace, consolidate or delete_empty"),
                    };
                    break;
                case "--min-savings" when command == "recommendations":
                    var s = Value();
                    if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out minSavings))
                        throw new OptionsException($"--min-savings: \"{s}\" is not a number");
                    break;
                case "--help" or "-h": throw new OptionsException("usage");
                default:
                    if (command == "explain" && node is null && !arg.StartsWith("--", StringComparison.Ordinal)) { node = arg; break; }
                    if (command == "approve" && id is null && !arg.StartsWith("--", StringComparison.Ordinal)) { id = arg; break; }
                    throw new OptionsException($"unexpected argument \"{arg}\"");
            }
        }
        if (command == "explain" && node is null) throw new OptionsException("explain needs a NODE");
        if (command == "approve" && id is null) throw new OptionsException("approve needs a recommendation ID (see karpetrack recommendations)");
        server ??= Environment.GetEnvironmentVariable("KARPETRACK_SERVER") is { Length: > 0 } env ? env : DefaultServer;
        return new CliArgs(command, node, id, tokenFile, server, watch, json, type, filter, minSavings);
    }

    /// <summary>
    /// The approval token: the file wins over the environment, trimmed as the server trims its own
    /// copy (a Secret file usually ends with a newline). Never echoed, not even in errors.
    /// </summary>
    private static string ApproveToken(string? tokenFile)
    {
        string token;
        if (tokenFile is not null)
        {
            try { token = File.ReadAllText(tokenFile).Trim(); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new OptionsException($"--token-file: cannot read {tokenFile}: {e.Message}");
            }
            if (token.Length == 0) throw new OptionsException($"--token-file: {tokenFile} is empty");
        }
        else
        {
            token = Environment.GetEnvironmentVariable(TokenVariable)?.Trim() ?? "";
            if (token.Length == 0) throw new OptionsException($"approve needs the approval token: pass --token-file FILE or set {TokenVariable}");
        }
        // A header value cannot carry control characters (a token with a line break would split the header).
        if (!token.All(c => c is >= ' ' and <= '~')) throw new OptionsException("the approval token holds characters a header cannot carry (printable ASCII only)");
        return token;
    }

    private static string TypeName(Pb.RecommendationType t) => t switch
    {
        Pb.RecommendationType.Provision => "provision", Pb.RecommendationType.Replace => "replace",
        Pb.RecommendationType.Consolidate => "consolidate", Pb.RecommendationType.DeleteEmpty => "delete_empty", _ => "?",
    };

    private static string Savings(Pb.Recommendation r) => r.SavingsPerHour.ToString("0.####", CultureInfo.InvariantCulture) + " $/h";

    public static string FormatTable(IEnumerable<Pb.Recommendation> recs)
    {
        var rows = new List<string[]> { new[] { "TYPE", "ID", "NODES", "NEW NODES", "SAVINGS $/H", "$/MONTH", "EVICTED", "WHY" } };
        foreach (var r in recs)
        {
            rows.Add([
                TypeName(r.Type), r.Id, r.Nodes.Count == 0 ? "-" : string.Join(",", r.Nodes),
                r.NewNodes.Count == 0 ? "-" : string.Join(",", r.NewNodes.Select(n => $"{n.Count}x{n.ServerClass}")),
                r.SavingsPerHour.ToString("0.####", CultureInfo.InvariantCulture), r.SavingsPerMonth.ToString("0.##", CultureInfo.InvariantCulture),
                r.PodsEvicted.ToString(CultureInfo.InvariantCulture), r.Reasons.FirstOrDefault() ?? "",
            ]);
        }
        if (rows.Count == 1) return "no recommendations\n";
        var widths = Enumerable.Range(0, rows[0].Length - 1).Select(c => rows.Max(r => r[c].Length)).ToArray();
        var sb = new StringBuilder();
        foreach (var row in rows)
        {
            for (int c = 0; c < row.Length - 1; c++) sb.Append(row[c].PadRight(widths[c] + 2));
            sb.Append(row[^1]).Append('\n');
        }
        return sb.ToString();
    }

    public static string FormatExplanation(Pb.NodeExplanation e)
    {
        var sb = new StringBuilder();
        sb.Append($"node:        {e.Node}\n");
        sb.Append($"class:       {(e.ServerClass.Length > 0 ? e.ServerClass : "-")} ({e.CapacityType}, pool {e.Pool}, region {e.Region})\n");
        sb.Append($"state:       {e.State}, {e.Pods} pods\n");
        sb.Append(e.Priced
            ? $"price:       {e.PricePerHour.ToString("0.####", CultureInfo.InvariantCulture)} $/h (idle {e.IdleCostPerHour.ToString("0.####", CultureInfo.InvariantCulture)} $/h)\n"
            : "price:       unpriced\n");
        foreach (var r in e.Resources)
            sb.Append($"{r.Resource + ":",-13}{r.Allocated.ToString("0.###", CultureInfo.InvariantCulture)} of {r.Allocatable.ToString("0.###", CultureInfo.InvariantCulture)} allocated ({r.Utilization * 100:0.#} %)\n");
        sb.Append($"removable:   {(e.Removable ? "yes" : "no")}\n");
        sb.Append($"replaceable: {(e.Replaceable ? "yes" : "no")}\n");
        if (e.RecommendationIds.Count > 0) sb.Append($"recommended: {string.Join(", ", e.RecommendationIds)}\n");
        foreach (var b in e.Blockers)
        {
            sb.Append($"blocker:     {b.Reason}\n");
            foreach (var p in b.Pods) sb.Append($"               pod {p}\n");
            foreach (var p in b.Pdbs) sb.Append($"               pdb {p}\n");
        }
        foreach (var r in e.Reasons) sb.Append($"why:         {r}\n");
        return sb.ToString();
    }
}
