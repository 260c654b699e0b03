using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Karpetrack.Simulation;

namespace Karpetrack.Bench;

/// <summary>
/// The real service, as `dotnet build -c Release` leaves it, in its own process against the embedded
/// API server holding the synthetic cluster: time to ready, RSS, scrape latency over loopback and
/// watch throughput end to end.
/// </summary>
internal static class SyncBench
{
    private const string Section = "Exporter (process, end to end)";

    public static async Task RunAsync(int nodeCount, int podCount, Report report)
    {
        var self = Path.Combine(AppContext.BaseDirectory, "Karpetrack.Bench.dll");
        var serverPsi = new ProcessStartInfo("dotnet", [self, "serve", "--nodes", nodeCount.ToString(), "--pods", podCount.ToString()])
        { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var serverProcess = Process.Start(serverPsi)!;
        serverProcess.ErrorDataReceived += (_, e) => { if (e.Data is not null) Console.Error.WriteLine("  api server: " + e.Data); };
        serverProcess.BeginErrorReadLine();
        string? line;
        string baseAddress = "", kubeconfig = "";
        while ((line = await serverProcess.StandardOutput.ReadLineAsync()) is not null)
        {
            Console.WriteLine("  api server: " + line);
            if (line.StartsWith("serving ", StringComparison.Ordinal))
            {
                var parts = line.Split(' ');
                (baseAddress, kubeconfig) = (parts[1], parts[2]);
                break;
            }
        }
        if (kubeconfig.Length == 0) throw new InvalidOperationException("the API server process did not start");
        var dir = Path.GetDirectoryName(kubeconfig)!;

        // The JIT build (`dotnet karpetrack.dll`, as `make run` starts it) and the shipped NativeAOT
        // binary (`make publish`), one after the other against the same server, each timed against a
        // raw paged LIST of the same pods taken right before it.
        var app = Path.Combine(AppContext.BaseDirectory, "karpetrack.dll");
        await RunServiceAsync("JIT", "dotnet", [app], baseAddress, kubeconfig, serverProcess, nodeCount, podCount, report);
        var native = Path.Combine(Report.RepoRoot(), ".tmp", "publish", "karpetrack");
        if (File.Exists(native))
            await RunServiceAsync("NativeAOT", native, [], baseAddress, kubeconfig, serverProcess, nodeCount, podCount, report);
        else
            Console.Error.WriteLine($"  no native binary at {native}: run `make publish` for the NativeAOT rows");

        // The API server's own share of the watch figure: the same backlog drained by a client that only counts lines.
        var rawEps = await RawWatchDrainAsync(baseAddress, serverProcess, Math.Min(100_000, podCount));
        report.Row(Section, "The embedded API server alone: the same backlog drained by a client that only counts events", "(baseline)",
            $"{rawEps / 1000:F0}k events/s", null);
        await serverProcess.StandardInput.WriteLineAsync("quit");
        if (!serverProcess.WaitForExit(10_000)) serverProcess.Kill(entireProcessTree: true);
        Directory.Delete(dir, recursive: true);
    }

    /// <summary>A plain paged LIST of all pods read by a client that only counts bytes: the API server's own share.</summary>
    internal static async Task<(double Seconds, long Bytes)> RawListAsync(string baseAddress)
    {
        using var raw = new HttpClient { BaseAddress = new Uri(baseAddress), Timeout = TimeSpan.FromMinutes(2) };
        var sw = Stopwatch.StartNew();
        long bytes = 0;
        string? cont = null;
        do
        {
            var page = await raw.GetByteArrayAsync("/api/v1/pods?limit=500" + (cont is null ? "" : "&continue=" + Uri.EscapeDataString(cont)));
            bytes += page.Length;
            cont = ContinueToken(page);
        } while (cont is not null);
        return (sw.Elapsed.TotalSeconds, bytes);
    }

    private static async Task RunServiceAsync(string build, string file, string[] prefix, string baseAddress, string kubeconfig, Process serverProcess,
        int nodeCount, int podCount, Report report)
    {
        var (rawList, rawBytes) = await RawListAsync(baseAddress);
        report.Row(Section, $"[{build}] The embedded API server alone, right before: paged LIST of all pods read by a byte-counting client", "(baseline)",
            $"{rawList:F1} s for {rawBytes / 1e6:F0} MB", null);

        int port = FreePort();
        var psi = new ProcessStartInfo(file, [.. prefix, "--kubeconfig", kubeconfig, "--metrics-addr", $"127.0.0.1:{port}", "--grpc-addr", "127.0.0.1:0",
            "--log-level", "warn", "--list-page-size", "500"])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        GC.Collect();
        var started = Stopwatch.StartNew();
        using var process = Process.Start(psi)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) Console.Error.WriteLine($"  karpetrack ({build}): " + e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(30) };
        double? listening = null;
        while (started.Elapsed < TimeSpan.FromMinutes(3))
        {
            try
            {
                var r = await http.GetAsync("/readyz");
                listening ??= started.Elapsed.TotalSeconds;
                if (r.StatusCode == HttpStatusCode.OK) break;
            }
            catch (HttpRequestException) { }
            await Task.Delay(20);
        }
        double ready = started.Elapsed.TotalSeconds;
        var (_, hwm) = Rss(process.Id);
        var cpu = CpuSeconds(process.Id);
        report.Row(Section, $"[{build}] Start to /readyz, {nodeCount} nodes + {podCount} pods listed in pages of 500", "≤ 1.3 × the raw LIST",
            $"{ready:F1} s = {ready / rawList:F2} × (HTTP up after {listening ?? 0:F1} s; karpetrack used {cpu:F1} s of CPU)", ready <= 1.3 * rawList);
        report.Row(Section, $"[{build}] Peak RSS during the initial sync (VmHWM)", "≤ 160 MB", $"{hwm / 1e6:F0} MB", hwm / 1e6 <= 160);

        // As Prometheus scrapes from the moment the service is ready: one GET every 100 ms for the first
        // minute, while the first recommender run over the whole cluster is under way. The client reads
        // into one reused buffer, so what is timed is the server and the transfer.
        var scrapeBuffer = new byte[16 << 20];
        var first = await TimeAsync(600, () => ReadIntoAsync(http, "/metrics", scrapeBuffer), pace: TimeSpan.FromMilliseconds(100));
        report.Row(Section, $"[{build}] GET /metrics ({first.Bytes / 1e6:F1} MB) every 100 ms for the first minute after ready, the first recommender run under way",
            "p50 ≤ 5 ms, p99 ≤ 15 ms", $"p50 {first.P50:F1} ms, p99 {first.P99:F1} ms", first.P50 <= 5 && first.P99 <= 15);

        // Steady state includes the recommender, on by default: its first run over the whole cluster done, the process settled.
        var waitRun = Stopwatch.StartNew();
        while (await RecommenderRuns(http) < 1 && waitRun.Elapsed < TimeSpan.FromMinutes(2)) await Task.Delay(200);
        await Task.Delay(TimeSpan.FromSeconds(5));
        var (_, peakWithRun) = Rss(process.Id);
        report.Row(Section, $"[{build}] Peak RSS including the first recommender run over all pods (VmHWM)", "≤ 160 MB", $"{peakWithRun / 1e6:F0} MB", peakWithRun / 1e6 <= 160);

        using var gzipHttp = new HttpClient(new HttpClientHandler { AutomaticDecompression = DecompressionMethods.None }) { BaseAddress = http.BaseAddress };
        gzipHttp.DefaultRequestHeaders.AcceptEncoding.ParseAdd("gzip");
        var gz = await TimeAsync(100, () => ReadIntoAsync(gzipHttp, "/metrics", scrapeBuffer), pace: TimeSpan.FromMilliseconds(100));
        report.Row(Section, $"[{build}] GET /metrics with gzip ({gz.Bytes / 1e6:F2} MB on the wire), every 100 ms", "gzip adds ≤ 10 ms",
            $"p50 {gz.P50:F1} ms, p99 {gz.P99:F1} ms", gz.P50 - first.P50 <= 10);
        await Task.Delay(TimeSpan.FromSeconds(5));
        var (steady, _) = Rss(process.Id);
        report.Row(Section, $"[{build}] Steady RSS after the first recommender run and 700 scrapes", "≤ 100 MB", $"{steady / 1e6:F0} MB", steady / 1e6 <= 100);

        // Watch throughput end to end: the server modifies pods with delivery held, then releases the
        // backlog; the time runs until the service has received them all (the /sync event counter),
        // so it measures the service's decode and apply, not how fast the embedded store produces.
        // The recommender runs every 30 s for a few seconds of CPU; a run under way when the backlog is released (it only
        // defers runs that fall due during a burst) used to be counted in the drain's CPU and time. Start right after one
        // has finished, so that the next is not due before the drain is over, and say how long one ran in the window anyway.
        long runsBefore = await RecommenderRuns(http);
        var waitNext = Stopwatch.StartNew();
        while (await RecommenderRuns(http) == runsBefore && waitNext.Elapsed < TimeSpan.FromSeconds(90)) await Task.Delay(100);
        long before = await Events(http);
        int changes = Math.Min(100_000, podCount);
        var swProduce = Stopwatch.StartNew();
        await serverProcess.StandardInput.WriteLineAsync($"churn {changes}");
        await serverProcess.StandardInput.FlushAsync();
        string? line;
        while ((line = await serverProcess.StandardOutput.ReadLineAsync()) is not null && line != "churned") { }
        double produced = swProduce.Elapsed.TotalSeconds;
        var swWatch = Stopwatch.StartNew();
        double cpuBefore = CpuSeconds(process.Id), serverCpuBefore = CpuSeconds(serverProcess.Id);
        double recommenderBefore = await RecommenderSeconds(http);
        while (await Events(http) < before + changes && swWatch.Elapsed < TimeSpan.FromMinutes(2)) await Task.Delay(5);
        long got = await Events(http) - before;
        double recommenderDuring = await RecommenderSeconds(http) - recommenderBefore;
        double eps = got / swWatch.Elapsed.TotalSeconds;
        double drainCpu = CpuSeconds(process.Id) - cpuBefore, serverCpu = CpuSeconds(serverProcess.Id) - serverCpuBefore;
        report.Row(Section, $"[{build}] Watch events received and applied ({changes} pod updates queued, then released)", "≥ 50k/s",
            $"{eps / 1000:F0}k events/s ({swWatch.Elapsed.TotalSeconds:F1} s; karpetrack used {drainCpu:F1} s of CPU, the API server {serverCpu:F1} s; " +
            $"the embedded store took {produced:F1} s to produce them{(recommenderDuring > 0 ? $"; a recommender run of {recommenderDuring:F1} s ended in the window" : "")})",
            eps >= 50_000 && got >= changes);

        process.Kill(entireProcessTree: true);
        await process.WaitForExitAsync();
    }

