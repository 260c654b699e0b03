using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Karpetrack.Tests;

/// <summary>The real binary in demo mode, as `make run` starts it; shared by the end-to-end tests.</summary>
public sealed class DemoProcess : IAsyncLifetime
{
    private Process process = null!;
    private readonly StringBuilder stdout = new();
    private readonly StringBuilder stderr = new();
    private readonly string[] flags;
    private readonly IReadOnlyDictionary<string, string> environment;

    public DemoProcess() : this(["--demo-churn-interval", "2s", "--demo-price-interval", "3s", "--recommend-interval", "2s", "--actuation", "dry-run",
        "--label-group", "servers.ngpc.rxt.io/class", "--node-selector", "kubernetes.io/os=linux"])
    {
    }

    /// <summary>The flags after --demo and the loopback listeners, for fixtures that need another mode (internal: xunit wants one public constructor).</summary>
    internal DemoProcess(string[] flags, IReadOnlyDictionary<string, string>? environment = null, string? executable = null)
    {
        this.flags = flags;
        this.environment = environment ?? new Dictionary<string, string>();
        this.executable = executable;
    }

    /// <summary>A native executable to run instead of `dotnet karpetrack.dll` (the NativeAOT build).</summary>
    private readonly string? executable;

    public Uri MetricsUrl { get; private set; } = null!;
    public Uri GrpcUrl { get; private set; } = null!;
    /// <summary>host:port of the gRPC listener, as gRPC clients take it.</summary>
    public string GrpcAddress => $"{GrpcUrl.Host}:{GrpcUrl.Port}";
    public bool Exited => process.HasExited;
    public int Pid => process.Id;
    public string Kubeconfig { get; private set; } = "";
    public HttpClient Http { get; } = new() { Timeout = TimeSpan.FromSeconds(20) };

    public static string AppDll => Path.Combine(AppContext.BaseDirectory, "karpetrack.dll");

    public string Output { get { lock (stdout) return stdout.ToString(); } }
    public string Errors { get { lock (stderr) return stderr.ToString(); } }

