using System.Globalization;

namespace Karpetrack;

public enum ActuationMode { Off, DryRun, Approve, Auto }

public enum ActionKind { CreatePool, WaitReady, Cordon, Drain, DeletePool }

/// <summary>One step of carrying a recommendation out, as a plain value: logged, explained and checked before anything runs.</summary>
public sealed record ActionStep(ActionKind Kind, string Target, string Detail)
{
    public string TypeLabel => LabelOf(Kind);

    public static string LabelOf(ActionKind kind) => kind switch
    {
        ActionKind.CreatePool => "create_pool",
        ActionKind.WaitReady => "wait_ready",
        ActionKind.Cordon => "cordon",
        ActionKind.Drain => "drain",
        _ => "delete_pool",
    };

    public static readonly string[] TypeLabels = Enum.GetValues<ActionKind>().Select(LabelOf).ToArray();
}

/// <summary>
/// What carrying one recommendation out takes. Advisory when it touches a node Karpetrack did not
/// provision (only its own pools are ever cordoned, drained or removed); refused when a safety
/// check fails at the moment of acting.
/// </summary>
public sealed record ActionPlan(string RecommendationId, RecommendationType Type, IReadOnlyList<ActionStep> Steps, string? Advisory)
{
    public bool IsAdvisory => Advisory is not null;
}

/// <summary>
/// The Spot bid ladder as last observed (2026-08): at least $0.01, whole cents; steps of 0.01 below
/// 0.04, 0.02 below 0.10, 0.03 below 0.20 and 0.05 from there (0.01 … 0.04, 0.06, 0.08, 0.10, 0.13,
/// 0.16, 0.19, 0.22, 0.27 …). The rule has changed several times, so a rejection stating the
/// required minimum still wins when the actuator acts.
/// </summary>
public static class BidLadder
{
    public const decimal Minimum = 0.01m;

    private static decimal Step(decimal v) => v < 0.04m ? 0.01m : v < 0.10m ? 0.02m : v < 0.20m ? 0.03m : 0.05m;

    /// <summary>The smallest rung at or above <paramref name="price"/>.</summary>
    public static decimal RoundUp(decimal price)
    {
        decimal v = Minimum;
        while (v < price) v += Step(v);
        return v;
    }

    public static bool IsOnLadder(decimal bid) => bid >= Minimum && RoundUp(bid) == bid;
}

public sealed record BidPolicy
{
    /// <summary>Which feed percentile the bid must reach: p20, p50, p80, or market.</summary>
    public string Percentile { get; init; } = "p50";
    public decimal Margin { get; init; } = 1.05m;
    public decimal? Cap { get; init; }

    /// <summary>max(market, minimum bid, percentile) × margin, rounded up onto the ladder; null when over the cap.</summary>
    public decimal? Bid(ClassPrices p)
    {
        decimal target = Math.Max(p.Market, p.MinBid ?? 0);
        var pct = Percentile switch { "p20" => p.P20, "p80" => p.P80, "market" => null, _ => p.P50 };
        if (pct is { } x) target = Math.Max(target, x);
        var bid = BidLadder.RoundUp(target * Margin);
        return Cap is { } cap && bid > cap ? null : bid;
    }
}

/// <summary>A daily window (UTC) in which disruptive actions may start; an end before the start wraps past midnight.</summary>
public sealed record MaintenanceWindow(TimeOnly Start, TimeOnly End)
{
    public bool Contains(DateTimeOffset t)
    {
        var x = TimeOnly.FromTimeSpan(t.UtcDateTime.TimeOfDay);
        return Start <= End ? x >= Start && x < End : x >= Start || x < End;
    }

    public static MaintenanceWindow Parse(string s, string flag)
    {
        var parts = s.Split('-', StringSplitOptions.TrimEntries);
        if (parts.Length == 2
            && TimeOnly.TryParseExact(parts[0], "HH:mm", CultureInfo.InvariantCulture, DateTimeStyles.None, out var a)
            && TimeOnly.TryParseExact(parts[1], "HH:mm", CultureInfo.InvariantCulture, DateTimeStyles.None, out var b)
            && a != b)
            return new MaintenanceWindow(a, b);
        throw new OptionsException($"{flag}: \"{s}\" is not a daily UTC window like 01:00-05:00");
    }

    public override string ToString() => $"{Start:HH\\:mm}-{End:HH\\:mm} UTC";
}

public sealed record ActuationOptions
{
    public ActuationMode Mode { get; init; } = ActuationMode.Off;
    public BidPolicy Bids { get; init; } = new();
    /// <summary>The cloudspace new pools join; required to act.</summary>
    public string Cloudspace { get; init; } = "";
    public int MaxDisruptedNodes { get; init; } = 1;
    public decimal MaxDisruptedPercentPerHour { get; init; } = 10;
    /// <summary>No node is disrupted this soon after a scale-up, nor a node younger than this.</summary>
    public TimeSpan ScaleUpCooldown { get; init; } = TimeSpan.FromMinutes(2);
    /// <summary>Spot nodes take 8–45 min to join; past this the pool is deleted and the failure reported.</summary>
    public TimeSpan ProvisioningTimeout { get; init; } = TimeSpan.FromMinutes(60);
    /// <summary>A drain not finished by then is rolled back (uncordoned).</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromMinutes(15);
    /// <summary>Cap on a pod's terminationGracePeriodSeconds when it is evicted.</summary>
    public TimeSpan MaxGracePeriod { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary>A plan older than this is not acted on (the recommender has stopped, or is stuck).</summary>
    public TimeSpan MaxPlanAge { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// How long a synced cache may go without an open watch or a completed list before nothing is acted on (refusal
    /// caches_stale): longer than the reflector's back-off after a dropped watch, short enough that a frozen cache
    /// never drives a cordon or a delete.
    /// </summary>
    public static readonly TimeSpan CacheOutOfTouchLimit = TimeSpan.FromMinutes(2);
    public MaintenanceWindow? Window { get; init; }
    public string? ApproveTokenFile { get; init; }
    /// <summary>A recommendation that failed (or whose pods are still pending after it succeeded) is tried again after this.</summary>
    public TimeSpan RetryAfter { get; init; } = TimeSpan.FromMinutes(10);
    /// <summary>How often in-flight actions are advanced.</summary>
    public TimeSpan Tick { get; init; } = TimeSpan.FromSeconds(2);
    /// <summary>How often Karpetrack's pools are listed (pre-empted pools deleted, pools from before a restart adopted).</summary>
    public TimeSpan PoolSweep { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Namespace of the Kubernetes Events the actuator writes.</summary>
    public string EventNamespace { get; init; } = "default";
    /// <summary>
    /// The --node-selector the node cache is filtered by (null: none). A node it does not match never shows in the
    /// snapshot, so the actuator never waits for the snapshot to show such a node.
    /// </summary>
    public string? NodeSelector { get; init; }
    /// <summary>Pool policy: managed capacity limits checked before every pool create, and the custom labels and taints of new pools.</summary>
    public PoolPolicy Pools { get; init; } = PoolPolicy.None;
}

public enum ApprovalOutcome { Approved, NotApproveMode, NotFound, Advisory }
