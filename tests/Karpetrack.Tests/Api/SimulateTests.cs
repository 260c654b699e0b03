using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Tests.Api;

/// <summary>The Simulate acceptance examples of issue 5, on a hand-made cluster with real prices.</summary>
public class SimulateTests
{
    private static KarpetrackApi Api(Scenario s)
    {
        var status = new ReflectorStatus("nodes");
        status.MarkSynced(null, DateTimeOffset.UtcNow);
        var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: Scenario.Book);
        var options = new RecommenderOptions { Region = "us-east-iad-1" };
        var loop = new RecommenderLoop(s.Model, prices, [status], () => options, TimeSpan.Zero, NullLogger.Instance);
        loop.RunOnce();
        return new KarpetrackApi(s.Model, prices, loop, [status], () => options);
    }

    [Fact]
    public void RemovingANodeWhosePodsFitElsewherePlacesThemAllAndSavesItsPrice()
    {
        var s = new Scenario().Node("a", "gp.vs1.large-iad").Node("b", "gp.vs1.2xlarge-iad")
            .Pod("p1", "a", "500m", "1Gi").Pod("p2", "a", "500m", "1Gi").Pod("q", "b", "1", "1Gi");
        var r = Api(s).Simulate(new V1.SimulateRequest { RemoveNodes = { "a" } });
        Assert.Empty(r.Unplaceable);
        Assert.Equal(2, r.Placements.Count);
        Assert.All(r.Placements, p => { Assert.Equal("b", p.Node); Assert.Equal("a", p.From); Assert.False(p.NewNode); });
        var price = (double)Scenario.Book.NodePrice("gp.vs1.large-iad", "spot")!.Value;
        Assert.Equal(r.CostBeforePerHour - price, r.CostAfterPerHour, 9);
        Assert.Empty(r.NewNodes);
    }

    [Fact]
    public void APodLargerThanEveryClassIsUnplaceableWithTheReason()
    {
        var s = new Scenario().Node("a", "gp.vs1.large-iad");
        var r = Api(s).Simulate(new V1.SimulateRequest { AddPods = { new V1.SimulatedPod { Name = "huge", Cpu = "512", Memory = "4Ti" } } });
        var u = Assert.Single(r.Unplaceable);
        Assert.Equal("default/huge", u.Pod);
        Assert.False(string.IsNullOrWhiteSpace(u.Reason));
        Assert.Equal(r.CostBeforePerHour, r.CostAfterPerHour);
    }

    [Fact]
    public void ReplacingANodeByATooSmallClassSaysWhichPodsNoLongerFit()
    {
        var s = new Scenario().Node("x", "gp.vs1.2xlarge-iad").Pod("big1", "x", "3", "4Gi").Pod("small", "x", "100m", "128Mi");
        var r = Api(s).Simulate(new V1.SimulateRequest { ReplaceNodes = { new V1.NodeReplacement { Node = "x", ServerClass = "gp.vs1.medium-iad" } } });
        var missing = Assert.Single(r.NoLongerFit);
        Assert.Equal("shop/big1", missing.Pod);
        Assert.Contains("gp.vs1.medium-iad", missing.Reason);
        Assert.Contains(r.Placements, p => p.Pod == "shop/small" && p.Node == "x→gp.vs1.medium-iad");
    }

    [Theory]
    [InlineData(true)]    // the replacement keeps spread-0, so spread-1 may not join it: a new node
    [InlineData(false)]   // without the anti-affinity spread-1 takes the replacement's room
    public void PodsKeptOnAReplacementKeepTheirAntiAffinity(bool antiAffine)
    {
        string extra = antiAffine ? RecommenderTests.AntiSpread : "";
        var s = new Scenario()
            .Node("x", "gp.vs1.2xlarge-iad").Pod("spread-0", "x", "500m", "512Mi", labels: RecommenderTests.Spread, extraSpec: extra)
            .Node("y", "gp.vs1.large-iad").Pod("spread-1", "y", "500m", "512Mi", labels: RecommenderTests.Spread, extraSpec: extra);
        var r = Api(s).Simulate(new V1.SimulateRequest
        {
            RemoveNodes = { "y" },
            ReplaceNodes = { new V1.NodeReplacement { Node = "x", ServerClass = "gp.vs1.2xlarge-iad" } },
        });
        Assert.Contains(r.Placements, p => p.Pod == "shop/spread-0" && p.Node == "x→gp.vs1.2xlarge-iad");
        var moved = Assert.Single(r.Placements, p => p.Pod == "shop/spread-1");
        Assert.Equal(antiAffine, moved.NewNode);
        Assert.Equal(!antiAffine, moved.Node == "x→gp.vs1.2xlarge-iad");
    }

    [Fact]
    public void BadWhatIfsAreInvalidArgumentsOrNotFound()
    {
        var api = Api(new Scenario().Node("a", "gp.vs1.large-iad"));
        Assert.Equal(StatusCode.NotFound, Assert.Throws<RpcException>(() => api.Simulate(new V1.SimulateRequest { RemoveNodes = { "ghost" } })).StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, Assert.Throws<RpcException>(() => api.Simulate(new V1.SimulateRequest
        { ReplaceNodes = { new V1.NodeReplacement { Node = "a", ServerClass = "no.such-class" } } })).StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, Assert.Throws<RpcException>(() => api.Simulate(new V1.SimulateRequest { Categories = { "quantum" } })).StatusCode);
        Assert.Equal(StatusCode.NotFound, Assert.Throws<RpcException>(() => api.ExplainNode(new V1.ExplainNodeRequest { Node = "ghost" })).StatusCode);
    }
}
