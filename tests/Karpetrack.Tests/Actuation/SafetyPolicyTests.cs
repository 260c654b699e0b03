namespace Karpetrack.Tests.Actuation;

/// <summary>
/// The safety policy as a table: for each rule, a world one change away from a passing one that it refuses with its
/// reason, and one that it lets through. Pure: no cluster, no clock but the one in the world.
/// </summary>
public class SafetyPolicyTests
{
    private static readonly DateTimeOffset Now = new(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);

    private static readonly PriceBook Book =
        PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-08-17.json")), DateTimeOffset.UtcNow, "test");

    private static readonly string[] ByPrice = Book.Classes.Keys.Where(c => Book.NodePrice(c, "spot") is > 0).OrderBy(c => Book.NodePrice(c, "spot")).ToArray();
    private static readonly string Dear = ByPrice[^1], Cheap = ByPrice[0];

    private static readonly ActuationOptions Options = new()
    {
        Mode = ActuationMode.Auto, MaxDisruptedNodes = 1, MaxDisruptedPercentPerHour = 100, ScaleUpCooldown = TimeSpan.FromMinutes(2),
        MaxPlanAge = TimeSpan.FromMinutes(10), Pools = new PoolPolicy { MaxManagedMilliCpu = 4_000 },
    };

    private static NodeView Node(string name, string pool, bool ready = true, DateTimeOffset? created = null) => new()
    {
        Name = name,
        Labels = new Dictionary<string, string>
        {
            [SpotLabels.Pool] = pool, [SpotLabels.ServerClass] = Dear, [SpotLabels.CapacityType] = "spot", [Actuator.ManagedLabel] = "true",
        },
        Annotations = new Dictionary<string, string>(),
        Allocatable = [], Capacity = [], Allocated = [], DaemonSetOverhead = [], Pods = 0,
        Ready = ready, Schedulable = true, Deleting = false, Taints = [], Created = created ?? Now.AddDays(-1),
        NamespaceRequests = new Dictionary<string, long[]>(),
    };

    private static SpotNodePool Pool(string name, int desired = 1, bool deleting = false) =>
        new(name, "org", Dear, desired, "0.27", "demo", new Dictionary<string, string>(), new Dictionary<string, string> { [Actuator.ManagedLabel] = "true" },
            "Won", 1, "1", Now.AddDays(-1)) { DeletionTimestamp = deleting ? Now : null };

    private static OwnedView Owned(IReadOnlyList<SpotNodePool>? pools = null, IReadOnlyList<OwnedNode>? nodes = null) =>
        new(pools ?? [Pool("p1"), Pool("p2")], nodes ?? [new OwnedNode("n1", "p1", true, null, false, true)]);

    /// <summary>A world in which every write passes.</summary>
    private static SafetyWorld World() => new()
    {
        Now = Now,
        PlanAt = Now.AddMinutes(-1),
        Owned = Owned(),
        Nodes = new Dictionary<string, NodeView> { ["n1"] = Node("n1", "p1") },
        Book = Book,
        Node = "n1",
        Pool = "p1",
    };

    private static readonly Recommendation Removal =
        new("con-1", RecommendationType.Consolidate, ["n1"], [], [], [], 1m, 0m, 0, 0, -1, ["test"]);

    private static Recommendation Replacement(string newClass) =>
        new("rep-1", RecommendationType.Replace, ["n1"], [new NewNode(newClass, 1, 0)], [], [], 1m, 0.1m, 0, 0, -1, ["test"]);

    private static IReadOnlyList<Blocker> Blockers(string reason) => [new Blocker(reason, ["default/p"], [])];

    private sealed record Case(string Name, SafetyWrite Write, OperationStep? Step, Func<SafetyWorld, SafetyWorld> World, RefusalReason? Expected,
        Recommendation? Rec = null, Func<ActuationOptions, ActuationOptions>? Options = null, IReadOnlyList<string>? NewPools = null);

    private static readonly Func<SafetyWorld, SafetyWorld> Same = w => w;

