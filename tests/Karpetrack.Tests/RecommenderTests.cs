using System.Text.Json.Nodes;

namespace Karpetrack.Tests;

/// <summary>A small cluster built by hand, priced with the real 2026-08-17 feed snapshot (us-east-iad-1).</summary>
internal sealed class Scenario
{
    public static readonly PriceBook Book = PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-08-17.json")), DateTimeOffset.UnixEpoch, "test");
    public readonly ClusterModel Model = new(ResourceTable.Default);
    public readonly List<PdbRecord> Pdbs = [];
    public readonly List<DaemonSetRecord> DaemonSets = [];
    private int uid;

    public Scenario Node(string name, string cls, bool ready = true, bool cordoned = false, Dictionary<string, string>? annotations = null,
        string type = "spot", Dictionary<string, string>? labels = null, Taint[]? taints = null, int gpus = 0, long reservedMilliCpu = 100, bool deleting = false)
    {
        var c = Book.Classes[cls].Class;
        long cpu = (long)(c.Cpu * 1000), mem = c.MemoryBytes;
        var capacity = new long[Model.Resources.Count];
        var allocatable = new long[Model.Resources.Count];
        (capacity[ResourceTable.Cpu], capacity[ResourceTable.Memory], capacity[Model.Resources.GpuIndex]) = (cpu, mem, gpus);
        (allocatable[ResourceTable.Cpu], allocatable[ResourceTable.Memory], allocatable[Model.Resources.GpuIndex]) = (cpu - reservedMilliCpu, mem - (mem / 20), gpus);
        var l = new Dictionary<string, string>(labels ?? [], StringComparer.Ordinal)
        {
            [SpotLabels.ServerClass] = cls, [SpotLabels.CapacityType] = type, [SpotLabels.Pool] = "pool-" + name,
            ["kubernetes.io/hostname"] = name, ["kubernetes.io/os"] = "linux",
        };
        Model.UpsertNode(new NodeRecord
        {
            Name = name, Labels = l, Annotations = annotations ?? [], Ready = ready, Unschedulable = cordoned, Taints = taints ?? [],
            Capacity = capacity, Allocatable = allocatable, Deleting = deleting,
        });
        return this;
    }

    /// <summary>A pod decoded from real-shaped JSON, so the shape goes through the same decoder as a live one.</summary>
    public Scenario Pod(string name, string? node, string cpu, string mem, string ns = "shop", string ownerKind = "ReplicaSet", string? owner = "app-5d9f",
        string labels = """{"app":"app"}""", string annotations = "{}", string extraSpec = "", bool pending = false, int gpu = 0)
    {
        var ownerRefs = ownerKind == "None" ? "[]"
            : """[{"apiVersion":"apps/v1","kind":"@K@","name":"@O@","uid":"x","controller":true}]""".Replace("@K@", ownerKind).Replace("@O@", owner);
        var status = pending
            ? """{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False","reason":"Unschedulable"}]}"""
            : """{"phase":"Running"}""";
        var json = """
            {"metadata":{"name":"@NAME@","namespace":"@NS@","uid":"@UID@","labels":@LABELS@,"annotations":@ANN@,"ownerReferences":@OWN@},
             "spec":{@NODE@"containers":[{"name":"c","resources":{"requests":{"cpu":"@CPU@","memory":"@MEM@"@GPU@}}}]@EXTRA@},
             "status":@STATUS@}
            """
            .Replace("@NAME@", name).Replace("@NS@", ns).Replace("@UID@", Json.StableGuid(ns + "/" + name + "/" + uid++).ToString())
            .Replace("@LABELS@", labels).Replace("@ANN@", annotations).Replace("@OWN@", ownerRefs)
            .Replace("@NODE@", node is null ? "" : "\"nodeName\":\"" + node + "\",").Replace("@CPU@", cpu).Replace("@MEM@", mem)
            .Replace("@GPU@", gpu > 0 ? $",\"nvidia.com/gpu\":\"{gpu}\"" : "").Replace("@EXTRA@", extraSpec).Replace("@STATUS@", status);
        Model.UpsertPod(PodRequestTests.Decode(json));
        return this;
    }

    /// <summary>A DaemonSet whose pod template requests cpu and memory, with the given nodeSelector (JSON).</summary>
    public Scenario DaemonSet(string name, string cpu, string mem, string nodeSelector = "{}")
    {
        var template = PodRequestTests.Decode("""
            {"metadata":{"name":"@N@","namespace":"kube-system","labels":{"app":"@N@"}},
             "spec":{"nodeSelector":@SEL@,"containers":[{"name":"c","resources":{"requests":{"cpu":"@CPU@","memory":"@MEM@"}}}]}}
            """.Replace("@N@", name).Replace("@SEL@", nodeSelector).Replace("@CPU@", cpu).Replace("@MEM@", mem));
        DaemonSets.Add(new DaemonSetRecord { Namespace = "kube-system", Name = name, Template = template });
        return this;
    }

    public Scenario Pdb(string ns, string name, string app, int allowed)
    {
        using var doc = System.Text.Json.JsonDocument.Parse("""{"matchLabels":{"app":"@A@"}}""".Replace("@A@", app));
        Pdbs.Add(new PdbRecord { Namespace = ns, Name = name, Selector = LabelSelector.FromJson(doc.RootElement), DisruptionsAllowed = allowed });
        return this;
    }

    public Plan Run(RecommenderOptions? o = null, IReadOnlyList<InFlightNode>? inFlight = null, PriceBook? book = null) =>
        Recommender.Recommend(Model.Snapshot(), Model.Pods(), Pdbs.ToArray(), DaemonSets.ToArray(), book ?? Book, o ?? new RecommenderOptions { Region = "us-east-iad-1" }, inFlight);
}

public class RecommenderTests
{
    private static Recommendation Single(Plan plan, RecommendationType type) => Assert.Single(plan.Recommendations, r => r.Type == type);

