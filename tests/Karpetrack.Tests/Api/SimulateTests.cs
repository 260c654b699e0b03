using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Tests.Api;

/// <summary>The Simulate call's protocol: a what-if the engine rejects (Recommend/WhatIfTests) is NOT_FOUND or INVALID_ARGUMENT.</summary>
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
    public void TheRequestAndTheAnswerAreConvertedFieldByField()
    {
        // "a" goes and "b" is cordoned: both pods need new nodes, the added one of a memory-heavy class in its own namespace.
        var s = new Scenario().Node("a", "gp.vs1.large-iad").Node("b", "gp.vs1.medium-iad", cordoned: true).Pod("p", "a", "500m", "1Gi");
        var r = Api(s).Simulate(new V1.SimulateRequest
        {
            RemoveNodes = { "a" },
            AddPods = { new V1.SimulatedPod { Name = "w", Namespace = "web", Cpu = "3", Memory = "6Gi", NodeSelector = { ["karpetrack.io/category"] = "mh" } } },
        });
        var added = Assert.Single(r.Placements, x => x.Pod == "web/w");
        Assert.Equal(("", true), (added.From, added.NewNode));
        Assert.StartsWith("mh.", added.Node);
        var moved = Assert.Single(r.Placements, x => x.Pod == "shop/p");
        Assert.Equal(("a", true), (moved.From, moved.NewNode));
        var book = Scenario.Book;
        double before = (double)(book.NodePrice("gp.vs1.large-iad", "spot")!.Value + book.NodePrice("gp.vs1.medium-iad", "spot")!.Value);
        double bought = r.NewNodes.Sum(n => n.Count * n.PricePerHour);
        Assert.Equal(before, r.CostBeforePerHour, 9);
        Assert.Equal(before - (double)book.NodePrice("gp.vs1.large-iad", "spot")!.Value + bought, r.CostAfterPerHour, 9);
        Assert.Equal(r.CostAfterPerHour - r.CostBeforePerHour, r.DeltaPerHour, 9);
        Assert.Equal(["new nodes are bought in region us-east-iad-1", "read-only: nothing in the cluster was changed"], r.Notes);
        Assert.Empty(r.Unplaceable);
        Assert.Empty(r.NoLongerFit);
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
