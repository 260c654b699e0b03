using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using static Karpetrack.Tests.Simulation.SimHelpers;

namespace Karpetrack.Tests.Simulation;

/// <summary>The real kubectl (1.32) writing to the demo cluster: cordon, annotate, drain, delete, create, events.</summary>
public sealed class KubectlWriteTests : IAsyncLifetime
{
    private DemoCluster demo = null!;
    private string dir = null!;

    public async Task InitializeAsync()
    {
        demo = await DemoCluster.StartAsync(new DemoClusterOptions
        {
            Seed = 11, Churn = false, Server = new KubeApiServerOptions { MaxPodGracePeriod = TimeSpan.FromMilliseconds(500) },
        });
        dir = Directory.CreateTempSubdirectory("karpetrack-kubectl-w-").FullName;
    }

    public async Task DisposeAsync()
    {
        await demo.DisposeAsync();
        Directory.Delete(dir, recursive: true);
    }

    private Task<ProcessResult> Kubectl(TimeSpan timeout, params string[] args) =>
        RunAsync("kubectl", [.. args, "--kubeconfig", demo.KubeconfigPath, "--cache-dir", Path.Combine(dir, "cache")], timeout);

    private JsonObject[] Pods() => demo.Api.Store.List("pods").Items.Select(p => p.ToJsonObject()).ToArray();
    private static string? NodeOf(JsonObject pod) => (string?)pod["spec"]?["nodeName"];
    private static string? OwnerKind(JsonObject pod) => (string?)pod["metadata"]?["ownerReferences"]?[0]?["kind"];
    private static string? App(JsonObject pod) => (string?)pod["metadata"]?["labels"]?["app.kubernetes.io/name"];

    private string NodeWhere(Func<JsonObject[], bool> podsOnNode) => demo.Api.Store.List("nodes").Items
        .Select(n => n.Name)
        .Where(n => !demo.IsCordoned(n))
        .First(n => podsOnNode(Pods().Where(p => NodeOf(p) == n).ToArray()));

    [Fact]
    public async Task CordonUncordonAndAnnotate()
    {
        if (!OnPath("kubectl")) return;
        var node = NodeWhere(_ => true);
        var r = await Kubectl(TimeSpan.FromSeconds(30), "cordon", node);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains($"node/{node} cordoned", r.Stdout);
        Assert.True((bool)demo.Api.Store.Get("nodes", null, node)!.ToJsonObject()["spec"]!["unschedulable"]!);
        Assert.True(demo.IsCordoned(node));

        r = await Kubectl(TimeSpan.FromSeconds(30), "uncordon", node);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains($"node/{node} uncordoned", r.Stdout);
        Assert.False(demo.IsCordoned(node));

        r = await Kubectl(TimeSpan.FromSeconds(30), "annotate", "node", node, "karpetrack.io/reason=test");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal("test", (string?)demo.Api.Store.Get("nodes", null, node)!.ToJsonObject()["metadata"]!["annotations"]!["karpetrack.io/reason"]);
    }

