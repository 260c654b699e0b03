using static Karpetrack.Tests.Recommend.Scenario;

namespace Karpetrack.Tests.Recommend;

/// <summary>
/// Pool policy (Actuation/PoolPolicy.cs): the pure checks the actuator calls before it creates a pool, and the
/// recommender honouring them when it plans (managed capacity limits, the taints and labels of new pools).
/// </summary>
public class PoolPolicyTests
{
    private static readonly ServerClass Large = Book.Classes["gp.vs1.large-iad"].Class;

    [Fact]
    public void CreateIsRefusedPastEitherLimitWithAStableReason()
    {
        var policy = new PoolPolicy { MaxManagedMilliCpu = 16_000, MaxManagedMemoryBytes = 64_000_000_000 };
        Assert.Null(policy.CheckCreate(new ManagedCapacity(8_000, 10_000_000_000), new ManagedCapacity(8_000, 10_000_000_000)));   // exactly at the cpu limit
        var cpu = policy.CheckCreate(new ManagedCapacity(8_000, 0), new ManagedCapacity(8_001, 0));
        Assert.StartsWith("managed capacity limit:", cpu);
        Assert.Contains("--max-managed-cpu 16", cpu);
        var mem = policy.CheckCreate(new ManagedCapacity(0, 60_000_000_000), new ManagedCapacity(0, 5_000_000_000));
        Assert.StartsWith("managed capacity limit:", mem);
        Assert.Contains("--max-managed-memory 64 GB", mem);
        // No limit, no refusal, however large.
        Assert.Null(PoolPolicy.None.CheckCreate(new ManagedCapacity(long.MaxValue / 4, long.MaxValue / 4), ManagedCapacity.Of(Large, 1000)));
        Assert.False(PoolPolicy.None.LimitsCapacity);
        Assert.Equal(new ManagedCapacity((long)(Large.Cpu * 1000) * 3, Large.MemoryBytes * 3), ManagedCapacity.Of(Large, 3));
    }

    [Fact]
    public void WaitsExpiryTolerationsAndLabelsArePure()
    {
        var t0 = new DateTimeOffset(2026, 12, 7, 0, 0, 0, TimeSpan.Zero);
        var p = new PoolPolicy
        {
            ConsolidateAfter = TimeSpan.FromMinutes(30), ConsolidateAfterEmpty = TimeSpan.FromMinutes(5), ExpireAfter = TimeSpan.FromDays(7),
            Labels = new Dictionary<string, string> { ["team"] = "web", ["karpetrack.io/managed"] = "false" },
            Taints = [new Taint("dedicated", "batch", "NoSchedule"), new Taint("soft", null, "PreferNoSchedule")],
        };
        Assert.Equal(TimeSpan.FromMinutes(20), p.ConsolidationWait(empty: false, t0, t0.AddMinutes(10)));
        Assert.Equal(TimeSpan.Zero, p.ConsolidationWait(empty: true, t0, t0.AddMinutes(10)));
        Assert.Equal(TimeSpan.Zero, PoolPolicy.None.ConsolidationWait(empty: false, t0, t0));
        Assert.True(p.Expired(t0, t0.AddDays(7)));
        Assert.False(p.Expired(t0, t0.AddDays(6)));
        Assert.False(p.Expired(null, t0.AddDays(70)));
        Assert.False(PoolPolicy.None.Expired(t0, t0.AddYears(5)));
        Assert.False(p.Tolerated([]));
        Assert.True(p.Tolerated([new Toleration("dedicated", "Equal", "batch", "NoSchedule")]));
        Assert.True(p.Tolerated([new Toleration(null, "Exists", null, null)]));
        var labels = p.PoolLabels(new Dictionary<string, string> { ["karpetrack.io/managed"] = "true" });
        Assert.Equal("true", labels["karpetrack.io/managed"]);   // Karpetrack's own labels win
        Assert.Equal("web", labels["team"]);
    }

