using System.Text.Json.Nodes;
using Grpc.Core;
using Karpetrack.Tests.Simulation;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Tests.Grpc;

/// <summary>
/// The real binary on the demo with --actuation approve: most demo Spot nodes sit in single-node
/// pools Karpetrack created, so their delete-empty recommendations can be carried out; the others
/// stay advisory. Short timings, so that an approval is acted on within seconds.
/// </summary>
public sealed class ApproveProcess : IAsyncLifetime
{
    private string dir = "";

    /// <summary>A fresh token per run: nothing else can know it.</summary>
    public string Token { get; } = "approve-" + Guid.NewGuid().ToString("N");
    public string TokenFile { get; private set; } = "";
    public DemoProcess Demo { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        dir = Directory.CreateTempSubdirectory("karpetrack-approve-").FullName;
        TokenFile = Path.Combine(dir, "token");
        // As a mounted Secret often is, with a trailing newline: the server and the CLI both trim it.
        File.WriteAllText(TokenFile, Token + "\n");
        // No churn, so the plan holds still while the clients pick ids; no cooldown and a budget wide
        // enough that three approvals at once are all carried out rather than refused for the budget.
        Demo = new DemoProcess([
            "--actuation", "approve", "--approve-token-file", TokenFile,
            "--demo-churn-interval", "1h", "--recommend-interval", "2s", "--scale-up-cooldown", "0",
            "--max-disrupted-nodes", "5", "--max-disrupted-percent-per-hour", "100",
        ]);
        await Demo.InitializeAsync();
    }

    public async Task DisposeAsync()
    {
        await Demo.DisposeAsync();
        Directory.Delete(dir, recursive: true);
    }
}

public class ApproveEndToEndTests(ApproveProcess fixture) : IClassFixture<ApproveProcess>
{
    private const string Waiting = "waiting for approval";
    private static string Protos => Path.Combine(RepoRoot.Path, "Protos");
    private DemoProcess Demo => fixture.Demo;

    private static Task<SimHelpers.ProcessResult> Cli(string[] args, IReadOnlyDictionary<string, string?>? env = null) =>
        SimHelpers.RunAsync("dotnet", [DemoProcess.AppDll, .. args], TimeSpan.FromSeconds(30), env);

    private async Task<JsonNode> RunJson(string file, params string[] args)
    {
        var r = await SimHelpers.RunAsync(file, args, TimeSpan.FromSeconds(60));
        Assert.True(r.ExitCode == 0, $"{file} exited {r.ExitCode}: {r.Stderr}\n{r.Stdout}");
        return JsonNode.Parse(r.Stdout.Trim().Split('\n')[^1])!;
    }

    private async Task<V1.ListRecommendationsResponse> List()
    {
        using var channel = GrpcCli.Channel(Demo.GrpcAddress);
        return await new V1.Karpetrack.KarpetrackClient(channel).ListRecommendationsAsync(new V1.ListRecommendationsRequest(), deadline: DateTime.UtcNow.AddSeconds(10));
    }

