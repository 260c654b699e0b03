using System.Globalization;

namespace Karpetrack;

/// <summary>
/// --consolidate-after and --consolidate-after-empty across recommender runs: since when each node has been removable
/// (named by a consolidate, delete-empty or replace recommendation), and as what (empty or not). A node no run names
/// any more, or one that turns from empty to running pods or back, starts again; a node that leaves is forgotten.
/// A recommendation whose nodes have not all waited long enough is still published, marked with
/// <see cref="Recommendation.ActionableAt"/> and a reason, and the actuator leaves it alone until then. Replacements of
/// expired nodes do not wait. With both waits at zero every plan passes through unchanged.
/// </summary>
public sealed class ConsolidationWaits
{
    private readonly object gate = new();
    private Dictionary<string, (DateTimeOffset Since, bool Empty)> since = new(StringComparer.Ordinal);

    /// <summary>The nodes tracked now and since when they have been removable (tests and diagnostics).</summary>
    public IReadOnlyDictionary<string, DateTimeOffset> Since
    {
        get { lock (gate) return since.ToDictionary(kv => kv.Key, kv => kv.Value.Since, StringComparer.Ordinal); }
    }

    /// <summary>Records which nodes this run found removable (at <paramref name="now"/>) and marks the recommendations that must still wait.</summary>
    public Plan Apply(Plan plan, PoolPolicy policy, DateTimeOffset now)
    {
        lock (gate)
        {
            var next = new Dictionary<string, (DateTimeOffset Since, bool Empty)>(StringComparer.Ordinal);
            foreach (var r in plan.Recommendations)
            {
                if (r.Nodes.Count == 0) continue;
                bool empty = r.Type == RecommendationType.DeleteEmpty;
                foreach (var n in r.Nodes)
                    next[n] = since.TryGetValue(n, out var was) && was.Empty == empty ? was : (now, empty);
            }
            since = next;
            if (policy.ConsolidateAfter <= TimeSpan.Zero && policy.ConsolidateAfterEmpty <= TimeSpan.Zero) return plan;

            List<Recommendation>? marked = null;
            for (int i = 0; i < plan.Recommendations.Count; i++)
            {
                var r = plan.Recommendations[i];
                if (r.Nodes.Count == 0 || r.Expired) continue;
                bool empty = r.Type == RecommendationType.DeleteEmpty;
                var left = r.Nodes.Max(n => policy.ConsolidationWait(empty, next[n].Since, now));
                if (left <= TimeSpan.Zero) continue;
                // The text names the configured wait and the time it ends, not a countdown: the same on every run
                // while the node waits, so the plan (and a gRPC watch of it) does not change just because time passed.
                var flag = empty ? "consolidate-after-empty" : "consolidate-after";
                var at = now + left;
                var waiting = string.Create(CultureInfo.InvariantCulture,
                    $"waiting for {flag} ({Duration(empty ? policy.ConsolidateAfterEmpty : policy.ConsolidateAfter)}) until {at.UtcDateTime:yyyy-MM-dd'T'HH:mm:ss'Z'}");
                marked ??= [.. plan.Recommendations];
                marked[i] = r with { ActionableAt = at, Waiting = waiting, Reasons = [.. r.Reasons, waiting] };
            }
            return marked is null ? plan : plan with { Recommendations = marked };
        }
    }

    /// <summary>A wait as people read it: 4m12s, 1h5m, 45s (whole seconds, rounded up).</summary>
    public static string Duration(TimeSpan t)
    {
        long s = (long)Math.Ceiling(t.TotalSeconds);
        var c = CultureInfo.InvariantCulture;
        if (s < 60) return string.Create(c, $"{s}s");
        if (s < 3600) return s % 60 == 0 ? string.Create(c, $"{s / 60}m") : string.Create(c, $"{s / 60}m{s % 60}s");
        long m = s / 60;
        return m % 60 == 0 ? string.Create(c, $"{m / 60}h") : string.Create(c, $"{m / 60}h{m % 60}m");
    }
}