    public async Task InitializeAsync()
    {
        var psi = new ProcessStartInfo(executable ?? "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        if (executable is null) psi.ArgumentList.Add(AppDll);
        foreach (var a in new[] { "--demo", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-format", "text" }.Concat(flags))
            psi.ArgumentList.Add(a);
        foreach (var (name, value) in environment) psi.Environment[name] = value;
        process = Process.Start(psi)!;
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (stdout) stdout.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (stderr) stderr.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            var text = Output;
            var m = Regex.Match(text, @"^metrics: (\S+)$", RegexOptions.Multiline);
            var k = Regex.Match(text, @"^kubeconfig: (\S+)$", RegexOptions.Multiline);
            var g = Regex.Match(text, @"^grpc: (\S+)$", RegexOptions.Multiline);
            if (m.Success && k.Success && g.Success)
            {
                MetricsUrl = new Uri(m.Groups[1].Value);
                GrpcUrl = new Uri(g.Groups[1].Value);
                Kubeconfig = k.Groups[1].Value;
                break;
            }
            if (process.HasExited) throw new InvalidOperationException($"karpetrack exited {process.ExitCode}: {Output}{stderr}");
            await Task.Delay(100);
        }
        if (MetricsUrl is null) throw new TimeoutException("karpetrack printed no metrics URL: " + Output);
        while (DateTime.UtcNow < deadline)
        {
            try { if ((await Http.GetAsync(new Uri(MetricsUrl, "/readyz"))).IsSuccessStatusCode) return; }
            catch (HttpRequestException) { }
            await Task.Delay(100);
        }
        throw new TimeoutException("karpetrack never became ready: " + Output);
    }

    public async Task DisposeAsync()
    {
        if (!process.HasExited)
        {
            // SIGTERM, as Kubernetes stops a pod: the service must shut down cleanly on its own.
            Process.Start("kill", ["-TERM", process.Id.ToString()])!.WaitForExit();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            try { await process.WaitForExitAsync(cts.Token); }
            catch (OperationCanceledException) { process.Kill(entireProcessTree: true); }
        }
        process.Dispose();
        Http.Dispose();
    }

    public async Task<string> MetricsAsync()
    {
        return await Http.GetStringAsync(new Uri(MetricsUrl, "/metrics"));
    }

    public static double Sample(string exposition, string series)
    {
        foreach (var line in exposition.Split('\n'))
            if (line.StartsWith(series + " ", StringComparison.Ordinal))
                return double.Parse(line[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        throw new KeyNotFoundException(series);
    }
}

public class EndToEndTests(DemoProcess demo) : IClassFixture<DemoProcess>
{
    [Fact]
    public async Task MetricsArePromtoolCleanAndConsistent()
    {
        var text = await demo.MetricsAsync();
        var (code, output) = CollectorTests.Promtool(Encoding.UTF8.GetBytes(text));
        Assert.True(code == 0, output);

        // Cluster totals are the sums of the node series.
        double nodeSum = text.Split('\n').Where(l => l.StartsWith("karpetrack_node_allocated{", StringComparison.Ordinal) && l.Contains("resource=\"cpu\""))
            .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(DemoProcess.Sample(text, "karpetrack_cluster_allocated{resource=\"cpu\"}"), nodeSum, 6);
        Assert.True(DemoProcess.Sample(text, "karpetrack_pending_pods") >= 1);
        Assert.True(DemoProcess.Sample(text, "karpetrack_cache_synced{resource=\"pods\"}") == 1);
        Assert.Contains("karpetrack_group_nodes{label_group=\"servers.ngpc.rxt.io/class\",label_group_value=\"gp.vs1.large-iad\"}", text);

        // Cost: cluster cost = the sum of the priced nodes.
        double priced = text.Split('\n').Where(l => l.StartsWith("karpetrack_node_price_dollars_per_hour{", StringComparison.Ordinal))
            .Sum(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(DemoProcess.Sample(text, "karpetrack_cluster_cost_dollars_per_hour"), priced, 6);
        Assert.True(priced > 0);
    }

    [Fact]
    public async Task DryRunActuationPlansAndCountsButChangesNothing()
    {
        var deadline = DateTime.UtcNow.AddSeconds(40);
        string text = "";
        while (DateTime.UtcNow < deadline)
        {
            text = await demo.MetricsAsync();
            if (DemoProcess.Sample(text, "karpetrack_actions_total{type=\"create_pool\",result=\"dry_run\"}") >= 1) break;
            await Task.Delay(500);
        }
        Assert.Equal(1, DemoProcess.Sample(text, "karpetrack_actuation_mode{mode=\"dry-run\"}"));
        Assert.True(DemoProcess.Sample(text, "karpetrack_actions_total{type=\"create_pool\",result=\"dry_run\"}") >= 1);
        // The plan's state shows over gRPC: what the dry run would do, or why a recommendation stays advisory.
        string? provisionState = null, anyAdvisory = null;
        for (var until = DateTime.UtcNow.AddSeconds(20); DateTime.UtcNow < until && (provisionState is null || !provisionState.StartsWith("dry_run", StringComparison.Ordinal)); await Task.Delay(1000))
        {
            var json = await Simulation.SimHelpers.RunAsync("dotnet", [DemoProcess.AppDll, "recommendations", "--server", demo.GrpcAddress, "--json"], TimeSpan.FromSeconds(30));
            Assert.True(json.ExitCode == 0, json.Stderr);
            foreach (var r in System.Text.Json.Nodes.JsonNode.Parse(json.Stdout)!["recommendations"]!.AsArray())
            {
                var state = (string?)r!["actuationState"];
                if ((string?)r["type"] == "RECOMMENDATION_TYPE_PROVISION") provisionState = state;
                else if (state?.StartsWith("advisory only", StringComparison.Ordinal) == true) anyAdvisory = state;
            }
        }
        Assert.StartsWith("dry_run: would create_pool", provisionState);
        Assert.NotNull(anyAdvisory);
        // Most demo nodes are in Karpetrack's own pools, so cordons are planned; none is carried out, no pool created.
        text = await demo.MetricsAsync();
        Assert.True(DemoProcess.Sample(text, "karpetrack_actions_total{type=\"cordon\",result=\"dry_run\"}") >= 1);
        foreach (var type in ActionStep.TypeLabels)
            Assert.Equal(0, DemoProcess.Sample(text, $"karpetrack_actions_total{{type=\"{type}\",result=\"succeeded\"}}"));
        Assert.DoesNotContain("karpetrack_spot_api_requests_total{method=\"POST\",code=\"201\"}", text);   // no pool created
    }

    [Fact]
    public async Task ScrapesAreGzippedWhenAsked()
    {
        using var handler = new HttpClientHandler { AutomaticDecompression = DecompressionMethods.None };
        using var http = new HttpClient(handler);
        var request = new HttpRequestMessage(HttpMethod.Get, new Uri(demo.MetricsUrl, "/metrics"));
        request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("gzip"));
        using var response = await http.SendAsync(request);
        Assert.Equal("gzip", response.Content.Headers.ContentEncoding.Single());
        Assert.StartsWith("text/plain; version=0.0.4", response.Content.Headers.ContentType!.ToString());
        await using var gz = new System.IO.Compression.GZipStream(await response.Content.ReadAsStreamAsync(), System.IO.Compression.CompressionMode.Decompress);
        var text = await new StreamReader(gz).ReadToEndAsync();
        Assert.Contains("# TYPE karpetrack_node_allocated gauge", text);
    }

    [Fact]
    public async Task UncompressedScrapesCarryTheirLength()
    {
        // A Content-Length instead of chunked framing: the scraper sizes its buffer once.
        using var response = await demo.Http.GetAsync(new Uri(demo.MetricsUrl, "/metrics"));
        response.EnsureSuccessStatusCode();
        Assert.NotEqual(true, response.Headers.TransferEncodingChunked);
        var body = await response.Content.ReadAsByteArrayAsync();
        Assert.Equal(body.Length, response.Content.Headers.ContentLength);
        Assert.EndsWith("\n", System.Text.Encoding.UTF8.GetString(body));
        Assert.Contains("# TYPE karpetrack_build_info gauge", System.Text.Encoding.UTF8.GetString(body));
    }

    [Fact]
    public async Task EndpointsAnswer()
    {
        Assert.Equal("ok\n", await demo.Http.GetStringAsync(new Uri(demo.MetricsUrl, "/healthz")));
        Assert.Equal("ok\n", await demo.Http.GetStringAsync(new Uri(demo.MetricsUrl, "/readyz")));
        var sync = JsonNode.Parse(await demo.Http.GetStringAsync(new Uri(demo.MetricsUrl, "/sync")))!;
        Assert.True((bool)sync["pods"]!["synced"]!);
        Assert.NotNull((string?)sync["nodes"]!["resource_version"]);
        var home = await demo.Http.GetStringAsync(new Uri(demo.MetricsUrl, "/"));
        Assert.Contains("<a href=\"metrics\">", home);   // relative: the web view works behind a sub-path proxy
        var summary = JsonNode.Parse(await demo.Http.GetStringAsync(new Uri(demo.MetricsUrl, "/v1/summary")))!;
        Assert.Equal("dry-run", (string?)summary["actuationMode"]);
    }

    [Fact]
    public async Task MetricsFollowTheDemoChurn()
    {
        // Something changes at least every churn interval (2 s here): the pod series move.
        var first = await demo.MetricsAsync();
        string PodLines(string t) => string.Join("\n", t.Split('\n').Where(l => l.StartsWith("karpetrack_node_pods{", StringComparison.Ordinal) || l.StartsWith("karpetrack_pending_pods ", StringComparison.Ordinal)));
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline)
        {
            await Task.Delay(500);
            if (PodLines(await demo.MetricsAsync()) != PodLines(first)) return;
        }
        Assert.Fail("no metric moved in 20 s of demo churn");
    }

    [Fact]
    public async Task KubectlReachesTheDemoClusterWithThePrintedKubeconfig()
    {
        var cache = Directory.CreateTempSubdirectory("kubectl-cache-").FullName;
        var r = await Simulation.SimHelpers.RunAsync("kubectl", ["--kubeconfig", demo.Kubeconfig, "--cache-dir", cache, "get", "nodes"], TimeSpan.FromSeconds(30));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Matches(@"prod-instance-\d{17}\s+Ready", r.Stdout);
        var text = await demo.MetricsAsync();
        int nodes = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length - 1;
        Assert.Equal(nodes, Regex.Matches(text, "^karpetrack_node_pods\\{", RegexOptions.Multiline).Count);
    }

    /// <summary>A second service on a port the first one holds: one line on stderr naming it, exit code 2, no stack trace anywhere.</summary>
    [Theory]
    [InlineData("metrics", "json")]
    [InlineData("grpc", "text")]
    public async Task APortInUseIsOneLineAndExitCode2(string taken, string logFormat)
    {
        string metrics = taken == "metrics" ? demo.MetricsUrl.Authority : "127.0.0.1:0";
        string grpc = taken == "grpc" ? demo.GrpcAddress : "127.0.0.1:0";
        var r = await Simulation.SimHelpers.RunAsync("dotnet", [DemoProcess.AppDll, "--demo", "--metrics-addr", metrics, "--grpc-addr", grpc, "--log-format", logFormat],
            TimeSpan.FromSeconds(60));
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(taken == "metrics" ? demo.MetricsUrl.Authority : demo.GrpcAddress, line);
        Assert.Contains("address already in use", line);
        CommandLineTests.AssertNoStackTrace(r.Stdout + r.Stderr);
        Assert.DoesNotContain("Hosting failed to start", r.Stdout);
    }

    [Fact]
    public async Task ARealPrometheusScrapesItAndReadsUtilizationBack()
    {
        var dir = Directory.CreateTempSubdirectory("prometheus-").FullName;
        int port = MotoServer.FreePort();
        File.WriteAllText(Path.Combine(dir, "prometheus.yml"), $"""
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
            scrape_configs:
              - job_name: karpetrack
                static_configs:
                  - targets: ["{demo.MetricsUrl.Authority}"]
            """);
        var psi = new ProcessStartInfo("prometheus", [$"--config.file={dir}/prometheus.yml", $"--storage.tsdb.path={dir}/data", $"--web.listen-address=127.0.0.1:{port}"])
        { RedirectStandardError = true, RedirectStandardOutput = true };
        using var prom = Process.Start(psi)!;
        prom.ErrorDataReceived += (_, _) => { };
        prom.OutputDataReceived += (_, _) => { };
        prom.BeginErrorReadLine();
        prom.BeginOutputReadLine();
        try
        {
            using var http = new HttpClient();
            var deadline = DateTime.UtcNow.AddSeconds(40);
            double? fromPrometheus = null;
            while (DateTime.UtcNow < deadline && fromPrometheus is null)
            {
                await Task.Delay(500);
                try
                {
                    var body = await http.GetStringAsync($"http://127.0.0.1:{port}/api/v1/query?query=karpetrack_cluster_utilization_ratio%7Bresource%3D%22cpu%22%7D");
                    var result = JsonNode.Parse(body)!["data"]!["result"]!.AsArray();
                    if (result.Count == 1) fromPrometheus = double.Parse((string)result[0]!["value"]![1]!, System.Globalization.CultureInfo.InvariantCulture);
                }
                catch (HttpRequestException) { }
            }
            Assert.NotNull(fromPrometheus);
            Assert.InRange(fromPrometheus!.Value, 0.01, 1.5);
            var targets = JsonNode.Parse(await http.GetStringAsync($"http://127.0.0.1:{port}/api/v1/targets"))!;
            var target = targets["data"]!["activeTargets"]![0]!;
            Assert.Equal("up", (string)target["health"]!);
            // The value Prometheus stored is one karpetrack served (the demo churns, so compare with a fresh scrape loosely).
            var now = DemoProcess.Sample(await demo.MetricsAsync(), "karpetrack_cluster_utilization_ratio{resource=\"cpu\"}");
            Assert.InRange(fromPrometheus.Value, now - 0.5, now + 0.5);
        }
        finally
        {
            prom.Kill(entireProcessTree: true);
            await prom.WaitForExitAsync();
            Directory.Delete(dir, recursive: true);
        }
    }
}

public class CommandLineTests
{
    private static async Task<Simulation.SimHelpers.ProcessResult> Run(params string[] args) =>
        await Simulation.SimHelpers.RunAsync("dotnet", [DemoProcess.AppDll, .. args], TimeSpan.FromSeconds(30));

    /// <summary>Neither .NET's "Unhandled exception." nor a frame of a stack trace ("   at Namespace.Type.Method(…)").</summary>
    internal static void AssertNoStackTrace(string output)
    {
        Assert.DoesNotContain("Unhandled exception", output);
        Assert.DoesNotMatch(new Regex(@"^\s+at \S+\(", RegexOptions.Multiline), output);
        Assert.DoesNotMatch(new Regex(@"\\n\s+at \S+\("), output);   // a stack trace inside a JSON log line
    }

    [Fact]
    public async Task BrokenKubeconfigIsOneLineAndExitCode2()
    {
        var dir = Directory.CreateTempSubdirectory("badkube-").FullName;
        var path = Path.Combine(dir, "config");
        File.WriteAllText(path, "apiVersion: v1\nkind: Config\ncurrent-context: nope\ncontexts: []\nclusters: []\nusers: []\n");
        var r = await Run("--kubeconfig", path, "--metrics-addr", "127.0.0.1:0");
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(path, line);
        Assert.Contains("current-context", line);
        AssertNoStackTrace(r.Stdout + r.Stderr);
    }

    [Theory]
    [InlineData(false, "--tls-cert: file \"{0}\" not found")]
    [InlineData(true, "--tls-cert/--tls-key: cannot load {0} with {1}: ")]
    public async Task AnUnreadableTlsFileIsOneLineAndExitCode2(bool exists, string expected)
    {
        var dir = Directory.CreateTempSubdirectory("badtls-").FullName;
        var (cert, key) = (Path.Combine(dir, "tls.crt"), Path.Combine(dir, "tls.key"));
        if (exists)
        {
            File.WriteAllText(cert, "this is not a certificate\n");
            File.WriteAllText(key, "nor is this a key\n");
        }
        var r = await Run("--demo", "--tls-cert", cert, "--tls-key", key, "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0");
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(string.Format(System.Globalization.CultureInfo.InvariantCulture, expected, cert, key), line);
        AssertNoStackTrace(r.Stdout + r.Stderr);
        Directory.Delete(dir, recursive: true);
    }

    public static TheoryData<string, string, string> BrokenAtStartUp => new()
    {
        // A value the library's kubeconfig model cannot read: named by its field, not a YamlException.
        { "bool", "current-context: t\nclusters:\n- {name: c, cluster: {server: \"https://127.0.0.1:1\", insecure-skip-tls-verify: maybe}}\n",
            "clusters[0].cluster.insecure-skip-tls-verify" },
        // The exec plugin is run once before anything is served, so its failure is a start-up error too.
        { "exec", "current-context: t\nclusters:\n- {name: c, cluster: {server: \"https://127.0.0.1:1\"}}\ncontexts:\n- {name: t, context: {cluster: c, user: u}}\n"
            + "users:\n- {name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/false, interactiveMode: Never}}}\n",
            "users[0].user.exec: exec plugin /bin/false failed with exit code 1" },
    };

    [Theory]
    [MemberData(nameof(BrokenAtStartUp))]
    public async Task BrokenKubeconfigValueOrPluginIsOneLineAndExitCode2(string name, string yaml, string expected)
    {
        var dir = Directory.CreateTempSubdirectory("badkube-" + name + "-").FullName;
        var path = Path.Combine(dir, "config");
        File.WriteAllText(path, yaml);
        var r = await Run("--kubeconfig", path, "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0");
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains($"kubeconfig {path}: {expected}", line);
        AssertNoStackTrace(r.Stdout + r.Stderr);
        Directory.Delete(dir, recursive: true);
    }

    [Fact]
    public async Task BadFlagIsExitCode2()
    {
        var r = await Run("--metrics-addr", "nonsense");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("--metrics-addr", r.Stderr);
    }

    [Fact]
    public async Task HelpListsEveryFlagWithItsEnvironmentVariable()
    {
        var r = await Run("--help");
        Assert.Equal(0, r.ExitCode);
        foreach (var f in KarpetrackOptions.Flags)
        {
            Assert.Contains("--" + f.Name, r.Stdout);
            Assert.Contains(f.EnvVar, r.Stdout);
        }
    }
}
