namespace Karpetrack;

/// <summary>
/// Single-node consolidation, empty nodes included. Which candidates? The removal candidates in rank order (empty
/// ones first), but those receiving pods of a node already removed. What command? Delete the node when each of its
/// pods fits on the room left on the other open nodes, first fit, fullest first; else keep it with a blocker naming
/// the pods that fit nowhere.
/// </summary>
internal sealed class SingleNodeConsolidation(PlanState state)
{
    private readonly Destinations destinations = new(state.Room, state.Resources, state.IsCandidate);

    public IEnumerable<Candidate> Candidates()
    {
        foreach (var c in state.Candidates)
        {
            state.Tick();
            if (!state.Receives(c.Node.Name)) yield return c;
        }
    }

    public Decision Decide(Candidate c)
    {
        var (node, movable, price) = c;
        var placement = destinations.TryPlace(movable, node.Name);
        if (placement.Unfit is { } unfit) return new Keep(node.Name, new Blocker(BlockerReasons.PodsDoNotFit, unfit, []));
        var type = movable.Length == 0 ? RecommendationType.DeleteEmpty : RecommendationType.Consolidate;
        var reasons = new List<string>
        {
            movable.Length == 0
                ? $"{node.Name} runs no pods but DaemonSet and mirror pods; it costs {price:0.###} $/h"
                : $"the {movable.Length} pods of {node.Name} fit on the remaining nodes; removing it saves {price:0.###} $/h",
        };
        var rec = Recommendations.Build(type, [node.Name], [], placement.Moves, [], new Costs(price, 0, 0), state.Budgets.Disruption(movable), reasons);
        destinations.Kept(placement);
        return new Command(rec, placement.Claims);
    }
}