    [Fact]
    public void ProvisionsTheCheapestFittingClassForPendingPods()
    {
        var plan = new Scenario().Node("small", "gp.vs1.medium-iad").Pod("big", null, "3", "6Gi", pending: true).Run();
        var rec = Single(plan, RecommendationType.Provision);
        var node = Assert.Single(rec.NewNodes);
        var cls = Scenario.Book.Classes[node.ServerClass];
        Assert.True(cls.Class.Cpu * 1000 - 100 >= 3000 && cls.Class.MemoryBytes * 0.95 >= 6L << 30, node.ServerClass);
        Assert.Equal(0.001m, node.PricePerHour);                // ch.vs1.large-iad: 4 cores, 7.5 GB at the floor price
        Assert.Equal("ch.vs1.large-iad", node.ServerClass);
        Assert.Equal(["shop/big"], rec.PendingPods);
        Assert.True(rec.LowerBoundPerHour <= rec.NewCostPerHour);
        Assert.Equal(rec.NewCostPerHour, plan.ProvisioningCostPerHour);
    }

    [Fact]
    public void NodesBeingProvisionedTakePendingPodsSoTheyAreNotProvisionedForTwice()
    {
        var s = new Scenario().Node("small", "gp.vs1.medium-iad").Pod("a", null, "3", "6Gi", pending: true).Pod("b", null, "3", "6Gi", pending: true);
        var first = Single(s.Run(), RecommendationType.Provision);
        // The pools of that recommendation are in flight: nothing more is bought for the same pods.
        var pools = first.NewNodes.SelectMany(n => Enumerable.Range(0, n.Count).Select(i => new InFlightNode($"pool-{n.ServerClass}-{i}", n.ServerClass))).ToList();
        var again = s.Run(inFlight: pools);
        Assert.DoesNotContain(again.Recommendations, r => r.Type == RecommendationType.Provision);
        Assert.Empty(again.Unplaceable);
        // One more pending pod than the capacity in flight holds gets only its own new node.
        s.Pod("c", null, "3", "6Gi", pending: true);
        var third = Single(s.Run(inFlight: pools), RecommendationType.Provision);
        Assert.Equal(["shop/c"], third.PendingPods);
        Assert.Contains(third.Reasons, r => r.Contains("already being provisioned"));
        // Capacity in flight is not a destination for consolidation: a node being provisioned is not up.
        Assert.All(s.Run(inFlight: pools).Recommendations.SelectMany(r => r.Moves), m => Assert.DoesNotContain(Recommender.ProvisioningPrefix, m.To));
    }

    [Fact]
    public void ProvisioningHonoursNodeSelectorsOnTheLabelsNewNodesWillCarry()
    {
        var plan = new Scenario().Node("n", "gp.vs1.medium-iad")
            .Pod("mem", null, "1", "2Gi", pending: true, extraSpec: ""","nodeSelector":{"karpetrack.io/category":"mh"}""").Run();
        Assert.StartsWith("mh.", Single(plan, RecommendationType.Provision).NewNodes.Single().ServerClass);
    }

    [Fact]
    public void RequiredNodeAffinityAndTaintsAreHonoured()
    {
        var affinity = ""","affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"servers.ngpc.rxt.io/class","operator":"In","values":["gp.vs1.xlarge-iad"]}]}]}}}""";
        var plan = new Scenario().Node("n", "gp.vs1.medium-iad").Pod("pinned", null, "500m", "1Gi", pending: true, extraSpec: affinity).Run();
        Assert.Equal("gp.vs1.xlarge-iad", Single(plan, RecommendationType.Provision).NewNodes.Single().ServerClass);

        // A tainted node with room is not used by a pod that does not tolerate the taint.
        var tainted = new Scenario().Node("t", "gp.vs1.2xlarge-iad", taints: [new Taint("dedicated", "db", "NoSchedule")])
            .Pod("p", null, "1", "1Gi", pending: true).Run();
        Assert.Single(tainted.Recommendations, r => r.Type == RecommendationType.Provision);
        var tolerating = new Scenario().Node("t", "gp.vs1.2xlarge-iad", taints: [new Taint("dedicated", "db", "NoSchedule")])
            .Pod("p", null, "1", "1Gi", pending: true, extraSpec: ""","tolerations":[{"key":"dedicated","operator":"Equal","value":"db","effect":"NoSchedule"}]""").Run();
        Assert.DoesNotContain(tolerating.Recommendations, r => r.Type == RecommendationType.Provision);
    }

    [Fact]
    public void PendingPodsThatFitExistingRoomBuyNothing()
    {
        var plan = new Scenario().Node("roomy", "gp.vs1.2xlarge-iad").Pod("p", null, "2", "2Gi", pending: true).Run();
        Assert.DoesNotContain(plan.Recommendations, r => r.Type == RecommendationType.Provision);
        Assert.Empty(plan.Unplaceable);
    }

    [Fact]
    public void APodLargerThanEveryClassIsUnplaceableWithTheReason()
    {
        var plan = new Scenario().Node("n", "gp.vs1.medium-iad").Pod("huge", null, "64", "512Gi", pending: true).Run();
        Assert.DoesNotContain(plan.Recommendations, r => r.Type == RecommendationType.Provision);
        var (pod, reason) = Assert.Single(plan.Unplaceable);
        Assert.Equal("shop/huge", pod);
        Assert.Contains("64", reason);
    }

    [Fact]
    public void EmptyNodesAreDeletedFirst()
    {
        var plan = new Scenario()
            .Node("busy", "gp.vs1.2xlarge-iad").Pod("a", "busy", "2", "4Gi")
            .Node("empty", "gp.vs1.xlarge-iad").Pod("ds", "empty", "100m", "64Mi", ns: "kube-system", ownerKind: "DaemonSet", owner: "calico")
            .Run();
        var rec = Single(plan, RecommendationType.DeleteEmpty);
        Assert.Equal(["empty"], rec.Nodes);
        Assert.Equal(0.005m, rec.SavingsPerHour);
        Assert.Equal(0.005m * 730, rec.SavingsPerMonth);
        Assert.Empty(rec.Moves);
    }

