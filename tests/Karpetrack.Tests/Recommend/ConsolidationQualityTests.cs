namespace Karpetrack.Tests.Recommend;

/// <summary>Issue 17, goal 3: where consolidation sends pods decides how many nodes it can remove.</summary>
public class ConsolidationQualityTests
{
    private static readonly Dictionary<string, string> Dnd = new(Scenario.DoNotDisrupt);

    [Fact]
    public void PodsGoToNodesThatStayBeforeNodesThatCouldBeRemoved()
    {
        // "kept" may not be disrupted, so it is paid for whatever the plan. Filling the fullest node first sent a's pod to
        // c, which then had to stay as a receiver; sent to kept, both a and c go.
        var s = new Scenario()
            .Node("kept", "gp.vs1.large-iad", annotations: Dnd).Node("a", "gp.vs1.large-iad").Node("c", "gp.vs1.large-iad")
            .Pod("k1", "kept", "1", "2Gi").Pod("a1", "a", "500m", "1Gi").Pod("c1", "c", "1500m", "2Gi");
        var plan = s.Run();
        var removed = plan.Recommendations.Where(r => r.Type == RecommendationType.Consolidate).SelectMany(r => r.Nodes).Order().ToList();
        Assert.Equal(["a", "c"], removed);
        Assert.All(plan.Recommendations.SelectMany(r => r.Moves), m => Assert.Equal("kept", m.To));
    }
}
