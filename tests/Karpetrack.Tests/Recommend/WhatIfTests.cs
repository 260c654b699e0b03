namespace Karpetrack.Tests.Recommend;

/// <summary>The what-if engine on hand-made clusters with real prices (the Simulate acceptance examples of issue 5 among them).</summary>
public class WhatIfTests
{
    private static readonly RecommenderOptions Iad = new() { Region = "us-east-iad-1" };
    private static readonly Dictionary<string, string> None = [];

    private static WhatIfResult Simulate(Scenario s, WhatIfRequest request, RecommenderOptions? o = null) =>
        WhatIf.Simulate(s.Model.Snapshot(), s.Model.Pods(), s.DaemonSets.ToArray(), Scenario.Book, o ?? Iad, request);

    private static WhatIfPod Pod(string name, string cpu, string memory, string ns = "") => new(name, ns, cpu, memory, None, None);

    private static WhatIfRequest Remove(params string[] nodes) => WhatIfRequest.Nothing with { RemoveNodes = nodes };
    private static WhatIfRequest Add(params WhatIfPod[] pods) => WhatIfRequest.Nothing with { AddPods = pods };
    private static WhatIfRequest Replace(string node, string cls) => WhatIfRequest.Nothing with { ReplaceNodes = [new WhatIfReplacement(node, cls)] };

    private static decimal Price(string cls) => Scenario.Book.NodePrice(cls, "spot")!.Value;

    [Fact]
    public void RemovingANodeWhosePodsFitElsewherePlacesThemAllAndSavesItsPrice()
    {
        var s = new Scenario().Node("a", "gp.vs1.large-iad").Node("b", "gp.vs1.2xlarge-iad")
            .Pod("p1", "a", "500m", "1Gi").Pod("p2", "a", "500m", "1Gi").Pod("q", "b", "1", "1Gi");
        var r = Simulate(s, Remove("a"));
        Assert.Empty(r.Unplaceable);
        Assert.Equal([new WhatIfMove("shop/p1", "a", "b", false), new WhatIfMove("shop/p2", "a", "b", false)], r.Placements.OrderBy(p => p.Pod));
        Assert.Equal(Price("gp.vs1.large-iad") + Price("gp.vs1.2xlarge-iad"), r.CostBeforePerHour);
        Assert.Equal(-Price("gp.vs1.large-iad"), r.DeltaPerHour);
        Assert.Empty(r.NewNodes);
        Assert.Equal(["read-only: nothing in the cluster was changed"], r.Notes);
    }

    [Fact]
    public void APodLargerThanEveryClassIsUnplaceableWithTheReason()
    {
        var s = new Scenario().Node("a", "gp.vs1.large-iad");
        var r = Simulate(s, Add(Pod("huge", "512", "4Ti")));
        var u = Assert.Single(r.Unplaceable);
        Assert.Equal("default/huge", u.Pod);
        Assert.Contains("512 cores", u.Reason);
        Assert.Equal(r.CostBeforePerHour, r.CostAfterPerHour);
        Assert.Empty(r.Placements);
    }

    [Fact]
    public void AddedPodsBeyondTheFreeRoomBuyTheCheapestClassThatFits()
    {
        // The only node is cordoned: no room. 3 cores and 6 GiB fit ch.vs1.large-iad (4 cores, 7.5 GB) at the floor price.
        var s = new Scenario().Node("a", "gp.vs1.medium-iad", cordoned: true);
        var r = Simulate(s, Add(Pod("web", "3", "6Gi", ns: "shop")));
        Assert.Equal([new WhatIfMove("shop/web", "", "ch.vs1.large-iad#1", true)], r.Placements);
        Assert.Equal([new NewNode("ch.vs1.large-iad", 1, Price("ch.vs1.large-iad"))], r.NewNodes);
        Assert.Equal(Price("ch.vs1.large-iad"), r.DeltaPerHour);
        Assert.Contains("new nodes are bought in region us-east-iad-1", r.Notes);
    }

    [Fact]
    public void TheRequestsCategoriesAndRegionChooseWhatIsBought()
    {
        var s = new Scenario().Node("a", "gp.vs1.medium-iad", cordoned: true);
        // Memory heavy only (by its name, as the console shows it): mh.vs1.large-iad, not the cheaper ch.vs1.large-iad.
        var mh = Simulate(s, Add(Pod("want", "3500m", "2Gi")) with { Categories = ["Memory Heavy"] });
        Assert.Equal("mh.vs1.large-iad#1", Assert.Single(mh.Placements).Node);
        var sjc = Simulate(s, Add(Pod("want", "1", "2Gi")) with { Region = "us-west-sjc-1" });
        Assert.EndsWith("-sjc", Assert.Single(sjc.NewNodes).ServerClass);
        Assert.Contains("new nodes are bought in region us-west-sjc-1", sjc.Notes);
    }

