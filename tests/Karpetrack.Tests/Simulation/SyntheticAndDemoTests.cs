using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using static Karpetrack.Tests.Simulation.SimHelpers;

namespace Karpetrack.Tests.Simulation;

public sealed class SyntheticClusterTests
{
    [Fact]
    public void Nodes_LookLikeSpotNodes()
    {
        var nodes = SyntheticCluster.Nodes(30, seed: 5, Now);
        foreach (var n in nodes)
        {
            var name = (string)n["metadata"]!["name"]!;
            Assert.Matches("^prod-instance-[0-9]{17}$", name);
            var labels = n["metadata"]!["labels"]!.AsObject();
            var cls = SyntheticCluster.IadClasses.Single(c => c.Name == (string)labels["servers.ngpc.rxt.io/class"]!);
            Assert.EndsWith("-iad", cls.Name);
            Assert.Contains((string)labels["servers.ngpc.rxt.io/type"]!, new[] { "spot", "ondemand" });
            Assert.True(Guid.TryParse((string)labels["nodepool.ngpc.rxt.io/name"]!, out _));
            Assert.Equal(cls.Flavor, (string)labels["node.kubernetes.io/instance-type"]!);
            Assert.Equal("IAD", (string)labels["topology.kubernetes.io/region"]!);
            Assert.Equal("nova", (string)labels["topology.cinder.csi.openstack.org/zone"]!);
            Assert.Equal(name, (string)labels["kubernetes.io/hostname"]!);
            Assert.StartsWith("openstack:///", (string)n["spec"]!["providerID"]!);
            Assert.Equal(cls.Vcpu.ToString(), (string)n["status"]!["capacity"]!["cpu"]!);
            Assert.Equal($"{(long)(cls.MemoryGb * 1_000_000_000m) / 1024}Ki", (string)n["status"]!["capacity"]!["memory"]!);
            Assert.Equal($"{cls.Vcpu * 1000 - 100}m", (string)n["status"]!["allocatable"]!["cpu"]!);
            Assert.Equal(10, n["status"]!["nodeInfo"]!.AsObject().Count);
        }
        // One pool per class and type: nodes of a pool share the class.
        Assert.All(nodes.GroupBy(n => (string)n["metadata"]!["labels"]!["nodepool.ngpc.rxt.io/name"]!),
            g => Assert.Single(g.Select(n => (string)n["metadata"]!["labels"]!["servers.ngpc.rxt.io/class"]!).Distinct()));
        Assert.Equal(
            SyntheticCluster.Nodes(30, seed: 5, Now).Select(n => n.ToJsonString()),
            nodes.Select(n => n.ToJsonString()));
    }

    [Fact]
    public void Pods_AreAboutFourKilobytesAndFitTheirNodes()
    {
        var nodes = SyntheticCluster.Nodes(20, seed: 9, Now);
        var pods = SyntheticCluster.Pods(nodes, 600, seed: 9, Now).ToList();
        Assert.Equal(600, pods.Count);
        var avg = pods.Average(p => p.ToJsonString().Length);
        Assert.InRange(avg, 3000, 6000);
        Assert.Equal(600, pods.Select(p => $"{p["metadata"]!["namespace"]}/{p["metadata"]!["name"]}").Distinct().Count());
        Assert.Contains(pods, p => p["metadata"]!["annotations"]?["kubernetes.io/config.mirror"] is not null);
        Assert.Contains(pods, p => (string?)p["metadata"]!["ownerReferences"]?[0]?["kind"] == "DaemonSet");
        Assert.Contains(pods, p => p["spec"]!["initContainers"]?.AsArray().Any(c => (string?)c!["restartPolicy"] == "Always") == true);
        Assert.All(pods, p => Assert.Equal(2, p["metadata"]!["managedFields"]!.AsArray().Count));
        var pending = pods.Where(p => p["spec"]!["nodeName"] is null).ToList();
        Assert.All(pending, p =>
        {
            Assert.Equal("Pending", (string)p["status"]!["phase"]!);
            var cond = p["status"]!["conditions"]![0]!;
            Assert.Equal("PodScheduled", (string)cond["type"]!);
            Assert.Equal("False", (string)cond["status"]!);
            Assert.Equal("Unschedulable", (string)cond["reason"]!);
            Assert.StartsWith("0/20 nodes are available: 20 Insufficient cpu.", (string)cond["message"]!);
        });
        Assert.All(pods.Where(p => p["spec"]!["nodeName"] is not null), p =>
        {
            Assert.Equal("Running", (string)p["status"]!["phase"]!);
            Assert.Equal(5, p["status"]!["conditions"]!.AsArray().Count);
        });
    }