    [Fact]
    public void ConsolidationReservesCapacitySoTwoRemovalsNeverShareFreeSpace()
    {
        // Three nodes, each half full: only one can go (its pods fill the others); the others stay, with a reason.
        var s = new Scenario();
        foreach (var n in new[] { "n1", "n2", "n3" })
            s.Node(n, "gp.vs1.large-iad").Pod(n + "-a", n, "1500m", "6Gi");
        var plan = s.Run();
        var removals = plan.Recommendations.Where(r => r.Type is RecommendationType.Consolidate or RecommendationType.DeleteEmpty).ToList();
        var removed = removals.SelectMany(r => r.Nodes).ToList();
        Assert.Single(removed);
        // Every move targets a node that is kept, and the moved requests fit what those nodes had free.
        var free = new Dictionary<string, long>();
        foreach (var n in new[] { "n1", "n2", "n3" }.Except(removed)) free[n] = 3900 - 1500;
        foreach (var m in removals.SelectMany(r => r.Moves)) free[m.To] -= 1500;
        Assert.All(free.Values, v => Assert.True(v >= 0));
        foreach (var kept in new[] { "n1", "n2", "n3" }.Except(removed)) Assert.NotEmpty(plan.Blockers[kept]);
    }

    private static readonly Dictionary<string, string> DoNotDisrupt = new() { ["karpetrack.io/do-not-disrupt"] = "true" };

    /// <summary>
    /// Two floor-priced nodes (0.001 $/h each) whose pods fit the kept nodes only together: alone, the
    /// placement (largest pod onto the fullest node) puts the 2-core pod on "big" and strands the 4 GiB
    /// pod; the packer puts the 2-core pods on "d1" and "d2" and both 4 GiB pods on "big".
    /// </summary>
    private static Scenario TwoNodesThatOnlyGoTogether()
    {
        var s = new Scenario()
            .Node("big", "mh.vs1.2xlarge-iad", annotations: DoNotDisrupt).Pod("big-fill", "big", "13900m", "97Gi")
            .Node("d1", "ch.vs1.large-iad", annotations: DoNotDisrupt).Pod("d1-fill", "d1", "1900m", "5Gi")
            .Node("d2", "ch.vs1.large-iad", annotations: DoNotDisrupt).Pod("d2-fill", "d2", "1900m", "5Gi");
        foreach (var n in new[] { "x", "y" })
            s.Node(n, "ch.vs1.large-iad").Pod(n + "-cpu", n, "2", "1Gi").Pod(n + "-mem", n, "1", "4Gi");
        return s;
    }

    [Theory]
    [InlineData("0.005")]
    [InlineData("1")]      // the replacement threshold does not apply to a pure removal, however high
    public void MultiNodeConsolidationRemovesNodesForAnyPositiveSaving(string dollars)
    {
        var plan = TwoNodesThatOnlyGoTogether().Run(new RecommenderOptions { Region = "us-east-iad-1", ReplaceThresholdDollars = decimal.Parse(dollars, System.Globalization.CultureInfo.InvariantCulture) });
        var rec = Single(plan, RecommendationType.Consolidate);
        Assert.Equal(["x", "y"], rec.Nodes);
        Assert.Empty(rec.NewNodes);
        Assert.Equal(0.002m, rec.SavingsPerHour);                  // below the 0.005 $/h replacement threshold
        Assert.Equal(4, rec.Moves.Count);
        Assert.All(rec.Moves, m => Assert.Contains(m.To, new[] { "big", "d1", "d2" }));
        Assert.Equal(2, rec.Moves.Count(m => m.To == "big"));
        Assert.False(plan.Blockers.ContainsKey("x") || plan.Blockers.ContainsKey("y"));
    }

    /// <summary>Three 0.01 $/h 8-core nodes, each with a 5-core pod no other node has room for; together they fit one new 16-core node (0.01 $/h).</summary>
    private static Scenario ThreeNodesIntoOneNew()
    {
        var s = new Scenario();
        foreach (var n in new[] { "a", "b", "c" })
            s.Node(n, "mh.vs1.xlarge-iad").Pod(n + "-p", n, "5", "2Gi");
        return s;
    }

    [Theory]
    [InlineData(20, 0.005, true)]     // 0.03 → 0.01 $/h: saves 0.02 $/h, 67 %
    [InlineData(20, 0.025, false)]    // below the dollar threshold
    [InlineData(70, 0.005, false)]    // below the percentage threshold
    public void MultiNodeConsolidationOntoNewNodesIsHeldToTheReplacementThresholds(decimal percent, double dollars, bool recommended)
    {
        var o = new RecommenderOptions { Region = "us-east-iad-1", ReplaceThresholdPercent = percent, ReplaceThresholdDollars = (decimal)dollars };
        var plan = ThreeNodesIntoOneNew().Run(o);
        var multi = plan.Recommendations.Where(r => r.Type == RecommendationType.Consolidate && r.Nodes.Count > 1).ToList();
        Assert.Equal(recommended, multi.Count == 1);
        if (!recommended) return;
        var rec = multi[0];
        Assert.Equal(["a", "b", "c"], rec.Nodes);
        Assert.Equal(1, rec.NewNodes.Sum(n => n.Count));
        Assert.Equal(0.03m, rec.CurrentCostPerHour);
        Assert.Equal(0.02m, rec.SavingsPerHour);
        Assert.All(rec.Moves, m => Assert.EndsWith("#1", m.To));
    }

    [Fact]
    public void NotReadyCordonedAndDeletingNodesAreNeverDestinations()
    {
        // Each of the three has room for everything; "src" has none for the pending pod.
        var plan = new Scenario()
            .Node("cordoned", "gp.vs1.2xlarge-iad", cordoned: true)
            .Node("notready", "gp.vs1.2xlarge-iad", ready: false)
            .Node("deleting", "gp.vs1.2xlarge-iad", deleting: true)
            .Node("src", "gp.vs1.large-iad").Pod("p", "src", "3", "1Gi")
            .Pod("pend", null, "2", "1Gi", pending: true)
            .Run();
        Assert.DoesNotContain(plan.Recommendations.SelectMany(r => r.Moves), m => m.To is "cordoned" or "notready" or "deleting");
        Assert.DoesNotContain(plan.Recommendations, r => r.Type is RecommendationType.Consolidate && r.Nodes.Contains("src"));
        Assert.Equal(["shop/pend"], Single(plan, RecommendationType.Provision).PendingPods);
        Assert.Contains(plan.Blockers["notready"], b => b.Reason == BlockerReasons.NodeNotReady);
        Assert.Contains(plan.Blockers["deleting"], b => b.Reason == BlockerReasons.NodeDeleting);
    }

