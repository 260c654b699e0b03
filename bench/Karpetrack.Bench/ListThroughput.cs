using System.Diagnostics;
using System.Text;
using Karpetrack.Simulation;

namespace Karpetrack.Bench;

/// <summary>
/// `make bench ARGS="list-throughput"`: the embedded Kubernetes API server's LIST throughput over
/// loopback on the benchmark-sized cluster (5,000 nodes, 150,000 pods by default), full and paged,
/// three rounds each. Prints the figures; writes nothing.
/// </summary>
internal static class ListThroughput
{
    private static readonly DateTimeOffset Now = new(2026, 11, 21, 12, 0, 0, TimeSpan.Zero);

    public static async Task RunAsync(int nodeCount, int podCount)
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        var sw = Stopwatch.StartNew();
        var nodes = SyntheticCluster.Nodes(nodeCount, seed: 1, Now);
        foreach (var n in nodes) server.Store.Upsert("nodes", n);
        long podBytes = 0;
        foreach (var p in SyntheticCluster.Pods(nodes, podCount, seed: 1, Now))
            podBytes += server.Store.Upsert("pods", p).Json.Length;
        var sample = server.Store.List("pods").Items.First().ToJsonObject();
        Console.WriteLine($"sample pod: metadata {sample["metadata"]!.ToJsonString().Length} B (managedFields {sample["metadata"]!["managedFields"]?.ToJsonString().Length ?? 0} B), spec {sample["spec"]!.ToJsonString().Length} B, status {sample["status"]!.ToJsonString().Length} B");
        Console.WriteLine($"generated+stored {podCount} pods in {sw.Elapsed.TotalSeconds:F1}s, avg {podBytes / Math.Max(1, podCount)} B/pod, heap {GC.GetTotalMemory(true) / 1e6:F0} MB");

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
            Console.WriteLine($"full LIST: {total / 1e6:F0} MB in {sw.Elapsed.TotalMilliseconds:F0} ms = {total / 1e6 / sw.Elapsed.TotalSeconds:F0} MB/s");

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
                var head = Encoding.UTF8.GetString(bytes, 0, Math.Min(bytes.Length, 1024));
                var at = head.IndexOf("\"continue\":\"", StringComparison.Ordinal);
                token = at < 0 ? null : head[(at + 12)..head.IndexOf('"', at + 12)];
            } while (!string.IsNullOrEmpty(token));
            Console.WriteLine($"paged LIST (limit=500, {pages} pages): {total / 1e6:F0} MB in {sw.Elapsed.TotalMilliseconds:F0} ms = {total / 1e6 / sw.Elapsed.TotalSeconds:F0} MB/s");
        }
    }
}
