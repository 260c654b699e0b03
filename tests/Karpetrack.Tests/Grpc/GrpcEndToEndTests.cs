using System.Net;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Health.V1;
using Karpetrack.Tests.Simulation;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Tests.Grpc;

/// <summary>
/// The real binary in demo mode, called by independent gRPC clients (Debian python3-grpcio,
/// npm grpc-js), by our own client, and by deliberately broken requests.
/// </summary>
public class GrpcEndToEndTests(DemoProcess demo) : IClassFixture<DemoProcess>
{
    private const string Svc = "/karpetrack.v1.Karpetrack/";
    private static string Protos => Path.Combine(RepoRoot.Path, "Protos");
    /// <summary>grpc's health and reflection protos, for the peers' stubs (the service has them from its packages).</summary>
    private static string PeerProtos => Path.Combine(RepoRoot.Path, "tests", "protos");

    private async Task<JsonNode> RunJson(string file, params string[] args)
    {
        var r = await SimHelpers.RunAsync(file, args, TimeSpan.FromSeconds(60));
        Assert.True(r.ExitCode == 0, $"{file} exited {r.ExitCode}: {r.Stderr}\n{r.Stdout}");
        return JsonNode.Parse(r.Stdout.Trim().Split('\n')[^1])!;
    }

    [Fact]
    public async Task PythonGrpcioCallsEveryMethod()
    {
        await WaitForPlan();
        var work = Directory.CreateTempSubdirectory("grpc-py-").FullName;
        var o = await RunJson("/usr/bin/python3", Path.Combine(RepoRoot.Path, "tests", "Karpetrack.Tests", "Grpc", "interop.py"), demo.GrpcAddress, Protos, PeerProtos, work);
        Assert.Equal("SERVING", (string?)o["health"]);
        Assert.Equal("NOT_FOUND", (string?)o["health_unknown"]![0]);
        Assert.True((int)o["summary_nodes"]! > 0);
        Assert.True((double)o["summary_cost"]! > 0);
        Assert.True((long)o["summary_price_book_fetched"]! > 0);
        // The cost outlook, set once the plan exists: the bound never above the cost after the recommendations.
        Assert.True((bool)o["summary_plan_ready"]!);
        Assert.InRange((double)o["summary_lower_bound"]!, 1e-9, (double)o["summary_after"]!);
        int count = (int)o["recommendations"]!;
        Assert.True(count > 0);
        // The same call gzip-compressed decodes too; the demo keeps churning, so the plan may have moved in between.
        Assert.True((int)o["gzip_recommendations"]! > 0);
        Assert.All(o["delete_empty_types"]!.AsArray(), t => Assert.Equal("RECOMMENDATION_TYPE_DELETE_EMPTY", (string?)t));
        Assert.NotNull(o["explain_node"]);
        Assert.True((bool)o["explain_removable_or_replaceable"]!);
        Assert.True((double)o["simulate_after"]! < (double)o["simulate_before"]!);
        // grpc-message percent-encoding: non-ASCII, '%', '/', '=' all arrive as they were.
        Assert.Equal(["NOT_FOUND", "node \"nœud 50%/x=y\" not found"], o["explain_unknown"]!.AsArray().Select(x => (string)x!));
        Assert.Equal("INVALID_ARGUMENT", (string?)o["explain_empty"]![0]);
        Assert.Equal("INVALID_ARGUMENT", (string?)o["simulate_bad_quantity"]![0]);
        Assert.Equal("UNIMPLEMENTED", (string?)o["unknown_method"]![0]);
        // The fixture runs --actuation dry-run: an approval is refused whatever the token.
        Assert.Equal(["FAILED_PRECONDITION", "approvals are only taken with --actuation approve"], o["approve_dry_run"]!.AsArray().Select(x => (string)x!));
        var kinds = o["watch_kinds"]!.AsArray().Select(x => (string)x!).ToList();
        Assert.Equal("KIND_SYNCED", kinds[^1]);
        Assert.All(kinds[..^1], k => Assert.Equal("KIND_ADDED", k));
        Assert.Equal("CANCELLED", (string?)o["watch_cancelled"]);
        Assert.Equal("DEADLINE_EXCEEDED", (string?)o["watch_deadline"]![0]);
        Assert.Contains("karpetrack.v1.Karpetrack", o["reflection_services"]!.AsArray().Select(x => (string)x!));
        Assert.Contains("grpc.reflection.v1alpha.ServerReflection", o["reflection_services"]!.AsArray().Select(x => (string)x!));
        Assert.Equal(["karpetrack/v1/karpetrack.proto", "google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"], o["reflection_symbol_files"]!.AsArray().Select(x => (string)x!));
        Assert.Equal(1, (int)o["reflection_timestamp_files"]!);
        Assert.Equal(5, (int)o["reflection_missing_code"]!);
    }

