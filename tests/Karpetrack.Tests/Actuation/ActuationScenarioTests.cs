using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Actuation;

/// <summary>
/// The actuation scenarios on a stepped clock: every wait is a number of the rig's steps (its clock moved by hand), or an
/// event wait with the clock standing still; no test waits for a product timer on real time.
/// </summary>
public class ActuationScenarioTests
{
    private static bool IsCordoned(JsonObject node) => node["spec"]?["unschedulable"]?.GetValue<bool>() == true;

    [Fact]
    public async Task PendingPodsGetOnePoolPerNewNodeAndAreScheduledWhenTheNodesJoin()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), provisioning: TimeSpan.FromSeconds(10), steppedClock: true);
        rig.Recommender.RunOnce();
        var provision = Assert.Single(rig.Recommender.Current.Recommendations, r => r.Type == RecommendationType.Provision);
        int wanted = provision.NewNodes.Sum(n => n.Count);
        await rig.Actuator.TickAsync(CancellationToken.None);
        // While the nodes are being provisioned (10 s, five 1 s steps here), more plans and ticks buy nothing more for the same pods.
        for (int i = 0; i < 5; i++) await rig.StepAsync();
        Assert.Equal(wanted, rig.Actuator.InFlight().Count);
        Assert.Equal(0, rig.Count("wait_ready", "succeeded"));
        var created = rig.ManagedPools().Where(p => p["metadata"]!["labels"]?["ngpc.rxt.io/cloudspace"]?.GetValue<string>() == "demo"
            && p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null).ToList();
        Assert.Equal(wanted, created.Count);
        Assert.Equal(wanted, rig.Count("create_pool", "succeeded"));
        foreach (var p in created)
        {
            Assert.Equal(1, p["spec"]!["desired"]!.GetValue<int>());
            Assert.Equal(provision.Id, p["spec"]!["customLabels"]![Actuator.RecommendationLabel]!.GetValue<string>());
            Assert.True(BidLadder.IsOnLadder(decimal.Parse(p["spec"]!["bidPrice"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture)));
        }
        await rig.RunUntilAsync(() => rig.Count("wait_ready", "succeeded") == 1, "the new nodes Ready", maxSteps: 10);
        Assert.StartsWith("succeeded", rig.Actuator.StateOf(provision.Id));
        // The pods the nodes were bought for run on them now.
        await rig.RunUntilAsync(() => rig.Model.Snapshot().PendingPods == 0, "no pending pods", maxSteps: 5);
        Assert.Empty(rig.Actuator.InFlight());
    }

    [Fact]
    public async Task AnUnderusedNodeOfKarpetracksIsCordonedDrainedAndItsPoolDeleted()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        int mostAnnotated = 0;
        int Annotated() => rig.Demo.Api.Store.List("nodes").Items.Count(n => n.ToJsonObject()["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation] is not null);
        await rig.RunUntilAsync(() =>
        {
            mostAnnotated = Math.Max(mostAnnotated, Annotated());
            return rig.Count("delete_pool", "succeeded") >= 2;
        }, "two removals carried out", maxSteps: 60);
        Assert.True(rig.Count("cordon", "succeeded") >= 2);
        Assert.True(rig.Count("drain", "succeeded") >= 2);
        // --max-disrupted-nodes 1: never two nodes cordoned for a disruption at once.
        Assert.Equal(1, mostAnnotated);
        Assert.Contains(rig.Recommender.Current.Recommendations, r => rig.Actuator.StateOf(r.Id)?.Contains("--max-disrupted-nodes 1") == true);
        var managed = rig.Demo.ManagedNodes.ToDictionary(m => m.Node, m => m.Pool);
        // Every node Karpetrack removed was one of its own, is gone from the cluster, and its pool from Spot.
        await rig.WaitForAsync(() => managed.Keys.Count(n => rig.Demo.Api.Store.Get("nodes", null, n) is null) >= 2, "two managed nodes gone");
        foreach (var (node, pool) in managed.Where(kv => rig.Demo.Api.Store.Get("nodes", null, kv.Key) is null))
            Assert.Null(rig.Spot.Pool(pool));
        Assert.Equal(0, rig.Spot.CollectionDeletes);
        // Every action left a Kubernetes Event about the node it touched.
        await rig.WaitForAsync(() => rig.Demo.Api.Store.List("events").Items.Count(e => e.ToJsonObject()["reason"]?.GetValue<string>() == "PoolDeleted") >= 2, "the events");
        var events = rig.Demo.Api.Store.List("events").Items.Select(e => e.ToJsonObject()).ToList();
        Assert.Contains(events, e => e["reason"]?.GetValue<string>() == "Cordoned" && e["involvedObject"]?["kind"]?.GetValue<string>() == "Node");
        Assert.Contains(events, e => e["reason"]?.GetValue<string>() == "Drained" && e["source"]?["component"]?.GetValue<string>() == "karpetrack");
    }

    [Fact]
    public async Task UnmanagedNodesAreNeverTouched()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        await rig.RunUntilAsync(() => rig.Count("delete_pool", "succeeded") >= 1, "a removal carried out", maxSteps: 60);
        var managed = rig.Demo.ManagedNodes.Select(m => m.Node).ToHashSet();
        foreach (var n in rig.Demo.Api.Store.List("nodes").Items.Select(x => x.ToJsonObject()))
        {
            var name = n["metadata"]!["name"]!.GetValue<string>();
            if (managed.Contains(name) || n["metadata"]!["labels"]![Actuator.ManagedLabel] is not null) continue;
            Assert.Null(n["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
        }
        Assert.Contains(rig.Recommender.Current.Recommendations, r => rig.Actuator.StateOf(r.Id)?.StartsWith("advisory only") == true);
    }

    private static int Annotated(ActuationRig rig) =>
        rig.Demo.Api.Store.List("nodes").Items.Count(n => n.ToJsonObject()["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation] is not null);

    private static IEnumerable<JsonObject> Nodes(ActuationRig rig) => rig.Demo.Api.Store.List("nodes").Items.Select(n => n.ToJsonObject());

    [Fact]
    public async Task AStalePriceBookUnsyncedCachesOrAnOldPlanChangeNothing()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { MaxPlanAge = TimeSpan.FromSeconds(30) }, steppedClock: true);
        await rig.Actuator.TickAsync(CancellationToken.None);   // the recovery first: only a plan received after it is acted on
        rig.Recommender.RunOnce();
        await rig.AdvanceAsync(TimeSpan.FromSeconds(31));
        await rig.Actuator.TickAsync(CancellationToken.None);
        Assert.DoesNotContain(rig.ManagedPools(), p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null);
        Assert.All(rig.Recommender.Current.Recommendations.Select(r => rig.Actuator.StateOf(r.Id)),
            st => Assert.True(st!.StartsWith("advisory") || st.StartsWith("refused: the plan is older than"), st));

        // The same plan with a book fetched long ago: stale, so refused as well.
        var stale = PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-08-17.json")), DateTimeOffset.UnixEpoch, "old");
        using var oldPrices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: stale);
        var synced = rig.Statuses;
        var onStale = new Actuator(ActuationRig.Quick(), rig.Model, oldPrices, synced, NullLogger.Instance, rig.Kube, rig.SpotClient, clock: rig.Clock);
        await onStale.TickAsync(CancellationToken.None);
        onStale.OnPlan(rig.Recommender.Current);
        await onStale.TickAsync(CancellationToken.None);
        Assert.Contains(rig.Recommender.Current.Recommendations, r => onStale.StateOf(r.Id) == "refused: the price book is stale");

        // Caches not synced: the tick does nothing at all.
        var unsynced = new Actuator(ActuationRig.Quick(), rig.Model, rig.Prices, [new ReflectorStatus("pods")], NullLogger.Instance, rig.Kube, rig.SpotClient, clock: rig.Clock);
        unsynced.OnPlan(rig.Recommender.Current);
        await unsynced.TickAsync(CancellationToken.None);
        Assert.Empty(unsynced.Counts);
        Assert.Equal(0, Annotated(rig));
        Assert.DoesNotContain(rig.ManagedPools(), p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null);
    }

    [Fact]
    public async Task OutsideTheMaintenanceWindowOnlyProvisioningHappens()
    {
        var now = DateTimeOffset.UtcNow;
        var closed = new MaintenanceWindow(TimeOnly.FromDateTime(now.AddHours(2).UtcDateTime), TimeOnly.FromDateTime(now.AddHours(3).UtcDateTime));
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { Window = closed }, steppedClock: true);
        await rig.RunUntilAsync(() => rig.Count("create_pool", "succeeded") >= 1 && rig.Count("cordon", "refused") >= 1, "a provision done and a removal refused");
        for (int i = 0; i < 5; i++) await rig.StepAsync();
        Assert.Equal(0, rig.Count("cordon", "succeeded"));
        Assert.Equal(0, Annotated(rig));
        Assert.Contains(rig.Recommender.Current.Recommendations, r => rig.Actuator.StateOf(r.Id)?.StartsWith("refused: outside the maintenance window") == true);
    }

    [Fact]
    public async Task TheHourlyBudgetStopsAfterItsShareAndADoNotDisruptNodeIsNeverTouched()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { MaxDisruptedPercentPerHour = 1 }, steppedClock: true);
        // Mark one managed node do-not-disrupt through the API, as a user would with kubectl annotate.
        var keep = rig.Demo.ManagedNodes[0].Node;
        await rig.Kube.PatchNodeAsync(keep, new JsonObject { ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { ["karpetrack.io/do-not-disrupt"] = "true" } } }, CancellationToken.None);
        await rig.RunUntilAsync(() => rig.Count("delete_pool", "succeeded") >= 1, "one removal");
        for (int i = 0; i < 10; i++) await rig.StepAsync();
        // 1 % of the nodes per hour rounds up to one node: exactly one was disrupted.
        Assert.Equal(1, rig.Count("cordon", "succeeded"));
        Assert.Contains(rig.Recommender.Current.Recommendations, r => rig.Actuator.StateOf(r.Id)?.Contains("disrupted in the last hour") == true);
        var kept = rig.Node(keep);
        Assert.False(IsCordoned(kept));
        Assert.Null(kept["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
    }

    [Fact]
    public async Task ANodeThatNeverJoinsHasItsPoolDeletedAfterTheTimeoutAndTheFailureIsReported()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ProvisioningTimeout = TimeSpan.FromSeconds(20) }, provisioning: TimeSpan.FromSeconds(2),
            steppedClock: true);
        rig.Recommender.RunOnce();
        var provision = Assert.Single(rig.Recommender.Current.Recommendations, r => r.Type == RecommendationType.Provision);
        int n = provision.NewNodes.Sum(x => x.Count);
        for (int i = 0; i < n; i++) rig.Spot.NeverJoin(Actuator.PoolName(provision.Id, i));
        await rig.RunUntilAsync(() => rig.Count("wait_ready", "failed") == 1, "the provisioning timeout", maxSteps: 30);
        Assert.True(rig.Steps >= 20, $"failed after {rig.Steps} steps of 1 s, before the 20 s timeout");
        Assert.StartsWith("failed:", rig.Actuator.StateOf(provision.Id));
        Assert.Contains("not Ready after", rig.Actuator.StateOf(provision.Id));
        for (int i = 0; i < n; i++) Assert.Null(rig.Spot.Pool(Actuator.PoolName(provision.Id, i)));
        Assert.True(rig.Count("delete_pool", "succeeded") >= n);   // its pools, besides any removal of demo nodes
        // Failed, it is not retried at once (RetryAfter), and nothing more is bought meanwhile.
        for (int i = 0; i < 5; i++) await rig.StepAsync();
        Assert.Equal(n, rig.Count("create_pool", "succeeded"));
        // Once --retry-after (10 min) has passed with its pods still pending, it is tried again.
        await rig.AdvanceAsync(ActuationRig.Quick().RetryAfter);
        await rig.RunUntilAsync(() => rig.Count("create_pool", "succeeded") > n, "the provision tried again", maxSteps: 3);
    }

    [Fact]
    public async Task ADrainThePdbKeepsRefusingIsRolledBackAndTheNodeUncordoned()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { DrainTimeout = TimeSpan.FromSeconds(10) }, steppedClock: true);
        await rig.RunUntilAsync(() => rig.Model.Snapshot().PendingPods == 0, "provisioning done");
        // Every eviction is answered as a budget would: 429.
        rig.Demo.Api.Faults.FailNext(10_000, 429, TimeSpan.FromSeconds(1), pathContains: "/eviction");
        await rig.RunUntilAsync(() => rig.Actuator.InFlightCounts.GetValueOrDefault("drain") == 1, "a drain under way", maxSteps: 60);
        int drainFrom = rig.Steps;
        await rig.RunUntilAsync(() => rig.Count("drain", "failed") >= 1, "a drain given up", maxSteps: 20);
        // Given up at the drain timeout (10 s of the rig's clock), not before.
        Assert.True(rig.Steps - drainFrom >= 10, $"given up after {rig.Steps - drainFrom} steps of 1 s");
        Assert.True(rig.Count("cordon", "succeeded") >= 1);
        var failed = rig.Recommender.Current.Recommendations.Where(r => rig.Actuator.StateOf(r.Id)?.StartsWith("failed") == true).ToList();
        Assert.NotEmpty(failed);
        Assert.Contains("did not finish", rig.Actuator.StateOf(failed[0].Id));
        // Rolled back: the node is schedulable again and carries no disruption annotation; its pool is still there.
        foreach (var node in failed[0].Nodes)
        {
            var n = rig.Node(node);
            Assert.False(IsCordoned(n));
            Assert.Null(n["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
            Assert.NotNull(rig.Spot.Pool(n["metadata"]!["labels"]![SpotLabels.Pool]!.GetValue<string>()));
        }
    }

    [Fact]
    public async Task AProcessKilledMidDrainIsFollowedByOneThatResumesTheDrain()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        // Evictions hang (429), so the first process is caught in the middle of a drain.
        rig.Demo.Api.Faults.FailNext(10_000, 429, TimeSpan.FromSeconds(1), pathContains: "/eviction");
        var planned = new Dictionary<string, Recommendation>(StringComparer.Ordinal);
        await rig.RunUntilAsync(() =>
        {
            foreach (var r in rig.Recommender.Current.Recommendations) planned.TryAdd(r.Id, r);
            return rig.Actuator.InFlightCounts.GetValueOrDefault("drain") == 1;
        }, "a drain in flight", maxSteps: 60);
        var cordoned = Nodes(rig).Single(n => n["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation] is not null);
        var name = cordoned["metadata"]!["name"]!.GetValue<string>();
        Assert.True(IsCordoned(cordoned));

        // The annotation records the recommendation, the step, the operation's type and its saving.
        var record = DisruptionRecord.Parse(cordoned["metadata"]!["annotations"]![Actuator.DisruptionAnnotation]!.GetValue<string>());
        Assert.Equal(OperationStep.Drain, record.Step);
        var original = planned[record.RecommendationId];
        Assert.Equal(original.Type, record.Type);
        Assert.Equal(Math.Round(original.SavingsPerHour, 6), record.Saving);

        // Killed: the old actuator never ticks again. A new process starts with no memory of it and takes the drain
        // up where the cluster says it was: the node stays cordoned, no rollback, the same recommendation drains on.
        rig.Detach(rig.Actuator);
        var process = await rig.NewProcessAsync(ActuationRig.Quick());
        var next = process.Actuator;
        process.Recommender.RunOnce();
        await next.TickAsync(CancellationToken.None);
        Assert.Equal(1, next.InFlightCounts.GetValueOrDefault("drain"));
        Assert.StartsWith("in progress: ", next.StateOf(record.RecommendationId));
        var after = rig.Node(name);
        Assert.True(IsCordoned(after));
        Assert.DoesNotContain(rig.Demo.Api.Store.List("events").Items, e => e.ToJsonObject() is var o
            && o["reason"]?.GetValue<string>() == "DisruptionRolledBack" && o["involvedObject"]?["name"]?.GetValue<string>() == name);
        Assert.NotNull(rig.Spot.Pool(after["metadata"]!["labels"]![SpotLabels.Pool]!.GetValue<string>()));
        // Once the evictions go through, the new process finishes the job: nobody is left cordoned.
        rig.Demo.Api.Faults.Clear();
        await process.RunUntilAsync(() => next.InFlightCounts.Count == 0 && Annotated(rig) == 0, "nothing in flight and no annotated node");
        // It ended as the operation it was, with the saving it was started for (not "saving 0 $/h").
        var done = Assert.Single(next.RecentActions(), a => a.RecommendationId == record.RecommendationId);
        Assert.Equal(original.Type, done.Type);
        Assert.StartsWith("succeeded: ", done.State);
        Assert.EndsWith($"saving {original.SavingsPerHour.ToString("0.####", System.Globalization.CultureInfo.InvariantCulture)} $/h", done.State);
        Assert.Contains(rig.Demo.Api.Store.List("events").Items, e => e.ToJsonObject() is var o
            && o["reason"]?.GetValue<string>() == "PoolDeleted" && o["involvedObject"]?["name"]?.GetValue<string>() == name);
    }

    /// <summary>
    /// Upgrades: a fresh process reads the disruption annotation as each release wrote it. "&lt;rec&gt;" (no step) is rolled
    /// back; "&lt;rec&gt;;step=drain" is resumed with its type inferred (no new pools: a consolidation) and its saving unknown;
    /// the full value is resumed exactly as recorded; a malformed one is refused with a log line and read as "&lt;rec&gt;".
    /// </summary>
    [Theory]
    [InlineData("{0}", false, null, null)]
    [InlineData("{0};step=drain", true, RecommendationType.Consolidate, "0")]
    [InlineData("{0};step=drain;op=delete-empty;saving=0.0123", true, RecommendationType.DeleteEmpty, "0.0123")]
    [InlineData("{0};step=drain;op=delete-empty;saving=lots", false, null, null)]
    public async Task ADrainRecordedOnANodeIsTakenUpByAFreshProcessAsItsValueSays(string format, bool resumed, RecommendationType? type, string? saving)
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.Zero }, steppedClock: true);
        // A node the recommender would remove (a managed node alone in its pool, nothing blocks it), found with the actuator detached.
        rig.Detach(rig.Actuator);
        var single = rig.Demo.ManagedNodes.GroupBy(m => m.Pool).Where(g => g.Count() == 1).Select(g => g.Single().Node).ToHashSet();
        string? node = null;
        await rig.WaitForAsync(() =>
        {
            rig.Recommender.RunOnce();
            return (node = rig.Recommender.Current.Recommendations.FirstOrDefault(r => r.Nodes.Count == 1 && r.NewNodes.Count == 0 && single.Contains(r.Nodes[0]))?.Nodes[0]) is not null;
        }, "a removable node");
        const string id = "con-0123456789ab";
        var value = string.Format(System.Globalization.CultureInfo.InvariantCulture, format, id);
        // As the process that cordoned it left it.
        await rig.Kube.PatchNodeAsync(node!, new JsonObject
        {
            ["metadata"] = new JsonObject { ["annotations"] = new JsonObject
            {
                [Actuator.DisruptionAnnotation] = value,
                [Actuator.DisruptionSinceAnnotation] = rig.Clock!.GetUtcNow().UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture),
            } },
            ["spec"] = new JsonObject { ["unschedulable"] = true },
        }, CancellationToken.None);
        await rig.CaughtUpAsync();

        var log = new CapturingLogger();
        var process = await rig.NewProcessAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.Zero }, log: log);
        var fresh = process.Actuator;
        await fresh.TickAsync(CancellationToken.None);   // the recovery
        bool malformed = log.Lines.Any(l => l.Contains("malformed", StringComparison.Ordinal) && l.Contains(node!, StringComparison.Ordinal));
        Assert.Equal(format.Contains("lots", StringComparison.Ordinal), malformed);
        if (!resumed)
        {
            // Rolled back: schedulable again, the annotation gone, nothing of it in flight.
            Assert.Equal(0, fresh.InFlightCounts.GetValueOrDefault("drain"));
            Assert.False(IsCordoned(rig.Node(node!)));
            Assert.Null(rig.Node(node!)["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
            return;
        }
        // Taken up, not rolled back: in flight (or, for a node with nothing left to evict, already done) and never uncordoned.
        Assert.True(fresh.InFlightCounts.GetValueOrDefault("drain") + fresh.InFlightCounts.GetValueOrDefault("delete_pool") == 1 || fresh.RecentActions().Count == 1,
            string.Join("; ", fresh.RecentActions().Select(a => $"{a.RecommendationId} {a.State}")) + " | " + string.Join("; ", log.Lines));
        Assert.DoesNotContain(rig.Demo.Api.Store.List("events").Items, e => e.ToJsonObject() is var o
            && o["reason"]?.GetValue<string>() == "DisruptionRolledBack" && o["involvedObject"]?["name"]?.GetValue<string>() == node);
        Assert.DoesNotContain(log.Lines, l => l.Contains("uncordoned " + node, StringComparison.Ordinal));
        await process.RunUntilAsync(() => fresh.RecentActions().Any(a => a.RecommendationId == id), "the resumed drain ended");
        var done = Assert.Single(fresh.RecentActions(), a => a.RecommendationId == id);
        Assert.Equal(type, done.Type);
        Assert.Equal($"succeeded: removed {node}, saving {saving} $/h", done.State);
        await rig.WaitForAsync(() => rig.Demo.Api.Store.Get("nodes", null, node!) is null, "the node gone");
    }

    /// <summary>
    /// The wait for new nodes asks the unfiltered view (a Spot pool LIST and a node LIST) at most once per --pool-sweep, not
    /// every tick (commit 124a7f6): a Spot node takes minutes to join. Counted at the fakes over 90 ticks 1 s apart with a
    /// 30 s sweep; every tick would be 90 of each.
    /// </summary>
    [Fact]
    public async Task TheWaitForNewNodesReadsTheUnfilteredViewAtMostOncePerPoolSweep()
    {
        var sweep = TimeSpan.FromSeconds(30);
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { PoolSweep = sweep }, provisioning: TimeSpan.FromMinutes(5), steppedClock: true);
        // Only the provision the test hands it: no removal of the demo's nodes reads the view when it starts.
        rig.Detach(rig.Actuator);
        var cls = rig.Demo.ManagedNodes[0].ServerClass;
        var price = rig.Prices.Current.NodePrice(cls, "spot") ?? 0.1m;
        var provision = new Recommendation("pro-0123456789ab", RecommendationType.Provision, [], [new NewNode(cls, 1, price)], [], ["default/waiting"],
            0, price, 0, 0, -1, ["a test plan"]);
        await rig.Actuator.TickAsync(CancellationToken.None);   // the recovery: one read
        rig.Actuator.OnPlan(new Plan([provision], new Dictionary<string, IReadOnlyList<Blocker>>(), [], price, price, "us-east-iad-1"));
        await rig.Actuator.TickAsync(CancellationToken.None);   // the pool created, and the first look at the view for its node
        Assert.Equal(1, rig.Actuator.InFlightCounts.GetValueOrDefault("wait_ready"));

        string pools = $"GET /apis/ngpc.rxt.io/v1/namespaces/{rig.Spot.OrgNamespace}/spotnodepools";
        int PoolLists() => rig.Spot.RequestLog.Count(r => r.Split('?')[0] == pools);
        int NodeLists() => rig.Demo.Api.ListsOf("nodes", OwnedView.NodeSelector);
        int poolLists = PoolLists(), nodeLists = NodeLists();
        const int ticks = 90;
        for (int i = 0; i < ticks; i++)
        {
            await rig.AdvanceAsync(TimeSpan.FromSeconds(1));
            await rig.Actuator.TickAsync(CancellationToken.None);
        }
        // Still waiting (the node takes 5 min): the wait went on every tick.
        Assert.Equal(1, rig.Actuator.InFlightCounts.GetValueOrDefault("wait_ready"));
        Assert.StartsWith("in progress: 0/1 new nodes Ready", rig.Actuator.StateOf(provision.Id));
        // 90 s: three pool sweeps, and the wait's own look at most three times more (it shares a tick's read with the sweep).
        int most = 2 * (int)Math.Ceiling(ticks / sweep.TotalSeconds);
        Assert.InRange(PoolLists() - poolLists, 1, most);
        Assert.InRange(NodeLists() - nodeLists, 1, most);
    }

    [Fact]
    public async Task AProcessKilledWhileProvisioningIsFollowedByOneThatAdoptsItsPoolsInsteadOfBuyingAgain()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), provisioning: TimeSpan.FromMinutes(5), steppedClock: true);
        await rig.StepAsync();   // the recovery: the plan it got before is not acted on
        await rig.StepAsync();
        var inFlight = rig.Actuator.InFlight().Select(f => f.Pool).Order().ToList();
        Assert.NotEmpty(inFlight);

        // Killed: a fresh process (its own caches, model, recommender and actuator) on the same cluster.
        rig.Detach(rig.Actuator);
        var process = await rig.NewProcessAsync(ActuationRig.Quick());
        var next = process.Actuator;
        for (int i = 0; i < 5; i++) await process.StepAsync();
        Assert.Equal(inFlight, next.InFlight().Select(f => f.Pool).Order().ToList());
        Assert.Equal(0, next.Counts.GetValueOrDefault(("create_pool", "succeeded")));
        Assert.DoesNotContain(process.Recommender.Current.Recommendations, r => r.Type == RecommendationType.Provision);
        var ours = rig.ManagedPools().Where(p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null).ToList();
        Assert.Equal(inFlight.Count, ours.Count);
    }

    /// <summary>
    /// Both replicas run their own loops (RunAsync, which asks the elector before every tick) on the rig's clock: a step plans
    /// (waking both loops), waits until both have passed, then moves the rig's clock a second (the loops' tick periods, the
    /// fakes' timers). Each elector runs on a hand-moved clock of its own, moved only when the test says: held still, A's
    /// term lasts and B keeps seeing the lease held; after A releases it, B's clock is moved past its retry pause once B is
    /// parked in it (an event wait), and B takes the lease.
    /// </summary>
    [Fact]
    public async Task OfTwoReplicasOnlyTheLeaderActsAndTheOtherTakesOverWhenItStops()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        var options = ActuationRig.Quick() with { Tick = TimeSpan.FromSeconds(1) };
        var lease = new LeaderElectionOptions { LeaseDuration = TimeSpan.FromSeconds(15), RenewDeadline = TimeSpan.FromSeconds(10), RetryPeriod = TimeSpan.FromSeconds(2) };
        var clockA = new TimerClock(DateTimeOffset.UtcNow);
        var clockB = new TimerClock(DateTimeOffset.UtcNow);
        using var stopA = new CancellationTokenSource();
        using var stopB = new CancellationTokenSource();
        var electorA = new LeaderElector(rig.Kube, "default", "karpetrack", "replica-a", lease, NullLogger.Instance, clockA);
        var electorB = new LeaderElector(rig.Kube, "default", "karpetrack", "replica-b", lease, NullLogger.Instance, clockB);
        rig.Detach(rig.Actuator);
        var a = rig.NewActuator(options, () => electorA.IsLeader, () => electorA.Term);
        var b = rig.NewActuator(options, () => electorB.IsLeader, () => electorB.Term);
        var runElectorA = electorA.RunAsync(stopA.Token);
        await rig.WaitForAsync(() => electorA.IsLeader, "replica-a leads");
        var runElectorB = electorB.RunAsync(stopB.Token);
        await clockB.WhenDelaysPending(1);   // B tried, found the lease held, and pauses
        Assert.False(electorB.IsLeader);
        using var stopA2 = new CancellationTokenSource();
        using var stopB2 = new CancellationTokenSource();
        var runA = a.RunAsync(stopA2.Token);
        var runB = b.RunAsync(stopB2.Token);

        async Task StepAsync(params Actuator[] loops)
        {
            var before = loops.Select(l => l.Passes).ToArray();
            rig.Recommender.RunOnce();
            await rig.WaitForAsync(() => loops.Select((l, i) => l.Passes > before[i]).All(x => x), "every running loop passed");
            await rig.AdvanceAsync(rig.Step);
        }

        bool both = false;
        for (int i = 0; a.Counts.GetValueOrDefault(("delete_pool", "succeeded")) < 1; i++)
        {
            Assert.True(i < 60, "replica-a did not remove a node in 60 steps");
            await StepAsync(a, b);
            both |= electorA.IsLeader && electorB.IsLeader;
        }
        Assert.False(both);
        Assert.True(electorA.IsLeader);
        Assert.False(electorB.IsLeader);
        Assert.Empty(b.Counts);

        // The leader goes away (its loop stopped, its lease released on shutdown): the other replica takes over and acts.
        await stopA2.CancelAsync();
        await runA;
        var left = a.Counts;
        stopA.Cancel();
        await runElectorA;
        Assert.False(electorA.IsLeader);
        await clockB.WhenDelaysPending(1);
        clockB.Advance(lease.RetryPeriod * 1.2);   // past B's pause (jittered by at most a fifth): its next attempt finds the lease released
        await rig.WaitForAsync(() => electorB.IsLeader, "replica-b takes the released lease");
        for (int i = 0; b.Counts.Values.Sum() == 0; i++)
        {
            Assert.True(i < 30, "replica-b did not act");
            await StepAsync(b);
            Assert.True(electorB.IsLeader);
        }
        // Nothing more from the replica that stopped.
        Assert.Equal(left, a.Counts);
        await stopB2.CancelAsync();
        await runB;
        stopB.Cancel();
        await runElectorB;
    }

    [Fact]
    public async Task SpotApiStormsAndAnExpiredTokenStillEndWithOnePoolPerNode()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        rig.Recommender.RunOnce();
        var provision = Assert.Single(rig.Recommender.Current.Recommendations, r => r.Type == RecommendationType.Provision);
        int n = provision.NewNodes.Sum(x => x.Count);
        await rig.SpotClient.ListNodePoolsAsync("demo", CancellationToken.None);   // holds a token now
        rig.Spot.RevokeIssuedTokens();
        rig.Spot.FailNext(3, 503, pathContains: "spotnodepools");
        rig.Spot.FailNext(2, 429, TimeSpan.FromMilliseconds(50), pathContains: "spotnodepools");
        // A create whose answer is lost after the pool was stored: the retry must not make a second one.
        rig.Spot.FailAfterHandling(1, 0, method: "POST", pathContains: "spotnodepools");
        await rig.RunUntilAsync(() => rig.Count("wait_ready", "succeeded") >= 1, "the new nodes Ready");
        var ours = rig.ManagedPools().Where(p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel]?.GetValue<string>() == provision.Id).ToList();
        Assert.Equal(n, ours.Count);
        Assert.True(rig.SpotClient.TokenExchanges >= 2);
        Assert.Equal(0, rig.Spot.CollectionDeletes);
    }

    [Fact]
    public async Task APreemptedPoolIsDeletedOnceItsNodeIsGoneAndItsPodsGetNewCapacity()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        await rig.RunUntilAsync(() => rig.Count("wait_ready", "succeeded") >= 1, "the first provisioning done");
        var pool = rig.ManagedPools().First(p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null);
        var poolName = pool["metadata"]!["name"]!.GetValue<string>();
        var cls = pool["spec"]!["serverClass"]!.GetValue<string>();
        var bid = decimal.Parse(pool["spec"]!["bidPrice"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture);
        var nodes = rig.Spot.NodesOf(poolName);
        Assert.NotEmpty(nodes);
        // The market jumps above the bid: the pool is lost, its node leaves, its pods are pending again.
        rig.Spot.SetMarketPrice(cls, bid + 0.05m);
        await rig.RunUntilAsync(() => rig.Spot.Pool(poolName) is null, "the lost pool deleted", maxSteps: 5);
        Assert.All(nodes, node => Assert.Null(rig.Demo.Api.Store.Get("nodes", null, node)));
        // New capacity for them: bid at (at least) the new market, whatever the feed still says.
        await rig.RunUntilAsync(() => rig.ManagedPools().Any(p => p["spec"]!["serverClass"]!.GetValue<string>() == cls
            && decimal.Parse(p["spec"]!["bidPrice"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture) >= bid + 0.05m)
            || rig.ManagedPools().Any(p => p["spec"]!["customLabels"]![Actuator.RecommendationLabel] is not null && p["metadata"]!["name"]!.GetValue<string>() != poolName
                && p["spec"]!["serverClass"]!.GetValue<string>() != cls), "new capacity for the pre-empted pods");
    }

    /// <summary>
    /// The class of the busiest Karpetrack node gets expensive, so replacing it by cheaper nodes pays
    /// (its pods do not fit on the others, so removing it outright is not an option). Not the node
    /// holding the ledger pods: their budget allows no disruption, so that node is blocked.
    /// </summary>
    private static DemoManagedNode MakeBusiestNodeExpensive(JsonObject feed, DemoCluster demo)
    {
        var pods = demo.Api.Store.List("pods").Items.Select(p => p.ToJsonObject())
            .Where(p => p["metadata"]?["ownerReferences"]?[0]?["kind"]?.GetValue<string>() == "ReplicaSet")
            .GroupBy(p => p["spec"]?["nodeName"]?.GetValue<string>() ?? "").ToDictionary(g => g.Key, g => g.ToList());
        var busiest = demo.ManagedNodes
            .Where(m => !pods.GetValueOrDefault(m.Node, []).Any(p => p["metadata"]?["labels"]?["app.kubernetes.io/name"]?.GetValue<string>() == "ledger"))
            .OrderByDescending(m => pods.GetValueOrDefault(m.Node, []).Count).First();
        var c = feed["regions"]!["us-east-iad-1"]!["serverclasses"]![busiest.ServerClass]!;
        c["market_price"] = "0.900000";
        c["20_percentile"] = 0.9; c["50_percentile"] = 0.9; c["80_percentile"] = 0.9;
        return busiest;
    }

    [Fact]
    public async Task AReplacementWhoseSavingIsBelowTheThresholdAtTodaysPricesIsRefused()
    {
        DemoManagedNode? busiest = null;
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.Zero },
            editFeed: (feed, demo) => busiest = MakeBusiestNodeExpensive(feed, demo), steppedClock: true);
        // The recommender still proposes the replacement; the actuator's own check uses a stricter threshold.
        rig.Thresholds = () => new RecommenderOptions { ReplaceThresholdPercent = 100 };
        Recommendation? replace = null;
        await rig.RunUntilAsync(() =>
        {
            replace ??= rig.Recommender.Current.Recommendations.FirstOrDefault(r => r.Type == RecommendationType.Replace && r.Nodes.Contains(busiest!.Node));
            return replace is not null && rig.Actuator.StateOf(replace.Id) is { } st && st.StartsWith("refused: the saving fell to");
        }, "the replacement refused for its saving");
        Assert.False(IsCordoned(rig.Node(busiest!.Node)));
        Assert.Null(rig.Spot.Pool(Actuator.PoolName(replace!.Id, 0)));
    }

    [Fact]
    public async Task AConsolidationOntoNewNodesMeetsTheReplacementThresholdsAtTodaysPrices()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.Zero }, steppedClock: true);
        // A node the recommender itself would disrupt (nothing else blocks it), found with the actuator detached.
        rig.Detach(rig.Actuator);
        string? node = null;
        await rig.WaitForAsync(() =>
        {
            rig.Recommender.RunOnce();
            return (node = rig.Recommender.Current.Recommendations.FirstOrDefault(r => r.Nodes.Count == 1)?.Nodes[0]) is not null;
        }, "a removable node");
        rig.Thresholds = () => new RecommenderOptions { ReplaceThresholdPercent = 100 };
        var view = rig.Model.Snapshot().Nodes.Single(n => n.Name == node);
        var price = rig.Prices.Current.NodePrice(view.ServerClass, view.CapacityType)!.Value;
        // Onto one new node of the same class at the same price less a tenth: it saves, but not 100 %.
        var rec = new Recommendation("con-buys-nodes", RecommendationType.Consolidate, [node!], [new NewNode(view.ServerClass, 1, price * 0.9m)],
            [], [], price, price * 0.9m, 0, 0, -1, ["a test plan"]);
        await rig.Actuator.TickAsync(CancellationToken.None);   // the recovery first: only a plan received after it is acted on
        rig.Actuator.OnPlan(new Plan([rec], new Dictionary<string, IReadOnlyList<Blocker>>(), [], 0, 0, "us-east-iad-1"));
        await rig.Actuator.TickAsync(CancellationToken.None);
        Assert.StartsWith("refused: the saving fell to", rig.Actuator.StateOf(rec.Id));
        Assert.False(IsCordoned(rig.Node(node!)));
        Assert.Null(rig.Spot.Pool(Actuator.PoolName(rec.Id, 0)));
    }

    [Fact]
    public async Task NoNodeIsDisruptedDuringTheCooldownAfterAScaleUp()
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.FromMinutes(5) }, steppedClock: true);
        await rig.RunUntilAsync(() => rig.Count("create_pool", "succeeded") >= 1 && rig.Count("cordon", "refused") >= 1, "a scale-up, then a removal refused");
        for (int i = 0; i < 5; i++) await rig.StepAsync();
        Assert.Equal(0, rig.Count("cordon", "succeeded"));
        Assert.Equal(0, Annotated(rig));
        Assert.Contains(rig.Recommender.Current.Recommendations, r => rig.Actuator.StateOf(r.Id)?.StartsWith("refused: cooling down after a scale-up") == true);
        // It was the cooldown: once five minutes have passed, a removal goes ahead.
        await rig.AdvanceAsync(TimeSpan.FromMinutes(5));
        await rig.RunUntilAsync(() => rig.Count("cordon", "succeeded") >= 1, "a cordon after the cooldown", maxSteps: 5);
    }

    [Fact]
    public async Task AReplacementBringsItsNewNodesUpBeforeTheOldOneIsCordonedDrainedAndRemoved()
    {
        // The class of the busiest Karpetrack node got expensive: replacing it by cheaper nodes pays
        // (its pods do not fit on the others, so removing it outright is not an option).
        DemoManagedNode? busiest = null;
        // No cooldown: the replacement is in the first plan and takes the one disruption slot at once
        // (later, once the pending pods are served, its pods would fit elsewhere and plain removal would win).
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { ScaleUpCooldown = TimeSpan.Zero },
            editFeed: (feed, demo) => busiest = MakeBusiestNodeExpensive(feed, demo), steppedClock: true);
        Recommendation? replace = null;
        await rig.RunUntilAsync(() =>
        {
            replace ??= rig.Recommender.Current.Recommendations.FirstOrDefault(r => r.Type == RecommendationType.Replace && r.Nodes.Contains(busiest!.Node));
            return replace is not null && rig.Actuator.StateOf(replace.Id)?.StartsWith("succeeded") == true;
        }, "the replacement carried out", maxSteps: 60);
        // Its new pools exist with nodes; the old node and its pool are gone.
        int n = replace!.NewNodes.Sum(x => x.Count);
        for (int i = 0; i < n; i++)
        {
            var pool = Actuator.PoolName(replace.Id, i);
            Assert.NotNull(rig.Spot.Pool(pool));
            Assert.NotEmpty(rig.Spot.NodesOf(pool));
        }
        Assert.Null(rig.Spot.Pool(busiest!.Pool));
        await rig.WaitForAsync(() => rig.Demo.Api.Store.Get("nodes", null, busiest.Node) is null, "the old node gone");
        Assert.Contains("for " + n + " new nodes", rig.Actuator.StateOf(replace.Id));
    }

    [Theory]
    [InlineData(ActuationMode.Approve)]
    [InlineData(ActuationMode.Auto)]
    public async Task ARecommendationThatWasAdvisoryIsActedOnOnceItsNodeBecomesKarpetracksOwn(ActuationMode mode)
    {
        // A closed maintenance window makes auto say plainly what it would do instead of doing it.
        var later = DateTime.UtcNow.AddHours(2);
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(mode) with
        {
            Window = new MaintenanceWindow(TimeOnly.FromDateTime(later), TimeOnly.FromDateTime(later.AddHours(1))),
        }, steppedClock: true);
        rig.Recommender.RunOnce();
        var snap = rig.Model.Snapshot();
        // The demo's two nodes that share one pool: removing one of them stays advisory.
        var x = rig.Recommender.Current.Recommendations.First(r => r.Nodes.Count == 1 && rig.Actuator.StateOf(r.Id)?.StartsWith("advisory only: ") == true
            && snap.Nodes.Count(v => v.Pool == snap.Nodes.First(w => w.Name == r.Nodes[0]).Pool) == 2);
        var node = x.Nodes[0];
        var pool = snap.Nodes.First(v => v.Name == node).Pool;
        rig.Demo.RemoveNode(snap.Nodes.First(v => v.Pool == pool && v.Name != node).Name);
        await rig.Kube.PatchNodeAsync(node, new JsonObject { ["metadata"] = new JsonObject { ["labels"] = new JsonObject { [Actuator.ManagedLabel] = "true" } } }, CancellationToken.None);
        await rig.WaitForAsync(() => rig.Model.Snapshot().Nodes.First(n => n.Name == node).Labels.GetValueOrDefault(Actuator.ManagedLabel) == "true", "the label seen");
        await rig.RunUntilAsync(() => rig.Actuator.StateOf(x.Id) is { } st && !st.StartsWith("advisory"), "the state moved on", maxSteps: 3);
        if (mode == ActuationMode.Approve)
        {
            Assert.Equal("waiting for approval", rig.Actuator.StateOf(x.Id));
            Assert.Equal(ApprovalOutcome.Approved, rig.Actuator.Approve(x.Id).Outcome);
        }
        await rig.RunUntilAsync(() => rig.Actuator.StateOf(x.Id)?.StartsWith("refused: outside the maintenance window") == true, "a refusal naming the window", maxSteps: 5);
    }

    [Fact]
    public async Task ANodeLeftCordonedByAnEarlierDisruptionIsUncordonedByThePoolSweep()
    {
        // A closed window: nothing disruptive starts, so the only writes are the sweep's.
        var later = DateTime.UtcNow.AddHours(2);
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with
        {
            Window = new MaintenanceWindow(TimeOnly.FromDateTime(later), TimeOnly.FromDateTime(later.AddHours(1))),
        }, steppedClock: true);
        await rig.StepAsync();   // recovery done; from now on only the sweep looks for orphans
        // As an uncordon that failed, or a replica that died after cordoning, would leave it.
        var node = rig.Demo.ManagedNodes[1].Node;
        await rig.Kube.PatchNodeAsync(node, new JsonObject
        {
            ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { [Actuator.DisruptionAnnotation] = "con-000000000000" } },
            ["spec"] = new JsonObject { ["unschedulable"] = true },
        }, CancellationToken.None);
        await rig.WaitForAsync(() => rig.Model.Snapshot().Nodes.Any(n => n.Name == node && !n.Schedulable), "the cordon seen");
        // The sweep runs once per --pool-sweep (200 ms here): the next step.
        await rig.RunUntilAsync(() => !IsCordoned(rig.Node(node)), "the sweep uncordoning it", maxSteps: 1);
        Assert.Null(rig.Node(node)["metadata"]?["annotations"]?[Actuator.DisruptionAnnotation]);
    }
}