    private static IEnumerable<Case> Table()
    {
        const SafetyWrite Start = SafetyWrite.Cordon;   // an operation's first write, before it starts
        const OperationStep Planned = OperationStep.Planned;
        yield return new("everything fine", Start, Planned, Same, null);
        yield return new("caches unsynced", Start, Planned, w => w with { CachesSynced = false }, RefusalReason.CachesUnsynced);
        yield return new("a cache out of touch with the API server", Start, Planned, w => w with { StaleCaches = ["pods"] }, RefusalReason.CachesStale);
        yield return new("price book stale", Start, Planned, w => w with { PriceBookStale = true }, RefusalReason.PriceBookStale);
        yield return new("circuit open", SafetyWrite.CreatePool, Planned, w => w with { CircuitOpen = true }, RefusalReason.CircuitOpen,
            new Recommendation("prov-1", RecommendationType.Provision, [], [new NewNode(Cheap, 1, 0)], [], ["default/p"], 0, 0, 0, 0, -1, ["test"]));
        yield return new("a provision buys with nothing else to check", SafetyWrite.CreatePool, Planned, w => w with { Nodes = new Dictionary<string, NodeView>() }, null,
            new Recommendation("prov-1", RecommendationType.Provision, [], [new NewNode(Cheap, 1, 0)], [], ["default/p"], 0, 0, 0, 0, -1, ["test"]));
        yield return new("plan too old", Start, Planned, w => w with { PlanAt = Now.AddMinutes(-11) }, RefusalReason.PlanTooOld);
        yield return new("plan young enough", Start, Planned, w => w with { PlanAt = Now.AddMinutes(-9) }, null);
        yield return new("outside the window", Start, Planned, Same, RefusalReason.OutsideWindow,
            Options: o => o with { Window = new MaintenanceWindow(new TimeOnly(1, 0), new TimeOnly(5, 0)) });
        yield return new("inside the window", Start, Planned, Same, null, Options: o => o with { Window = new MaintenanceWindow(new TimeOnly(11, 0), new TimeOnly(13, 0)) });
        yield return new("another operation scaled up a minute ago", Start, Planned,
            w => w with { ScaleUps = new Dictionary<string, DateTimeOffset> { ["prov-9"] = Now.AddMinutes(-1) } }, RefusalReason.ScaleUpCooldown);
        yield return new("its own scale-up", Start, Planned,
            w => w with { ScaleUps = new Dictionary<string, DateTimeOffset> { ["con-1"] = Now.AddMinutes(-1) } }, null);
        yield return new("a scale-up past the cooldown", Start, Planned,
            w => w with { ScaleUps = new Dictionary<string, DateTimeOffset> { ["prov-9"] = Now.AddMinutes(-3) } }, null);
        yield return new("another operation disrupts a node", Start, Planned, w => w with { OtherOperationNodes = new HashSet<string> { "n9" } }, RefusalReason.MaxDisruptedNodes);
        yield return new("a node still leaving counts as disrupted", Start, Planned,
            w => w with { Owned = Owned(nodes: [new OwnedNode("n1", "p1", true, null, false, true), new OwnedNode("n8", "p8", true, "con-0", true, true)]) },
            RefusalReason.MaxDisruptedNodes);
        yield return new("two nodes at once at the default --max-disrupted-nodes 1", Start, Planned, Same, RefusalReason.MaxDisruptedNodes,
            new Recommendation("con-2", RecommendationType.Consolidate, ["n1", "n2"], [], [], [], 1m, 0m, 0, 0, -1, ["test"]), o => o with { MaxDisruptedNodes = 1 });
        yield return new("two nodes at once at --max-disrupted-nodes 2", Start, Planned,
            w => w with { Nodes = new Dictionary<string, NodeView> { ["n1"] = Node("n1", "p1"), ["n2"] = Node("n2", "p2") } }, null,
            new Recommendation("con-2", RecommendationType.Consolidate, ["n1", "n2"], [], [], [], 1m, 0m, 0, 0, -1, ["test"]), o => o with { MaxDisruptedNodes = 2 });
        yield return new("a disruption within the hour", Start, Planned, w => w with { Disruptions = [Now.AddMinutes(-10)] }, RefusalReason.HourlyBudget);
        yield return new("a disruption more than an hour ago", Start, Planned, w => w with { Disruptions = [Now.AddMinutes(-61)] }, null);
        yield return new("its pool is being deleted", Start, Planned, w => w with { Owned = Owned(pools: [Pool("p1", deleting: true)]) }, RefusalReason.PoolDeleting);
        yield return new("its pool is another operation's new pool", Start, Planned, w => w with { PoolsInFlight = new HashSet<string> { "p1" } },
            RefusalReason.OwnedByOperation);
        yield return new("another pool in flight", Start, Planned, w => w with { PoolsInFlight = new HashSet<string> { "p7" } }, null);
        yield return new("node gone", Start, Planned, w => w with { Nodes = new Dictionary<string, NodeView>() }, RefusalReason.NodeGone);
        yield return new("node not ready", Start, Planned, w => w with { Nodes = new Dictionary<string, NodeView> { ["n1"] = Node("n1", "p1", ready: false) } },
            RefusalReason.NodeNotReady);
        yield return new("node too young", Start, Planned,
            w => w with { Nodes = new Dictionary<string, NodeView> { ["n1"] = Node("n1", "p1", created: Now.AddMinutes(-1)) } }, RefusalReason.NodeTooYoung);
        yield return new("node just old enough", Start, Planned,
            w => w with { Nodes = new Dictionary<string, NodeView> { ["n1"] = Node("n1", "p1", created: Now.AddMinutes(-2)) } }, null);
        yield return new("blocked in the plan", Start, Planned,
            w => w with { PlannedBlockers = new Dictionary<string, IReadOnlyList<Blocker>> { ["n1"] = Blockers(BlockerReasons.PodNoController) } }, RefusalReason.Blocked);
        yield return new("blocked live", Start, Planned, w => w with { LiveBlockers = _ => Blockers(BlockerReasons.PodDoNotDisrupt) }, RefusalReason.Blocked);
        yield return new("a PDB at zero is waited for, not a blocker", Start, Planned, w => w with { LiveBlockers = _ => Blockers(BlockerReasons.PdbNoDisruptions) }, null);
        yield return new("saves nothing", Start, Planned, Same, RefusalReason.SavesNothing,
            new Recommendation("con-0", RecommendationType.Consolidate, ["n1"], [], [], [], 1m, 1m, 0, 0, -1, ["test"]));
        yield return new("a replacement onto the cheapest class", SafetyWrite.CreatePool, Planned, Same, null, Replacement(Cheap));
        yield return new("a replacement that saves too little now", SafetyWrite.CreatePool, Planned, Same, RefusalReason.SavingBelowThreshold, Replacement(Dear));
        yield return new("an expired node's replacement that saves nothing", SafetyWrite.CreatePool, Planned, Same, null,
            new Recommendation("rep-0", RecommendationType.Replace, ["n1"], [new NewNode(Dear, 1, 0)], [], [], 1m, 1m, 0, 0, -1, ["expired: test"]) { Expired = true });
        yield return new("an expired node's replacement is still blocked live", Start, Planned,
            w => w with { LiveBlockers = _ => Blockers(BlockerReasons.PodDoNotDisrupt) }, RefusalReason.Blocked, Replacement(Dear) with { Expired = true });
        yield return new("re-check: an expired node's replacement that saves too little", SafetyWrite.Cordon, OperationStep.WaitReady, Same, null,
            Replacement(Dear) with { Expired = true });
        yield return new("a replacement onto a class without a price", SafetyWrite.CreatePool, Planned, Same, RefusalReason.NoPrice, Replacement("no.such-class"));

        // Before each pool create.
        yield return new("within the managed capacity", SafetyWrite.CreatePool, OperationStep.CreatePools,
            w => w with { Managed = new ManagedCapacity(2_000, 0), Adding = new ManagedCapacity(1_000, 0) }, null);
        yield return new("past the managed capacity", SafetyWrite.CreatePool, OperationStep.CreatePools,
            w => w with { Managed = new ManagedCapacity(3_500, 0), Adding = new ManagedCapacity(1_000, 0) }, RefusalReason.ManagedCapacityLimit);
        yield return new("no limit set", SafetyWrite.CreatePool, OperationStep.CreatePools,
            w => w with { Managed = null, Adding = new ManagedCapacity(1_000_000, 0) }, null);

        // Once the new nodes are Ready, right before the first cordon.
        yield return new("re-check passes", SafetyWrite.Cordon, OperationStep.WaitReady, Same, null, Replacement(Cheap));
        yield return new("re-check: the window closed", SafetyWrite.Cordon, OperationStep.WaitReady, Same, RefusalReason.OutsideWindow, Replacement(Cheap),
            o => o with { Window = new MaintenanceWindow(new TimeOnly(1, 0), new TimeOnly(5, 0)) });
        yield return new("re-check: the node is gone", SafetyWrite.Cordon, OperationStep.WaitReady, w => w with { Nodes = new Dictionary<string, NodeView>() },
            RefusalReason.NodeGone);
        yield return new("re-check: a replacement's node is gone, so it has no price", SafetyWrite.Cordon, OperationStep.WaitReady,
            w => w with { Nodes = new Dictionary<string, NodeView>() }, RefusalReason.NoPrice, Replacement(Cheap));
        yield return new("re-check: blocked now", SafetyWrite.Cordon, OperationStep.WaitReady, w => w with { LiveBlockers = _ => Blockers(BlockerReasons.PodSafeToEvictFalse) },
            RefusalReason.Blocked, Replacement(Cheap));
        yield return new("re-check: the saving fell", SafetyWrite.Cordon, OperationStep.WaitReady, Same, RefusalReason.SavingBelowThreshold, Replacement(Dear));
        yield return new("re-check: the circuit opened", SafetyWrite.Cordon, OperationStep.WaitReady, w => w with { CircuitOpen = true }, RefusalReason.CircuitOpen,
            Replacement(Cheap));
        yield return new("re-check: the new pool was pre-empted", SafetyWrite.Cordon, OperationStep.WaitReady,
            w => w with { Owned = Owned(pools: [Pool("p1"), Pool("p2") with { BidStatus = "Lost" }]) }, RefusalReason.PoolPreempted, Replacement(Cheap), NewPools: ["p2"]);
        yield return new("re-check: the new pool still won", SafetyWrite.Cordon, OperationStep.WaitReady, Same, null, Replacement(Cheap), NewPools: ["p2"]);
        yield return new("the cordon step itself only checks the term", SafetyWrite.Cordon, OperationStep.Cordon, w => w with { CircuitOpen = true }, null);

        // Before each eviction.
        yield return new("evict", SafetyWrite.Evict, OperationStep.Drain, Same, null);
        yield return new("a do-not-disrupt pod appeared mid-drain", SafetyWrite.Evict, OperationStep.Drain,
            w => w with { LiveBlockers = _ => Blockers(BlockerReasons.PodDoNotDisrupt) }, RefusalReason.Blocked);
        yield return new("the node was marked do-not-disrupt mid-drain", SafetyWrite.Evict, OperationStep.Drain,
            w => w with { LiveBlockers = _ => Blockers(BlockerReasons.NodeDoNotDisrupt) }, RefusalReason.Blocked);
        yield return new("a bare pod is evicted all the same once the drain runs", SafetyWrite.Evict, OperationStep.Drain,
            w => w with { LiveBlockers = _ => Blockers(BlockerReasons.PodNoController) }, null);

        // Before the DELETE of a drained node's pool.
        yield return new("delete the drained node's pool", SafetyWrite.DeletePool, OperationStep.DeletePools, Same, null);
        yield return new("a pod still runs", SafetyWrite.DeletePool, OperationStep.DeletePools, w => w with { RunningPods = ["default/web-1"] }, RefusalReason.PodsNotEvicted);
        yield return new("the pool holds another node", SafetyWrite.DeletePool, OperationStep.DeletePools,
            w => w with { Owned = Owned(nodes: [new OwnedNode("n1", "p1", true, null, true, true), new OwnedNode("n2", "p1", true, null, false, true)]) },
            RefusalReason.PoolHoldsOtherNodes);
        yield return new("the pool is sized for two", SafetyWrite.DeletePool, OperationStep.DeletePools, w => w with { Owned = Owned(pools: [Pool("p1", desired: 2)]) },
            RefusalReason.PoolHoldsOtherNodes);
        yield return new("no view to decide on", SafetyWrite.DeletePool, OperationStep.DeletePools, w => w with { Owned = null }, RefusalReason.ViewUnavailable);

        // Before the DELETE of a pool that should have no node.
        yield return new("an unused pool", SafetyWrite.DeleteUnusedPool, OperationStep.WaitReady, w => w with { Pool = "p2" }, null);
        yield return new("an 'unused' pool that has a node", SafetyWrite.DeleteUnusedPool, OperationStep.WaitReady, Same, RefusalReason.PoolHasNodes);
        yield return new("an unused pool, no view", SafetyWrite.DeleteUnusedPool, null, w => w with { Pool = "p2", Owned = null }, RefusalReason.ViewUnavailable);

        // Before an uncordon: of an operation's node, or of one an interrupted disruption left (no operation).
        yield return new("uncordon an orphan", SafetyWrite.Uncordon, null, Same, null);
        yield return new("uncordon a node that is not Karpetrack's", SafetyWrite.Uncordon, null,
            w => w with { Owned = Owned(nodes: [new OwnedNode("n1", "p1", false, "con-0", true, true)]) }, RefusalReason.NotManaged);
        yield return new("uncordon a node whose pool is being deleted", SafetyWrite.Uncordon, null, w => w with { Owned = Owned(pools: [Pool("p1", deleting: true)]) },
            RefusalReason.PoolDeleting);
        yield return new("uncordon a node another operation owns", SafetyWrite.Uncordon, null, w => w with { OtherOperationNodes = new HashSet<string> { "n1" } },
            RefusalReason.OwnedByOperation);
        yield return new("uncordon an operation's own node", SafetyWrite.Uncordon, OperationStep.Drain, Same, null);
        yield return new("uncordon an operation's node whose old pool is being deleted", SafetyWrite.Uncordon, OperationStep.DeletePools,
            w => w with { Owned = Owned(pools: [Pool("p1", deleting: true)]) }, RefusalReason.PoolDeleting);
        yield return new("uncordon without a view", SafetyWrite.Uncordon, OperationStep.Drain, w => w with { Owned = null }, RefusalReason.ViewUnavailable);

        // Fencing: no write at all once the term has ended.
        foreach (var write in Enum.GetValues<SafetyWrite>())
            yield return new($"{write} after the term ended", write, OperationStep.Drain, w => w with { TermEnded = true }, RefusalReason.LeaseLost);
    }

