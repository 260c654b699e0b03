using System.Text.Json;

namespace Karpetrack.Tests.Chart;

public class DashboardTests
{
    private static readonly string DashboardPath = Path.Combine(RepoRoot.Path, "charts", "karpetrack", "dashboards", "karpetrack.json");

    // Every PromQL string in the dashboard: panel targets, annotations and template variable queries.
    private static IEnumerable<string> Queries(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject())
                {
                    if (p.Name is "expr" or "query" or "definition" && p.Value.ValueKind == JsonValueKind.String) yield return p.Value.GetString()!;
                    foreach (var q in Queries(p.Value)) yield return q;
                }
                break;
            case JsonValueKind.Array:
                foreach (var item in e.EnumerateArray())
                    foreach (var q in Queries(item)) yield return q;
                break;
        }
    }

    [Fact]
    public void DashboardQueriesOnlyListedMetrics()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(DashboardPath));
        var names = MetricNames.Load().All;
        var queried = Queries(doc.RootElement).SelectMany(MetricNames.InQuery).ToHashSet();
        Assert.NotEmpty(queried);
        var unlisted = queried.Where(q => !names.Contains(q)).ToList();
        Assert.Empty(unlisted);
        Assert.Equal("karpetrack", doc.RootElement.GetProperty("uid").GetString());
        // Panel ids must be unique or Grafana silently drops panels.
        var ids = doc.RootElement.GetProperty("panels").EnumerateArray().Select(p => p.GetProperty("id").GetInt32()).ToList();
        Assert.Equal(ids.Count, ids.Distinct().Count());
    }

    [Fact]
    public void DashboardCoversWhatTheIssueAsksFor()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(DashboardPath));
        var queried = Queries(doc.RootElement).SelectMany(MetricNames.InQuery).ToHashSet();
        foreach (var needed in new[]
        {
            "karpetrack_cluster_cost_dollars_per_hour", "karpetrack_cluster_idle_cost_dollars_per_hour", // cost and idle cost
            "karpetrack_group_utilization_ratio",                                                         // binpacking per node group
            "karpetrack_node_utilization_ratio",                                                          // per-node utilization
            "karpetrack_pending_pods", "karpetrack_pending_requests",                                     // pending demand
            "karpetrack_recommendations", "karpetrack_recommendation_savings_dollars_per_hour",           // recommendations and savings
            "karpetrack_actions_total",                                                                   // actuation activity
        })
            Assert.Contains(needed, queried);
    }

    [Fact]
    public async Task MetricsThatExistAreExportedAndExportedOnesAreListed()
    {
        var list = MetricNames.Load();
        var exported = (await ExportedFamilies.AllAsync()).Select(f => f.Name).Where(n => n.StartsWith("karpetrack_", StringComparison.Ordinal)).ToHashSet();
        Assert.Contains(list.Entries, e => e.Section == "exporter" && e.Exists);
        var claimed = list.Entries.Where(e => e.Exists && !exported.Contains(e.Name)).Select(e => $"{e.Section}: {e.Name}");
        Assert.Empty(claimed);
        var unlisted = exported.Where(n => !list.All.Contains(n)).ToList();
        Assert.Empty(unlisted);
        Assert.Equal(list.Entries.Count, list.All.Count);
        // A planned name that the code already exports should be moved to an "exists" section.
        Assert.Empty(list.Entries.Where(e => !e.Exists && exported.Contains(e.Name)).Select(e => e.Name));
    }
}