    [Fact]
    public async Task Drain_EvictsAndWaits_ThenAZeroBudgetRefusesIt()
    {
        if (!OnPath("kubectl")) return;
        var free = NodeWhere(pods => pods.Any(p => OwnerKind(p) == "ReplicaSet") && !pods.Any(p => App(p) is "ledger" or "web"));
        var movable = Pods().Count(p => NodeOf(p) == free && OwnerKind(p) is "ReplicaSet" or "Job");

        var r = await Kubectl(TimeSpan.FromSeconds(90), "drain", free, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s");
        Assert.True(r.ExitCode == 0, $"{r.Stdout}\n{r.Stderr}");
        Assert.Contains($"node/{free} drained", r.Stdout);
        Assert.Contains("evicting pod", r.Stderr + r.Stdout);
        Assert.True(demo.IsCordoned(free));
        var left = Pods().Where(p => NodeOf(p) == free).ToArray();
        Assert.All(left, p => Assert.True(OwnerKind(p) is "DaemonSet" or "Node", $"{App(p)} still on {free}"));
        Assert.True(movable > 0);

        var guarded = NodeWhere(pods => pods.Any(p => App(p) == "ledger"));
        r = await Kubectl(TimeSpan.FromSeconds(60), "drain", guarded, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=4s");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("Cannot evict pod as it would violate the pod's disruption budget.", r.Stderr);
        Assert.Contains(Pods(), p => NodeOf(p) == guarded && App(p) == "ledger");
    }

    [Fact]
    public async Task DeleteNode_AndDeploymentPodsComeBack()
    {
        if (!OnPath("kubectl")) return;
        var node = NodeWhere(pods => pods.Any(p => OwnerKind(p) == "ReplicaSet"));
        var r = await Kubectl(TimeSpan.FromSeconds(30), "delete", "node", node);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains($"node \"{node}\" deleted", r.Stdout);
        Assert.Null(demo.Api.Store.Get("nodes", null, node));
        Assert.DoesNotContain(Pods(), p => NodeOf(p) == node);
    }

    [Fact]
    public async Task CreateLease_ThenAlreadyExists_AndGetEvents()
    {
        if (!OnPath("kubectl")) return;
        var file = Path.Combine(dir, "lease.yaml");
        await File.WriteAllTextAsync(file, """
            apiVersion: coordination.k8s.io/v1
            kind: Lease
            metadata:
              name: other-controller
            spec:
              holderIdentity: someone-else
              leaseDurationSeconds: 30
            """);
        // The server publishes no OpenAPI document, which kubectl's schema validation would download.
        var r = await Kubectl(TimeSpan.FromSeconds(30), "create", "-f", file, "--validate=false");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("lease.coordination.k8s.io/other-controller created", r.Stdout);
        Assert.Equal("someone-else", (string?)demo.Api.Store.Get("leases", "default", "other-controller")!.ToJsonObject()["spec"]!["holderIdentity"]);

        r = await Kubectl(TimeSpan.FromSeconds(30), "create", "-f", file, "--validate=false");
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("leases.coordination.k8s.io \"other-controller\" already exists", r.Stderr);

        using var client = new KubeClient(KubeConnection.Resolve(demo.KubeconfigPath, null, KubeEnvironment.Process), TimeSpan.FromSeconds(10));
        await client.CreateEventAsync(new KubeEventRecord("default", "Node", "some-node", null, "Cordoned", "cordoned by karpetrack", "Normal"), default);
        r = await Kubectl(TimeSpan.FromSeconds(30), "get", "events", "-o", "jsonpath={range .items[*]}{.reason} {.involvedObject.name} {.message}{\"\\n\"}{end}");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("Cordoned some-node cordoned by karpetrack", r.Stdout);
        // The table kubectl prints, as for a real apiserver: LAST SEEN, TYPE, REASON, OBJECT, MESSAGE.
        r = await Kubectl(TimeSpan.FromSeconds(30), "get", "events");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Matches(@"^LAST SEEN\s+TYPE\s+REASON\s+OBJECT\s+MESSAGE$", lines[0].Trim());
        Assert.Contains(lines, l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^\S+\s+Normal\s+Cordoned\s+node/some-node\s+cordoned by karpetrack$"));
    }

    [Fact]
    public async Task PythonKubernetesClient_PatchesANodeAndEvictsAPod()
    {
        if (!File.Exists("/usr/bin/python3")) return;
        var check = await RunAsync("/usr/bin/python3", ["-c", "import kubernetes"], TimeSpan.FromSeconds(20));
        if (check.ExitCode != 0) return; // python3-kubernetes not installed: optional peer

        var node = NodeWhere(_ => true);
        var victim = Pods().First(p => NodeOf(p) is not null && OwnerKind(p) == "ReplicaSet" && App(p) is not ("ledger" or "web"));
        var ledger = Pods().First(p => NodeOf(p) is not null && App(p) == "ledger");
        const string script = """
            import sys
            from kubernetes import client, config
            from kubernetes.client.rest import ApiException
            config.load_kube_config(sys.argv[1])
            v1 = client.CoreV1Api()
            n = v1.patch_node(sys.argv[2], {"spec": {"unschedulable": True}, "metadata": {"labels": {"karpetrack.io/drain": "yes"}}})
            print(n.spec.unschedulable, n.metadata.labels["karpetrack.io/drain"])
            def evict(ns, name):
                body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=ns), delete_options=client.V1DeleteOptions(grace_period_seconds=0))
                try:
                    v1.create_namespaced_pod_eviction(name, ns, body)
                    return "evicted"
                except ApiException as e:
                    return str(e.status)
            print(evict(sys.argv[3], sys.argv[4]), evict("payments", sys.argv[5]))
            """;
        var r = await RunAsync("/usr/bin/python3", ["-c", script, demo.KubeconfigPath, node,
            (string)victim["metadata"]!["namespace"]!, (string)victim["metadata"]!["name"]!, (string)ledger["metadata"]!["name"]!], TimeSpan.FromSeconds(40));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal("True yes\nevicted 429", r.Stdout.Trim().Replace("\r", ""));
        Assert.True(demo.IsCordoned(node));
        Assert.Null(demo.Api.Store.Get("pods", (string)victim["metadata"]!["namespace"]!, (string)victim["metadata"]!["name"]!));
    }
}
