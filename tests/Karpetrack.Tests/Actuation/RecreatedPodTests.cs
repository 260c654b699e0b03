using System.Text.Json.Nodes;
using Karpetrack.Simulation;

namespace Karpetrack.Tests.Actuation;

/// <summary>
/// Issue 16, defect 6, at the actuator: a pod of the node being drained is deleted and recreated under the same name
/// (a new UID, bound to another node) while the draining process's pod cache still shows the old one on the node. The
/// new pod is never evicted, and the drain does not count it as the node's: once the cache catches up the node is
/// drained and its pool deleted, with the new pod still running where it is. On the rig's hand-moved clock.
/// </summary>
public class RecreatedPodTests
{
    public enum When
    {
        /// <summary>Recreated before the drain starts: the actuator's re-read finds the new UID, on the other node.</summary>
        BeforeTheDrain,
        /// <summary>Recreated when the eviction request arrives, after the actuator's re-read saw the old pod: only the UID precondition can tell.</summary>
        BetweenTheReadAndTheEviction,
    }

    [Theory]
    [InlineData(When.BeforeTheDrain)]
    [InlineData(When.BetweenTheReadAndTheEviction)]
    public async Task APodRecreatedUnderItsNameOnAnotherNodeIsNeverEvictedByALaggingCache(When when)
    {
        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick(), steppedClock: true);
        rig.Detach(rig.Actuator);
        var pods = new HeldCache<PodRecord>();
        var process = await rig.NewProcessAsync(SafetyTests.Calm(), pods: pods);
        var actuator = process.Actuator;
        await actuator.TickAsync(CancellationToken.None);   // the recovery
        var (node, victim) = DrainableNodeAndPod(rig);
        var other = SafetyTests.Nodes(rig).Select(n => n["metadata"]!["name"]!.GetValue<string>()).First(n => n != node);
        var pool = rig.Node(node)["metadata"]!["labels"]![SpotLabels.Pool]!.GetValue<string>();
        var (ns, name) = (victim["metadata"]!["namespace"]!.GetValue<string>(), victim["metadata"]!["name"]!.GetValue<string>());
        var oldUid = victim["metadata"]!["uid"]!.GetValue<string>();
        var newUid = Guid.NewGuid().ToString();

        void Recreate()
        {
            Assert.True(rig.Demo.Api.Store.Delete("pods", ns, name));
            var pod = victim.DeepClone().AsObject();
            var meta = pod["metadata"]!.AsObject();
            meta["uid"] = newUid;
            meta.Remove("resourceVersion");
            meta.Remove("deletionTimestamp");
            pod["spec"]!["nodeName"] = other;
            Assert.NotNull(rig.Demo.Api.Store.TryCreate("pods", pod));
        }

        // Every write the API server makes to a pod of that name from now on (the test's own store changes are not writes).
        var writes = new System.Collections.Concurrent.ConcurrentQueue<string>();
        void Seen(ApiWrite w)
        {
            if (w.Resource == "pods" && w.Namespace == ns && w.Name == name) writes.Enqueue(w.Object?["metadata"]?["uid"]?.ToString() ?? "deleted");
        }
        int evictionsAsked = 0;
        void Arriving(string method, string path)
        {
            if (method != "POST" || !path.StartsWith($"/api/v1/namespaces/{ns}/pods/{name}/eviction", StringComparison.Ordinal)) return;
            if (Interlocked.Increment(ref evictionsAsked) == 1 && when == When.BetweenTheReadAndTheEviction) Recreate();
        }
        rig.Demo.Api.Written += Seen;
        rig.Demo.Api.Requesting += Arriving;
        try
        {
            // The process's pod cache lags from here: it keeps showing the old pod on the node.
            pods.Hold();
            if (when == When.BeforeTheDrain) Recreate();
            await rig.CaughtUpAsync();
            Assert.Contains(process.Model.PodsOn(node), p => p.Name == name && p.Uid == Json.UidOf(oldUid));

            var rec = SafetyTests.Removal("con-recreated-pod", node, 1m);
            actuator.OnPlan(SafetyTests.PlanOf(rec));
            await actuator.TickAsync(CancellationToken.None);   // cordoned; every pod the cache shows asked to go
            Assert.Equal(1, actuator.Counts.GetValueOrDefault(("cordon", "succeeded")));
            if (when == When.BetweenTheReadAndTheEviction) Assert.Equal(1, evictionsAsked);
            for (int i = 0; i < 5; i++)
            {
                await rig.AdvanceAsync(TimeSpan.FromSeconds(1));
                await actuator.TickAsync(CancellationToken.None);
                // The drain's state does not name as waited for a pod its last eviction found gone from the node.
                Assert.DoesNotContain($"{ns}/{name}", actuator.StateOf(rec.Id));
            }
            // While the cache still shows the old pod, the node is not taken for drained.
            Assert.Equal(0, actuator.Counts.GetValueOrDefault(("drain", "succeeded")));
            Assert.Empty(writes);

            // The cache catches up: the node is drained (the pod of that name on the other node is not the node's) and its pool deleted.
            pods.Release();
            await rig.CaughtUpAsync();
            for (int i = 0; actuator.StateOf(rec.Id) is not { } st || !st.StartsWith("succeeded", StringComparison.Ordinal); i++)
            {
                Assert.True(i < 30, actuator.StateOf(rec.Id));
                await rig.AdvanceAsync(TimeSpan.FromSeconds(1));
                await actuator.TickAsync(CancellationToken.None);
            }
        }
        finally
        {
            rig.Demo.Api.Written -= Seen;
            rig.Demo.Api.Requesting -= Arriving;
        }
        Assert.Empty(writes);
        var kept = rig.Demo.Api.Store.Get("pods", ns, name)?.ToJsonObject();
        Assert.NotNull(kept);
        Assert.Equal(newUid, kept["metadata"]!["uid"]!.GetValue<string>());
        Assert.Equal(other, kept["spec"]!["nodeName"]!.GetValue<string>());
        Assert.Null(kept["metadata"]?["deletionTimestamp"]);
        Assert.Equal(1, actuator.Counts.GetValueOrDefault(("drain", "succeeded")));
        Assert.Equal(1, actuator.Counts.GetValueOrDefault(("delete_pool", "succeeded")));
        Assert.True(rig.Spot.Pool(pool) is null || rig.Spot.Pool(pool)!["metadata"]?["deletionTimestamp"] is not null);
    }

    /// <summary>A managed node alone in its pool with nothing that blocks its drain (no PDB at zero either), and one of its pods that is not overhead.</summary>
    private static (string Node, JsonObject Pod) DrainableNodeAndPod(ActuationRig rig)
    {
        var snap = rig.Model.Snapshot();
        var pdbs = rig.Model.Pdbs.All().GroupBy(p => p.Namespace).ToDictionary(g => g.Key, g => g.ToArray(), StringComparer.Ordinal);
        foreach (var m in rig.Demo.ManagedNodes)
        {
            if (snap.Nodes.FirstOrDefault(n => n.Name == m.Node) is not { } view || snap.Nodes.Count(n => n.Pool == view.Pool) != 1) continue;
            var pods = rig.Model.PodsOn(m.Node);
            if (!pods.Any(p => !p.IsOverhead)) continue;
            if (Recommender.NodeBlockers(view, pods, pdbs, rig.Prices.Current).Count > 0) continue;
            var pod = pods.First(p => !p.IsOverhead);
            return (m.Node, rig.Demo.Api.Store.Get("pods", pod.Namespace, pod.Name)!.ToJsonObject());
        }
        throw new InvalidOperationException("the demo has no drainable managed node with pods");
    }
}