    [Fact]
    public void ReplacingANodeByATooSmallClassSaysWhichPodsNoLongerFit()
    {
        var s = new Scenario().Node("x", "gp.vs1.2xlarge-iad").Pod("big1", "x", "3", "4Gi").Pod("small", "x", "100m", "128Mi");
        var r = Simulate(s, Replace("x", "gp.vs1.medium-iad"));
        var missing = Assert.Single(r.NoLongerFit);
        Assert.Equal("shop/big1", missing.Pod);
        Assert.Contains("gp.vs1.medium-iad", missing.Reason);
        Assert.Contains(new WhatIfMove("shop/small", "x", "x→gp.vs1.medium-iad", false), r.Placements);
        // The pod left over is placed like any other: on a new node, since nothing else remains.
        Assert.True(Assert.Single(r.Placements, p => p.Pod == "shop/big1").NewNode);
        Assert.Equal(Price("gp.vs1.medium-iad") + r.NewNodes.Sum(n => n.Count * n.PricePerHour), r.CostAfterPerHour);
    }

    [Theory]
    [InlineData(true)]    // the replacement keeps spread-0, so spread-1 may not join it: a new node
    [InlineData(false)]   // without the anti-affinity spread-1 takes the replacement's room
    public void PodsKeptOnAReplacementKeepTheirAntiAffinity(bool antiAffine)
    {
        string extra = antiAffine ? Scenario.AntiSpread : "";
        var s = new Scenario()
            .Node("x", "gp.vs1.2xlarge-iad").Pod("spread-0", "x", "500m", "512Mi", labels: Scenario.Spread, extraSpec: extra)
            .Node("y", "gp.vs1.large-iad").Pod("spread-1", "y", "500m", "512Mi", labels: Scenario.Spread, extraSpec: extra);
        var r = Simulate(s, Replace("x", "gp.vs1.2xlarge-iad") with { RemoveNodes = ["y"] });
        Assert.Contains(r.Placements, p => p.Pod == "shop/spread-0" && p.Node == "x→gp.vs1.2xlarge-iad");
        var moved = Assert.Single(r.Placements, p => p.Pod == "shop/spread-1");
        Assert.Equal(antiAffine, moved.NewNode);
        Assert.Equal(!antiAffine, moved.Node == "x→gp.vs1.2xlarge-iad");
    }

    [Fact]
    public void AnEmptyWhatIfPlacesNothingAndCostsTheSame()
    {
        var r = Simulate(new Scenario().Node("a", "gp.vs1.large-iad").Pod("p", "a", "1", "1Gi"), WhatIfRequest.Nothing);
        Assert.Empty(r.Placements);
        Assert.Equal(0, r.DeltaPerHour);
        Assert.Equal(["nothing to place", "read-only: nothing in the cluster was changed"], r.Notes);
    }

    [Theory]
    [InlineData("remove ghost", true, "node \"ghost\" not found")]
    [InlineData("remove twice", false, "node \"a\" named twice")]
    [InlineData("replace ghost", true, "node \"ghost\" not found")]
    [InlineData("replace unknown class", false, "server class \"no.such-class\" is not in the price book")]
    [InlineData("remove and replace", false, "node \"a\" named twice")]
    [InlineData("category", false, "category \"quantum\" is not one of gp, ch, mh, gpu")]
    [InlineData("region", false, "no server class is priced in region \"mars-1\"")]
    [InlineData("no name", false, "add_pods[0]: name is required")]
    [InlineData("bad cpu", false, "add_pods[0].cpu: \"lots\" is not a quantity")]
    [InlineData("negative memory", false, "add_pods[1].memory: \"-1Gi\" is not a quantity (negative)")]
    public void BadWhatIfsAreRejectedWithWhatIsWrong(string what, bool notFound, string message)
    {
        var request = what switch
        {
            "remove ghost" => Remove("ghost"),
            "remove twice" => Remove("a", "a"),
            "replace ghost" => Replace("ghost", "gp.vs1.large-iad"),
            "replace unknown class" => Replace("a", "no.such-class"),
            "remove and replace" => Replace("a", "gp.vs1.large-iad") with { RemoveNodes = ["a"] },
            "category" => WhatIfRequest.Nothing with { Categories = ["quantum"] },
            "region" => WhatIfRequest.Nothing with { Region = "mars-1" },
            "no name" => Add(Pod(" ", "1", "1Gi")),
            "bad cpu" => Add(Pod("p", "lots", "1Gi")),
            _ => Add(Pod("p", "1", "1Gi"), Pod("q", "1", "-1Gi")),
        };
        var e = Assert.Throws<WhatIfException>(() => Simulate(new Scenario().Node("a", "gp.vs1.large-iad"), request));
        Assert.Equal(notFound, e.NotFound);
        Assert.StartsWith(message, e.Message);
    }
}
