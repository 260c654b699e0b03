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
        var loop = new RecommenderLoop(new(s.Model, prices, [status]), new(() => options, TimeSpan.Zero), NullLogger.Instance);
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

    [Fact]
    public async Task RequestsPastTheLimitsAreInvalidArguments()
    {
        var api = Api(new Scenario().Node("a", "gp.vs1.large-iad"));
        var tooManyNodes = new V1.SimulateRequest();
        tooManyNodes.RemoveNodes.AddRange(Enumerable.Range(0, SimulateLimits.MaxNodes + 1).Select(i => $"n{i}"));
        var tooManyPods = new V1.SimulateRequest();
        tooManyPods.AddPods.AddRange(Enumerable.Range(0, SimulateLimits.MaxAddedPods + 1).Select(i => new V1.SimulatedPod { Name = $"p{i}" }));
        var longName = new V1.SimulateRequest { RemoveNodes = { new string('x', SimulateLimits.MaxStringLength + 1) } };
        var manyLabels = new V1.SimulateRequest { AddPods = { new V1.SimulatedPod { Name = "p" } } };
        for (int i = 0; i <= SimulateLimits.MaxLabels; i++) manyLabels.AddPods[0].Labels[$"k{i}"] = "v";
        foreach (var (request, expected) in new[] { (tooManyNodes, "at most 1000"), (tooManyPods, "at most 10000"), (longName, "characters long"), (manyLabels, "labels has 65") })
        {
            var e = Assert.Throws<RpcException>(() => api.Simulate(request));
            Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
            Assert.Contains(expected, e.Status.Detail);
            // The gRPC and JSON entry point refuses it before taking a slot or a thread.
            var call = await Assert.ThrowsAsync<RpcException>(() => api.Simulate(request, Call()));
            Assert.Equal(StatusCode.InvalidArgument, call.StatusCode);
        }
        Assert.Equal(SimulateLimits.Concurrent, api.SimulationSlots.CurrentCount);
    }

    [Fact]
    public async Task OnlySoManySimulationsRunAtOnce()
    {
        var api = Api(new Scenario().Node("a", "gp.vs1.large-iad").Pod("p", "a", "500m", "1Gi"));
        for (int i = 0; i < SimulateLimits.Concurrent; i++) Assert.True(api.SimulationSlots.Wait(0));
        var busy = await Assert.ThrowsAsync<RpcException>(() => api.Simulate(new V1.SimulateRequest { RemoveNodes = { "a" } }, Call()));
        Assert.Equal(StatusCode.ResourceExhausted, busy.StatusCode);
        api.SimulationSlots.Release(SimulateLimits.Concurrent);
        var r = await api.Simulate(new V1.SimulateRequest { RemoveNodes = { "a" } }, Call());
        Assert.Single(r.Placements);
        Assert.Equal(SimulateLimits.Concurrent, api.SimulationSlots.CurrentCount);
    }

    [Fact]
    public async Task ACancelledSimulationStopsAndGivesItsSlotBack()
    {
        var api = Api(new Scenario().Node("a", "gp.vs1.large-iad").Pod("p", "a", "500m", "1Gi"));
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => api.Simulate(new V1.SimulateRequest { RemoveNodes = { "a" } }, cancelled.Token));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => api.Simulate(new V1.SimulateRequest { RemoveNodes = { "a" } }, Call(token: cancelled.Token)));
        // A deadline already past ends the call as DEADLINE_EXCEEDED, not as the client's cancellation.
        var late = await Assert.ThrowsAsync<RpcException>(() => api.Simulate(new V1.SimulateRequest { RemoveNodes = { "a" } }, Call(DateTime.UtcNow.AddSeconds(-1))));
        Assert.Equal(StatusCode.DeadlineExceeded, late.StatusCode);
        // The engine itself stops at its first check.
        var s = new Scenario().Node("a", "gp.vs1.large-iad");
        Assert.ThrowsAny<OperationCanceledException>(() => WhatIf.Simulate(s.Model.Snapshot(), s.Model.Pods(), [], Scenario.Book,
            new RecommenderOptions { Region = "us-east-iad-1" }, WhatIfRequest.Nothing, cancelled.Token));
        for (int i = 0; i < 100 && api.SimulationSlots.CurrentCount < SimulateLimits.Concurrent; i++) await Task.Delay(10);
        Assert.Equal(SimulateLimits.Concurrent, api.SimulationSlots.CurrentCount);
    }

    [Fact]
    public void TheDeadlineIsTheCallersCappedAndNeverOverflows()
    {
        var now = new DateTime(2026, 12, 7, 5, 0, 0, DateTimeKind.Utc);
        Assert.Equal(SimulateLimits.Deadline, SimulateLimits.TimeLeft(DateTime.MaxValue, now));
        Assert.Equal(SimulateLimits.Deadline, SimulateLimits.TimeLeft(now.AddDays(50), now));
        Assert.Equal(SimulateLimits.Deadline, SimulateLimits.TimeLeft(DateTime.MaxValue.AddTicks(-1), now));
        Assert.Equal(TimeSpan.FromSeconds(5), SimulateLimits.TimeLeft(now.AddSeconds(5), now));
        Assert.Equal(TimeSpan.Zero, SimulateLimits.TimeLeft(now.AddSeconds(-5), now));
    }

    /// <summary>A call as the service sees it: a deadline (none by default) and the client's cancellation.</summary>
    private static ServerCallContext Call(DateTime? deadline = null, CancellationToken token = default) =>
        new LocalCallContext("/karpetrack.v1.Karpetrack/Simulate", "test", "test", [], deadline ?? DateTime.MaxValue, token);
}
