using System.Diagnostics;
using Karpetrack.Simulation;
using Xunit.Abstractions;
using static Karpetrack.Tests.Simulation.SimHelpers;

namespace Karpetrack.Tests.Simulation;

/// <summary>
/// The benchmark-sized cluster (5,000 nodes, 150,000 pods). Too slow for every run, so it only
/// runs with KARPETRACK_SIM_BENCH=1; the figures go to the test output.
/// </summary>
public sealed class ListThroughputTests(ITestOutputHelper output)
{
    [Fact]
    public async Task FullSizeList_ReadsFastOverLoopback()
    {
        if (Environment.GetEnvironmentVariable("KARPETRACK_SIM_BENCH") != "1") return;
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        var sw = Stopwatch.StartNew();
        var nodes = SyntheticCluster.Nodes(5_000, seed: 1, Now);
        foreach (var n in nodes) server.Store.Upsert("nodes", n);
        long podBytes = 0;
        foreach (var p in SyntheticCluster.Pods(nodes, 150_000, seed: 1, Now))
            podBytes += server.Store.Upsert("pods", p).Json.Length;
        var sample = server.Store.List("pods").Items.First(p => p.Namespace == "shop").ToJsonObject();
        output.WriteLine($"sample pod: metadata {sample["metadata"]!.ToJsonString().Length} B (managedFields {sample["metadata"]!["managedFields"]!.ToJsonString().Length} B), spec {sample["spec"]!.ToJsonString().Length} B, status {sample["status"]!.ToJsonString().Length} B");
        output.WriteLine($"generated+stored 150k pods in {sw.Elapsed.TotalSeconds:F1}s, avg {podBytes / 150_000} B/pod, heap {GC.GetTotalMemory(true) / 1e6:F0} MB");

        using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromMinutes(2) };
        var buffer = new byte[1 << 20];
        for (var round = 0; round < 3; round++)
        {
            sw.Restart();
            long total = 0;
            using (var response = await http.GetAsync("/api/v1/pods", HttpCompletionOption.ResponseHeadersRead))
            await using (var stream = await response.Content.ReadAsStreamAsync())
            {
                int read;
                while ((read = await stream.ReadAsync(buffer)) > 0) total += read;
            }
            output.WriteLine($"full LIST: {total / 1e6:F0} MB in {sw.Elapsed.TotalMilliseconds:F0} ms = {total / 1e6 / sw.Elapsed.TotalSeconds:F0} MB/s");

            sw.Restart();
            total = 0;
            var pages = 0;
            string? token = null;
            do
            {
                var url = "/api/v1/pods?limit=500" + (token is null ? "" : "&continue=" + Uri.EscapeDataString(token));
                var bytes = await http.GetByteArrayAsync(url);
                total += bytes.Length;
                pages++;
                // The token sits in the list envelope before the items: no need to parse the page.
                var head = System.Text.Encoding.UTF8.GetString(bytes, 0, Math.Min(bytes.Length, 1024));
                var at = head.IndexOf("\"continue\":\"", StringComparison.Ordinal);
                token = at < 0 ? null : head[(at + 12)..head.IndexOf('"', at + 12)];
            } while (!string.IsNullOrEmpty(token));
            output.WriteLine($"paged LIST (limit=500, {pages} pages): {total / 1e6:F0} MB in {sw.Elapsed.TotalMilliseconds:F0} ms = {total / 1e6 / sw.Elapsed.TotalSeconds:F0} MB/s");
        }
        Assert.Equal(150_000, server.Store.Count("pods"));
    }
}