    [Fact]
    public async Task NodeGrpcJsCallsEveryMethod()
    {
        await WaitForPlan();
        var o = await RunJson("node", Path.Combine(RepoRoot.Path, "tests", "grpc-node", "interop.js"), demo.GrpcAddress, Protos, PeerProtos);
        Assert.Equal("SERVING", (string?)o["health"]);
        Assert.Equal("NOT_FOUND", (string?)o["health_unknown"]);
        Assert.True((int)o["summary_nodes"]! > 0);
        Assert.True((bool)o["summary_plan_ready"]!);
        Assert.True((double)o["summary_lower_bound"]! > 0);
        Assert.True((int)o["recommendations"]! > 0);
        Assert.True((int)o["gzip_recommendations"]! > 0);   // the demo keeps churning: the plan may have moved between the two calls
        Assert.NotNull(o["explain_node"]);
        Assert.True((double)o["simulate_after"]! < (double)o["simulate_before"]!);
        // grpc-js decodes with decodeURI: only an encoding exactly as the spec says survives it.
        Assert.Equal(["NOT_FOUND", "node \"nœud 50%/x=y\" not found"], o["explain_unknown"]!.AsArray().Select(x => (string)x!));
        Assert.Equal("INVALID_ARGUMENT", (string?)o["list_nan"]);
        Assert.Equal(["FAILED_PRECONDITION", "approvals are only taken with --actuation approve"], o["approve_dry_run"]!.AsArray().Select(x => (string)x!));
        var kinds = o["watch_kinds"]!.AsArray().Select(x => (string)x!).ToList();
        Assert.Equal(["KIND_SYNCED", "CANCELLED"], kinds[^2..]);
        Assert.Contains("karpetrack.v1.Karpetrack", o["reflection_services"]!.AsArray().Select(x => (string)x!));
    }

