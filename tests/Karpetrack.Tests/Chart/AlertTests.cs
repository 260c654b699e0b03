using System.Diagnostics;
using System.Text.Json;

namespace Karpetrack.Tests.Chart;

public class AlertTests
{
    private static readonly string RulesDir = Path.Combine(RepoRoot.Path, "deploy", "prometheus");
    private const string RulesFile = "karpetrack-alerts.yaml";

    private static readonly string[] Alerts =
    [
        "KarpetrackSavingsOpportunity", "KarpetrackPendingPodsUnplanned", "KarpetrackPriceBookStale", "KarpetrackCacheStale",
        "KarpetrackActuationFailing", "KarpetrackSpotApiCircuitOpen", "KarpetrackLowBinpacking", "KarpetrackCostFarAboveLowerBound",
    ];

    private static (int Code, string Output) Promtool(params string[] args)
    {
        var psi = new ProcessStartInfo("promtool") { WorkingDirectory = RulesDir, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception) { throw new Xunit.Sdk.XunitException("promtool is not installed; `make test` installs it (apt package prometheus)"); }
        using (p)
        {
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(120_000)) { p.Kill(); throw new Xunit.Sdk.XunitException("promtool timed out"); }
            return (p.ExitCode, stdout.Result + stderr.Result);
        }
    }

    private static List<Dictionary<string, object?>> FileRules() =>
        ((Dictionary<string, object?>)Yaml.Parse(File.ReadAllText(Path.Combine(RulesDir, RulesFile)))!).List("groups").Maps().ToList();

    [Fact]
    public void PromtoolAcceptsAndUnitTestsEveryRule()
    {
        var check = Promtool("check", "rules", RulesFile);
        Assert.True(check.Code == 0, check.Output);
        var test = Promtool("test", "rules", "karpetrack-alerts.test.yaml");
        Assert.True(test.Code == 0, test.Output);

        // Every alert is tested both firing and quiet.
        var tests = (Dictionary<string, object?>)Yaml.Parse(File.ReadAllText(Path.Combine(RulesDir, "karpetrack-alerts.test.yaml")))!;
        var cases = tests.List("tests").Maps().SelectMany(t => t.List("alert_rule_test").Maps()).ToList();
        foreach (var alert in Alerts)
        {
            Assert.Contains(cases, c => c.Str("alertname") == alert && c.List("exp_alerts").Count > 0);
            Assert.Contains(cases, c => c.Str("alertname") == alert && c.List("exp_alerts").Count == 0);
        }
    }

    [Fact]
    public void RulesAreTheOnesTheIssueNamesWithSeverityAndText()
    {
        var rules = FileRules().SelectMany(g => g.List("rules").Maps()).ToList();
        Assert.Equal(Alerts, rules.Select(r => r.Str("alert")));
        foreach (var r in rules)
        {
            Assert.Contains(r.Map("labels").Str("severity"), new[] { "info", "warning", "critical" });
            Assert.False(string.IsNullOrWhiteSpace(r.Map("annotations").Str("summary")));
            Assert.False(string.IsNullOrWhiteSpace(r.Map("annotations").Str("description")));
        }
    }

    [Fact]
    public void RulesQueryOnlyListedMetrics()
    {
        var names = MetricNames.Load().All;
        var used = FileRules().SelectMany(g => g.List("rules").Maps()).SelectMany(r => MetricNames.InQuery(r.Str("expr")!)).ToHashSet();
        var unlisted = used.Where(u => !names.Contains(u)).ToList();
        Assert.Empty(unlisted);
    }

    [Fact]
    public void ChartPrometheusRuleHasTheSameRules()
    {
        var chart = ChartRenderer.Render("prometheusRule:\n  enabled: true");
        var rendered = chart.OfKind("PrometheusRule").Single().Map("spec").List("groups");
        Assert.Equal(JsonSerializer.Serialize(FileRules()), JsonSerializer.Serialize(rendered));

        // The threshold value reaches the expression.
        var tuned = ChartRenderer.Render("prometheusRule:\n  enabled: true\n  savingsThresholdDollarsPerHour: 2.5");
        var expr = tuned.OfKind("PrometheusRule").Single().Map("spec").List("groups").Maps().Single().List("rules").Maps().First().Str("expr");
        Assert.Equal("sum by (cluster) (karpetrack_recommendation_savings_dollars_per_hour) > 2.5", expr);
    }
}
