using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Karpetrack.Simulation;

/// <summary>What the disruption controller would write into a PodDisruptionBudget's status.</summary>
public sealed record BudgetStatus(int ExpectedPods, int CurrentHealthy, int DesiredHealthy, int DisruptionsAllowed);

/// <summary>
/// The PodDisruptionBudget arithmetic of the disruption controller, computed from the pods as they
/// are now. The eviction subresource and the demo's status writes share it, so what the demo
/// shows and what an eviction is told never disagree.
/// </summary>
public static class DisruptionBudgets
{
    /// <summary>policy/v1: an empty selector selects every pod of the namespace, a missing one none.</summary>
    public static bool Selects(JsonObject pdb, IReadOnlyDictionary<string, string> podLabels)
    {
        if (pdb["spec"]?["selector"] is not JsonObject selector) return false;
        return LabelSelector.FromJson(JsonWire.Element(selector)).Matches(podLabels);
    }

    /// <summary>Running, bound, not terminating, and Ready (a Running pod without conditions counts as ready).</summary>
    public static bool IsHealthy(JsonObject pod)
    {
        if ((string?)pod["status"]?["phase"] != "Running") return false;
        if (string.IsNullOrEmpty((string?)pod["spec"]?["nodeName"])) return false;
        if (pod["metadata"]?["deletionTimestamp"] is not null) return false;
        if (pod["status"]?["conditions"] is not JsonArray { Count: > 0 } conditions) return true;
        return conditions.Any(c => (string?)c?["type"] == "Ready" && (string?)c?["status"] == "True");
    }

    /// <summary>The budget of <paramref name="pdb"/> over the pods of its namespace.</summary>
    public static BudgetStatus Evaluate(JsonObject pdb, IEnumerable<StoredObject> podsInNamespace)
    {
        int expected = 0, healthy = 0;
        foreach (var p in podsInNamespace)
        {
            if (!Selects(pdb, p.Labels)) continue;
            expected++;
            if (IsHealthy(p.ToJsonObject())) healthy++;
        }
        var spec = pdb["spec"] as JsonObject;
        int desired;
        if (spec?["maxUnavailable"] is { } maxUnavailable)
            desired = Math.Max(0, expected - Scaled(maxUnavailable, expected));
        else if (spec?["minAvailable"] is { } minAvailable)
            desired = Scaled(minAvailable, expected);
        else
            desired = 0;
        return new BudgetStatus(expected, healthy, desired, Math.Max(0, healthy - desired));
    }

    // An IntOrString: an integer as is, a percentage of the expected count rounded up (as the controller does for both fields).
    private static int Scaled(JsonNode value, int expected)
    {
        if (value is JsonValue v && v.GetValueKind() == JsonValueKind.Number) return v.GetValue<int>();
        var text = (string?)value ?? "";
        if (text.EndsWith('%') && int.TryParse(text[..^1], NumberStyles.None, CultureInfo.InvariantCulture, out var pct))
            return (int)Math.Ceiling(pct * expected / 100.0);
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : 0;
    }

    /// <summary>The budgets of a namespace that select a pod with these labels.</summary>
    public static IReadOnlyList<StoredObject> Matching(ObjectStore store, string ns, IReadOnlyDictionary<string, string> podLabels)
    {
        if (!store.Resources.Any(r => r.Resource == "poddisruptionbudgets")) return [];
        return store.List("poddisruptionbudgets").Items
            .Where(b => b.Namespace == ns && Selects(b.ToJsonObject(), podLabels))
            .ToArray();
    }

    /// <summary>Rewrites the status of every budget (of one namespace, or all) whose figures changed; returns how many.</summary>
    public static int Refresh(ObjectStore store, string? ns = null)
    {
        if (!store.Resources.Any(r => r.Resource == "poddisruptionbudgets")) return 0;
        var pods = store.List("pods").Items;
        var changed = 0;
        foreach (var budget in store.List("poddisruptionbudgets").Items)
        {
            if (ns is not null && budget.Namespace != ns) continue;
            var updated = store.Update("poddisruptionbudgets", budget.Namespace, budget.Name, pdb =>
            {
                var s = Evaluate(pdb, pods.Where(p => p.Namespace == budget.Namespace));
                var status = pdb["status"] as JsonObject ?? [];
                if ((int?)status["expectedPods"] == s.ExpectedPods && (int?)status["currentHealthy"] == s.CurrentHealthy
                    && (int?)status["desiredHealthy"] == s.DesiredHealthy && (int?)status["disruptionsAllowed"] == s.DisruptionsAllowed)
                    return false;
                status["expectedPods"] = s.ExpectedPods;
                status["currentHealthy"] = s.CurrentHealthy;
                status["desiredHealthy"] = s.DesiredHealthy;
                status["disruptionsAllowed"] = s.DisruptionsAllowed;
                pdb["status"] = status;
                return true;
            });
            if (updated is not null && updated.ResourceVersion != budget.ResourceVersion) changed++;
        }
        return changed;
    }
}