    [Fact]
    public async Task OwnClientAndSubcommandsAgreeWithTheApi()
    {
        await WaitForPlan();
        using var channel = GrpcCli.Channel(demo.GrpcAddress);
        var client = new V1.Karpetrack.KarpetrackClient(channel);
        var list = await client.ListRecommendationsAsync(new V1.ListRecommendationsRequest());
        Assert.NotEmpty(list.Recommendations);
        var node = list.Recommendations.First(r => r.Nodes.Count > 0).Nodes[0];
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.ExplainNodeAsync(new V1.ExplainNodeRequest { Node = "ghost" }));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);

        var table = await SimHelpers.RunAsync("dotnet", [DemoProcess.AppDll, "recommendations", "--server", demo.GrpcAddress], TimeSpan.FromSeconds(30));
        Assert.Equal(0, table.ExitCode);
        Assert.StartsWith("TYPE", table.Stdout);
        var json = await SimHelpers.RunAsync("dotnet", [DemoProcess.AppDll, "explain", node, "--server", demo.GrpcAddress, "--json"], TimeSpan.FromSeconds(30));
        Assert.Equal(0, json.ExitCode);
        Assert.Equal(node, (string?)JsonNode.Parse(json.Stdout)!["node"]);
        var missing = await SimHelpers.RunAsync("dotnet", [DemoProcess.AppDll, "explain", "ghost", "--server", demo.GrpcAddress], TimeSpan.FromSeconds(30));
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("NOT_FOUND", missing.Stderr);
    }

    [Fact]
    public async Task BrokenRequestsGetClearStatusesAndTheServerCarriesOn()
    {
        using var http = GrpcRaw.H2c();
        var url = demo.GrpcUrl;
        var empty = new V1.GetSummaryRequest().ToByteArray();

        var wrongType = await GrpcRaw.CallAsync(http, url, Svc + "GetSummary", GrpcRaw.Frame(0, empty), "application/json");
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, wrongType.Http);

        // A bad flag byte and an undecodable message: Grpc.AspNetCore ends them with UNKNOWN (its status for an
        // exception that is not an RpcException), where the spec and the old transport said INTERNAL.
        var badFlag = await GrpcRaw.CallAsync(http, url, Svc + "GetSummary", GrpcRaw.Frame(7, empty));
        Assert.Equal("2", badFlag.Status);
        var truncated = await GrpcRaw.CallAsync(http, url, Svc + "GetSummary", GrpcRaw.Frame(0, [1, 2, 3], length: 100));
        Assert.Equal("13", truncated.Status);
        var shortPrefix = await GrpcRaw.CallAsync(http, url, Svc + "GetSummary", [0, 0]);
        Assert.Equal("13", shortPrefix.Status);
        var noMessage = await GrpcRaw.CallAsync(http, url, Svc + "GetSummary", []);
        Assert.Equal("13", noMessage.Status);
        var twoMessages = await GrpcRaw.CallAsync(http, url, Svc + "GetSummary", [.. GrpcRaw.Frame(0, empty), .. GrpcRaw.Frame(0, empty)]);
        Assert.Equal("13", twoMessages.Status);
        var garbage = await GrpcRaw.CallAsync(http, url, Svc + "ExplainNode", GrpcRaw.Frame(0, [0xFF, 0xFF, 0xFF, 0xFF]));
        Assert.Equal("2", garbage.Status);
        var compressedWithoutEncoding = await GrpcRaw.CallAsync(http, url, Svc + "GetSummary", GrpcRaw.Frame(1, empty));
        Assert.Equal("13", compressedWithoutEncoding.Status);
        var unknownEncoding = await GrpcRaw.CallAsync(http, url, Svc + "GetSummary", GrpcRaw.Frame(1, empty), headers: ("grpc-encoding", "snappy"));
        Assert.Equal("12", unknownEncoding.Status);
        // A malformed grpc-timeout is ignored by Grpc.AspNetCore (the old transport answered INTERNAL).
        var badTimeout = await GrpcRaw.CallAsync(http, url, Svc + "GetSummary", GrpcRaw.Frame(0, empty), headers: ("grpc-timeout", "soon"));
        Assert.Equal("0", badTimeout.Status);
        // Simulate sets its own deadline from the caller's: a grpc-timeout of 11,000 years (past the ~49.7 days a timer
        // takes) is capped, not thrown; so is none at all.
        var nothing = new V1.SimulateRequest().ToByteArray();
        foreach (var timeout in new[] { "99999999H", "4294968S", "" })
        {
            var simulated = await GrpcRaw.CallAsync(http, url, Svc + "Simulate", GrpcRaw.Frame(0, nothing),
                headers: timeout.Length > 0 ? [("grpc-timeout", timeout)] : []);
            Assert.True(simulated.Status == "0", $"grpc-timeout {timeout}: status {simulated.Status}");
        }
        var badGzip = await GrpcRaw.CallAsync(http, url, Svc + "GetSummary", GrpcRaw.Frame(1, [1, 2, 3, 4]), headers: ("grpc-encoding", "gzip"));
        Assert.Equal("13", badGzip.Status);
        var unknownService = await GrpcRaw.CallAsync(http, url, "/nope.v1.Nope/Call", GrpcRaw.Frame(0, empty));
        Assert.Equal("12", unknownService.Status);

        // 5 MiB against the 4 MiB limit: refused from the prefix.
        var big = new V1.ExplainNodeRequest { Node = new string('x', 5 << 20) }.ToByteArray();
        var oversized = await GrpcRaw.CallAsync(http, url, Svc + "ExplainNode", GrpcRaw.Frame(0, big));
        Assert.Equal("8", oversized.Status);
        // And a small gzip frame that inflates past the limit (the library alone would inflate it whole).
        var bomb = await GrpcRaw.CallAsync(http, url, Svc + "ExplainNode", GrpcRaw.Frame(1, GrpcRaw.Gzip(big)), headers: ("grpc-encoding", "gzip"));
        Assert.Equal("8", bomb.Status);

        // The server is still there and answers normally.
        var ok = await GrpcRaw.CallAsync(http, url, Svc + "GetSummary", GrpcRaw.Frame(0, empty));
        Assert.Equal("0", ok.Status);
        Assert.False(demo.Exited);
        // A client's malformed messages are not the server's errors: no stack trace per call in the log.
        Assert.DoesNotContain("Unexpected compressed flag value", demo.Output);
        Assert.DoesNotContain("InvalidProtocolBufferException", demo.Output);
    }

    [Fact]
    public async Task ManyStreamsAndAbruptDisconnectsLeaveNoOpenCalls()
    {
        await WaitForPlan();
        var url = demo.GrpcUrl;
        var request = GrpcRaw.Frame(0, new V1.WatchRecommendationsRequest { HeartbeatSeconds = 1 }.ToByteArray());
        // 300 watchers over a few connections, each reads its first message, then half of them vanish
        // with their connection (client disposed), the others cancel their stream.
        var clients = Enumerable.Range(0, 4).Select(_ => GrpcRaw.H2c()).ToArray();
        var responses = new List<(HttpResponseMessage Response, Stream Body, CancellationTokenSource Cts)>();
        var starts = Enumerable.Range(0, 300).Select(async i =>
        {
            var cts = new CancellationTokenSource();
            var response = await clients[i % clients.Length].SendAsync(GrpcRaw.Request(url, Svc + "WatchRecommendations", request),
                HttpCompletionOption.ResponseHeadersRead, cts.Token);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var body = await response.Content.ReadAsStreamAsync();
            var head = new byte[5];
            await body.ReadExactlyAsync(head);
            lock (responses) responses.Add((response, body, cts));
        });
        await Task.WhenAll(starts);
        Assert.True(await OpenCalls() >= 300);
        foreach (var (response, body, cts) in responses.Take(150)) { cts.Cancel(); body.Dispose(); response.Dispose(); }
        foreach (var c in clients) c.Dispose();
        foreach (var (response, body, _) in responses.Skip(150)) { body.Dispose(); response.Dispose(); }

        var deadline = DateTime.UtcNow.AddSeconds(15);
        double open;
        while ((open = await OpenCalls()) > 0 && DateTime.UtcNow < deadline) await Task.Delay(100);
        Assert.Equal(0, open);

        // Still serving.
        using var channel = GrpcCli.Channel(demo.GrpcAddress);
        var health = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
    }

    /// <summary>Readiness means synced caches; the first plan follows within a recommender tick.</summary>
    private async Task WaitForPlan()
    {
        using var channel = GrpcCli.Channel(demo.GrpcAddress);
        await GrpcServerTests.WaitForPlan(new V1.Karpetrack.KarpetrackClient(channel));
    }

    private async Task<double> OpenCalls() => DemoProcess.Sample(await demo.MetricsAsync(), "karpetrack_grpc_open_calls");
}