    /// <summary>
    /// Watches pods from the current resourceVersion, has the server queue and release
    /// <paramref name="changes"/> updates, and counts event lines as they come; events per second from
    /// the release to the last one.
    /// </summary>
    private static async Task<double> RawWatchDrainAsync(string baseAddress, Process serverProcess, int changes)
    {
        using var raw = new HttpClient { BaseAddress = new Uri(baseAddress), Timeout = Timeout.InfiniteTimeSpan };
        var list = JsonNode.Parse(await raw.GetStringAsync("/api/v1/pods?limit=1"))!;
        var rv = (string)list["metadata"]!["resourceVersion"]!;
        using var response = await raw.GetAsync($"/api/v1/pods?watch=1&resourceVersion={rv}&timeoutSeconds=300", HttpCompletionOption.ResponseHeadersRead);
        await using var body = await response.Content.ReadAsStreamAsync();
        await serverProcess.StandardInput.WriteLineAsync($"churn {changes}");
        await serverProcess.StandardInput.FlushAsync();
        string? line;
        while ((line = await serverProcess.StandardOutput.ReadLineAsync()) is not null && line != "churned") { }
        var sw = Stopwatch.StartNew();
        var buffer = new byte[256 * 1024];
        int lines = 0, read;
        while (lines < changes && (read = await body.ReadAsync(buffer)) > 0)
            lines += buffer.AsSpan(0, read).Count((byte)'\n');
        return lines / sw.Elapsed.TotalSeconds;
    }

