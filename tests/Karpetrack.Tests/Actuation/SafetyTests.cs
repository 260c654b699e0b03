using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Actuation;

/// <summary>
/// The defects of issue 16 that disrupted running workloads, each reproduced on the rig: ownership
/// decided on a filtered view, nodes uncordoned while their pool is being deleted, no fencing on
/// leadership, the cordon step skipping its checks, approvals reused, plans from before a recovery
/// acted on, and disrupted nodes no longer counted while they are still leaving.
/// Every test runs on the rig's hand-moved clock (actuators, recommender, Spot fake, embedded API server and Spot client
/// alike): a wait is a number of steps, or an event wait with the clock standing still; nothing sleeps.
/// </summary>
public class SafetyTests
{
    internal static bool IsCordoned(JsonObject node) => node["spec"]?["unschedulable"]?.GetValue<bool>() == true;

    internal static IEnumerable<JsonObject> Nodes(ActuationRig rig) => rig.Demo.Api.Store.List("nodes").Items.Select(n => n.ToJsonObject());

    internal static List<string> Annotated(ActuationRig rig) => Nodes(rig)
        .Where(n => n["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation] is not null)
        .Select(n => n["metadata"]!["name"]!.GetValue<string>()).ToList();

    private static string Fingerprint(ActuationRig rig) => string.Join("\n",
        Nodes(rig).Select(n => $"{n["metadata"]!["name"]} {IsCordoned(n)} {n["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]}").Order()
            .Concat(rig.Demo.Api.Store.List("pods").Items.Select(p => p.ToJsonObject()["metadata"]!["uid"]!.ToString()).Order())
            .Concat(rig.Spot.Pools.Select(p => $"{p["metadata"]!["name"]} {p["metadata"]?["deletionTimestamp"]}").Order()));

    /// <summary>Defect 1: a restart whose --node-selector hides Karpetrack's nodes must not take their pools for empty ones.</summary>
    [Fact]
    public async Task ARestartWithANodeSelectorHidingTheManagedNodesDeletesNoPoolOfARunningNode()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        rig.Detach(rig.Actuator);
        var managed = rig.Demo.ManagedNodes.ToList();
        Assert.NotEmpty(managed);
        var deleted = new System.Collections.Concurrent.ConcurrentBag<string>();
        rig.Spot.OnPoolDelete = deleted.Add;
        // The harshest timing: a provisioning timeout any adopted pool would be past at once.
        var process = await rig.NewProcessAsync(ActuationRig.Quick() with { ProvisioningTimeout = TimeSpan.FromMilliseconds(1) },
            nodeSelector: $"{Actuator.ManagedLabel}!=true");
        Assert.DoesNotContain(process.Model.Snapshot().Nodes, n => managed.Any(m => m.Node == n.Name));
        // Eight steps of the rig's clock (a second each, far past that timeout): recovery, plans and ticks.
        for (int i = 0; i < 8; i++) await process.StepAsync();
        foreach (var m in managed)
        {
            Assert.NotNull(rig.Spot.Pool(m.Pool));
            Assert.NotNull(rig.Demo.Api.Store.Get("nodes", null, m.Node));
        }
        Assert.DoesNotContain(deleted, managed.Select(m => m.Pool).Contains);
    }

