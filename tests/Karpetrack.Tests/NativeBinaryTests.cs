using System.Text;
using System.Text.Json.Nodes;
using Karpetrack.Tests.Grpc;
using Karpetrack.Tests.Simulation;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Tests;

/// <summary>
/// The shipped binary: the NativeAOT executable `make publish` writes (and the Dockerfile runs), on
/// the demo, reached by the real peers. `make test` publishes it first.
/// </summary>
public sealed class NativeDemoProcess : IAsyncLifetime
{
    public static string Executable => Path.Combine(RepoRoot.Path, ".tmp", "publish", "karpetrack");

    public DemoProcess Demo { get; } = new(["--demo-churn-interval", "2s", "--recommend-interval", "2s"], executable: Executable);

    public async Task InitializeAsync()
    {
        if (!File.Exists(Executable))
            throw new FileNotFoundException($"no native binary at {Executable}: run `make publish` (`make test` does it first)");
        await Demo.InitializeAsync();
    }

    public Task DisposeAsync() => Demo.DisposeAsync();
}

public sealed class NativeBinaryTests(NativeDemoProcess native) : IClassFixture<NativeDemoProcess>
{
    private DemoProcess Demo => native.Demo;

    [Fact]
    public void ItIsANativeExecutableWithoutTheJitAssemblies()
    {
        var head = new byte[4];
        using (var f = File.OpenRead(NativeDemoProcess.Executable)) f.ReadExactly(head);
        Assert.Equal("\u007fELF"u8.ToArray(), head);
        var dir = Path.GetDirectoryName(NativeDemoProcess.Executable)!;
        Assert.Empty(Directory.GetFiles(dir, "*.dll"));
        Assert.Empty(Directory.GetFiles(dir, "*.runtimeconfig.json"));
    }

    [Fact]
    public async Task VersionAndHelpAnswerWithoutStartingAnything()
    {
        var version = await SimHelpers.RunAsync(NativeDemoProcess.Executable, ["--version"], TimeSpan.FromSeconds(30));
        Assert.Equal(0, version.ExitCode);
        Assert.Matches(@"^karpetrack \d+\.\d+\.\d+", version.Stdout);
        Assert.Equal($"karpetrack {BuildInfo.Version}", version.Stdout.Trim());
        var help = await SimHelpers.RunAsync(NativeDemoProcess.Executable, ["--help"], TimeSpan.FromSeconds(30));
        Assert.Equal(0, help.ExitCode);
        foreach (var flag in KarpetrackOptions.Flags) Assert.Contains($"--{flag.Name}", help.Stdout);
        var bad = await SimHelpers.RunAsync(NativeDemoProcess.Executable, ["--no-such-flag"], TimeSpan.FromSeconds(30));
        Assert.Equal(2, bad.ExitCode);
        Assert.DoesNotContain("   at ", bad.Stderr);
    }

    [Fact]
    public void TheImageShipsThisBinaryFromMakePublishAsUser65532()
    {
        // No Docker engine runs here: the image's build step is `make publish`, which `make test` runs for real.
        var lines = File.ReadAllLines(Path.Combine(RepoRoot.Path, "Dockerfile")).Where(l => !l.TrimStart().StartsWith('#')).ToArray();
        Assert.Contains("RUN make publish", lines);
        Assert.Contains("COPY --from=build /src/.tmp/publish/karpetrack /app/karpetrack", lines);
        Assert.Contains("USER 65532:65532", lines);
        Assert.Contains(lines, l => l.StartsWith("FROM mcr.microsoft.com/dotnet/runtime-deps:", StringComparison.Ordinal));
        Assert.Equal("ENTRYPOINT [\"/app/karpetrack\"]", lines.Last(l => l.Length > 0));
        Assert.Contains(".tmp/publish", File.ReadAllText(Path.Combine(RepoRoot.Path, "Makefile")));
    }

    [Fact]
    public async Task MetricsArePromtoolCleanAndPriced()
    {
        // The first read of the price feed may still be on its way when the caches are synced.
        var text = await Demo.MetricsAsync();
        for (var until = DateTime.UtcNow.AddSeconds(60); !text.Contains("karpetrack_pricing_last_success_timestamp_seconds{source=\"feed\"}") && DateTime.UtcNow < until; await Task.Delay(200))
            text = await Demo.MetricsAsync();
        var (code, output) = CollectorTests.Promtool(Encoding.UTF8.GetBytes(text));
        Assert.True(code == 0, output);
        Assert.True(DemoProcess.Sample(text, "karpetrack_cluster_cost_dollars_per_hour") > 0);
        Assert.Equal(1, DemoProcess.Sample(text, "karpetrack_cache_synced{resource=\"pods\"}"));
        // The price book came from the (demo) S3 feed through AWSSDK.S3, not the embedded fallback.
        Assert.True(DemoProcess.Sample(text, "karpetrack_pricing_last_success_timestamp_seconds{source=\"feed\"}") > 0);
        Assert.Equal(0, DemoProcess.Sample(text, "karpetrack_pricing_stale"));
    }

