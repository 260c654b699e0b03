using System.Globalization;
using System.Text;

namespace Karpetrack.Bench;

/// <summary>
/// A plan as text, every field of it (decimals with their scale), so that two recommenders can be
/// compared byte for byte: a refactoring of the recommender must not change one line.
/// </summary>
internal static class PlanText
{
    public static void Append(StringBuilder sb, string instance, Plan plan)
    {
        var c = CultureInfo.InvariantCulture;
        sb.Append(c, $"== {instance}\nregion {plan.Region} provisioning {plan.ProvisioningCostPerHour} bound {plan.ProvisioningLowerBoundPerHour}\n");
        foreach (var r in plan.Recommendations)
        {
            sb.Append(c, $"rec {r.Id} {r.Type} nodes [{string.Join(",", r.Nodes)}] current {r.CurrentCostPerHour} new {r.NewCostPerHour} bound {r.LowerBoundPerHour}")
              .Append(c, $" evicted {r.PodsEvicted} headroom {r.PdbHeadroom} savings {r.SavingsPerHour}\n");
            foreach (var n in r.NewNodes) sb.Append(c, $"  new {n.ServerClass} x{n.Count} at {n.PricePerHour}\n");
            foreach (var m in r.Moves) sb.Append(c, $"  move {m.Namespace}/{m.Pod} {m.From} -> {m.To}\n");
            foreach (var p in r.PendingPods) sb.Append(c, $"  serves {p}\n");
            foreach (var reason in r.Reasons) sb.Append(c, $"  reason {reason}\n");
        }
        foreach (var (node, blockers) in plan.Blockers.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            foreach (var b in blockers)
                sb.Append(c, $"blocker {node} {b.Reason} pods [{string.Join(",", b.Pods)}] pdbs [{string.Join(",", b.Pdbs)}]\n");
        foreach (var (pod, reason) in plan.Unplaceable) sb.Append(c, $"unplaceable {pod}: {reason}\n");
    }
}
