using System.Text.Json;
using System.Text.RegularExpressions;

namespace Karpetrack.Tests.Chart;

/// <summary>
/// Fleets: one Karpetrack per cluster, one Prometheus (or Thanos, Mimir) for all of them, told apart
/// by a `cluster` label. The promtool case "two clusters" in deploy/prometheus/karpetrack-alerts.test.yaml
/// runs the alerts on two clusters' series (AlertTests runs it).
/// </summary>
public partial class FleetTests
{
    [Fact]
    public void ClusterNameBecomesTheClusterLabelOfEveryScrapedSeries()
    {
        var chart = ChartRenderer.Render("""
            clusterName: eu-west-1
            serviceMonitor:
              enabled: true
            podMonitor:
              enabled: true
            """);
        foreach (var (kind, endpoints) in new[] { ("ServiceMonitor", "endpoints"), ("PodMonitor", "podMetricsEndpoints") })
        {
            var endpoint = chart.OfKind(kind).Single().Map("spec").List(endpoints).Maps().Single();
            var relabel = endpoint.List("relabelings").Maps().Single();
            Assert.Equal(("replace", "cluster", "eu-west-1"), (relabel.Str("action"), relabel.Str("targetLabel"), relabel.Str("replacement")));
        }
        var plain = ChartRenderer.Render("serviceMonitor:\n  enabled: true");
        Assert.False(plain.OfKind("ServiceMonitor").Single().Map("spec").List("endpoints").Maps().Single().ContainsKey("relabelings"));
    }

    [Fact]
    public void TheDashboardSelectsClustersInEveryQuery()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(ChartRenderer.ChartDir, "dashboards", "karpetrack.json")));
        var variables = doc.RootElement.GetProperty("templating").GetProperty("list").EnumerateArray().ToList();
        var cluster = variables.Single(v => v.GetProperty("name").GetString() == "cluster");
        Assert.Equal("label_values(karpetrack_build_info, cluster)", cluster.GetProperty("definition").GetString());
        Assert.True(cluster.GetProperty("includeAll").GetBoolean());
        // "All" must also match series without the label (a single cluster without external labels).
        Assert.Equal(".*", cluster.GetProperty("allValue").GetString());
        var exprs = new List<string>();
        void Walk(JsonElement e)
        {
            if (e.ValueKind == JsonValueKind.Object)
                foreach (var p in e.EnumerateObject())
                    if (p.Name == "expr") exprs.Add(p.Value.GetString()!); else Walk(p.Value);
            else if (e.ValueKind == JsonValueKind.Array)
                foreach (var x in e.EnumerateArray()) Walk(x);
        }
        Walk(doc.RootElement.GetProperty("panels"));
        Assert.True(exprs.Count > 40);
        foreach (var expr in exprs)
            foreach (Match selector in Regex.Matches(expr, @"karpetrack_[a-z_]+(\{[^}]*\})?"))
                Assert.Contains("cluster=~\"$cluster\"", selector.Value);
        Assert.Contains(exprs, e => e.StartsWith("sum by (cluster) (karpetrack_cluster_cost_dollars_per_hour", StringComparison.Ordinal));
    }

    [Fact]
    public void EveryAlertAggregationKeepsTheClusterLabel()
    {
        var rules = File.ReadAllText(Path.Combine(RepoRoot.Path, "deploy", "prometheus", "karpetrack-alerts.yaml"));
        var exprs = ExprLine().Matches(rules).Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(8, exprs.Count);
        foreach (var expr in exprs)
        {
            // An aggregation without `by (… cluster …)`, or a match on() without it, would merge clusters.
            Assert.DoesNotMatch(@"\b(sum|max|min|avg|count)\s*\(", expr);
            foreach (Match by in Regex.Matches(expr, @"\b(?:by|on)\s*\(([^)]*)\)"))
                Assert.Contains("cluster", by.Groups[1].Value.Split(',', StringSplitOptions.TrimEntries));
        }
    }

    [GeneratedRegex(@"^\s+expr: (.*)$", RegexOptions.Multiline)]
    private static partial Regex ExprLine();
}
