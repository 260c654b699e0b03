namespace Karpetrack.Tests.Actuation;

/// <summary>
/// Issue 16's "no node touched by two operations", at the policy: a node that another operation owns (in this process's
/// memory, or recorded only in the cluster by its disruption annotation) is refused to a second operation at its start,
/// at the re-check once its new nodes are Ready, and at the cordon itself. The budget alone did not stop it: it counts the
/// operation's own nodes once, so a node disrupted by another operation looked like the operation's own.
/// </summary>
public class NodeOwnershipTests
{
    private static readonly DateTimeOffset Now = new(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);

    private static readonly PriceBook Book =
        PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-08-17.json")), DateTimeOffset.UtcNow, "test");

    private static readonly string[] ByPrice = Book.Classes.Keys.Where(c => Book.NodePrice(c, "spot") is > 0).OrderBy(c => Book.NodePrice(c, "spot")).ToArray();

    private static readonly SafetyPolicy Policy = new(new ActuationOptions
    {
        Mode = ActuationMode.Auto, MaxDisruptedNodes = 1, MaxDisruptedPercentPerHour = 100, ScaleUpCooldown = TimeSpan.Zero, MaxPlanAge = TimeSpan.FromMinutes(10),
    });

    private static NodeView Node(string name, string? disruption = null) => new()
    {
        Name = name,
        Labels = new Dictionary<string, string>
        {
            [SpotLabels.Pool] = "p1", [SpotLabels.ServerClass] = ByPrice[^1], [SpotLabels.CapacityType] = "spot", [Actuator.ManagedLabel] = "true",
        },
        Annotations = disruption is null ? new Dictionary<string, string>() : new Dictionary<string, string> { [Actuator.DisruptionAnnotation] = disruption },
        Allocatable = [], Capacity = [], Allocated = [], DaemonSetOverhead = [], Pods = 0,
        Ready = true, Schedulable = true, Deleting = false, Taints = [], Created = Now.AddDays(-1),
        NamespaceRequests = new Dictionary<string, long[]>(),
    };

    private static SpotNodePool Pool(string name) =>
        new(name, "org", ByPrice[^1], 1, "0.27", "demo", new Dictionary<string, string>(), new Dictionary<string, string> { [Actuator.ManagedLabel] = "true" },
            "Won", 1, "1", Now.AddDays(-1));

    /// <summary>n1, schedulable in the snapshot (its cache has not seen the cordon yet), and on the fresh view carrying <paramref name="onView"/>.</summary>
    private static SafetyWorld World(string? onView = null, string? inSnapshot = null, params string[] otherOperationNodes) => new()
    {
        Now = Now,
        PlanAt = Now.AddMinutes(-1),
        Owned = new OwnedView([Pool("p1"), Pool("p2")], [new OwnedNode("n1", "p1", true, onView, onView is not null, true)]),
        Nodes = new Dictionary<string, NodeView> { ["n1"] = Node("n1", inSnapshot) },
        Book = Book,
        OtherOperationNodes = otherOperationNodes.ToHashSet(),
        Node = "n1",
        Pool = "p1",
    };

    private static readonly Recommendation Consolidation = new("con-000000000001", RecommendationType.Consolidate, ["n1"], [], [], [], 1m, 0m, 0, 0, -1, ["test"]);

    private static readonly Recommendation Replacement =
        new("rep-000000000002", RecommendationType.Replace, ["n1"], [new NewNode(ByPrice[0], 1, 0)], [], [], 1m, 0.0001m, 0, 0, -1, ["test"]);

    private static string Drain(string id) => new DisruptionRecord(id, OperationStep.Drain, RecommendationType.Replace, 1m).ToString();

    [Fact]
    public void TheWorldsHerePassWhenNoOtherOperationOwnsTheNode()
    {
        Assert.Null(Policy.Check(SafetyWrite.Cordon, new SafetyOperation(Consolidation, OperationStep.Planned), World()));
        Assert.Null(Policy.Check(SafetyWrite.CreatePool, new SafetyOperation(Replacement, OperationStep.Planned), World()));
        Assert.Null(Policy.Check(SafetyWrite.Cordon, new SafetyOperation(Replacement, OperationStep.WaitReady), World()));
        // Its own record (a drain resumed after a restart) is no other operation's.
        Assert.Null(Policy.Check(SafetyWrite.Cordon, new SafetyOperation(Replacement, OperationStep.WaitReady), World(onView: Drain(Replacement.Id))));
        Assert.Null(Policy.Check(SafetyWrite.Cordon, new SafetyOperation(Replacement, OperationStep.Cordon), World(onView: Drain(Replacement.Id))));
    }

    /// <summary>
    /// The sequence the fault suite showed ("cordoned for con-… and then for rep-… without being released"): a replacement
    /// of n1 waits for its new node; the plan now consolidates n1 onto that in-flight node, and the consolidation may not
    /// start while the replacement owns n1 in memory.
    /// </summary>
    [Fact]
    public void AnOperationMayNotStartOnANodeAnotherOperationInMemoryOwns()
    {
        var why = Policy.Check(SafetyWrite.Cordon, new SafetyOperation(Consolidation, OperationStep.Planned), World(otherOperationNodes: "n1"));
        Assert.Equal(RefusalReason.OwnedByOperation, why?.Reason);
        why = Policy.Check(SafetyWrite.CreatePool, new SafetyOperation(Replacement, OperationStep.Planned), World(otherOperationNodes: "n1"));
        Assert.Equal(RefusalReason.OwnedByOperation, why?.Reason);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AnOperationMayNotStartOnANodeCordonedForAnotherRecommendationInTheClusterOnly(bool onTheView)
    {
        var record = Drain("con-000000000009");
        var world = onTheView ? World(onView: record) : World(inSnapshot: record) with { Owned = new OwnedView([Pool("p1")], []) };
        Assert.Equal(RefusalReason.OwnedByOperation, Policy.Check(SafetyWrite.Cordon, new SafetyOperation(Consolidation, OperationStep.Planned), world)?.Reason);
        Assert.Equal(RefusalReason.OwnedByOperation, Policy.Check(SafetyWrite.CreatePool, new SafetyOperation(Replacement, OperationStep.Planned), world)?.Reason);
    }

    /// <summary>The replacement's new node is Ready, but meanwhile n1 was cordoned for a consolidation: it must not cordon n1 over it.</summary>
    [Fact]
    public void TheReCheckBeforeTheCordonRefusesANodeAnotherOperationTookMeanwhile()
    {
        var op = new SafetyOperation(Replacement, OperationStep.WaitReady);
        Assert.Equal(RefusalReason.OwnedByOperation, Policy.Check(SafetyWrite.Cordon, op, World(onView: Drain(Consolidation.Id)))?.Reason);
        Assert.Equal(RefusalReason.OwnedByOperation, Policy.Check(SafetyWrite.Cordon, op, World(otherOperationNodes: "n1"))?.Reason);
    }

    [Fact]
    public void TheCordonItselfRefusesANodeAnotherOperationOwns()
    {
        var op = new SafetyOperation(Replacement, OperationStep.Cordon);
        Assert.Equal(RefusalReason.OwnedByOperation, Policy.Check(SafetyWrite.Cordon, op, World(otherOperationNodes: "n1"))?.Reason);
        Assert.Equal(RefusalReason.OwnedByOperation, Policy.Check(SafetyWrite.Cordon, op, World(onView: Drain(Consolidation.Id)))?.Reason);
    }
}
