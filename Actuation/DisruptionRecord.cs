namespace Karpetrack;

/// <summary>
/// The value of the node annotation karpetrack.io/disruption: which recommendation disrupts the node and, since the
/// step is recorded, the step it was in ("con-0123456789ab;step=drain"). A value without a step (written by an earlier
/// release) or with a step this release does not know is still recognised as Karpetrack's disruption, with no step.
/// </summary>
public readonly record struct DisruptionRecord(string RecommendationId, OperationStep? Step)
{
    private const string StepKey = ";step=";

    public static DisruptionRecord Parse(string value)
    {
        int i = value.IndexOf(StepKey, StringComparison.Ordinal);
        if (i < 0) return new(value, null);
        OperationStep? step = value[(i + StepKey.Length)..] switch
        {
            "drain" => OperationStep.Drain,
            _ => null,
        };
        return new(value[..i], step);
    }

    public override string ToString() => Step switch
    {
        OperationStep.Drain => RecommendationId + StepKey + "drain",
        null => RecommendationId,
        var s => throw new InvalidOperationException($"the step {s} is not recorded on a node"),
    };
}