    [Fact]
    public void EachRuleRefusesItsCaseWithItsReasonAndPassesTheOther()
    {
        var wrong = new List<string>();
        int cases = 0;
        foreach (var c in Table())
        {
            cases++;
            var policy = new SafetyPolicy(c.Options?.Invoke(Options) ?? Options);
            var op = c.Step is { } step ? new SafetyOperation(c.Rec ?? Removal, step, c.NewPools) : null;
            var got = policy.Check(c.Write, op, c.World(World()));
            if (got?.Reason != c.Expected) wrong.Add($"{c.Name}: expected {c.Expected?.ToString() ?? "pass"}, got {got?.Reason.ToString() ?? "pass"} ({got?.Message})");
        }
        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
        Assert.True(cases > 50);
        // Every reason the actuator counts is produced by some case of the table.
        var produced = Table().Where(c => c.Expected is not null).Select(c => c.Expected!.Value).ToHashSet();
        var missing = Enum.GetValues<RefusalReason>().Where(r => !produced.Contains(r)).ToList();
        Assert.True(missing.Count == 0, "no case produces " + string.Join(", ", missing));
    }

    [Theory]
    [InlineData("con-0123456789ab;step=drain", "con-0123456789ab", true)]
    [InlineData("con-0123456789ab", "con-0123456789ab", false)]          // an earlier release's value: no step
    [InlineData("con-0123456789ab;step=teleport", "con-0123456789ab", false)]   // a later release's step: recognised, no step
    public void TheDisruptionAnnotationCarriesTheStepAndOlderValuesAreStillRecognised(string value, string id, bool drain)
    {
        var record = DisruptionRecord.Parse(value);
        Assert.Equal(id, record.RecommendationId);
        Assert.Equal(drain ? OperationStep.Drain : null, record.Step);
        Assert.Null(record.Type);
        Assert.Null(record.Saving);
        Assert.True(DisruptionRecord.TryParse(value, out _, out var error), error);
        if (drain) Assert.Equal(value, record.ToString());
    }

