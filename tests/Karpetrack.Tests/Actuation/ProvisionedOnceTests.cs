using System.Text.Json.Nodes;

namespace Karpetrack.Tests.Actuation;

/// <summary>
/// Issue 16's invariant "no pods provisioned for twice" when the caches lag (a watch-error storm): a provision ends as soon as
/// the unfiltered view shows its nodes Ready, while the snapshot the recommender plans on may not show them yet. Its pools
/// stay in the in-flight capacity until the snapshot shows their node, unless --node-selector hides that node (it never
/// shows) or --provisioning-timeout has passed. Every test runs on the rig's stepped clock; a process's node and pod caches
/// are held back by hand (<see cref="HeldCache{T}"/>), so each lag is exact, not timed.
/// </summary>
public class ProvisionedOnceTests
{
    /// <summary>No removal starts (the window is closed): only provisions act, so what is bought is all the test looks at.</summary>
    private static ActuationOptions Options()
    {
        var now = DateTimeOffset.UtcNow;
        return ActuationRig.Quick() with
        {
            Window = new MaintenanceWindow(TimeOnly.FromDateTime(now.AddHours(2).UtcDateTime), TimeOnly.FromDateTime(now.AddHours(3).UtcDateTime)),
        };
    }

    /// <summary>Every provision a process planned, by id, so the pods each bought pool was for are known.</summary>
    private sealed class Planned(RecommenderLoop recommender)
    {
        public Dictionary<string, Recommendation> ById { get; } = new(StringComparer.Ordinal);

        public void Note()
        {
            foreach (var r in recommender.Current.Recommendations.Where(r => r.Type == RecommendationType.Provision)) ById.TryAdd(r.Id, r);
        }
    }

    /// <summary>The recommendations Karpetrack's pools on the Spot API were bought for.</summary>
    private static List<string> BoughtFor(ActuationRig rig) =>
        rig.ManagedPools().Select(p => p["spec"]!["customLabels"]?[Actuator.RecommendationLabel]?.GetValue<string>()).OfType<string>().Distinct().ToList();