    [Fact]
    public async Task PythonKubernetesClient_ParsesNodesAndPodsStrictly()
    {
        if (!File.Exists("/usr/bin/python3")) return;
        var check = await RunAsync("/usr/bin/python3", ["-c", "import kubernetes"], TimeSpan.FromSeconds(20));
        if (check.ExitCode != 0) return; // python3-kubernetes not installed: optional peer

        await using var server = await StartWithClusterAsync(nodes: 5, pods: 60);
        var dir = Directory.CreateTempSubdirectory("karpetrack-py-").FullName;
        try
        {
            var kubeconfig = server.WriteKubeconfig(Path.Combine(dir, "kubeconfig"));
            const string script = """
                import sys
                from kubernetes import client, config
                config.load_kube_config(sys.argv[1])
                v1 = client.CoreV1Api()
                nodes = v1.list_node()
                pods = v1.list_pod_for_all_namespaces(limit=25)
                total = len(pods.items)
                while pods.metadata._continue:
                    pods = v1.list_pod_for_all_namespaces(limit=25, _continue=pods.metadata._continue)
                    total += len(pods.items)
                n = nodes.items[0]
                print(len(nodes.items), total, n.status.node_info.kubelet_version, n.status.capacity["pods"])
                """;
            var r = await RunAsync("/usr/bin/python3", ["-c", script, kubeconfig], TimeSpan.FromSeconds(40));
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.Equal("5 60 v1.32.4 110", r.Stdout.Trim());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}

public sealed class DemoClusterTests
{
    private static string Describe(KubeApiServer api) => string.Join("\n",
        api.Store.List("pods").Items.Select(p =>
        {
            var o = p.ToJsonObject();
            return $"{p.Namespace}/{p.Name} {o["spec"]!["nodeName"]} {o["status"]!["phase"]} {o["metadata"]!["deletionTimestamp"] is not null}";
        }));

    [Fact]
    public async Task SameSeed_SameClusterAndSameChanges()
    {
        var options = new DemoClusterOptions { Seed = 7, Churn = false };
        await using var a = await DemoCluster.StartAsync(options);
        await using var b = await DemoCluster.StartAsync(options);
        Assert.Equal(Describe(a.Api), Describe(b.Api));
        Assert.Equal(
            a.Api.Store.List("nodes").Items.Select(n => n.Name),
            b.Api.Store.List("nodes").Items.Select(n => n.Name));
        for (var i = 0; i < 40; i++)
        {
            var ca = a.Step();
            Assert.NotEmpty(ca);
            Assert.Equal(ca, b.Step());
        }
        Assert.Equal(Describe(a.Api), Describe(b.Api));

        await using var c = await DemoCluster.StartAsync(options with { Seed = 8 });
        Assert.NotEqual(Describe(a.Api), Describe(c.Api));
    }

    [Fact]
    public async Task Contents_HaveTheAdvertisedVariety()
    {
        await using var demo = await DemoCluster.StartAsync(new DemoClusterOptions { Churn = false });
        var nodes = demo.Api.Store.List("nodes").Items.Select(n => n.ToJsonObject()).ToList();
        var pods = demo.Api.Store.List("pods").Items.Select(p => p.ToJsonObject()).ToList();
        Assert.Equal(12, nodes.Count);
        Assert.True(nodes.Select(n => (string)n["metadata"]!["labels"]!["servers.ngpc.rxt.io/class"]!).Distinct().Count() >= 6);
        Assert.Single(nodes, n => n["spec"]!["unschedulable"] is not null);
        Assert.Equal(12 * 3, pods.Count(p => (string?)p["metadata"]!["ownerReferences"]?[0]?["kind"] == "DaemonSet"));
        Assert.Equal(12, pods.Count(p => p["metadata"]!["annotations"]?["kubernetes.io/config.mirror"] is not null));
        Assert.Contains(pods, p => p["spec"]!["overhead"] is not null && (string)p["spec"]!["runtimeClassName"]! == "kata");
        Assert.Contains(pods, p => (string?)p["metadata"]!["ownerReferences"]?[0]?["kind"] == "Job");
        Assert.Contains(pods, p => p["spec"]!["initContainers"]?.AsArray().Any(c => c!["restartPolicy"] is null) == true);
        Assert.Contains(pods, p => p["spec"]!["initContainers"]?.AsArray().Any(c => (string?)c!["restartPolicy"] == "Always") == true);
        Assert.True(pods.Count(p => (string)p["status"]!["phase"]! == "Pending") >= 2);
        Assert.True(pods.Select(p => (string)p["metadata"]!["namespace"]!).Distinct().Count() >= 5);
        Assert.True(File.Exists(demo.KubeconfigPath));
        var namespaces = demo.Api.Store.List("namespaces").Items.Select(n => n.Name).ToHashSet();
        Assert.All(pods, p => Assert.Contains((string)p["metadata"]!["namespace"]!, namespaces));
    }

    [Fact]
    public async Task ChurnLoop_ChangesSomethingWithinTheInterval()
    {
        Assert.True(new DemoClusterOptions().ChurnInterval <= TimeSpan.FromSeconds(15));
        await using var demo = await DemoCluster.StartAsync(new DemoClusterOptions { ChurnInterval = TimeSpan.FromMilliseconds(200) });
        using var http = Client(demo.Api);
        // The churn loop ticks on a wall-clock PeriodicTimer (DemoCluster has no clock seam): the test waits
        // for three changes, with a deadline of many intervals, instead of timing them.
        var events = await ReadWatchAsync(http, $"/api/v1/pods?watch=1&resourceVersion={demo.Api.Store.CurrentResourceVersion}",
            e => e.Count >= 3, TimeSpan.FromSeconds(30));
        Assert.True(events.Count >= 3, $"only {events.Count} events");
    }
}
