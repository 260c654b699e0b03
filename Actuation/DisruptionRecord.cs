using System.Globalization;

namespace Karpetrack;

/// <summary>
/// The value of the node annotation karpetrack.io/disruption: which recommendation disrupts the node, the step it was in,
/// the operation's type and the saving it expects ("rep-0123456789ab;step=drain;op=replace;saving=0.0123"), so that a
/// fresh process resumes the operation as it was instead of guessing. Read tolerantly: a value with the recommendation
/// only (an earlier release), with a step but no type or saving (the release before this one), with keys this release
/// does not know, or with a step it does not know, is still recognised as Karpetrack's disruption (with what it does
/// know). A value that names a key this release knows with a value it cannot read (an unknown operation type, a saving
/// that is not a number or out of range), repeats a key, or has a part that is not key=value, is malformed:
/// <see cref="TryParse"/> says why, and the node is treated as an earlier release's (the recommendation only, no step).
/// </summary>
public readonly record struct DisruptionRecord(string RecommendationId, OperationStep? Step, RecommendationType? Type = null, decimal? Saving = null)
{
    /// <summary>No saving of a single operation comes near this ($/h); anything larger is a corrupted value.</summary>
    public const decimal MaxSaving = 1_000_000m;

    /// <summary>The record, or for a malformed value the recommendation (everything before the first ';') and nothing else.</summary>
    public static DisruptionRecord Parse(string value) => TryParse(value, out var record, out _) ? record : record;

    /// <summary>False when the value is malformed (see the type's summary); <paramref name="record"/> is then what an earlier release would have read.</summary>
    public static bool TryParse(string value, out DisruptionRecord record, out string? error)
    {
        var parts = value.Split(';');
        var id = parts[0].Trim();
        record = new(id, null);
        error = null;
        if (id.Length == 0) return Fail("no recommendation before the first ';'", out error);
        OperationStep? step = null;
        RecommendationType? type = null;
        decimal? saving = null;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var part in parts.Skip(1))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0) return Fail($"\"{part}\" is not key=value", out error);
            var key = part[..eq].Trim();
            var v = part[(eq + 1)..].Trim();
            if (!seen.Add(key)) return Fail($"{key} is given twice", out error);
            switch (key)
            {
                case "step":
                    // A step a later release records is not known here: recognised, with no step.
                    step = v == "drain" ? OperationStep.Drain : null;
                    break;
                case "op":
                    type = v switch
                    {
                        "replace" => RecommendationType.Replace,
                        "consolidate" => RecommendationType.Consolidate,
                        "delete-empty" => RecommendationType.DeleteEmpty,
                        _ => null,
                    };
                    if (type is null) return Fail($"op={v} is not replace, consolidate or delete-empty", out error);
                    break;
                case "saving":
                    if (!decimal.TryParse(v, NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var s)
                        || Math.Abs(s) > MaxSaving)
                        return Fail($"saving={v} is not a number of $/h within ±{MaxSaving.ToString(CultureInfo.InvariantCulture)}", out error);
                    saving = s;
                    break;
                default:
                    break;   // a key of a later release
            }
        }
        record = new(id, step, type, saving);
        return true;
    }

    private static bool Fail(string why, out string error)
    {
        error = why;
        return false;
    }

    public static string OpName(RecommendationType type) => type switch
    {
        RecommendationType.Replace => "replace",
        RecommendationType.Consolidate => "consolidate",
        RecommendationType.DeleteEmpty => "delete-empty",
        _ => throw new InvalidOperationException($"a {type} operation never cordons a node"),
    };

    public override string ToString()
    {
        var s = Step switch
        {
            OperationStep.Drain => RecommendationId + ";step=drain",
            null => RecommendationId,
            var other => throw new InvalidOperationException($"the step {other} is not recorded on a node"),
        };
        if (Type is { } t) s += ";op=" + OpName(t);
        if (Saving is { } v) s += ";saving=" + v.ToString("0.######", CultureInfo.InvariantCulture);
        return s;
    }
}
