using Microsoft.Extensions.Logging.Abstractions;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Tests.Api;

/// <summary>GetSummary's plan fields: unset (plan_ready false) before the first plan, the plan's cost outlook after it.</summary>
public class SummaryTests
{
    [Fact]
    public void BeforeTheFirstPlanTheSummarySaysSoAndCarriesNoCostOutlook()
    {
        var s = new Scenario().Node("a", "gp.vs1.large-iad").Node("b", "gp.vs1.large-iad").Pod("p", "a", "500m", "1Gi").Pod("q", "b", "500m", "1Gi");
        var status = new ReflectorStatus("nodes");
        status.MarkSynced(null, DateTimeOffset.UtcNow);
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: Scenario.Book);
        var options = new RecommenderOptions { Region = "us-east-iad-1" };
        var loop = new RecommenderLoop(new(s.Model, prices, [status]), new(() => options, TimeSpan.Zero), NullLogger.Instance);
        var api = new KarpetrackApi(s.Model, prices, loop, [status], () => options);

        var before = api.GetSummary();
        Assert.False(before.PlanReady);
        Assert.Null(before.PlanComputedAt);
        Assert.Null(before.CostAfterRecommendationsPerHour);
        Assert.Null(before.CostLowerBoundPerHour);
        Assert.Null(before.CostLowerBoundExcludedPods);
        // As /v1/summary formats it (defaults included): the outlook is absent, not 0.
        var formatter = new Google.Protobuf.JsonFormatter(Google.Protobuf.JsonFormatter.Settings.Default.WithFormatDefaultValues(true));
        var beforeJson = formatter.Format(before);
        Assert.DoesNotContain("costLowerBoundPerHour\": 0", beforeJson);
        Assert.DoesNotContain("costAfterRecommendationsPerHour\": 0", beforeJson);
        Assert.Contains("\"planReady\": false", beforeJson);

        var plan = loop.RunOnce();
        var after = api.GetSummary();
        Assert.True(after.PlanReady);
        var price = (double)Scenario.Book.NodePrice("gp.vs1.large-iad", "spot")!.Value;
        Assert.Equal(2 * price, after.CostPerHour, 9);
        // One of the two half-empty nodes goes: after the recommendations one node is left, and no hosting is cheaper than nothing.
        Assert.Equal(after.CostPerHour - after.PotentialSavingsPerHour, after.CostAfterRecommendationsPerHour!.Value, 9);
        Assert.Equal((double)plan.Costs!.AfterRecommendationsPerHour, after.CostAfterRecommendationsPerHour);
        Assert.Equal((double)plan.Costs.LowerBoundPerHour, after.CostLowerBoundPerHour);
        Assert.InRange(after.CostLowerBoundPerHour!.Value, 1e-9, after.CostAfterRecommendationsPerHour.Value);
        Assert.Equal(0, after.CostLowerBoundExcludedPods);
        var json = formatter.Format(after);
        Assert.Contains($"\"costLowerBoundPerHour\": {after.CostLowerBoundPerHour}", json);
        Assert.Contains("\"costAfterRecommendationsPerHour\": ", json);
        Assert.Contains("\"costLowerBoundExcludedPods\": 0", json);
        Assert.Contains("\"planReady\": true", json);
    }
}
