using static Karpetrack.Tests.Recommend.Scenario;

namespace Karpetrack.Tests.Recommend;

/// <summary>Provisioning: what is bought for pending pods (classes, node selectors, affinity and taints, DaemonSets, reservations, categories, GPUs, anti-affinity on new nodes).</summary>
public class ProvisioningTests
{
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
        // The two bounds behind the plan's: one pod is too few for the configuration LP, so the resource LP's is the plan's.
        Assert.Equal(plan.ProvisioningLowerBoundPerHour, plan.ProvisioningResourceBoundPerHour);
        Assert.Equal(0, plan.ProvisioningConfigurationBoundPerHour);
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
            k => new SpotClassFacts(k == "ch.vs1.large-iad" ? null : 0.001m, null, null, null, null, null));
        var book = Scenario.Book.WithSpotApi(facts, DateTimeOffset.UnixEpoch);
        Assert.True(book.KnowsMinBids);
        var plan = Make().Run(book: book);
        var chosen = Single(plan, RecommendationType.Provision).NewNodes.Single().ServerClass;
        Assert.NotEqual("ch.vs1.large-iad", chosen);
        Assert.NotNull(book.Classes[chosen].Prices.MinBid);
        Assert.Empty(plan.Unplaceable);
    }
}