    [Theory]
    [InlineData("rep-0123456789ab;step=drain;op=replace;saving=0.0123", RecommendationType.Replace, "0.0123")]
    [InlineData("con-0123456789ab;step=drain;op=consolidate;saving=0", RecommendationType.Consolidate, "0")]
    [InlineData("emp-0123456789ab;step=drain;op=delete-empty;saving=-0.5", RecommendationType.DeleteEmpty, "-0.5")]   // an expired node's replacement may cost more
    [InlineData("rep-0123456789ab; step=drain ;saving=0.0123;op=replace;by=a-later-release", RecommendationType.Replace, "0.0123")]   // any order, spaces, unknown keys
    public void TheDisruptionAnnotationCarriesTheOperationsTypeAndSaving(string value, RecommendationType type, string saving)
    {
        Assert.True(DisruptionRecord.TryParse(value, out var record, out var error), error);
        Assert.Equal(value[..value.IndexOf(';')], record.RecommendationId);
        Assert.Equal(OperationStep.Drain, record.Step);
        Assert.Equal(type, record.Type);
        Assert.Equal(decimal.Parse(saving, System.Globalization.CultureInfo.InvariantCulture), record.Saving);
        // What the actuator writes reads back as the same record.
        var written = new DisruptionRecord(record.RecommendationId, OperationStep.Drain, type, record.Saving).ToString();
        Assert.Equal(record, DisruptionRecord.Parse(written));
        Assert.Equal($"{record.RecommendationId};step=drain;op={DisruptionRecord.OpName(type)};saving={saving}", written);
    }