    /// <summary>metadata.continue without parsing the page: the server writes metadata before items.</summary>
    private static string? ContinueToken(byte[] page)
    {
        var r = new System.Text.Json.Utf8JsonReader(page);
        while (r.Read())
        {
            if (r.TokenType == System.Text.Json.JsonTokenType.PropertyName && r.CurrentDepth == 1)
            {
                if (r.ValueTextEquals("items"u8)) return null;
                if (r.ValueTextEquals("metadata"u8))
                {
                    while (r.Read() && r.TokenType != System.Text.Json.JsonTokenType.EndObject)
                        if (r.TokenType == System.Text.Json.JsonTokenType.PropertyName && r.ValueTextEquals("continue"u8) && r.Read())
                            return r.GetString() is { Length: > 0 } c ? c : null;
                    return null;
                }
            }
        }
        return null;
    }

    private static async Task<int> ReadIntoAsync(HttpClient http, string path, byte[] buffer)
    {
        using var response = await http.GetAsync(path, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        await using var body = await response.Content.ReadAsStreamAsync();
        int total = 0, read;
        while ((read = await body.ReadAsync(buffer.AsMemory(total))) > 0) total += read;
        return total;
    }

    /// <summary>Completed recommender runs, from the duration histogram's count on /metrics.</summary>
    private static async Task<long> RecommenderRuns(HttpClient http)
    {
        foreach (var l in (await http.GetStringAsync("/metrics")).Split('\n'))
            if (l.StartsWith("karpetrack_recommender_duration_seconds_count ", StringComparison.Ordinal))
                return long.Parse(l.AsSpan(l.IndexOf(' ') + 1), System.Globalization.CultureInfo.InvariantCulture);
        return 0;
    }

    /// <summary>Seconds the recommender's completed runs took so far, from the duration histogram's sum on /metrics.</summary>
    private static async Task<double> RecommenderSeconds(HttpClient http)
    {
        foreach (var l in (await http.GetStringAsync("/metrics")).Split('\n'))
            if (l.StartsWith("karpetrack_recommender_duration_seconds_sum ", StringComparison.Ordinal))
                return double.Parse(l.AsSpan(l.IndexOf(' ') + 1), System.Globalization.CultureInfo.InvariantCulture);
        return 0;
    }

    private static async Task<long> Events(HttpClient http)
    {
        var sync = JsonNode.Parse(await http.GetStringAsync("/sync"))!;
        return (long)sync["pods"]!["events"]!;
    }

    /// <summary>Times <paramref name="runs"/> calls after 10 warm-ups; with a pace, each call starts that long after the previous one did.</summary>
    private static async Task<(double P50, double P99, long Bytes)> TimeAsync(int runs, Func<Task<int>> action, TimeSpan? pace = null)
    {
        long bytes = 0;
        for (int i = 0; i < 10; i++) bytes = await action();
        var samples = new List<double>(runs);
        for (int i = 0; i < runs; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            await action();
            var took = Stopwatch.GetElapsedTime(t0);
            samples.Add(took.TotalMilliseconds);
            if (pace is { } p && took < p) await Task.Delay(p - took);
        }
        samples.Sort();
        return (Report.Percentile(samples, 0.5), Report.Percentile(samples, 0.99), bytes);
    }

    /// <summary>User plus system CPU seconds a process has used (/proc/pid/stat, clock ticks of 1/100 s).</summary>
    private static double CpuSeconds(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (long.Parse(fields[11]) + long.Parse(fields[12])) / 100.0;
        }
        catch (IOException) { return double.NaN; }
    }

    /// <summary>VmRSS and VmHWM (peak) of a process, in bytes.</summary>
    internal static (long Rss, long Peak) Rss(int pid)
    {
        long rss = 0, hwm = 0;
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = Kb(line);
                else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = Kb(line);
            }
        }
        catch (IOException) { }
        return (rss, hwm);
        static long Kb(string line) => long.Parse(line.Split(':')[1].Trim().Split(' ')[0]) * 1024;
    }

    private static int FreePort()
    {
        var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }
}