    /// <summary>A plan with an advisory recommendation and enough actionable ones for every client, once the caches synced and the actuator saw it.</summary>
    private async Task<(V1.Recommendation Advisory, List<V1.Recommendation> Actionable, V1.ListRecommendationsResponse Plan)> WaitForPlan(int actionable)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        V1.ListRecommendationsResponse? plan = null;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                plan = await List();
                // A delete-empty one if there is one: its id depends on its node alone, so approvals of
                // other recommendations (which change the moves in the plan) do not change it.
                var advisory = plan.Recommendations.Where(r => r.ActuationState.StartsWith("advisory only", StringComparison.Ordinal))
                    .OrderBy(r => r.Type == V1.RecommendationType.DeleteEmpty ? 0 : 1).FirstOrDefault();
                // Empty nodes first: removing one evicts nothing, so it is carried out at once.
                var waiting = plan.Recommendations.Where(r => r.ActuationState == Waiting && r.Nodes.Count > 0)
                    .OrderBy(r => r.Type == V1.RecommendationType.DeleteEmpty ? 0 : 1).ThenBy(r => r.Id, StringComparer.Ordinal).ToList();
                if (advisory is not null && waiting.Count >= actionable) return (advisory, waiting, plan);
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable) { }
            await Task.Delay(250);
        }
        throw new TimeoutException($"no plan with an advisory and {actionable} actionable recommendations: {plan}");
    }

    private static void AssertAccepted(string id, JsonNode result)
    {
        var r = result.AsArray().Select(x => (string)x!).ToArray();
        Assert.True(r[0] == "OK", string.Join(" ", r));
        Assert.Equal(id, r[1]);
        // The answer is the state right after the approval; the actuator loop is woken by it and may
        // already have started (or, for an empty node, even finished) by the time the state is read.
        Assert.True(r[2] == "approved" || r[2].StartsWith("in progress", StringComparison.Ordinal) || r[2].StartsWith("succeeded:", StringComparison.Ordinal), r[2]);
    }

    private static void AssertStatus(string code, string detailPart, JsonNode result)
    {
        var r = result.AsArray().Select(x => (string)x!).ToArray();
        Assert.True(r[0] == code, string.Join(" ", r));
        Assert.Contains(detailPart, r[1]);
    }

    [Fact]
    public async Task PythonNodeAndTheCliApproveOnlyWhatTheyAreToldTo()
    {
        var (advisory, actionable, before) = await WaitForPlan(actionable: 4);
        string viaPython = actionable[0].Id, viaNode = actionable[1].Id, viaCli = actionable[2].Id, untouched = actionable[3].Id;
        var approved = new[] { actionable[0], actionable[1], actionable[2] };

        var work = Directory.CreateTempSubdirectory("grpc-py-approve-").FullName;
        var python = RunJson("/usr/bin/python3", Path.Combine(RepoRoot.Path, "tests", "Karpetrack.Tests", "Grpc", "approve.py"),
            Demo.GrpcAddress, Protos, work, fixture.Token, advisory.Id, untouched, viaPython);
        var node = RunJson("node", Path.Combine(RepoRoot.Path, "tests", "grpc-node", "approve.js"),
            Demo.GrpcAddress, Protos, fixture.Token, advisory.Id, untouched, viaNode);
        var (py, js) = (await python, await node);

        foreach (var o in new[] { py, js })
        {
            AssertStatus("UNAUTHENTICATED", "metadata is required", o["no_metadata"]!);
            AssertStatus("UNAUTHENTICATED", "does not match", o["wrong_token"]!);
            AssertStatus("NOT_FOUND", "del-000000000000", o["unknown_id"]!);
            AssertStatus("FAILED_PRECONDITION", "advisory only", o["advisory"]!);
        }
        AssertStatus("UNAUTHENTICATED", "metadata is required", py["wrong_scheme"]!);   // Basic is not Bearer, even with the right token
        AssertAccepted(viaPython, py["approved"]!);
        AssertAccepted(viaNode, js["approved"]!);

        // The CLI: the token from the environment; with --token-file, the file wins over the environment.
        var env = new Dictionary<string, string?> { [GrpcCli.TokenVariable] = fixture.Token };
        var cli = await Cli(["approve", viaCli, "--server", Demo.GrpcAddress, "--json"], env);
        Assert.True(cli.ExitCode == 0, cli.Stderr);
        var answer = JsonNode.Parse(cli.Stdout)!;
        AssertAccepted(viaCli, new JsonArray("OK", (string?)answer["id"], (string?)answer["actuationState"]));
        var wrongEnv = new Dictionary<string, string?> { [GrpcCli.TokenVariable] = "not-the-token" };
        var fileWins = await Cli(["approve", "del-000000000000", "--server", Demo.GrpcAddress, "--token-file", fixture.TokenFile], wrongEnv);
        Assert.Equal(1, fileWins.ExitCode);
        Assert.Equal("karpetrack: NOT_FOUND: recommendation del-000000000000 is not in the current plan", fileWins.Stderr.Trim());
        var wrong = await Cli(["approve", untouched, "--server", Demo.GrpcAddress], wrongEnv);
        Assert.Equal(1, wrong.ExitCode);
        Assert.Equal("karpetrack: UNAUTHENTICATED: the bearer token does not match the approval token", wrong.Stderr.Trim());
        // The plan moves on as approvals are carried out: ask about an advisory recommendation of the plan as it is now.
        var advisoryCli = await Cli(["approve", advisory.Id, "--server", Demo.GrpcAddress], env);
        for (int attempt = 0; attempt < 5 && advisoryCli.Stderr.Contains("NOT_FOUND", StringComparison.Ordinal); attempt++)
        {
            var now = (await List()).Recommendations.FirstOrDefault(r => r.ActuationState.StartsWith("advisory only", StringComparison.Ordinal));
            if (now is null) { await Task.Delay(500); continue; }
            advisoryCli = await Cli(["approve", now.Id, "--server", Demo.GrpcAddress], env);
        }
        Assert.Equal(1, advisoryCli.ExitCode);
        Assert.StartsWith("karpetrack: FAILED_PRECONDITION: advisory only", advisoryCli.Stderr);

        // Carried out: each approved node cordoned (nothing to drain on an empty node) and its pool deleted.
        string metrics = "";
        for (var until = DateTime.UtcNow.AddSeconds(30); DateTime.UtcNow < until; await Task.Delay(250))
        {
            metrics = await Demo.MetricsAsync();
            if (DemoProcess.Sample(metrics, "karpetrack_actions_total{type=\"delete_pool\",result=\"succeeded\"}") >= approved.Sum(r => r.Nodes.Count)) break;
        }
        int nodes = approved.Sum(r => r.Nodes.Count);
        Assert.Equal(1, DemoProcess.Sample(metrics, "karpetrack_actuation_mode{mode=\"approve\"}"));
        // Exactly the approved ones: nothing unapproved was cordoned, no pool was bought.
        Assert.Equal(nodes, DemoProcess.Sample(metrics, "karpetrack_actions_total{type=\"cordon\",result=\"succeeded\"}"));
        Assert.Equal(nodes, DemoProcess.Sample(metrics, "karpetrack_actions_total{type=\"delete_pool\",result=\"succeeded\"}"));
        Assert.Equal(0, DemoProcess.Sample(metrics, "karpetrack_actions_total{type=\"create_pool\",result=\"succeeded\"}"));
        foreach (var type in ActionStep.TypeLabels)
            Assert.Equal(0, DemoProcess.Sample(metrics, $"karpetrack_actions_total{{type=\"{type}\",result=\"failed\"}}"));

        // The API agrees: the removed nodes are gone and their recommendations left the plan.
        using var channel = GrpcCli.Channel(Demo.GrpcAddress);
        var client = new V1.Karpetrack.KarpetrackClient(channel);
        var gone = approved.SelectMany(r => r.Nodes).ToList();
        V1.ListRecommendationsResponse after = null!;
        for (var until = DateTime.UtcNow.AddSeconds(15); ; await Task.Delay(250))
        {
            after = await List();
            var stillListed = after.Recommendations.Where(r => approved.Any(a => a.Id == r.Id) || r.Nodes.Any(gone.Contains)).ToList();
            if (stillListed.Count == 0) break;
            Assert.True(DateTime.UtcNow < until, "still in the plan: " + string.Join("; ", stillListed.Select(r => $"{r.Id} {r.ActuationState}")));
        }
        foreach (var n in gone)
        {
            var e = await Assert.ThrowsAsync<RpcException>(async () => await client.ExplainNodeAsync(new V1.ExplainNodeRequest { Node = n }));
            Assert.Equal(StatusCode.NotFound, e.StatusCode);
        }

        // What nobody approved, or only tried to approve with a wrong token, is still waiting, untouched.
        var untouchedNow = Assert.Single(after.Recommendations, r => r.Id == untouched);
        Assert.Equal(Waiting, untouchedNow.ActuationState);
        var waitingBefore = before.Recommendations.Where(r => r.ActuationState == Waiting && approved.All(a => a.Id != r.Id)).Select(r => r.Id).ToHashSet();
        Assert.NotEmpty(waitingBefore);
        Assert.All(after.Recommendations.Where(r => waitingBefore.Contains(r.Id)), r => Assert.Equal(Waiting, r.ActuationState));
        Assert.All(after.Recommendations, r => Assert.True(r.ActuationState == Waiting || r.ActuationState.StartsWith("advisory only", StringComparison.Ordinal),
            $"{r.Id} was not approved but is \"{r.ActuationState}\""));
    }

    [Fact]
    public async Task CliWithoutATokenStopsBeforeCallingWithOneLineAndExitCode2()
    {
        var noToken = new Dictionary<string, string?> { [GrpcCli.TokenVariable] = null };
        var r = await Cli(["approve", "del-000000000000", "--server", Demo.GrpcAddress], noToken);
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("--token-file", line);
        Assert.Contains(GrpcCli.TokenVariable, line);
        Assert.Empty(r.Stdout);

        var missing = Path.Combine(Path.GetTempPath(), "karpetrack-no-such-token-" + Guid.NewGuid().ToString("N"));
        r = await Cli(["approve", "del-000000000000", "--server", Demo.GrpcAddress, "--token-file", missing], noToken);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(missing, Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)));

        // No id is a usage error, like the other subcommands'.
        r = await Cli(["approve", "--server", Demo.GrpcAddress], noToken);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("approve needs a recommendation ID", r.Stderr);
    }
}