    [Theory]
    [InlineData("selector")]
    [InlineData("taint")]
    [InlineData("anti-affinity")]
    public void ConsolidationPlacesDisplacedPodsOnlyWhereTheirConstraintsAllow(string constraint)
    {
        // "wrong" is fuller, so it is tried first, and has room; only its labels, taints or pods rule it out.
        string extra = constraint switch
        {
            "selector" => ""","nodeSelector":{"disk":"ssd"}""",
            "anti-affinity" => AntiSpread,
            _ => "",
        };
        Scenario Make(bool withRight, bool constrained)
        {
            var s = new Scenario()
                .Node("wrong", "gp.vs1.xlarge-iad", annotations: DoNotDisrupt,
                    taints: constrained && constraint == "taint" ? [new Taint("dedicated", "db", "NoSchedule")] : null)
                .Pod("fill", "wrong", "6", "20Gi");
            if (constrained && constraint == "anti-affinity") s.Pod("spread-0", "wrong", "100m", "128Mi", labels: Spread, extraSpec: AntiSpread);
            if (withRight) s.Node("right", "gp.vs1.2xlarge-iad", annotations: DoNotDisrupt, labels: new() { ["disk"] = "ssd" });
            return s.Node("src", "gp.vs1.large-iad")
                .Pod("mover", "src", "500m", "512Mi", labels: constraint == "anti-affinity" ? Spread : """{"app":"app"}""", extraSpec: constrained ? extra : "");
        }

        // Unconstrained, the pod goes to the fullest node with room: "wrong".
        Assert.Equal("wrong", Assert.Single(Single(Make(withRight: true, constrained: false).Run(), RecommendationType.Consolidate).Moves).To);
        // Constrained, to "right"; with no "right", nowhere, and the blocker names it.
        Assert.Equal("right", Assert.Single(Single(Make(withRight: true, constrained: true).Run(), RecommendationType.Consolidate).Moves).To);
        var stuck = Make(withRight: false, constrained: true).Run();
        Assert.DoesNotContain(stuck.Recommendations, r => r.Nodes.Contains("src") && r.Type != RecommendationType.Replace);
        Assert.Equal(["shop/mover"], Assert.Single(stuck.Blockers["src"], b => b.Reason == BlockerReasons.PodsDoNotFit).Pods);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MultiNodeConsolidationKeepsAntiAffinePodsAwayFromTheirPeers(bool antiAffine)
    {
        // As in TwoNodesThatOnlyGoTogether, with a spread pod on "big", the only node with room for the 4 GiB pods:
        // made anti-affine with it, x's 4 GiB pod has nowhere to go and the two nodes stay.
        var plan = new Scenario()
            .Node("big", "mh.vs1.2xlarge-iad", annotations: DoNotDisrupt).Pod("big-fill", "big", "13800m", "97Gi")
            .Pod("spread-0", "big", "100m", "128Mi", labels: Spread, extraSpec: AntiSpread)
            .Node("d1", "ch.vs1.large-iad", annotations: DoNotDisrupt).Pod("d1-fill", "d1", "1900m", "5Gi")
            .Node("d2", "ch.vs1.large-iad", annotations: DoNotDisrupt).Pod("d2-fill", "d2", "1900m", "5Gi")
            .Node("x", "ch.vs1.large-iad").Pod("x-cpu", "x", "2", "1Gi")
            .Pod("x-mem", "x", "1", "4Gi", labels: antiAffine ? Spread : """{"app":"app"}""", extraSpec: antiAffine ? AntiSpread : "")
            .Node("y", "ch.vs1.large-iad").Pod("y-cpu", "y", "2", "1Gi").Pod("y-mem", "y", "1", "4Gi")
            .Run();
        Assert.Equal(!antiAffine, plan.Recommendations.Any(r => r.Type == RecommendationType.Consolidate && r.Nodes.SequenceEqual(["x", "y"])));
        Assert.Equal(!antiAffine, plan.Recommendations.SelectMany(r => r.Moves).Any(m => m.Pod == "x-mem" && m.To == "big"));
    }

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

    [Fact]
    public void ReplacementNeedsTheThreshold()
    {
        // mh.vs1.2xlarge-iad costs 0.02 $/h; its one small pod fits a floor-priced class (0.001): a 95 % saving.
        var plan = new Scenario()
            .Node("pricey", "mh.vs1.2xlarge-iad").Pod("small", "pricey", "500m", "1Gi", extraSpec: ""","nodeSelector":{"servers.ngpc.rxt.io/type":"spot"}""")
            .Node("other", "mh.vs1.medium-iad", annotations: new() { ["karpetrack.io/do-not-disrupt"] = "true" }).Pod("x", "other", "1900m", "13Gi")
            .Run();
        var rec = Single(plan, RecommendationType.Replace);
        Assert.Equal(["pricey"], rec.Nodes);
        Assert.Equal(0.02m, rec.CurrentCostPerHour);
        Assert.True(rec.SavingsPerHour >= 0.019m - 0.0001m);
        Assert.Equal("shop/small", Assert.Single(rec.Moves).Namespace + "/" + rec.Moves[0].Pod);

        // A saving below 20 % is not worth a disruption.
        var flat = new Scenario()
            .Node("cheap", "gp.vs1.large-iad").Pod("mid", "cheap", "3", "12Gi")
            .Node("other", "gp.vs1.large-iad", annotations: new() { ["karpetrack.io/do-not-disrupt"] = "true" }).Pod("y", "other", "3", "12Gi")
            .Run(new RecommenderOptions { Region = "us-east-iad-1" });
        Assert.DoesNotContain(flat.Recommendations, r => r.Type == RecommendationType.Replace);
        Assert.Contains(flat.Blockers["cheap"], b => b.Reason is BlockerReasons.NotCheaper or BlockerReasons.PodsDoNotFit);
    }

    [Theory]
    [InlineData(null, null, false)]       // defaults: 0.004 $/h saved (80 %) is under the 0.005 $/h threshold
    [InlineData(20.0, 0.004, true)]       // the dollar threshold alone held it back
    [InlineData(80.0, 0.004, true)]       // exactly the percentage
    [InlineData(81.0, 0.004, false)]      // just above it
    [InlineData(0.0, 0.0041, false)]      // the dollars decide on their own too
    public void ReplacementNeedsBothTheDollarAndThePercentageThreshold(double? percent, double? dollars, bool replaced)
    {
        // gp.vs1.large-iad costs 0.005 $/h; its one pod fits ch.vs1.large-iad at 0.001 $/h; there is nowhere else to go.
        var o = new RecommenderOptions { Region = "us-east-iad-1" };
        if (percent is { } p) o = o with { ReplaceThresholdPercent = (decimal)p };
        if (dollars is { } d) o = o with { ReplaceThresholdDollars = (decimal)d };
        Assert.Equal((20m, 0.005m), (new RecommenderOptions().ReplaceThresholdPercent, new RecommenderOptions().ReplaceThresholdDollars));
        var plan = new Scenario().Node("solo", "gp.vs1.large-iad").Pod("p", "solo", "2500m", "2Gi").Run(o);
        Assert.Equal(replaced, plan.Recommendations.Any(r => r.Type == RecommendationType.Replace));
        if (replaced)
        {
            var rec = Single(plan, RecommendationType.Replace);
            Assert.Equal("ch.vs1.large-iad", rec.NewNodes.Single().ServerClass);
            Assert.Equal(0.004m, rec.SavingsPerHour);
        }
        else Assert.Contains(plan.Blockers["solo"], b => b.Reason == BlockerReasons.PodsDoNotFit);
    }

    /// <summary>The class bought for one pending pod of 3.5 cores and 2 GiB; with nothing in the way, ch.vs1.large-iad (4 cores, 7.5 GB, 0.001 $/h).</summary>
    private static string? ClassFor(Scenario s, RecommenderOptions? o = null, string cpu = "3500m", string mem = "2Gi")
    {
        var plan = s.Pod("want", null, cpu, mem, pending: true).Run(o);
        return plan.Recommendations.SingleOrDefault(r => r.Type == RecommendationType.Provision)?.NewNodes.Single().ServerClass;
    }

    [Theory]
    [InlineData(null, "0", "0", true)]
    [InlineData("{}", "500m", "64Mi", false)]                                 // on every node: 4 cores less 0.6 leave too little
    [InlineData("""{"kubernetes.io/os":"linux"}""", "500m", "64Mi", false)]     // new nodes carry that label
    [InlineData("""{"karpetrack.io/managed":"true"}""", "500m", "64Mi", false)]
    [InlineData("""{"karpetrack.io/category":"gpu"}""", "500m", "64Mi", true)] // only on GPU nodes
    [InlineData("""{"kubernetes.io/os":"windows"}""", "500m", "64Mi", true)]
    [InlineData("{}", "100m", "6Gi", false)]                                    // memory counts too
    public void DaemonSetsThatWouldLandOnANewNodeTakeItsRoom(string? selector, string cpu, string mem, bool cheapestFits)
    {
        var s = new Scenario();
        if (selector is not null) s.DaemonSet("agent", cpu, mem, selector);
        var cls = ClassFor(s);
        Assert.NotNull(cls);
        Assert.Equal(cheapestFits, cls == "ch.vs1.large-iad");
    }

    [Theory]
    [InlineData(null, 100, 0.05, true)]     // the documented default: 100m cpu, 5 % of memory
    [InlineData(100L, 100, 0.05, true)]     // an existing node of the class shows the same
    [InlineData(1000L, 100, 0.05, false)]   // an existing node shows 1 core reserved: 3 cores left
    [InlineData(null, 600, 0.05, false)]    // a larger default
    public void NewNodesAreReservedAsExistingNodesOfTheClassShowElseByTheDefault(long? seenMilliCpu, long defaultMilliCpu, double defaultMemoryShare, bool cheapestFits)
    {
        Assert.Equal((100, 0.05), (new RecommenderOptions().DefaultReservedMilliCpu, new RecommenderOptions().DefaultReservedMemoryShare));
        var s = new Scenario();
        if (seenMilliCpu is { } seen) s.Node("seen", "ch.vs1.large-iad", cordoned: true, reservedMilliCpu: seen);
        var o = new RecommenderOptions { Region = "us-east-iad-1", DefaultReservedMilliCpu = defaultMilliCpu, DefaultReservedMemoryShare = defaultMemoryShare };
        Assert.Equal(cheapestFits, ClassFor(s, o) == "ch.vs1.large-iad");
    }

    [Theory]
    [InlineData(0.05, true)]     // mh.vs1.medium-iad: 15 GB less 5 % is 13.3 GiB
    [InlineData(0.10, false)]    // less 10 % is 12.6 GiB
    public void TheDefaultMemoryReservationIsAShareOfTheClassMemory(double share, bool fits)
    {
        var o = new RecommenderOptions { Region = "us-east-iad-1", DefaultReservedMemoryShare = share };
        Assert.Equal(fits, ClassFor(new Scenario(), o, cpu: "1", mem: "13Gi") == "mh.vs1.medium-iad");
    }

    [Theory]
    [InlineData("", null, "3500m", "ch.vs1.large-iad")]
    [InlineData("mh", null, "3500m", "mh.vs1.large-iad")]
    [InlineData("gp", null, "3500m", "gp.vs1.large-iad")]
    [InlineData("gp,ch", null, "7", "ch.vs1.xlarge-iad|gp.vs1.xlarge-iad")]
    [InlineData("", "0.005", "7", "ch.vs1.xlarge-iad|gp.vs1.xlarge-iad")]
    [InlineData("", "0.001", "7", null)]          // no 0.001 $/h class has 8 cores
    [InlineData("mh", "0.001", "3500m", null)]    // the only 0.001 $/h mh class has 2 cores
    public void CategoriesAndMaxPriceLimitWhatIsBought(string categories, string? maxPrice, string cpu, string? expected)
    {
        var o = new RecommenderOptions
        {
            Region = "us-east-iad-1",
            Categories = categories.Split(',', StringSplitOptions.RemoveEmptyEntries),
            MaxPricePerHour = maxPrice is null ? null : decimal.Parse(maxPrice, System.Globalization.CultureInfo.InvariantCulture),
        };
        var s = new Scenario();
        var plan = s.Pod("want", null, cpu, "2Gi", pending: true).Run(o);
        var cls = plan.Recommendations.SingleOrDefault(r => r.Type == RecommendationType.Provision)?.NewNodes.Single().ServerClass;
        if (expected is null)
        {
            Assert.Null(cls);
            Assert.Equal("shop/want", Assert.Single(plan.Unplaceable).Pod);
            return;
        }
        Assert.Contains(cls, expected.Split('|'));
        Assert.All(plan.Recommendations.SelectMany(r => r.NewNodes), n =>
        {
            Assert.True(o.Categories.Count == 0 || o.Categories.Contains(Scenario.Book.Classes[n.ServerClass].Class.Category));
            Assert.True(o.MaxPricePerHour is null || n.PricePerHour <= o.MaxPricePerHour);
        });
    }

    [Fact]
    public void HostnameAntiAffinitySpreadsPodsOverNewNodes()
    {
        var anti = ""","affinity":{"podAntiAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"topologyKey":"kubernetes.io/hostname","labelSelector":{"matchLabels":{"app":"spread"}}}]}}""";
        var s = new Scenario().Node("full", "gp.vs1.medium-iad", cordoned: true);
        for (int i = 0; i < 3; i++) s.Pod($"spread-{i}", null, "100m", "128Mi", labels: """{"app":"spread"}""", extraSpec: anti, pending: true);
        var shape = s.Model.Pods()[0].Shape;
        Assert.Single(shape.AntiAffinity);
        Assert.True(shape.Repels(shape));
        var rec = Single(s.Run(), RecommendationType.Provision);
        Assert.True(3 == rec.NewNodes.Sum(n => n.Count), string.Join("; ", rec.NewNodes) + " | " + string.Join("; ", rec.Moves) + " | " + string.Join("; ", rec.Reasons));
        Assert.Equal(3, rec.Moves.Select(m => m.To).Distinct().Count());
    }

    internal const string Spread = """{"app":"spread"}""";
    internal const string AntiSpread = ""","affinity":{"podAntiAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"topologyKey":"kubernetes.io/hostname","labelSelector":{"matchLabels":{"app":"spread"}}}]}}""";

    [Theory]
    [InlineData(true, 1)]     // an anti-affine peer runs on the only node with room: a new node is bought
    [InlineData(false, 0)]    // without the anti-affinity the pending pod takes that room
    public void PendingPodsKeepAwayFromAntiAffinePeersOnExistingNodes(bool antiAffine, int newNodes)
    {
        string extra = antiAffine ? AntiSpread : "";
        var plan = new Scenario()
            .Node("roomy", "gp.vs1.2xlarge-iad", annotations: new() { ["karpetrack.io/do-not-disrupt"] = "true" })
            .Pod("spread-0", "roomy", "500m", "512Mi", labels: Spread, extraSpec: extra)
            .Pod("spread-1", null, "500m", "512Mi", labels: Spread, extraSpec: extra, pending: true)
            .Run();
        var provision = plan.Recommendations.Where(r => r.Type == RecommendationType.Provision).ToList();
        Assert.Equal(newNodes, provision.Sum(r => r.NewNodes.Sum(n => n.Count)));
        Assert.DoesNotContain(provision.SelectMany(r => r.Moves), m => m.To == "roomy");
        Assert.Empty(plan.Unplaceable);
    }

    [Fact]
    public void ANodeThatTakesAPendingPodKeepsItsAntiAffinityGroupForConsolidation()
    {
        // "roomy" takes the pending spread pod; "small" then may not move its own spread pod there, so it stays.
        var plan = new Scenario()
            .Node("roomy", "gp.vs1.2xlarge-iad", annotations: new() { ["karpetrack.io/do-not-disrupt"] = "true" })
            .Node("small", "gp.vs1.large-iad").Pod("spread-0", "small", "500m", "512Mi", labels: Spread, extraSpec: AntiSpread)
            .Pod("spread-1", null, "500m", "512Mi", labels: Spread, extraSpec: AntiSpread, pending: true)
            .Run();
        Assert.DoesNotContain(plan.Recommendations, r => r.Type == RecommendationType.Provision);
        Assert.DoesNotContain(plan.Recommendations.SelectMany(r => r.Moves), m => m.Pod == "spread-0" && m.To == "roomy");
    }

    [Fact]
    public void BareMetalAndOtherRegionsAreNeverBought()
    {
        var plan = new Scenario().Node("n", "gp.vs1.medium-iad", cordoned: true).Pod("p", null, "30", "100Gi", pending: true).Run();
        // 30 cores fit only bare metal (io.bm2: 40 cores) in iad: never bought, so the pod is unplaceable.
        Assert.DoesNotContain(plan.Recommendations, r => r.Type == RecommendationType.Provision);
        Assert.Single(plan.Unplaceable);
        var all = new Scenario().Node("n", "gp.vs1.medium-iad", cordoned: true).Pod("p", null, "1", "1Gi", pending: true).Run();
        Assert.All(Single(all, RecommendationType.Provision).NewNodes, n => Assert.EndsWith("-iad", n.ServerClass));
    }

    private static readonly RecommenderOptions Sjc = new() { Region = "us-west-sjc-1" };
    private const string SjcGpu = "gpu.vs2.xlargeplusplus-sjc";

    [Fact]
    public void GpuPodsGetGpuClassesWhateverResourcesAreExported()
    {
        // The default table exports cpu and memory only; the GPU request must still be seen.
        Assert.Equal([ResourceTable.Cpu, ResourceTable.Memory], ResourceTable.Default.Exported);
        var plan = new Scenario().Node("n", "gp.vs2.medium-sjc", cordoned: true)
            .Pod("train", null, "1", "2Gi", pending: true, gpu: 1)
            .Pod("web", null, "1", "2Gi", pending: true)
            .Run(Sjc);
        var rec = Single(plan, RecommendationType.Provision);
        Assert.Equal(SjcGpu, Assert.Single(rec.Moves, m => m.Pod == "train").To.Split('#')[0]);
        Assert.NotEqual(SjcGpu, Assert.Single(rec.Moves, m => m.Pod == "web").To.Split('#')[0]);
    }

    [Theory]
    [InlineData(1, 0, false)]    // the node's one GPU is free: the pod goes there, nothing is bought
    [InlineData(1, 1, true)]     // its GPU is taken: a new GPU node
    [InlineData(0, 0, true)]     // a node of a GPU class that shows no GPU is no GPU node
    public void GpuPodsUseTheFreeGpusOfExistingNodes(int nodeGpus, int usedGpus, bool buys)
    {
        var s = new Scenario().Node("g", SjcGpu, gpus: nodeGpus);
        if (usedGpus > 0) s.Pod("busy", "g", "1", "1Gi", gpu: usedGpus);
        var plan = s.Pod("train", null, "1", "2Gi", pending: true, gpu: 1).Run(Sjc);
        Assert.Empty(plan.Unplaceable);
        Assert.Equal(buys, plan.Recommendations.Any(r => r.Type == RecommendationType.Provision));
        if (buys) Assert.Equal(SjcGpu, Single(plan, RecommendationType.Provision).NewNodes.Single().ServerClass);
    }

    [Theory]
    [InlineData(null, 2, 0)]     // one GPU per class by default: two 1-GPU pods take two nodes, 2-GPU pods fit nowhere
    [InlineData(2, 1, 2)]
    [InlineData(4, 1, 1)]
    public void GpusPerClassSetsTheGpuCapacityOfNewNodes(int? perClass, int nodesForSingles, int nodesForDoubles)
    {
        var o = Sjc with { GpuPerClass = perClass is { } n ? new Dictionary<string, int> { [SjcGpu] = n } : new Dictionary<string, int>() };
        Plan Two(int gpu) => new Scenario().Node("n", "gp.vs2.medium-sjc", cordoned: true)
            .Pod("a", null, "1", "2Gi", pending: true, gpu: gpu).Pod("b", null, "1", "2Gi", pending: true, gpu: gpu).Run(o);
        Assert.Equal(nodesForSingles, Single(Two(1), RecommendationType.Provision).NewNodes.Sum(x => x.Count));
        var doubles = Two(2);
        Assert.Equal(nodesForDoubles, doubles.Recommendations.Where(r => r.Type == RecommendationType.Provision).Sum(r => r.NewNodes.Sum(x => x.Count)));
        Assert.Equal(nodesForDoubles == 0 ? 2 : 0, doubles.Unplaceable.Count);
    }

    [Fact]
    public void ClassesWithoutAMinimumBidAreNeverBoughtOnceMinimumBidsAreKnown()
    {
        // The feed alone: ch.vs1.large-iad (0.001 $/h, 4 cores) is the cheapest home for a 3-core pod.
        Scenario Make() => new Scenario().Node("n", "gp.vs1.medium-iad", cordoned: true).Pod("p", null, "3", "6Gi", pending: true);
        Assert.False(Scenario.Book.KnowsMinBids);
        Assert.Equal("ch.vs1.large-iad", Single(Make().Run(), RecommendationType.Provision).NewNodes.Single().ServerClass);

        // The Spot API gives every class a minimum bid but that one (as it does for bare metal): it cannot be bid on.
        var facts = Scenario.Book.Classes.Keys.ToDictionary(k => k,
            k => new SpotClassFacts(k == "ch.vs1.large-iad" ? null : 0.001m, null, null, null, null, null, Biddable: k != "ch.vs1.large-iad"));
        var book = Scenario.Book.WithSpotApi(facts, DateTimeOffset.UnixEpoch);
        Assert.True(book.KnowsMinBids);
        var plan = Make().Run(book: book);
        var chosen = Single(plan, RecommendationType.Provision).NewNodes.Single().ServerClass;
        Assert.NotEqual("ch.vs1.large-iad", chosen);
        Assert.NotNull(book.Classes[chosen].Prices.MinBid);
        Assert.Empty(plan.Unplaceable);
    }

    [Fact]
    public void SameInputSamePlanAndIds()
    {
        Scenario Make() => new Scenario()
            .Node("a", "gp.vs1.2xlarge-iad").Pod("a1", "a", "1", "2Gi").Pod("a2", "a", "2", "2Gi")
            .Node("b", "gp.vs1.xlarge-iad").Pod("b1", "b", "500m", "1Gi")
            .Node("c", "mh.vs1.2xlarge-iad")
            .Pod("pend", null, "12", "40Gi", pending: true);
        var p1 = Make().Run();
        var p2 = Make().Run();
        Assert.Equal(p1.Recommendations.Select(r => r.Id), p2.Recommendations.Select(r => r.Id));
        Assert.Equal(System.Text.Json.JsonSerializer.Serialize(p1.Recommendations), System.Text.Json.JsonSerializer.Serialize(p2.Recommendations));
        Assert.All(p1.Recommendations, r => Assert.Matches("^[a-z]{3}-[0-9a-f]{12}$", r.Id));
        Assert.Equal(p1.Recommendations.Count, p1.Recommendations.Select(r => r.Id).Distinct().Count());
    }

    [Fact]
    public void RandomClustersNeverOvercommitADestination()
    {
        // Property: over random clusters, the moves of all recommendations together never put more on a
        // kept node than it had free, and nodes that are removed carry no blocker.
        for (int seed = 0; seed < 25; seed++)
        {
            var rng = new Random(seed);
            var s = new Scenario();
            string[] classes = ["gp.vs1.large-iad", "gp.vs1.xlarge-iad", "ch.vs1.large-iad", "mh.vs1.large-iad", "gp.vs1.2xlarge-iad"];
            int nodes = rng.Next(3, 9);
            for (int n = 0; n < nodes; n++)
            {
                s.Node($"n{n}", classes[rng.Next(classes.Length)]);
                for (int k = rng.Next(0, 4); k > 0; k--) s.Pod($"p{n}-{k}", $"n{n}", $"{rng.Next(1, 12) * 100}m", $"{rng.Next(1, 8) * 256}Mi");
            }
            var snap = s.Model.Snapshot();
            var plan = s.Run();
            var removed = plan.Recommendations.SelectMany(r => r.Nodes).ToHashSet();
            var free = snap.Nodes.Where(n => !removed.Contains(n.Name)).ToDictionary(n => n.Name, n => (Cpu: n.Allocatable[0] - n.Allocated[0], Mem: n.Allocatable[1] - n.Allocated[1]));
            var requests = s.Model.Pods().ToDictionary(p => p.Namespace + "/" + p.Name, p => p.Requests);
            foreach (var m in plan.Recommendations.SelectMany(r => r.Moves).Where(m => free.ContainsKey(m.To)))
            {
                Assert.DoesNotContain(m.From, free.Keys);                  // pods only leave removed or replaced nodes
                var req = requests[m.Namespace + "/" + m.Pod];
                free[m.To] = (free[m.To].Cpu - req[0], free[m.To].Mem - req[1]);
            }
            Assert.All(free, kv => Assert.True(kv.Value.Cpu >= 0 && kv.Value.Mem >= 0, $"seed {seed}: {kv.Key} overcommitted by moves"));
            Assert.All(removed, n => Assert.False(plan.Blockers.ContainsKey(n)));
        }
    }

    [Fact]
    public void EveryPendingPodIsProvisionedForOrReportedUnplaceable()
    {
        // With no room anywhere, each pending pod ends up in exactly one of the two lists.
        for (int seed = 0; seed < 25; seed++)
        {
            var rng = new Random(seed);
            var s = new Scenario().Node("full", "gp.vs1.medium-iad", cordoned: true);
            int pending = rng.Next(1, 12);
            for (int k = 0; k < pending; k++) s.Pod($"pend-{k}", null, $"{rng.Next(1, 200) * 100}m", $"{rng.Next(1, 140)}Gi", pending: true);
            var plan = s.Run();
            var served = plan.Recommendations.Where(r => r.Type == RecommendationType.Provision).SelectMany(r => r.PendingPods).ToList();
            var lost = plan.Unplaceable.Select(u => u.Pod).ToList();
            Assert.Equal(pending, served.Count + lost.Count);
            Assert.Empty(served.Intersect(lost));
            Assert.All(plan.Unplaceable, u => Assert.False(string.IsNullOrWhiteSpace(u.Reason)));
        }
    }

    // ---- the loop: interval and pending-pod batches -------------------------------------------------

    private static (ClusterModel Model, RecommenderLoop Loop, PriceFeed Prices) Loop(TimeSpan interval, TimeProvider clock, ReflectorStatus? pods = null)
    {
        var status = pods ?? new ReflectorStatus("pods");
        status.MarkSynced("1", DateTimeOffset.UnixEpoch);
        var model = new ClusterModel(ResourceTable.Default);
        var prices = new PriceFeed(new PriceFeedOptions(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, initial: Scenario.Book);
        var loop = new RecommenderLoop(model, prices, [status], () => new RecommenderOptions { Region = "us-east-iad-1" }, interval,
            Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, clock);
        return (model, loop, prices);
    }

    private static int pendingSerial;

    private static void AddPending(ClusterModel model) =>
        model.UpsertPod(ClusterModelTests.Pod($"pending-{Interlocked.Increment(ref pendingSerial)}", null, 500, 1L << 30, PodPhase.Pending, unschedulable: true));

    [Fact]
    public async Task RecommendIntervalZeroTurnsTheLoopOff()
    {
        Assert.Equal(TimeSpan.Zero, KarpetrackOptions.Parse(["--recommend-interval", "0"], _ => null).RecommendInterval);
        var clock = new SteppedClock();
        var (model, loop, prices) = Loop(TimeSpan.Zero, clock);
        using (prices)
        {
            AddPending(model);
            var run = loop.RunAsync(CancellationToken.None);
            Assert.True(run.IsCompletedSuccessfully);          // returns at once: no timer, no run
            await run;
            Assert.False(clock.Armed.IsCompleted);
            Assert.Null(loop.LastRun);
            Assert.Equal(0, loop.Durations.Count);
        }
    }

    [Theory]
    [InlineData(false, 4)]     // one change, then quiet: a run 1 s after the change was seen (4 ticks of 250 ms)
    [InlineData(true, 40)]     // changes on every tick: a run 10 s after the first, though it never goes quiet
    public async Task PendingPodChangesTriggerARunAfterTheBatchWindow(bool keepChanging, int ticksToRun)
    {
        var tick = TimeSpan.FromMilliseconds(250);
        var clock = new SteppedClock();
        var (model, loop, prices) = Loop(TimeSpan.FromHours(1), clock);
        using var stop = new CancellationTokenSource();
        using (prices)
        {
            var running = loop.RunAsync(stop.Token);
            await clock.StepAsync(tick);
            Assert.Equal(1, loop.Durations.Count);              // the first tick runs (the timer is due at start)
            for (int i = 0; i < 8; i++) await clock.StepAsync(tick);
            Assert.Equal(1, loop.Durations.Count);              // nothing changed and the next timer is an hour away

            AddPending(model);
            await clock.StepAsync(tick);                        // the tick that sees the change
            for (int i = 1; i <= 60 && loop.Durations.Count == 1; i++)
            {
                if (keepChanging) AddPending(model);
                await clock.StepAsync(tick);
                if (loop.Durations.Count > 1) Assert.Equal(ticksToRun, i);
            }
            Assert.Equal(2, loop.Durations.Count);
            Assert.NotEmpty(loop.Current.Recommendations.Single(r => r.Type == RecommendationType.Provision).PendingPods);
            await stop.CancelAsync();
            await running;
        }
    }

    [Theory]
    [InlineData(0, 4)]         // no burst: the batch of pending pods runs 1 s after the change, as above
    [InlineData(8, 9)]         // 4,000 events/s for 2 s: the due run waits, and comes on the first quiet tick
    [InlineData(100, 44)]      // a burst that goes on: the run waits at most 10 s after it fell due
    public async Task ARunThatFallsDueDuringAWatchBurstWaitsForItToPass(int burstTicks, int ticksToRun)
    {
        var tick = TimeSpan.FromMilliseconds(250);
        var clock = new SteppedClock();
        var pods = new ReflectorStatus("pods");
        var (model, loop, prices) = Loop(TimeSpan.FromHours(1), clock, pods);
        using var stop = new CancellationTokenSource();
        using (prices)
        {
            var running = loop.RunAsync(stop.Token);
            await clock.StepAsync(tick);
            Assert.Equal(1, loop.Durations.Count);

            AddPending(model);
            await clock.StepAsync(tick);                        // the tick that sees the change
            int ranAt = -1;
            for (int i = 1; i <= 60 && ranAt < 0; i++)
            {
                if (i <= burstTicks)
                    for (int e = 0; e < RecommenderLoop.BurstEventsPerSecond / 2; e++) pods.Received("2", clock.GetUtcNow());
                await clock.StepAsync(tick);
                if (loop.Durations.Count > 1) ranAt = i;
            }
            Assert.Equal(ticksToRun, ranAt);
            Assert.Equal(2, loop.Durations.Count);
            await stop.CancelAsync();
            await running;
        }
    }
}
