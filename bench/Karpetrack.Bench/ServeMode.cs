using System.Text.Json.Nodes;
using Karpetrack.Simulation;

namespace Karpetrack.Bench;

/// <summary>
/// `Karpetrack.Bench serve`: the embedded API server holding the synthetic cluster, in a process of
/// its own so that the service under test shares the machine with it but not a heap. Commands on
/// stdin: `churn N` modifies N pods with watch delivery held, then releases the backlog at once; `quit`.
/// </summary>
internal static class ServeMode
{
    public static async Task RunAsync(int nodes, int pods)
    {
        var data = SyntheticData.Build(nodes, pods);
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions { WatcherBufferSize = 400_000, WatchHistoryLimit = 400_000 });
        // The service also watches budgets and DaemonSets (empty here): a real API server always serves them.
        server.Store.Register(ResourceType.PodDisruptionBudgets);
        server.Store.Register(ResourceType.DaemonSets);
        foreach (var n in data.Nodes) server.Store.Upsert("nodes", JsonNode.Parse(n)!.AsObject());
        foreach (var p in data.Pods) server.Store.Upsert("pods", JsonNode.Parse(p)!.AsObject());
        var kubeconfig = server.WriteKubeconfig(Path.Combine(Directory.CreateTempSubdirectory("karpetrack-bench-").FullName, "kubeconfig"));
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        Console.WriteLine($"serving {server.BaseAddress} {kubeconfig}");
        string? line;
        while ((line = Console.ReadLine()) is not null)
        {
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 2 && parts[0] == "churn")
            {
                int count = Math.Min(int.Parse(parts[1]), data.Pods.Length);
                // The changes queue while delivery is held, then go out as one backlog.
                server.Store.HoldWatches();
                for (int i = 0; i < count; i++)
                {
                    var pod = JsonNode.Parse(data.Pods[i])!.AsObject();
                    pod["metadata"]!["labels"]!["bench-rev"] = "1";
                    server.Store.Upsert("pods", pod);
                }
                // The churn left a heap of parsed documents: collect it now, not in the middle of the drain.
                GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
                Console.WriteLine("churned");
                server.Store.ReleaseWatches();
            }
            else if (parts.Length == 1 && parts[0] == "quit") break;
        }
    }
}