    [Fact]
    public void TheRecommenderBuysNothingPastTheManagedCapacityLimitAndSaysWhy()
    {
        var s = new Scenario()
            .Node("managed", "gp.vs1.large-iad", labels: new() { ["karpetrack.io/managed"] = "true" })
            .Node("other", "gp.vs1.medium-iad")
            .Pod("keep", "managed", "3", "6Gi")
            .Pod("big", null, "3", "6Gi", pending: true);
        var free = s.Run();
        var provision = Single(free, RecommendationType.Provision);
        var added = ManagedCapacity.Of(Book.Classes[Assert.Single(provision.NewNodes).ServerClass].Class);
        var managed = ManagedCapacity.Of(Large);

        // A limit that holds the managed node and the new one changes nothing.
        var roomy = new RecommenderOptions { Region = "us-east-iad-1", Pools = new PoolPolicy { MaxManagedMilliCpu = (managed + added).MilliCpu } };
        Assert.Equal(provision.Id, Single(s.Run(roomy), RecommendationType.Provision).Id);

        // One millicore less: the managed node already counts, so nothing is bought and the pod says why.
        var tight = new RecommenderOptions { Region = "us-east-iad-1", Pools = new PoolPolicy { MaxManagedMilliCpu = (managed + added).MilliCpu - 1 } };
        var plan = s.Run(tight);
        Assert.DoesNotContain(plan.Recommendations, r => r.Type == RecommendationType.Provision);
        var (pod, reason) = Assert.Single(plan.Unplaceable);
        Assert.Equal("shop/big", pod);
        Assert.StartsWith("managed capacity limit:", reason);
        Assert.Equal(0, plan.ProvisioningCostPerHour);

        // Pools in flight count too.
        var byMemory = new RecommenderOptions { Region = "us-east-iad-1", Pools = new PoolPolicy { MaxManagedMemoryBytes = (managed + added).MemoryBytes } };
        Assert.Single(s.Run(byMemory).Recommendations, r => r.Type == RecommendationType.Provision);
        var inFlight = new[] { new InFlightNode("pool-x", "gp.vs1.medium-iad") };
        var withFlight = s.Run(byMemory, inFlight);
        Assert.Contains(withFlight.Unplaceable, u => u.Reason.StartsWith("managed capacity limit:", StringComparison.Ordinal));
    }

    [Fact]
    public void PodsThatDoNotTolerateThePoolTaintsAreNotPlannedOntoNewNodes()
    {
        var tolerates = ""","tolerations":[{"key":"dedicated","operator":"Equal","value":"batch","effect":"NoSchedule"}]""";
        var s = new Scenario().Node("small", "gp.vs1.medium-iad")
            .Pod("plain", null, "3", "6Gi", pending: true)
            .Pod("batch", null, "3", "6Gi", pending: true, extraSpec: tolerates);
        Assert.Equal(["shop/batch", "shop/plain"], Single(s.Run(), RecommendationType.Provision).PendingPods);

        var tainted = new RecommenderOptions { Region = "us-east-iad-1", Pools = new PoolPolicy { Taints = [new Taint("dedicated", "batch", "NoSchedule")] } };
        var plan = s.Run(tainted);
        Assert.Equal(["shop/batch"], Single(plan, RecommendationType.Provision).PendingPods);
        var (pod, reason) = Assert.Single(plan.Unplaceable);
        Assert.Equal("shop/plain", pod);
        Assert.Contains("does not tolerate the taints of new pools", reason);
    }

    [Fact]
    public void PodsSelectingThePoolLabelsCanBePlannedOntoNewNodes()
    {
        var s = new Scenario().Node("small", "gp.vs1.medium-iad")
            .Pod("web", null, "3", "6Gi", pending: true, extraSpec: ""","nodeSelector":{"team":"web"}""");
        Assert.DoesNotContain(s.Run().Recommendations, r => r.Type == RecommendationType.Provision);
        var labelled = new RecommenderOptions { Region = "us-east-iad-1", Pools = new PoolPolicy { Labels = new Dictionary<string, string> { ["team"] = "web" } } };
        Assert.Equal(["shop/web"], Single(s.Run(labelled), RecommendationType.Provision).PendingPods);
    }
}
