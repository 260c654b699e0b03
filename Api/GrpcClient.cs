using System.Globalization;
using System.Text;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack;

/// <summary>`karpetrack recommendations …`, `karpetrack explain NODE …` and `karpetrack approve ID …`: the API from a terminal.</summary>
public static class GrpcCli
{
    public const string DefaultServer = "127.0.0.1:9102";
    public const string TokenVariable = "KARPETRACK_APPROVE_TOKEN";

    public static bool IsCommand(string arg) => arg is "recommendations" or "explain" or "approve" or "nodes" or "report";

    /// <summary>Node is the NODE of explain; Id the recommendation of approve.</summary>
    private sealed record CliArgs(string Command, string? Node, string? Id, string? TokenFile, string Server, bool Watch, CliOutput Output,
        V1.RecommendationType Type, string Filter, double MinSavings)
    {
        public bool Json => Output == CliOutput.Json;
    }

    public static string Usage =>
        $"""
        Usage: karpetrack recommendations [--server host:port] [--watch] [--output table|wide|json] [--type T] [--node NODE] [--min-savings DOLLARS_PER_HOUR]
               karpetrack explain NODE [--server host:port] [--output table|wide|json]
               karpetrack approve ID [--server host:port] [--token-file FILE] [--output table|wide|json]
               karpetrack nodes [--server host:port] [--watch] [--sort KEY] [--output table|wide|json]
               karpetrack report [--kubeconfig FILE] [--context NAME] [--top N] [--output table|wide|json] [service flags]
        --server defaults to $KARPETRACK_SERVER, else 127.0.0.1:9102; an https:// URL uses TLS. --json is --output json.
        --type is provision, replace, consolidate or delete_empty.
        approve sends the bearer token of --token-file, else of ${TokenVariable}.

        """;

    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken ct = default)
    {
        if (args[0] == "nodes") return await WithCtrlC(c => NodesCommand.RunAsync(args, output, error, c), ct);
        if (args[0] == "report") return await WithCtrlC(c => ReportCommand.RunAsync(args, output, error, c), ct);
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
            if (CleartextWarning(a.Server) is { } warning) error.WriteLine(warning);
        }
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
        Console.CancelKeyPress += onCancel;
        using var channel = Channel(a.Server);
        var client = new V1.Karpetrack.KarpetrackClient(channel);
        try
        {
            if (a.Command == "approve")
            {
                var metadata = new Metadata { { "authorization", "Bearer " + token } };
                var approved = await client.ApproveRecommendationAsync(new V1.ApproveRecommendationRequest { Id = a.Id }, metadata, Deadline(), cts.Token);
                output.Write(a.Json ? JsonFormatter.Default.Format(approved) + "\n" : $"{approved.Id}: {approved.ActuationState}\n");
                return 0;
            }
            if (a.Command == "explain")
            {
                var e = await client.ExplainNodeAsync(new V1.ExplainNodeRequest { Node = a.Node }, deadline: Deadline(), cancellationToken: cts.Token);
                output.Write(a.Json ? JsonFormatter.Default.Format(e) + "\n" : FormatExplanation(e));
                return 0;
            }
            if (!a.Watch)
            {
                var request = new V1.ListRecommendationsRequest { Type = a.Type, Node = a.Filter, MinSavingsPerHour = a.MinSavings };
                var list = await client.ListRecommendationsAsync(request, deadline: Deadline(), cancellationToken: cts.Token);
                output.Write(a.Json ? JsonFormatter.Default.Format(list) + "\n" : FormatTable(list.Recommendations, a.Output == CliOutput.Wide));
                return 0;
            }
            var watch = new V1.WatchRecommendationsRequest { Type = a.Type, Node = a.Filter, MinSavingsPerHour = a.MinSavings };
            var initial = new List<V1.Recommendation>();
            bool synced = false;
            using var call = client.WatchRecommendations(watch, cancellationToken: cts.Token);
            await foreach (var ev in call.ResponseStream.ReadAllAsync(cts.Token))
            {
                if (a.Json) { output.WriteLine(JsonFormatter.Default.Format(ev)); output.Flush(); continue; }
                if (!synced)
                {
                    if (ev.Kind == V1.RecommendationEvent.Types.Kind.Added) { initial.Add(ev.Recommendation); continue; }
                    if (ev.Kind == V1.RecommendationEvent.Types.Kind.Synced) { synced = true; output.Write(FormatTable(initial, a.Output == CliOutput.Wide)); output.Flush(); continue; }
                }
                if (ev.Kind == V1.RecommendationEvent.Types.Kind.Heartbeat) continue;
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
        catch (RpcException e)
        {
            // One line: the library's detail for a failed connection can carry the inner exceptions' text.
            error.WriteLine(ErrorLine(e, a.Server));
            return 1;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>One line for a failed call: the status and its detail, and for a server not reached, which one.</summary>
    public static string ErrorLine(RpcException e, string server)
    {
        // The library's detail for a failed connection can carry the inner exceptions' text: one line of it.
        var detail = e.Status.Detail.ReplaceLineEndings(" ");
        return e.StatusCode == StatusCode.Unavailable && e.Status.DebugException is not null
            ? $"karpetrack: cannot reach {server}: {GrpcCalls.StatusName(e.StatusCode)}: {detail} ({e.Status.DebugException.Message.ReplaceLineEndings(" ")})"
            : $"karpetrack: {GrpcCalls.StatusName(e.StatusCode)}: {detail}";
    }

    /// <summary>Ctrl-C ends a watch as a normal exit (0), not as an error.</summary>
    private static async Task<int> WithCtrlC(Func<CancellationToken, Task<int>> run, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
        Console.CancelKeyPress += onCancel;
        try { return await run(cts.Token); }
        finally { Console.CancelKeyPress -= onCancel; }
    }

    /// <summary>--server as given, else $KARPETRACK_SERVER, else the default; a usage error unless host:port or an http(s) URL.</summary>
    public static string ServerOrDefault(string? server)
    {
        server ??= Environment.GetEnvironmentVariable("KARPETRACK_SERVER") is { Length: > 0 } env ? env : DefaultServer;
        if (Address(server) is null) throw new OptionsException($"--server: \"{server}\" is not host:port, http://host:port or https://host:port");
        return server;
    }

    private static Uri? Address(string server) =>
        Uri.TryCreate(server.Contains("://", StringComparison.Ordinal) ? server : "http://" + server, UriKind.Absolute, out var uri)
        && uri.Scheme is "http" or "https" && uri.Host.Length > 0 ? uri : null;

    /// <summary>
    /// The warning approve prints before sending its bearer token over h2c to another machine (null for https://, or
    /// for loopback, e.g. through kubectl port-forward, whose tunnel is the API server's TLS).
    /// </summary>
    public static string? CleartextWarning(string server) => Address(server) is { Scheme: "http", IsLoopback: false } uri
        ? $"karpetrack: warning: the approval token goes to {uri.Authority} in cleartext; serve gRPC with --tls-cert and pass --server https://{uri.Authority}, or use kubectl port-forward"
        : null;

    private static DateTime Deadline() => DateTime.UtcNow.AddSeconds(30);

    /// <summary>A channel to a server given as host:port (h2c) or as a URL (https:// for TLS).</summary>
    public static GrpcChannel Channel(string server)
    {
        var address = Address(server) ?? throw new ArgumentException($"\"{server}\" is not host:port or an http(s) URL", nameof(server));
        return GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = true },
            DisposeHttpClient = true,
            // Our own server's answers: a large plan may pass the 4 MiB default.
            MaxReceiveMessageSize = null,
            // Ctrl-C ends a watch as a cancellation, not as a CANCELLED status to report.
            ThrowOperationCanceledOnCancellation = true,
        });
    }

    private static CliArgs Parse(string[] args)
    {
        var command = args[0];
        string? node = null, id = null, tokenFile = null, server = null, filter = "";
        bool watch = false;
        var output = CliOutput.Table;
        var type = V1.RecommendationType.Unspecified;
        double minSavings = 0;
        for (int i = 1; i < args.Length; i++)
        {
            var arg = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new OptionsException($"{arg} needs a value");
            switch (arg)
            {
                case "--server": server = Value(); break;
                case "--json": output = CliOutput.Json; break;
                case "--output" or "-o": output = CliFormat.ParseOutput(Value()); break;
                case "--token-file" when command == "approve": tokenFile = Value(); break;
                case "--watch" when command == "recommendations": watch = true; break;
                case "--node" when command == "recommendations": filter = Value(); break;
                case "--type" when command == "recommendations":
                    var t = Value();
                    type = t switch
                    {
                        "provision" => V1.RecommendationType.Provision, "replace" => V1.RecommendationType.Replace,
                        "consolidate" => V1.RecommendationType.Consolidate, "delete_empty" or "delete-empty" => V1.RecommendationType.DeleteEmpty,
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
        return new CliArgs(command, node, id, tokenFile, ServerOrDefault(server), watch, output, type, filter, minSavings);
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

    private static string TypeName(V1.RecommendationType t) => CliFormat.TypeName(t);

    private static string Savings(V1.Recommendation r) => CliFormat.PerHour(r.SavingsPerHour);

    /// <summary>The recommendations in aligned columns and human units; wide adds costs, bound, PDB headroom and actuation.</summary>
    public static string FormatTable(IEnumerable<V1.Recommendation> recs, bool wide = false)
    {
        var list = recs.ToList();
        if (list.Count == 0) return "no recommendations\n";
        var headers = new List<string> { "TYPE", "ID", "NODES", "NEW NODES", "SAVES $/H", "$/MONTH", "EVICTS" };
        if (wide) headers.AddRange(["NOW $/H", "AFTER $/H", "BOUND $/H", "PDB HEADROOM", "ACTUATION"]);
        headers.Add("WHY");
        var right = new HashSet<int> { 4, 5, 6 };
        if (wide) { right.Add(7); right.Add(8); right.Add(9); right.Add(10); }
        var rows = list.Select(r =>
        {
            var row = new List<string>
            {
                TypeName(r.Type), r.Id, r.Nodes.Count == 0 ? $"{r.PendingPods.Count} pending pods" : string.Join(",", r.Nodes),
                r.NewNodes.Count == 0 ? "-" : string.Join(",", r.NewNodes.Select(n => $"{n.Count}x{n.ServerClass}")),
                CliFormat.Money(r.SavingsPerHour), CliFormat.Money(r.SavingsPerMonth), r.PodsEvicted.ToString(CultureInfo.InvariantCulture),
            };
            if (wide)
                row.AddRange([CliFormat.Money(r.CurrentCostPerHour), CliFormat.Money(r.NewCostPerHour), CliFormat.Money(r.LowerBoundPerHour),
                    r.PdbHeadroom < 0 ? "-" : r.PdbHeadroom.ToString(CultureInfo.InvariantCulture), r.ActuationState.Length > 0 ? r.ActuationState : "-"]);
            row.Add(r.Reasons.FirstOrDefault() ?? "");
            return (IReadOnlyList<string>)row;
        });
        return CliFormat.Table(headers, rows.ToList(), right);
    }

    public static string FormatExplanation(V1.NodeExplanation e)
    {
        var sb = new StringBuilder();
        sb.Append($"node:        {e.Node}\n");
        sb.Append($"class:       {(e.ServerClass.Length > 0 ? e.ServerClass : "-")} ({e.CapacityType}, pool {e.Pool}, region {e.Region})\n");
        sb.Append($"state:       {e.State}, {e.Pods} pods\n");
        sb.Append(e.Priced
            ? $"price:       {CliFormat.PerHour(e.PricePerHour)} ({CliFormat.PerMonth(e.PricePerHour)}), idle {CliFormat.PerHour(e.IdleCostPerHour)}\n"
            : "price:       unpriced\n");
        foreach (var r in e.Resources)
            sb.Append($"{r.Resource + ":",-13}{CliFormat.Bar(r.Utilization)}{CliFormat.Usage(r)} allocated\n");
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
