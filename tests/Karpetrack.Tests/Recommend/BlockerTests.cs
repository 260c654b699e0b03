using static Karpetrack.Tests.Recommend.Scenario;

namespace Karpetrack.Tests.Recommend;

/// <summary>What keeps a node: pod blockers (annotations, owners, local storage, mirror pods), pods that fit nowhere else, budgets without headroom, node annotations.</summary>
public class BlockerTests
{
    [Fact]
    public void MirrorPodsNeverBlock()
    {
        // Static pods: one owned by its Node, one known by the kubelet's annotation; kube-system, no budget, hostPath.
        const string hostPath = ""","volumes":[{"name":"h","hostPath":{"path":"/etc/kubernetes"}}]""";
        var plan = new Scenario()
            .Node("keep", "gp.vs1.2xlarge-iad").Pod("other", "keep", "1", "1Gi")
            .Node("static", "gp.vs1.large-iad")
            .Pod("kube-proxy-static", "static", "100m", "64Mi", ns: "kube-system", ownerKind: "Node", owner: "static", extraSpec: hostPath)
            .Pod("etcd-static", "static", "100m", "64Mi", ns: "kube-system", ownerKind: "None", extraSpec: hostPath,
                annotations: """{"kubernetes.io/config.mirror":"abc"}""")
            .Run();
        Assert.Equal(["static"], Single(plan, RecommendationType.DeleteEmpty).Nodes);
        Assert.False(plan.Blockers.ContainsKey("static"));
        Assert.All(plan.Blockers.Values.SelectMany(b => b), b => Assert.DoesNotContain(b.Pods, p => p.Contains("static")));
    }

    [Theory]
    [InlineData("""{"karpenter.sh/do-not-disrupt":"true"}""", "", "ReplicaSet", "shop", BlockerReasons.PodDoNotDisrupt)]
    [InlineData("""{"karpetrack.io/do-not-disrupt":"true"}""", "", "ReplicaSet", "shop", BlockerReasons.PodDoNotDisrupt)]
    [InlineData("""{"cluster-autoscaler.kubernetes.io/safe-to-evict":"false"}""", "", "ReplicaSet", "shop", BlockerReasons.PodSafeToEvictFalse)]
    [InlineData("{}", ""","volumes":[{"name":"scratch","emptyDir":{}}]""", "ReplicaSet", "shop", BlockerReasons.PodLocalStorage)]
    [InlineData("{}", ""","volumes":[{"name":"logs","hostPath":{"path":"/var/log"}}]""", "ReplicaSet", "shop", BlockerReasons.PodLocalStorage)]
    [InlineData("{}", "", "None", "shop", BlockerReasons.PodNoController)]
    [InlineData("{}", "", "ReplicaSet", "kube-system", BlockerReasons.KubeSystemWithoutPdb)]
    public void PodBlockersAreNamedAndKeepTheNode(string annotations, string extraSpec, string ownerKind, string ns, string reason)
    {
        var plan = new Scenario()
            .Node("keep", "gp.vs1.2xlarge-iad").Pod("other", "keep", "1", "1Gi")
            .Node("blocked", "gp.vs1.2xlarge-iad").Pod("precious", "blocked", "100m", "128Mi", ns: ns, ownerKind: ownerKind, annotations: annotations, extraSpec: extraSpec)
            .Run();
        Assert.DoesNotContain(plan.Recommendations, r => r.Nodes.Contains("blocked"));
        var blocker = Assert.Single(plan.Blockers["blocked"], b => b.Reason == reason);
        Assert.Equal([$"{ns}/precious"], blocker.Pods);
    }

    private const string SafeToEvict = """{"cluster-autoscaler.kubernetes.io/safe-to-evict":"true"}""";

    [Theory]
    [InlineData(""","volumes":[{"name":"s","emptyDir":{}},{"name":"m","emptyDir":{"medium":"Memory"}}]""", "ReplicaSet", "shop", null)]
    [InlineData("", "None", "shop", BlockerReasons.PodNoController)]                 // a bare pod would not come back
    [InlineData("", "ReplicaSet", "kube-system", BlockerReasons.KubeSystemWithoutPdb)]
    public void SafeToEvictTrueOverridesOnlyLocalStorage(string extraSpec, string ownerKind, string ns, string? stillBlocks)
    {
        var plan = new Scenario()
            .Node("keep", "gp.vs1.2xlarge-iad").Pod("other", "keep", "1", "1Gi")
            .Node("go", "gp.vs1.2xlarge-iad").Pod("scratchy", "go", "100m", "128Mi", ns: ns, ownerKind: ownerKind, annotations: SafeToEvict, extraSpec: extraSpec)
            .Run();
        if (stillBlocks is null)
        {
            Assert.Contains(plan.Recommendations, r => r.Nodes.Contains("go"));
            return;
        }
        Assert.DoesNotContain(plan.Recommendations, r => r.Nodes.Contains("go"));
        Assert.Equal([$"{ns}/scratchy"], Assert.Single(plan.Blockers["go"], b => b.Reason == stillBlocks).Pods);
        Assert.DoesNotContain(plan.Blockers["go"], b => b.Reason == BlockerReasons.PodLocalStorage);
    }