    [Fact]
    public async Task PythonGrpcioCallsTheApiWithHealthAndReflection()
    {
        using (var channel = GrpcCli.Channel(Demo.GrpcAddress))
            await GrpcServerTests.WaitForPlan(new V1.Karpetrack.KarpetrackClient(channel));
        var work = Directory.CreateTempSubdirectory("grpc-py-native-").FullName;
        var r = await SimHelpers.RunAsync("/usr/bin/python3", [Path.Combine(RepoRoot.Path, "tests", "Karpetrack.Tests", "Grpc", "interop.py"), Demo.GrpcAddress,
            Path.Combine(RepoRoot.Path, "Protos"), Path.Combine(RepoRoot.Path, "tests", "protos"), work], TimeSpan.FromSeconds(90));
        Assert.True(r.ExitCode == 0, $"interop.py exited {r.ExitCode}: {r.Stderr}\n{r.Stdout}");
        var o = JsonNode.Parse(r.Stdout.Trim().Split('\n')[^1])!;
        Assert.Equal("SERVING", (string?)o["health"]);
        Assert.True((int)o["summary_nodes"]! > 0);
        Assert.True((int)o["recommendations"]! > 0);
        Assert.Contains("karpetrack.v1.Karpetrack", o["reflection_services"]!.AsArray().Select(x => (string)x!));
        Assert.Equal(["karpetrack/v1/karpetrack.proto", "google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"], o["reflection_symbol_files"]!.AsArray().Select(x => (string)x!));
        Assert.True((double)o["simulate_after"]! < (double)o["simulate_before"]!);
    }

    [Fact]
    public async Task TheJsonApiAndTheWebViewAnswer()
    {
        // The JSON API is Google.Protobuf's formatter over the service methods (JsonTranscoding cannot run under NativeAOT).
        JsonNode? summary = null;
        for (var until = DateTime.UtcNow.AddSeconds(60); DateTime.UtcNow < until; await Task.Delay(200))
        {
            using var r = await Demo.Http.GetAsync(new Uri(Demo.MetricsUrl, "/v1/summary"));
            if (r.IsSuccessStatusCode) { summary = JsonNode.Parse(await r.Content.ReadAsStringAsync()); break; }
        }
        Assert.NotNull(summary);
        Assert.True((double)summary!["costPerHour"]! > 0, summary.ToJsonString());
        var nodes = JsonNode.Parse(await Demo.Http.GetStringAsync(new Uri(Demo.MetricsUrl, "/v1/nodes")))!;
        var name = (string)nodes["nodes"]![0]!["name"]!;
        var explained = JsonNode.Parse(await Demo.Http.GetStringAsync(new Uri(Demo.MetricsUrl, $"/v1/nodes/{name}/explain")))!;
        Assert.Equal(name, (string?)explained["node"]);
        using var missing = await Demo.Http.GetAsync(new Uri(Demo.MetricsUrl, "/v1/nodes/ghost/explain"));
        Assert.Equal(System.Net.HttpStatusCode.NotFound, missing.StatusCode);
        var page = await Demo.Http.GetStringAsync(new Uri(Demo.MetricsUrl, "/"));
        Assert.Contains("<html", page);
    }

    [Fact]
    public async Task KubectlReadsTheDemoClusterWithThePrintedKubeconfig()
    {
        var cache = Directory.CreateTempSubdirectory("kubectl-cache-").FullName;
        var r = await SimHelpers.RunAsync("kubectl", ["--kubeconfig", Demo.Kubeconfig, "--cache-dir", cache, "get", "nodes"], TimeSpan.FromSeconds(30));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("gp.vs1", r.Stdout + await Demo.MetricsAsync());
        Assert.True(r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length > 5);
    }

    [Fact]
    public async Task TheBinaryIsItsOwnGrpcClient()
    {
        using (var channel = GrpcCli.Channel(Demo.GrpcAddress))
            await GrpcServerTests.WaitForPlan(new V1.Karpetrack.KarpetrackClient(channel));
        var r = await SimHelpers.RunAsync(NativeDemoProcess.Executable, ["recommendations", "--server", Demo.GrpcAddress, "--json"], TimeSpan.FromSeconds(30));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.NotEmpty(JsonNode.Parse(r.Stdout)!["recommendations"]!.AsArray());
    }
}