    /// <summary>
    /// Defects 2 and 10: pools deleted asynchronously (202, a finalizer, the node leaving later). A
    /// removed node counts against --max-disrupted-nodes 1 until it is gone, and no restarted process
    /// uncordons it while its pool is being deleted.
    /// </summary>
    [Fact]
    public async Task WhileAPoolIsBeingDeletedItsNodeStaysCordonedAndCountsAsDisrupted()
    {
        // The finalizer holds a deleted pool (and its node) for 10 s of the rig's clock: several steps of both processes.
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), asyncDeletes: TimeSpan.FromSeconds(10), steppedClock: true);
        int most = 0;
        await rig.RunUntilAsync(() =>
        {
            most = Math.Max(most, Annotated(rig).Count);
            return rig.Spot.AsyncDeletes >= 1;
        }, "a pool DELETE accepted and left to its finalizer", maxSteps: 60);
        var leaving = Assert.Single(Annotated(rig));
        var pool = rig.Node(leaving)["metadata"]!["labels"]![SpotLabels.Pool]!.GetValue<string>();
        Assert.NotNull(rig.Spot.Pool(pool)?["metadata"]?["deletionTimestamp"]);

        // A restarted process (fresh state) and the old one go on while the pool is still being deleted.
        var fresh = await rig.NewProcessAsync(ActuationRig.Quick());
        int rounds = 0;
        while (rig.Demo.Api.Store.Get("nodes", null, leaving) is { } n)
        {
            Assert.True(IsCordoned(n.ToJsonObject()), $"{leaving} was uncordoned while its pool was being deleted");
            Assert.True(rounds++ < 10, $"{leaving} still there after {rounds} rounds (20 s of the rig's clock)");
            most = Math.Max(most, Annotated(rig).Count);
            await fresh.StepAsync();
            await rig.StepAsync();
        }
        // Both processes ticked while the pool was being deleted (each round moves the clock 2 s).
        Assert.True(rounds >= 2, $"the node left after {rounds} rounds");
        Assert.Equal(1, most);
        Assert.Equal(0, rig.Spot.CollectionDeletes);
    }

    /// <summary>Defect 10 on the demo in auto mode: six or more empty nodes, --max-disrupted-nodes 1, never two disrupted at once.</summary>
    [Fact]
    public async Task EmptyNodesAreRemovedOneAtATimeUntilEachIsGone()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.Zero }, asyncDeletes: TimeSpan.FromSeconds(2), steppedClock: true);
        int most = 0;
        await rig.RunUntilAsync(() =>
        {
            most = Math.Max(most, Annotated(rig).Count);
            return rig.Count("delete_pool", "succeeded") >= 2;
        }, "two removals", maxSteps: 60);
        Assert.Equal(1, most);
        Assert.True(rig.Actuator.Refusals.GetValueOrDefault("max_disrupted_nodes") > 0);
    }

    /// <summary>Defect 3: replica A loses its lease mid-drain (its clock passes the renew deadline); it writes nothing more, and B, a fresh process, takes over.</summary>
    [Fact]
    public async Task AReplicaThatLostItsLeaseMidDrainWritesNothingAndTheNextLeaderRecovers()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        rig.Detach(rig.Actuator);
        var lease = new LeaderElectionOptions { LeaseDuration = TimeSpan.FromSeconds(15), RenewDeadline = TimeSpan.FromSeconds(10), RetryPeriod = TimeSpan.FromSeconds(2) };
        var clockA = new TimerClock(DateTimeOffset.UtcNow);
        // B's elector runs on a hand-moved clock of its own, moved only while B is parked in a pause: its retries, its
        // view of the lease's expiry and its term's renew deadline all pass when the test says (on a clock that only
        // overrode the time, B's term still ended 10 s of real time after its last renewal, which a loaded machine
        // let pass mid-drain).
        var clockB = new TimerClock(DateTimeOffset.UtcNow);
        var electorA = new LeaderElector(rig.Kube, "default", "karpetrack", "replica-a", lease, NullLogger.Instance, clockA);
        var electorB = new LeaderElector(rig.Kube, "default", "karpetrack", "replica-b", lease, NullLogger.Instance, clockB);
        using var stopA = new CancellationTokenSource();
        using var stopB = new CancellationTokenSource();
        Assert.True(electorA.Term.IsCancellationRequested);   // not leading: no term
        var runA = electorA.RunAsync(stopA.Token);
        await rig.WaitAsync(() => electorA.IsLeader, "replica-a leads", drive: false);
        var termA = electorA.Term;
        Assert.False(termA.IsCancellationRequested);
        var a = await rig.NewProcessAsync(ActuationRig.Quick(), isLeader: () => electorA.IsLeader, leaseTerm: () => electorA.Term);

        // Evictions hang, so A is caught mid-drain.
        rig.Demo.Api.Faults.FailNext(10_000, 429, TimeSpan.FromSeconds(1), pathContains: "/eviction");
        for (int i = 0; a.Actuator.InFlightCounts.GetValueOrDefault("drain") != 1; i++)
        {
            Assert.True(i < 60, "A never reached a drain in 60 steps");
            await a.StepAsync(termA);
        }
        var drained = Assert.Single(Annotated(rig));

        // A's process stalls past its renew deadline: the term ends by A's own clock, before anyone could take over.
        // (Its lease writes fail from now on, so it cannot simply renew once it wakes up.)
        rig.Demo.Api.Faults.FailNext(10_000, 503, pathContains: "/leases/");
        await clockA.WhenPending(1);
        clockA.Advance(lease.RenewDeadline);
        Assert.True(termA.IsCancellationRequested);
        await rig.WaitAsync(() => !electorA.IsLeader, "replica-a stepping down", drive: false);
        stopA.Cancel();
        await runA;

        // Its long tick goes on: with the evictions now allowed, it still writes nothing.
        rig.Demo.Api.Faults.Clear();
        var before = Fingerprint(rig);
        var countsBefore = a.Actuator.Counts.ToDictionary();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => a.StepAsync(termA));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => a.StepAsync(electorA.Term));
        Assert.Equal(before, Fingerprint(rig));
        Assert.Equal(countsBefore, a.Actuator.Counts.ToDictionary());

        // B takes the lease once it has expired by B's clock, then recovers: A's cordon is rolled back or B drains the node itself.
        var runB = electorB.RunAsync(stopB.Token);
        await clockB.WhenDelaysPending(1);   // B tried, found A's lease, and pauses (an event wait)
        for (int i = 0; !electorB.IsLeader; i++)
        {
            Assert.True(i < 3, "replica-b never took the expired lease");
            clockB.Advance(lease.LeaseDuration);
            await clockB.WhenDelaysPending(1);   // B tried again and pauses: before its first renewal as the leader, or still waiting
        }
        var b = await rig.NewProcessAsync(ActuationRig.Quick(), isLeader: () => electorB.IsLeader, leaseTerm: () => electorB.Term);
        // The checked leader acts: B's clock is held still now, so its term lasts (no renewal is due, no deadline passes).
        await rig.WaitAsync(() => electorB.IsLeader, "replica-b still leads", drive: false);
        int steps = 0;
        do
        {
            Assert.True(steps++ < 60, "B never finished in 60 steps: a node is left cordoned");
            Assert.True(electorB.IsLeader);
            await b.StepAsync(electorB.Term);
        }
        while (!(b.Actuator.InFlightCounts.Count == 0 && Annotated(rig).Count == 0));
        Assert.Contains(rig.Demo.Api.Store.List("events").Items, e => e.ToJsonObject() is var o
            && o["reason"]?.GetValue<string>() is "DisruptionRolledBack" or "Cordoned" && o["involvedObject"]?["name"]?.GetValue<string>() == drained);
        Assert.All(a.Actuator.Counts, kv => Assert.Equal(countsBefore.GetValueOrDefault(kv.Key), kv.Value));
        stopB.Cancel();
        await runB;
    }

    /// <summary>Defect 5: a replacement whose new nodes become Ready outside the maintenance window is not cordoned.</summary>
    [Fact]
    public async Task TheCordonAfterTheNewNodesAreReadyRechecksTheMaintenanceWindow()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), provisioning: TimeSpan.FromSeconds(1), steppedClock: true);
        rig.Detach(rig.Actuator);
        // A window open from a minute before the rig's time now to half an hour after.
        var start = rig.Clock!.GetUtcNow();
        var window = new MaintenanceWindow(TimeOnly.FromDateTime(start.AddMinutes(-1).UtcDateTime), TimeOnly.FromDateTime(start.AddMinutes(30).UtcDateTime));
        var options = ActuationRig.Quick() with
        {
            ScaleUpCooldown = TimeSpan.Zero, Window = window, ProvisioningTimeout = TimeSpan.FromDays(1), MaxPlanAge = TimeSpan.FromDays(1),
        };
        var actuator = rig.NewActuator(options);
        // A consolidation onto one new node: it buys first, then cordons.
        string? node = null;
        rig.Detach(actuator);
        await rig.WaitAsync(() =>
        {
            rig.Recommender.RunOnce();
            return (node = rig.Recommender.Current.Recommendations.FirstOrDefault(r => r.Nodes.Count == 1 && r.Type != RecommendationType.Provision
                && rig.Model.Snapshot().Nodes.Any(n => n.Name == r.Nodes[0] && n.Labels.GetValueOrDefault(Actuator.ManagedLabel) == "true"
                    && rig.Model.Snapshot().Nodes.Count(x => x.Pool == n.Pool) == 1))?.Nodes[0]) is not null;
        }, "a removable node", drive: false);
        var view = rig.Model.Snapshot().Nodes.Single(n => n.Name == node);
        var price = rig.Prices.Current.NodePrice(view.ServerClass, view.CapacityType)!.Value;
        // Onto the cheapest class the book has, so that the saving holds at today's prices.
        var book = rig.Prices.Current;
        var cheap = book.Classes.Keys.Where(c => book.NodePrice(c, "spot") is { } p && p < price / 2 && options.Bids.Bid(book.Classes[c].Prices) is not null)
            .OrderBy(c => book.NodePrice(c, "spot")).First();
        var rec = new Recommendation("con-window-recheck", RecommendationType.Consolidate, [node!], [new NewNode(cheap, 1, book.NodePrice(cheap, "spot")!.Value)],
            [], [], price, book.NodePrice(cheap, "spot")!.Value, 0, 0, -1, ["a test plan"]);
        var plan = new Plan([rec], new Dictionary<string, IReadOnlyList<Blocker>>(), [], 0, 0, "us-east-iad-1");
        actuator.OnPlan(plan);
        await actuator.TickAsync(CancellationToken.None);   // recovery
        actuator.OnPlan(plan);
        await actuator.TickAsync(CancellationToken.None);   // started: its pool created
        Assert.True(rig.Spot.Pool(Actuator.PoolName(rec.Id, 0)) is not null, actuator.StateOf(rec.Id));
        // The window closes while the new node is on its way (it joins during that hour).
        await rig.AdvanceAsync(TimeSpan.FromHours(1));
        await rig.RunUntilAsync(() => actuator.StateOf(rec.Id) is { } st && !st.StartsWith("in progress"), "the operation past its wait", actuator: actuator,
            maxSteps: 10);
        Assert.StartsWith("failed: refused before the drain: outside the maintenance window", actuator.StateOf(rec.Id));
        Assert.Equal(1, actuator.Refusals.GetValueOrDefault("outside_window"));
        Assert.False(IsCordoned(rig.Node(node!)));
        Assert.Equal(0, actuator.Counts.GetValueOrDefault(("cordon", "succeeded")));
    }

    /// <summary>Defect 7: an approval is used up by one attempt; the retry of a failed approved operation waits for a new approval.</summary>
    [Fact]
    public async Task AFailedApprovedOperationNeedsANewApproval()
    {
        var options = ActuationRig.Quick(ActuationMode.Approve) with
        {
            DrainTimeout = TimeSpan.FromMinutes(1), RetryAfter = TimeSpan.Zero, MaxPlanAge = TimeSpan.FromDays(1), ScaleUpCooldown = TimeSpan.Zero,
        };
        await using var rig = await ActuationRig.StartAsync(options, steppedClock: true);
        rig.Detach(rig.Actuator);
        var actuator = rig.NewActuator(options);
        await rig.StepAsync(actuator);
        await rig.StepAsync(actuator);
        var removal = rig.Recommender.Current.Recommendations.FirstOrDefault(r => r.Type == RecommendationType.DeleteEmpty
            && actuator.StateOf(r.Id) == "waiting for approval");
        Assert.True(removal is not null, string.Join("; ", rig.Recommender.Current.Recommendations.Select(r => $"{r.Id} {r.Type} {actuator.StateOf(r.Id)}")));
        // The Spot API refuses to touch its pool: the approved attempt fails (and is rolled back).
        var pool = rig.Model.Snapshot().Nodes.Single(n => n.Name == removal!.Nodes[0]).Pool;
        rig.Spot.FailNext(10_000, 403, pathContains: pool);
        Assert.Equal(ApprovalOutcome.Approved, actuator.Approve(removal!.Id).Outcome);
        await rig.RunUntilAsync(() => actuator.StateOf(removal.Id)?.StartsWith("failed") == true, "the approved attempt failed", actuator: actuator);
        Assert.Equal(1, actuator.Counts.GetValueOrDefault(("cordon", "succeeded")));
        for (int i = 0; i < 5; i++)
        {
            await rig.AdvanceAsync(TimeSpan.FromMinutes(1));
            await rig.StepAsync(actuator);
        }
        Assert.Equal(1, actuator.Counts.GetValueOrDefault(("cordon", "succeeded")));
        Assert.Empty(Annotated(rig));
        // A new approval, a new attempt.
        Assert.Equal(ApprovalOutcome.Approved, actuator.Approve(removal.Id).Outcome);
        await rig.RunUntilAsync(() => actuator.Counts.GetValueOrDefault(("cordon", "succeeded")) == 2, "the second approved attempt", actuator: actuator);
    }

    /// <summary>Defect 8: a plan received before the recovery finished is not acted on; the next one is.</summary>
    [Fact]
    public async Task APlanFromBeforeTheRecoveryIsNotActedOn()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        rig.Detach(rig.Actuator);
        var actuator = new Actuator(ActuationRig.Quick(), rig.Model, rig.Prices, rig.Statuses, NullLogger.Instance, rig.Kube, rig.SpotClient, clock: rig.Clock);
        var cls = rig.Demo.ManagedNodes[0].ServerClass;
        var rec = new Recommendation("prov-before-recovery", RecommendationType.Provision, [], [new NewNode(cls, 1, 0)], [], ["default/p"], 0, 0, 0, 0, -1, ["a test plan"]);
        var plan = new Plan([rec], new Dictionary<string, IReadOnlyList<Blocker>>(), [], 0, 0, "us-east-iad-1");
        actuator.OnPlan(plan);
        await actuator.TickAsync(CancellationToken.None);
        Assert.Null(rig.Spot.Pool(Actuator.PoolName(rec.Id, 0)));
        Assert.Equal(0, actuator.Counts.GetValueOrDefault(("create_pool", "succeeded")));
        actuator.OnPlan(plan);
        await actuator.TickAsync(CancellationToken.None);
        Assert.NotNull(rig.Spot.Pool(Actuator.PoolName(rec.Id, 0)));
    }

    private static (Actuator, Recommendation, Plan) ProvisionOne(ActuationRig rig, ActuationOptions options, string id)
    {
        rig.Detach(rig.Actuator);
        var actuator = new Actuator(options, rig.Model, rig.Prices, rig.Statuses, NullLogger.Instance, rig.Kube, rig.SpotClient, clock: rig.Clock);
        var cls = rig.Demo.ManagedNodes[0].ServerClass;
        var rec = new Recommendation(id, RecommendationType.Provision, [], [new NewNode(cls, 1, 0)], [], ["default/p"], 0, 0, 0, 0, -1, ["a test plan"]);
        return (actuator, rec, new Plan([rec], new Dictionary<string, IReadOnlyList<Blocker>>(), [], 0, 0, "us-east-iad-1"));
    }

    [Fact]
    public async Task NoPoolIsCreatedPastTheManagedCapacityLimit()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        // The demo's managed pools already hold more than one cpu: any new pool passes the limit.
        var (actuator, rec, plan) = ProvisionOne(rig, ActuationRig.Quick() with { Pools = new PoolPolicy { MaxManagedMilliCpu = 1_000 } }, "prov-over-limit");
        await actuator.TickAsync(CancellationToken.None);   // the recovery
        actuator.OnPlan(plan);
        await actuator.TickAsync(CancellationToken.None);
        Assert.Null(rig.Spot.Pool(Actuator.PoolName(rec.Id, 0)));
        Assert.Equal(1, actuator.Refusals.GetValueOrDefault("managed_capacity_limit"));
        Assert.StartsWith("failed: managed capacity limit:", actuator.StateOf(rec.Id));
    }

    [Fact]
    public async Task NewPoolsCarryThePolicysLabelsAndTaintsBesideKarpetracksOwn()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        var policy = new PoolPolicy
        {
            Labels = new Dictionary<string, string> { ["team"] = "batch", [Actuator.ManagedLabel] = "false" },
            Taints = [new Taint("dedicated", "batch", "NoSchedule")],
            MaxManagedMilliCpu = 1_000_000,
        };
        var (actuator, rec, plan) = ProvisionOne(rig, ActuationRig.Quick() with { Pools = policy }, "prov-labelled");
        await actuator.TickAsync(CancellationToken.None);
        actuator.OnPlan(plan);
        await actuator.TickAsync(CancellationToken.None);
        var spec = rig.Spot.Pool(Actuator.PoolName(rec.Id, 0))?["spec"];
        Assert.NotNull(spec);
        Assert.Equal("batch", spec["customLabels"]?["team"]?.GetValue<string>());
        Assert.Equal("true", spec["customLabels"]?[Actuator.ManagedLabel]?.GetValue<string>());   // Karpetrack's own labels win
        var taint = Assert.Single(spec["customTaints"]!.AsArray())!;
        Assert.Equal(("dedicated", "batch", "NoSchedule"),
            (taint["key"]?.GetValue<string>(), taint["value"]?.GetValue<string>(), taint["effect"]?.GetValue<string>()));
        Assert.Empty(actuator.Refusals);
    }

    /// <summary>
    /// A pool that another writer grows to two nodes while its node is being removed is never deleted with
    /// the second node in it: the last check before the DELETE reads the unfiltered view and the pool's size.
    /// </summary>
    [Fact]
    public async Task APoolGrownToTwoNodesDuringARemovalIsNotDeleted()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.Zero }, steppedClock: true);
        var deleted = new System.Collections.Concurrent.ConcurrentBag<string>();
        rig.Spot.OnPoolDelete = deleted.Add;
        string? grown = null;
        void Grow(ApiWrite w)
        {
            // The moment Karpetrack marks a node for disruption, its pool is scaled to two by someone else.
            if (grown is not null || w.Resource != "nodes" || w.Object?["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation] is null) return;
            grown = w.Object["metadata"]!["labels"]![SpotLabels.Pool]!.GetValue<string>();
            SpotTestKit.RawAsync(rig.Spot, "PATCH", $"{SpotTestKit.PoolsPath}/{grown}", "{\"spec\":{\"desired\":2}}",
                "application/merge-patch+json", expect: 200).GetAwaiter().GetResult();
        }
        rig.Demo.Api.Written += Grow;
        try
        {
            await rig.RunUntilAsync(() => rig.Actuator.Refusals.GetValueOrDefault("pool_holds_other_nodes") > 0 || (grown is not null && deleted.Contains(grown)),
                "the grown pool's DELETE refused or sent", maxSteps: 60);
        }
        finally { rig.Demo.Api.Written -= Grow; }
        Assert.NotNull(grown);
        Assert.DoesNotContain(grown, deleted);
        Assert.NotNull(rig.Spot.Pool(grown));
    }

    // ---- every README refusal produced on the rig: its reason counted, nothing written ----------------------

    private static readonly Dictionary<string, IReadOnlyList<Blocker>> NoBlockers = new();

    /// <summary>
    /// Hands <paramref name="rec"/> to the actuator and runs one tick: it is refused for <paramref name="reason"/>, once,
    /// its state reads <paramref name="state"/>, and the nodes' cordons and disruption annotations, the pods and the Spot pools are as before.
    /// </summary>
    private static async Task AssertRefusedBeforeAnyWriteAsync(ActuationRig rig, Actuator actuator, Recommendation rec, string reason, string state)
    {
        var before = Fingerprint(rig);
        actuator.OnPlan(PlanOf(rec));
        await actuator.TickAsync(CancellationToken.None);
        Assert.Equal(1, actuator.Refusals.GetValueOrDefault(reason));
        Assert.Equal(state, actuator.StateOf(rec.Id));
        Assert.Equal(before, Fingerprint(rig));
    }

    internal static Plan PlanOf(params Recommendation[] recs) => new(recs, NoBlockers, [], 0, 0, "us-east-iad-1");

    internal static Recommendation Removal(string id, string node, decimal savingPerHour) =>
        new(id, RecommendationType.Consolidate, [node], [], [], [], savingPerHour, 0, 0, 0, -1, ["a test plan"]);

    /// <summary>Options under which nothing but the rule a test is about refuses (on the rig's clock, which only the test moves).</summary>
    internal static ActuationOptions Calm() => ActuationRig.Quick() with
    {
        ScaleUpCooldown = TimeSpan.Zero, MaxPlanAge = TimeSpan.FromDays(1), PoolSweep = TimeSpan.FromDays(1),
        ProvisioningTimeout = TimeSpan.FromDays(1), DrainTimeout = TimeSpan.FromDays(1),
    };

    /// <summary>An actuator that only the test feeds plans and ticks, past its recovery.</summary>
    private static async Task<Actuator> RecoveredAsync(ActuationRig rig, ActuationOptions options, SpotApiClient? spot = null)
    {
        rig.Detach(rig.Actuator);
        var actuator = spot is null
            ? rig.NewActuator(options)
            : new Actuator(options, rig.Model, rig.Prices, rig.Statuses, NullLogger.Instance, rig.Kube, spot, clock: rig.Clock);
        rig.Detach(actuator);
        await actuator.TickAsync(CancellationToken.None);   // the recovery
        return actuator;
    }

    /// <summary>A managed node alone in its pool, with nothing on it that blocks a disruption (and pods to evict when asked).</summary>
    private static Task<string> RemovableManagedNodeAsync(ActuationRig rig, bool withPods) =>
        Task.FromResult(RemovableManagedNodes(rig, withPods).FirstOrDefault()
            ?? throw new InvalidOperationException("the demo has no removable managed node" + (withPods ? " with pods" : "")));

    /// <summary>Every managed node alone in its pool with nothing on it that blocks a disruption (with pods to evict, when asked).</summary>
    private static IEnumerable<string> RemovableManagedNodes(ActuationRig rig, bool withPods)
    {
        var snap = rig.Model.Snapshot();
        var book = rig.Prices.Current;
        var pdbs = rig.Model.Pdbs.All().GroupBy(p => p.Namespace).ToDictionary(g => g.Key, g => g.ToArray(), StringComparer.Ordinal);
        foreach (var m in rig.Demo.ManagedNodes)
        {
            if (snap.Nodes.FirstOrDefault(n => n.Name == m.Node) is not { } view || snap.Nodes.Count(n => n.Pool == view.Pool) != 1) continue;
            var pods = rig.Model.PodsOn(m.Node);
            if (withPods && !pods.Any(p => !p.IsOverhead)) continue;
            if (Recommender.NodeBlockers(view, pods, pdbs, book).Any(b => b.Reason != BlockerReasons.PdbNoDisruptions)) continue;
            yield return m.Node;
        }
    }

    /// <summary>
    /// README: at the default --max-disrupted-nodes 1, a recommendation that disrupts two nodes at once (a group replacement, a
    /// multi-node consolidation) is refused with max_disrupted_nodes before its first write, and nothing is written.
    /// </summary>
    [Theory]
    [InlineData(RecommendationType.Consolidate)]
    [InlineData(RecommendationType.Replace)]
    public async Task ARecommendationDisruptingTwoNodesIsRefusedAtTheDefaultMaxDisruptedNodes(RecommendationType type)
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        var options = Calm() with { MaxDisruptedNodes = new ActuationOptions().MaxDisruptedNodes };
        Assert.Equal(1, options.MaxDisruptedNodes);
        var actuator = await RecoveredAsync(rig, options);
        var nodes = RemovableManagedNodes(rig, withPods: false).Take(2).ToList();
        Assert.Equal(2, nodes.Count);
        var book = rig.Prices.Current;
        var cheapest = book.Classes.Keys.Where(c => book.NodePrice(c, "spot") is > 0).MinBy(c => book.NodePrice(c, "spot"))!;
        var rec = type == RecommendationType.Replace
            ? new Recommendation("rep-group", type, nodes, [new NewNode(cheapest, 1, 0)], [], [], 1m, 0.01m, 0, 0, -1, ["a test plan"])
            : new Recommendation("con-group", type, nodes, [], [], [], 1m, 0m, 0, 0, -1, ["a test plan"]);
        await AssertRefusedBeforeAnyWriteAsync(rig, actuator, rec, "max_disrupted_nodes", "refused: 0 nodes are being disrupted and this needs 2 more (--max-disrupted-nodes 1)");
        Assert.DoesNotContain(rig.ManagedPools(), p => p["spec"]!["customLabels"]?[Actuator.RecommendationLabel]?.GetValue<string>() == rec.Id);
    }

    /// <summary>README: "Spot API circuit closed". With the breaker open, the first write of a provision is refused.</summary>
    [Fact]
    public async Task AnOpenSpotApiCircuitRefusesAProvisionAndNothingIsWritten()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        // One failure opens this client's breaker, and it stays open: its cool-down is measured on the rig's clock (its
        // backoff pauses, none here with a single attempt, would be real).
        using var spot = new SpotApiClient(new SpotApiOptions
        {
            ApiUrl = rig.Spot.BaseAddress, AuthUrl = rig.Spot.BaseAddress, Org = rig.Spot.OrgNamespace, RandomSeed = 1,
            MaxAttempts = 1, BreakerThreshold = 1, BreakerCooldown = TimeSpan.FromHours(1),
        }, SpotApiServer.DemoRefreshToken, NullLogger.Instance, new RigTimeRealTimers(rig.Clock!));
        var actuator = await RecoveredAsync(rig, Calm(), spot);
        rig.Spot.FailNext(1, 503);
        await Assert.ThrowsAsync<SpotApiException>(() => spot.ListNodePoolsAsync("demo", CancellationToken.None));
        Assert.True(spot.CircuitOpen);
        var rec = new Recommendation("prov-circuit-open", RecommendationType.Provision, [], [new NewNode(rig.Demo.ManagedNodes[0].ServerClass, 1, 0)], [],
            ["default/p"], 0, 0, 0, 0, -1, ["a test plan"]);
        await AssertRefusedBeforeAnyWriteAsync(rig, actuator, rec, "circuit_open", "refused: the Spot API circuit breaker is open");
        Assert.Null(rig.Spot.Pool(Actuator.PoolName(rec.Id, 0)));
        Assert.Equal(0, actuator.Counts.GetValueOrDefault(("create_pool", "succeeded")));
    }

    /// <summary>
    /// README: node_not_ready. A managed node someone else cordoned (no disruption annotation: not Karpetrack's cordon) is not
    /// taken over by a removal: refused before any write, and the cordon stays theirs.
    /// </summary>
    [Fact]
    public async Task ARemovalOfANodeSomeoneElseCordonedIsRefusedAsNotReady()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        var actuator = await RecoveredAsync(rig, Calm());
        var node = await RemovableManagedNodeAsync(rig, withPods: false);
        await rig.Kube.PatchNodeAsync(node, new JsonObject { ["spec"] = new JsonObject { ["unschedulable"] = true } }, CancellationToken.None);
        await rig.CaughtUpAsync();
        var rec = Removal("con-cordoned-by-someone", node, 1m);
        await AssertRefusedBeforeAnyWriteAsync(rig, actuator, rec, "node_not_ready", $"refused: {node} is cordoned");
        Assert.Null(rig.Node(node)["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
    }

    /// <summary>README: "the saving positive". A removal that saves nothing is not started.</summary>
    [Fact]
    public async Task ARemovalThatSavesNothingIsRefusedAndNothingIsWritten()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        var actuator = await RecoveredAsync(rig, Calm());
        var node = await RemovableManagedNodeAsync(rig, withPods: false);
        var rec = Removal("con-saves-nothing", node, 0);
        await AssertRefusedBeforeAnyWriteAsync(rig, actuator, rec, "saves_nothing", "refused: it saves nothing");
        Assert.Equal(0, actuator.Counts.GetValueOrDefault(("cordon", "succeeded")));
    }

    /// <summary>README: "nor of a node younger than that" (--scale-up-cooldown).</summary>
    [Fact]
    public async Task ANodeYoungerThanTheScaleUpCooldownIsNotDisrupted()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        var node = await RemovableManagedNodeAsync(rig, withPods: false);
        // The node joined now by the rig's clock (the demo dates its nodes days back), and the clock moves on half a minute.
        var joined = rig.Clock!.GetUtcNow();
        rig.Demo.Api.Store.Update("nodes", null, node, n =>
        {
            n["metadata"]!["creationTimestamp"] = joined.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'");
            return true;
        });
        var actuator = await RecoveredAsync(rig, Calm() with { ScaleUpCooldown = TimeSpan.FromMinutes(2) });
        await rig.AdvanceAsync(TimeSpan.FromSeconds(30));
        var created = rig.Model.Snapshot().Nodes.Single(n => n.Name == node).Created;
        Assert.True(created is { } c && rig.Clock.GetUtcNow() - c is var age && age >= TimeSpan.FromSeconds(29) && age <= TimeSpan.FromSeconds(31), $"created {created}");
        var rec = Removal("con-too-young", node, 1m);
        await AssertRefusedBeforeAnyWriteAsync(rig, actuator, rec, "node_too_young", $"refused: {node} joined less than 2 min ago");
    }

    /// <summary>
    /// README: "a drain ... that meets a new do-not-disrupt annotation, is rolled back (uncordoned)". Mid-drain (evictions held
    /// back by a 429), a new pod annotated karpenter.sh/do-not-disrupt (the code honours it and karpetrack.io/do-not-disrupt)
    /// lands on the node: the drain is abandoned, the node uncordoned, the pod not evicted and the pool kept.
    /// </summary>
    [Fact]
    public async Task ANewDoNotDisruptPodMidDrainAbortsTheDrainAndUncordons()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        var actuator = await RecoveredAsync(rig, Calm());
        var node = await RemovableManagedNodeAsync(rig, withPods: true);
        var pool = rig.Node(node)["metadata"]!["labels"]![SpotLabels.Pool]!.GetValue<string>();
        rig.Demo.Api.Faults.FailNext(10_000, 429, TimeSpan.FromSeconds(1), pathContains: "/eviction");
        var rec = Removal("con-dnd-mid-drain", node, 1m);
        actuator.OnPlan(PlanOf(rec));
        await actuator.TickAsync(CancellationToken.None);
        Assert.Equal(1, actuator.InFlightCounts.GetValueOrDefault("drain"));
        Assert.True(IsCordoned(rig.Node(node)));

        var template = rig.Demo.Api.Store.List("pods").Items.Select(p => p.ToJsonObject())
            .First(p => p["spec"]?["nodeName"]?.GetValue<string>() == node && p["metadata"]?["ownerReferences"]?[0]?["kind"]?.GetValue<string>() == "ReplicaSet");
        var pod = template.DeepClone().AsObject();
        var name = template["metadata"]!["name"]!.GetValue<string>() + "-dnd";
        var meta = pod["metadata"]!.AsObject();
        meta["name"] = name;
        meta["uid"] = Guid.NewGuid().ToString();
        meta.Remove("resourceVersion");
        meta["annotations"] = new JsonObject { ["karpenter.sh/do-not-disrupt"] = "true" };
        Assert.NotNull(rig.Demo.Api.Store.TryCreate("pods", pod));
        await rig.CaughtUpAsync();
        Assert.Contains(rig.Model.PodsOn(node), p => p.Name == name);

        await actuator.TickAsync(CancellationToken.None);
        Assert.Equal(1, actuator.Refusals.GetValueOrDefault("blocked"));
        Assert.Equal($"failed: {node} became blocked during the drain (pod_do_not_disrupt); uncordoned", actuator.StateOf(rec.Id));
        var after = rig.Node(node);
        Assert.False(IsCordoned(after));
        Assert.Null(after["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
        var kept = rig.Demo.Api.Store.Get("pods", template["metadata"]!["namespace"]!.GetValue<string>(), name)?.ToJsonObject();
        Assert.NotNull(kept);
        Assert.Null(kept["metadata"]?["deletionTimestamp"]);
        Assert.NotNull(rig.Spot.Pool(pool));
        Assert.Equal(0, actuator.Counts.GetValueOrDefault(("delete_pool", "succeeded")));
    }

    /// <summary>A consolidation of a node with pods onto one new node of the cheapest class that keeps the saving: started, its pool created.</summary>
    private static async Task<(Actuator Actuator, Recommendation Rec, string Node, string NewPool, string NewClass)> ConsolidationOntoANewNodeAsync(
        ActuationRig rig, ActuationOptions options)
    {
        // The demo's nodes are cheap: any saving at all is enough here.
        rig.Thresholds = () => new RecommenderOptions { ReplaceThresholdPercent = 0, ReplaceThresholdDollars = 0 };
        var actuator = await RecoveredAsync(rig, options);
        var node = await RemovableManagedNodeAsync(rig, withPods: true);
        var view = rig.Model.Snapshot().Nodes.Single(n => n.Name == node);
        var book = rig.Prices.Current;
        var price = book.NodePrice(view.ServerClass, view.CapacityType)!.Value;
        var cheap = book.Classes.Keys.Where(c => book.NodePrice(c, "spot") is { } p && p < price / 2 && options.Bids.Bid(book.Classes[c].Prices) is not null)
            .OrderBy(c => book.NodePrice(c, "spot")).First();
        var cheapPrice = book.NodePrice(cheap, "spot")!.Value;
        var rec = new Recommendation("con-onto-new-node", RecommendationType.Consolidate, [node], [new NewNode(cheap, 1, cheapPrice)], [], [],
            price, cheapPrice, 0, 0, -1, ["a test plan"]);
        actuator.OnPlan(PlanOf(rec));
        await actuator.TickAsync(CancellationToken.None);
        var pool = Actuator.PoolName(rec.Id, 0);
        Assert.True(rig.Spot.Pool(pool) is not null, actuator.StateOf(rec.Id));
        return (actuator, rec, node, pool, cheap);
    }

    /// <summary>README: nodes of an operation in progress are not disrupted by another one. The new node of a consolidation still draining is refused.</summary>
    [Fact]
    public async Task TheNewNodeOfAnOperationInProgressIsNotDisruptedByAnother()
    {
        var options = Calm() with { MaxDisruptedNodes = 5 };
        await using var rig = await ActuationRig.StartAsync(options, steppedClock: true);
        var (actuator, rec, node, pool, _) = await ConsolidationOntoANewNodeAsync(rig, options);
        rig.Demo.Api.Faults.FailNext(10_000, 429, TimeSpan.FromSeconds(1), pathContains: "/eviction");
        // Past the provisioning delay (300 ms) on the rig's clock: the new node joins.
        await rig.AdvanceAsync(TimeSpan.FromSeconds(1));
        Assert.Contains(rig.Model.Snapshot().Nodes, n => n.Pool == pool && n.Ready);
        await actuator.TickAsync(CancellationToken.None);   // re-checked, cordoned, draining (its evictions held back)
        Assert.True(actuator.InFlightCounts.GetValueOrDefault("drain") == 1, actuator.StateOf(rec.Id));
        var fresh = rig.Model.Snapshot().Nodes.Single(n => n.Pool == pool).Name;

        var other = Removal("con-the-new-node", fresh, 1m);
        var before = Fingerprint(rig);
        actuator.OnPlan(PlanOf(rec, other));
        await actuator.TickAsync(CancellationToken.None);
        Assert.Equal(1, actuator.Refusals.GetValueOrDefault("owned_by_operation"));
        Assert.Equal($"refused: {fresh} belongs to an operation in progress", actuator.StateOf(other.Id));
        Assert.False(IsCordoned(rig.Node(fresh)));
        Assert.Equal(before, Fingerprint(rig));
        Assert.Equal(1, actuator.Counts.GetValueOrDefault(("cordon", "succeeded")));
        Assert.True(IsCordoned(rig.Node(node)));
    }

    /// <summary>
    /// README: pre-emption. The new pool of a consolidation loses its bid while it is in flight: the operation ends with the
    /// reason pool_preempted, and the node it was to replace is never cordoned.
    /// </summary>
    [Fact]
    public async Task APoolPreemptedInFlightEndsItsOperationBeforeAnyDisruption()
    {
        var options = Calm() with { PoolSweep = TimeSpan.FromSeconds(1) };
        await using var rig = await ActuationRig.StartAsync(options, provisioning: TimeSpan.FromSeconds(2), steppedClock: true);
        var (actuator, rec, node, pool, cls) = await ConsolidationOntoANewNodeAsync(rig, options);
        var bid = decimal.Parse(rig.Spot.Pool(pool)!["spec"]!["bidPrice"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture);
        rig.Spot.SetMarketPrice(cls, bid + 0.05m);
        for (int i = 0; actuator.StateOf(rec.Id) is not { } state || !state.StartsWith("failed", StringComparison.Ordinal); i++)
        {
            Assert.True(i < 15, actuator.StateOf(rec.Id));
            await rig.AdvanceAsync(TimeSpan.FromSeconds(2));
            await actuator.TickAsync(CancellationToken.None);
        }
        Assert.Contains($"pool {pool} lost its bid", actuator.StateOf(rec.Id));
        Assert.Equal(1, actuator.Refusals.GetValueOrDefault("pool_preempted"));
        Assert.Equal(0, actuator.Counts.GetValueOrDefault(("cordon", "succeeded")));
        Assert.False(IsCordoned(rig.Node(node)));
        Assert.Empty(Annotated(rig));
        Assert.NotNull(rig.Spot.Pool(rig.Node(node)["metadata"]!["labels"]![SpotLabels.Pool]!.GetValue<string>()));
    }

    /// <summary>
    /// A pod whose own terminationGracePeriodSeconds is 0 is evicted with a grace period of at least a second: the API
    /// server marks it terminating first instead of deleting it at once (a force delete).
    /// </summary>
    [Fact]
    public async Task APodWithAZeroGracePeriodIsEvictedGracefullyNeverForceDeleted()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        var actuator = await RecoveredAsync(rig, Calm() with { MaxGracePeriod = TimeSpan.FromMinutes(5) });
        var node = await RemovableManagedNodeAsync(rig, withPods: true);
        var pods = rig.Model.PodsOn(node).Where(p => !p.IsOverhead).Select(p => (Ns: p.Namespace, p.Name)).ToList();
        Assert.NotEmpty(pods);
        foreach (var (ns, name) in pods)
            rig.Demo.Api.Store.Update("pods", ns, name, p => { p["spec"]!["terminationGracePeriodSeconds"] = 0; return true; });
        // The first write each pod sees once the drain starts: a graceful mark (its grace period) or an outright delete (-1).
        var first = new System.Collections.Concurrent.ConcurrentDictionary<string, long>();
        void Seen(ApiWrite w)
        {
            if (w.Resource == "pods" && pods.Contains((w.Namespace ?? "", w.Name)))
                first.TryAdd(w.Name, w.Object is null ? -1 : w.Object["metadata"]?["deletionGracePeriodSeconds"]?.GetValue<long>() ?? -2);
        }
        rig.Demo.Api.Written += Seen;
        try
        {
            actuator.OnPlan(PlanOf(Removal("con-zero-grace", node, 1m)));
            await actuator.TickAsync(CancellationToken.None);   // cordoned, every pod evicted
        }
        finally { rig.Demo.Api.Written -= Seen; }
        // Every pod the drain evicted (one behind a PDB at zero is refused with a 429 and not written).
        Assert.NotEmpty(first);
        Assert.All(first, kv => Assert.True(kv.Value == 1, $"{kv.Key}: first write {kv.Value} (-1: deleted at once)"));
    }

    /// <summary>
    /// Recovery reconstructs what the cluster records, in a fresh process (its own model, caches and actuator): a drain
    /// recorded with its step is resumed (the node stays cordoned, its operation drains on), one past --drain-timeout since
    /// its cordon is resumed and rolled back at once, and a value without a step (an earlier release) or with an unknown
    /// step is recognised as Karpetrack's and rolled back as before.
    /// </summary>
    [Theory]
    [InlineData("con-0123456789ab;step=drain", 0, "resumed")]
    [InlineData("con-0123456789ab;step=drain", 60, "timed out")]
    [InlineData("con-0123456789ab", 0, "rolled back")]
    [InlineData("con-0123456789ab;step=teleport", 0, "rolled back")]
    public async Task AFreshProcessRecoversEachRecordedStep(string value, int minutesAgo, string expected)
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        rig.Detach(rig.Actuator);
        var node = await RemovableManagedNodeAsync(rig, withPods: true);
        // Evictions are held back, so a resumed drain is still draining after the first tick.
        rig.Demo.Api.Faults.FailNext(10_000, 429, TimeSpan.FromSeconds(1), pathContains: "/eviction");
        await rig.Kube.PatchNodeAsync(node, new JsonObject
        {
            ["metadata"] = new JsonObject
            {
                ["annotations"] = new JsonObject
                {
                    [Actuator.DisruptionAnnotation] = value,
                    [Actuator.DisruptionSinceAnnotation] = rig.Clock!.GetUtcNow().AddMinutes(-minutesAgo).UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'"),
                },
            },
            ["spec"] = new JsonObject { ["unschedulable"] = true },
        }, CancellationToken.None);
        var process = await rig.NewProcessAsync(ActuationRig.Quick());
        await rig.WaitAsync(() => process.Model.Snapshot().Nodes.Any(n => n.Name == node && !n.Schedulable), "the cordon seen", drive: false);
        await process.StepAsync();
        var after = rig.Node(node);
        var state = process.Actuator.StateOf("con-0123456789ab");
        switch (expected)
        {
            case "resumed":
                Assert.True(IsCordoned(after));
                Assert.Equal(value, after["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]?.GetValue<string>());
                Assert.Equal(1, process.Actuator.InFlightCounts.GetValueOrDefault("drain"));
                Assert.StartsWith("in progress: ", state);
                break;
            case "timed out":
                Assert.False(IsCordoned(after));
                Assert.Null(after["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
                Assert.StartsWith("failed: the drain did not finish", state);
                break;
            default:
                Assert.False(IsCordoned(after));
                Assert.Null(after["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
                Assert.Null(state);
                Assert.Empty(process.Actuator.InFlightCounts);
                break;
        }
        Assert.NotNull(rig.Spot.Pool(after["metadata"]!["labels"]![SpotLabels.Pool]!.GetValue<string>()));
    }
}