    [Fact]
    public void PodsDoNotFitElsewhereNamesThePodsThatDoNot()
    {
        // "keep" has 3 cores free: the 1-core pods fit there, the 3.5-core replicas and the 16 GiB pod do not.
        var plan = new Scenario()
            .Node("keep", "gp.vs1.large-iad", annotations: DoNotDisrupt).Pod("fill", "keep", "900m", "1Gi")
            .Node("full", "gp.vs1.xlarge-iad")
            .Pod("big-1", "full", "3500m", "1Gi").Pod("big-2", "full", "3500m", "1Gi")
            .Pod("small", "full", "1", "1Gi").Pod("wide", "full", "100m", "16Gi", owner: "wide-7c4f")
            .Run(new RecommenderOptions { Region = "us-east-iad-1", ReplaceThresholdDollars = 1 });
        Assert.DoesNotContain(plan.Recommendations, r => r.Nodes.Contains("full"));
        var blocker = Assert.Single(plan.Blockers["full"], b => b.Reason == BlockerReasons.PodsDoNotFit);
        Assert.Equal(["shop/big-1", "shop/big-2", "shop/wide"], blocker.Pods);
        Assert.Empty(blocker.Pdbs);
    }

    [Fact]
    public void PodsDoNotFitElsewhereNamesAtMostTenPods()
    {
        var scenario = new Scenario()
            .Node("keep", "gp.vs1.large-iad", annotations: DoNotDisrupt).Pod("fill", "keep", "900m", "1Gi")
            .Node("full", "gp.vs1.xlarge-iad");
        for (int i = 1; i <= 12; i++) scenario.Pod($"big-{i:D2}", "full", "3500m", "1Gi");
        var plan = scenario.Run(new RecommenderOptions { Region = "us-east-iad-1", ReplaceThresholdDollars = 1 });
        var blocker = Assert.Single(plan.Blockers["full"], b => b.Reason == BlockerReasons.PodsDoNotFit);
        Assert.Equal(10, blocker.Pods.Count);
        Assert.All(blocker.Pods, p => Assert.StartsWith("shop/big-", p));
        Assert.Equal(blocker.Pods.Order(StringComparer.Ordinal), blocker.Pods);
    }

    [Fact]
    public void BudgetsWithoutHeadroomBlockAndNameThePdb()
    {
        var plan = new Scenario()
            .Node("keep", "gp.vs1.2xlarge-iad").Pod("other", "keep", "1", "1Gi")
            .Node("guarded", "gp.vs1.2xlarge-iad").Pod("db-0", "guarded", "100m", "128Mi", labels: """{"app":"db"}""")
            .Pdb("shop", "db", "db", 0)
            .Run();
        var b = Assert.Single(plan.Blockers["guarded"], x => x.Reason == BlockerReasons.PdbNoDisruptions);
        Assert.Equal(["shop/db"], b.Pdbs);
        Assert.Equal(["shop/db-0"], b.Pods);

        var allowed = new Scenario()
            .Node("keep", "gp.vs1.2xlarge-iad").Pod("other", "keep", "1", "1Gi")
            .Node("guarded", "gp.vs1.2xlarge-iad").Pod("db-0", "guarded", "100m", "128Mi", labels: """{"app":"db"}""")
            .Pdb("shop", "db", "db", 1)
            .Run();
        var rec = Assert.Single(allowed.Recommendations, r => r.Nodes.Contains("guarded"));
        Assert.Equal(1, rec.PdbHeadroom);
    }

    [Fact]
    public void NodeAnnotationsBlock()
    {
        var plan = new Scenario()
            .Node("a", "gp.vs1.2xlarge-iad", annotations: new() { ["karpetrack.io/do-not-disrupt"] = "true" })
            .Node("b", "gp.vs1.2xlarge-iad", annotations: new() { ["cluster-autoscaler.kubernetes.io/scale-down-disabled"] = "true" })
            .Run();
        Assert.Empty(plan.Recommendations);
        Assert.Contains(plan.Blockers["a"], x => x.Reason == BlockerReasons.NodeDoNotDisrupt);
        Assert.Contains(plan.Blockers["b"], x => x.Reason == BlockerReasons.NodeScaleDownDisabled);
    }
}