    [Theory]
    [InlineData("rep-0123456789ab;step=drain;op=teleport;saving=0.01", "op=teleport")]
    [InlineData("rep-0123456789ab;step=drain;op=replace;saving=abc", "saving=abc")]
    [InlineData("rep-0123456789ab;step=drain;op=replace;saving=1e2147483647", "saving=1e2147483647")]
    [InlineData("rep-0123456789ab;step=drain;op=replace;saving=99999999999999", "saving=99999999999999")]
    [InlineData("rep-0123456789ab;step=drain;step=drain", "step is given twice")]
    [InlineData("rep-0123456789ab;step=drain;garbage", "\"garbage\" is not key=value")]
    [InlineData(";step=drain", "no recommendation")]
    public void AMalformedDisruptionAnnotationIsRefusedAndReadAsAnEarlierReleasesValue(string value, string why)
    {
        Assert.False(DisruptionRecord.TryParse(value, out var record, out var error));
        Assert.Contains(why, error);
        // As an earlier release's value: the recommendation only, no step (so the drain is rolled back, not resumed).
        Assert.Equal(new DisruptionRecord(value[..value.IndexOf(';')], null), record);
        Assert.Equal(record, DisruptionRecord.Parse(value));
    }

    [Fact]
    public void OnlyTheListedStepTransitionsAreAllowed()
    {
        var allowed = new HashSet<(OperationStep, OperationStep)>
        {
            (OperationStep.Planned, OperationStep.CreatePools), (OperationStep.Planned, OperationStep.Cordon), (OperationStep.Planned, OperationStep.WaitReady),
            (OperationStep.Planned, OperationStep.Drain),
            (OperationStep.CreatePools, OperationStep.CreatePools), (OperationStep.CreatePools, OperationStep.WaitReady), (OperationStep.CreatePools, OperationStep.Failed),
            (OperationStep.WaitReady, OperationStep.WaitReady), (OperationStep.WaitReady, OperationStep.Cordon), (OperationStep.WaitReady, OperationStep.Done),
            (OperationStep.WaitReady, OperationStep.Failed),
            (OperationStep.Cordon, OperationStep.Cordon), (OperationStep.Cordon, OperationStep.Drain), (OperationStep.Cordon, OperationStep.Failed),
            (OperationStep.Drain, OperationStep.Drain), (OperationStep.Drain, OperationStep.DeletePools), (OperationStep.Drain, OperationStep.Failed),
            (OperationStep.DeletePools, OperationStep.DeletePools), (OperationStep.DeletePools, OperationStep.Drain), (OperationStep.DeletePools, OperationStep.Done),
            (OperationStep.DeletePools, OperationStep.Failed),
        };
        foreach (var from in Enum.GetValues<OperationStep>())
            foreach (var to in Enum.GetValues<OperationStep>())
            {
                Assert.Equal(allowed.Contains((from, to)), OperationSteps.Allowed(from, to));
                if (allowed.Contains((from, to))) OperationSteps.Require(from, to);
                else Assert.Throws<InvalidOperationException>(() => OperationSteps.Require(from, to));
            }
        // Nothing skips the drain on the way to a pool delete, and an ended operation stays ended.
        Assert.False(OperationSteps.Allowed(OperationStep.WaitReady, OperationStep.DeletePools));
        Assert.False(OperationSteps.Allowed(OperationStep.Cordon, OperationStep.DeletePools));
        Assert.False(OperationSteps.Allowed(OperationStep.Failed, OperationStep.Drain));
    }
}