    /// <summary>Each pending pod and how many of the recommendations that bought pools named it.</summary>
    private static Dictionary<string, int> PurchasesPerPod(ActuationRig rig, params Planned[] planned)
    {
        var byId = planned.SelectMany(p => p.ById).GroupBy(kv => kv.Key).ToDictionary(g => g.Key, g => g.First().Value, StringComparer.Ordinal);
        return BoughtFor(rig).Where(byId.ContainsKey).SelectMany(id => byId[id].PendingPods)
            .GroupBy(p => p, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
    }

    /// <summary>A second pending pod like one the provision serves: the plan after it names other pods, so it has another id.</summary>
    private static async Task AddTwinOfAPendingPodAsync(ActuationRig rig, Recommendation provision)
    {
        var (ns, name) = provision.PendingPods[0].Split('/') is [var a, var b] ? (a, b) : throw new InvalidOperationException(provision.PendingPods[0]);
        var pod = rig.Demo.Api.Store.Get("pods", ns, name)!.ToJsonObject();
        var meta = pod["metadata"]!.AsObject();
        meta["name"] = name + "-twin";
        meta["uid"] = Guid.NewGuid().ToString();
        meta.Remove("resourceVersion");
        Assert.Null(pod["spec"]?["nodeName"]);
        Assert.NotNull(rig.Demo.Api.Store.TryCreate("pods", pod));
        await rig.CaughtUpAsync();
    }

    private static IReadOnlyList<string> PoolsOf(ActuationRig rig, string recommendationId) =>
        rig.ManagedPools().Where(p => p["spec"]!["customLabels"]?[Actuator.RecommendationLabel]?.GetValue<string>() == recommendationId)
            .Select(p => p["metadata"]!["name"]!.GetValue<string>()).Order(StringComparer.Ordinal).ToList();

    /// <summary>
    /// The storm test's double purchase, made exact: a provision's nodes join while the process's node and pod caches lag;
    /// the provision ends on the unfiltered view. A new pending pod arrived just before, so the next plan (pods of the first
    /// provision and the new one, no node, and before the fix no capacity in flight) has a new id, and bought pools again
    /// for the same pods. Red before the fix: the first provision's pods were bought for twice.
    /// </summary>
    [Fact]
    public async Task ProvisionedNodesTheCachesHaveNotSeenYetStayInFlightAndNothingIsBoughtTwice()
    {
        var options = Options();
        await using var rig = await ActuationRig.StartAsync(options, provisioning: TimeSpan.FromSeconds(10), steppedClock: true);
        rig.Detach(rig.Actuator);
        var nodes = new HeldCache<NodeRecord>();
        var pods = new HeldCache<PodRecord>();
        var p = await rig.NewProcessAsync(options, pods: pods, nodes: nodes);
        var planned = new Planned(p.Recommender);
        async Task StepAsync() { await p.StepAsync(); planned.Note(); }

        for (int i = 0; i < 10 && p.Actuator.InFlightCounts.GetValueOrDefault("wait_ready") == 0; i++) await StepAsync();
        var first = Assert.Single(planned.ById.Values);
        var pools = PoolsOf(rig, first.Id);
        Assert.NotEmpty(pools);

        // A new pending pod, seen by the caches; then they lag (a watch-error storm), and the nodes join.
        await AddTwinOfAPendingPodAsync(rig, first);
        await StepAsync();
        nodes.Hold();
        pods.Hold();
        for (int i = 0; i < 30 && p.Actuator.StateOf(first.Id)?.StartsWith("succeeded", StringComparison.Ordinal) != true; i++) await StepAsync();
        Assert.StartsWith("succeeded", p.Actuator.StateOf(first.Id));
        Assert.True(nodes.Queued > 0, "the held node cache saw no change");
        Assert.DoesNotContain(p.Model.Snapshot().Nodes, n => pools.Contains(n.Pool));

        // The caches still lag: the pools are still in flight, and the pods pending in the snapshot are not bought for again.
        for (int i = 0; i < 10; i++) await StepAsync();
        var twice = PurchasesPerPod(rig, planned).Where(kv => kv.Value > 1).ToList();
        Assert.True(twice.Count == 0, $"pods bought for more than once: {string.Join(", ", twice.Select(kv => $"{kv.Key} ×{kv.Value}"))}; bought: {string.Join(", ", BoughtFor(rig))}");
        Assert.Superset(pools.ToHashSet(), p.Actuator.InFlight().Select(f => f.Pool).ToHashSet());

        // Caught up: the snapshot shows the nodes, and the pools leave the in-flight capacity.
        nodes.Release();
        pods.Release();
        await StepAsync();
        Assert.Contains(p.Model.Snapshot().Nodes, n => pools.Contains(n.Pool));
        Assert.DoesNotContain(p.Actuator.InFlight(), f => pools.Contains(f.Pool));
    }

    /// <summary>
    /// A node --node-selector does not match never shows in the snapshot: waiting for it would hold the capacity in flight
    /// until --provisioning-timeout and keep real provisions back. Its pool leaves the in-flight list as soon as the
    /// provision ends (its nodes Ready on the unfiltered view).
    /// </summary>
    [Fact]
    public async Task ProvisionedNodesTheNodeSelectorHidesLeaveTheInFlightListOnceReady()
    {
        var selector = $"{Actuator.ManagedLabel}!=true";
        var options = Options() with { NodeSelector = selector };
        await using var rig = await ActuationRig.StartAsync(options, provisioning: TimeSpan.FromSeconds(10), steppedClock: true);
        rig.Detach(rig.Actuator);
        var p = await rig.NewProcessAsync(options, nodeSelector: selector);
        var planned = new Planned(p.Recommender);
        async Task StepAsync() { await p.StepAsync(); planned.Note(); }

        for (int i = 0; i < 10 && p.Actuator.InFlightCounts.GetValueOrDefault("wait_ready") == 0; i++) await StepAsync();
        var first = Assert.Single(planned.ById.Values);
        var pools = PoolsOf(rig, first.Id);
        Assert.Equal(pools.Count, p.Actuator.InFlight().Count(f => pools.Contains(f.Pool)));
        for (int i = 0; i < 30 && p.Actuator.StateOf(first.Id)?.StartsWith("succeeded", StringComparison.Ordinal) != true; i++) await StepAsync();
        Assert.StartsWith("succeeded", p.Actuator.StateOf(first.Id));
        // The nodes exist and are Ready, and the snapshot (filtered) will never show them.
        Assert.All(pools, pool => Assert.Contains(rig.Demo.Api.Store.List("nodes").Items.Select(n => n.ToJsonObject()),
            n => n["metadata"]?["labels"]?[SpotLabels.Pool]?.GetValue<string>() == pool));
        Assert.DoesNotContain(p.Model.Snapshot().Nodes, n => pools.Contains(n.Pool));
        Assert.DoesNotContain(p.Actuator.InFlight(), f => pools.Contains(f.Pool));
    }

    /// <summary>
    /// A restarted process whose caches lag behind a provision of the process before: the pools have their nodes (on the
    /// unfiltered view) but its snapshot does not show them, so its recovery, which adopts only pools without a node, took
    /// them for done and the plan after it bought pools again for the same pods. Red before the fix.
    /// </summary>
    [Fact]
    public async Task ARestartedProcessWhoseCachesHaveNotSeenTheNewNodesDoesNotBuyAgain()
    {
        var options = Options();
        await using var rig = await ActuationRig.StartAsync(options, provisioning: TimeSpan.FromSeconds(10), steppedClock: true);
        var before = new Planned(rig.Recommender);
        async Task StepAsync() { await rig.StepAsync(); before.Note(); }
        for (int i = 0; i < 10 && rig.Actuator.InFlightCounts.GetValueOrDefault("wait_ready") == 0; i++) await StepAsync();
        var first = Assert.Single(before.ById.Values);
        var pools = PoolsOf(rig, first.Id);
        Assert.NotEmpty(pools);
        await AddTwinOfAPendingPodAsync(rig, first);
        await StepAsync();

        // Killed while its nodes are being provisioned; the next process's caches sync, then lag, and the nodes join.
        rig.Detach(rig.Actuator);
        var nodes = new HeldCache<NodeRecord>();
        var pods = new HeldCache<PodRecord>();
        var next = await rig.NewProcessAsync(options, pods: pods, nodes: nodes);
        var after = new Planned(next.Recommender);
        nodes.Hold();
        pods.Hold();
        await rig.AdvanceAsync(TimeSpan.FromSeconds(15));
        Assert.All(pools, pool => Assert.Contains(rig.Demo.Api.Store.List("nodes").Items.Select(n => n.ToJsonObject()),
            n => n["metadata"]?["labels"]?[SpotLabels.Pool]?.GetValue<string>() == pool));
        for (int i = 0; i < 15; i++) { await next.StepAsync(); after.Note(); }
        Assert.DoesNotContain(next.Model.Snapshot().Nodes, n => pools.Contains(n.Pool));
        var twice = PurchasesPerPod(rig, before, after).Where(kv => kv.Value > 1).ToList();
        Assert.True(twice.Count == 0, $"pods bought for more than once: {string.Join(", ", twice.Select(kv => $"{kv.Key} ×{kv.Value}"))}; bought: {string.Join(", ", BoughtFor(rig))}");
        Assert.Superset(pools.ToHashSet(), next.Actuator.InFlight().Select(f => f.Pool).ToHashSet());
    }
}
