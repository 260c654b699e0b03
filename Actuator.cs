using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

public enum ActuationMode { Off, DryRun, Approve, Auto }

public enum ActionKind { CreatePool, WaitReady, Cordon, Drain, DeletePool }

/// <summary>One step of carrying a recommendation out, as a plain value: logged, explained and checked before anything runs.</summary>
public sealed record ActionStep(ActionKind Kind, string Target, string Detail)
{
    public string TypeLabel => Kind switch
    {
        ActionKind.CreatePool => "create_pool",
        ActionKind.WaitReady => "wait_ready",
        ActionKind.Cordon => "cordon",
        ActionKind.Drain => "drain",
        _ => "delete_pool",
    };

    public static readonly string[] TypeLabels = ["create_pool", "wait_ready", "cordon", "drain", "delete_pool"];
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

/// <summary>
/// Turns recommendations into action plans and, for now, runs them in dry-run only: every would-be
/// step is logged once and counted in karpetrack_actions_total{result="dry_run"}. Execution through
/// the Spot API (pools, drains with the Eviction API, leader election) is the next step of the
/// actuation work; modes approve and auto are refused at start until then.
/// </summary>
public sealed class Actuator
{
    public const string ManagedLabel = "karpetrack.io/managed";

    private readonly ActuationMode mode;
    private readonly ClusterModel model;
    private readonly PriceFeed prices;
    private readonly IReadOnlyList<ReflectorStatus> caches;
    private readonly BidPolicy bids;
    private readonly ILogger log;
    private readonly object gate = new();
    private readonly Dictionary<(string Type, string Result), long> counts = [];
    private readonly Dictionary<string, string> states = new(StringComparer.Ordinal);   // recommendation id → what the actuator did with it

    public Actuator(ActuationMode mode, ClusterModel model, PriceFeed prices, IReadOnlyList<ReflectorStatus> caches, BidPolicy bids, ILogger log)
    {
        this.mode = mode;
        this.model = model;
        this.prices = prices;
        this.caches = caches;
        this.bids = bids;
        this.log = log;
    }

    public ActuationMode Mode => mode;

    public static readonly string[] Results = ["dry_run", "succeeded", "failed", "refused"];

    public IReadOnlyDictionary<(string Type, string Result), long> Counts { get { lock (gate) return new Dictionary<(string, string), long>(counts); } }

    /// <summary>What the actuator did with a recommendation ("dry_run: …", "advisory: …", "refused: …"), if anything.</summary>
    public string? StateOf(string recommendationId) { lock (gate) return states.GetValueOrDefault(recommendationId); }

    public static string ModeLabel(ActuationMode m) => m switch
    {
        ActuationMode.DryRun => "dry-run",
        ActuationMode.Approve => "approve",
        ActuationMode.Auto => "auto",
        _ => "off",
    };

    public static ActuationMode ParseMode(string s) => s.ToLowerInvariant() switch
    {
        "off" => ActuationMode.Off,
        "dry-run" or "dryrun" => ActuationMode.DryRun,
        "approve" => ActuationMode.Approve,
        "auto" => ActuationMode.Auto,
        _ => throw new OptionsException($"--actuation: \"{s}\" is not one of off, dry-run, approve, auto"),
    };

    /// <summary>Deterministic lowercase UUID for the n-th pool of a recommendation: a crash and a retry name the same pool.</summary>
    public static string PoolName(string recommendationId, int index)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes($"karpetrack/{recommendationId}/{index}"));
        hash[6] = (byte)((hash[6] & 0x0F) | 0x50);   // version 5 style: name-based
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);   // RFC 4122 variant
        return new Guid(hash.AsSpan(0, 16), bigEndian: true).ToString();
    }

    /// <summary>The steps a recommendation needs, or an advisory reason when it touches nodes Karpetrack does not own.</summary>
    public ActionPlan PlanFor(Recommendation r, ClusterSnapshot snap, PriceBook book)
    {
        var nodes = snap.Nodes.ToDictionary(n => n.Name, StringComparer.Ordinal);
        var unmanaged = r.Nodes.Where(n => !nodes.TryGetValue(n, out var v) || v.Labels.GetValueOrDefault(ManagedLabel) != "true" || v.Pool.Length == 0).ToList();
        string? advisory = unmanaged.Count > 0
            ? $"advisory only: {string.Join(", ", unmanaged)} {(unmanaged.Count == 1 ? "is" : "are")} not in a pool Karpetrack created"
            : null;
        var steps = new List<ActionStep>();
        int pool = 0;
        foreach (var n in r.NewNodes)
        {
            for (int i = 0; i < n.Count; i++)
            {
                string detail = book.Classes.TryGetValue(n.ServerClass, out var pc) && bids.Bid(pc.Prices) is { } bid
                    ? $"{n.ServerClass}, desired 1, bid {bid:0.00#}"
                    : $"{n.ServerClass}, desired 1, no bid within the policy";
                steps.Add(new ActionStep(ActionKind.CreatePool, PoolName(r.Id, pool++), detail));
            }
        }
        if (r.NewNodes.Count > 0 && r.Nodes.Count > 0) steps.Add(new ActionStep(ActionKind.WaitReady, r.Id, "new nodes Ready before any drain"));
        foreach (var node in r.Nodes)
        {
            steps.Add(new ActionStep(ActionKind.Cordon, node, "spec.unschedulable=true"));
            int evictions = r.Moves.Count(m => m.From == node);
            if (evictions > 0) steps.Add(new ActionStep(ActionKind.Drain, node, $"evict {evictions} pods with the Eviction API"));
            string poolName = nodes.TryGetValue(node, out var v) ? v.Pool : "";
            steps.Add(new ActionStep(ActionKind.DeletePool, poolName.Length > 0 ? poolName : node, $"the pool of {node}"));
        }
        return new ActionPlan(r.Id, r.Type, steps, advisory);
    }

    /// <summary>Safety checks that hold for every action, checked right before acting.</summary>
    public string? Refusal()
    {
        if (caches.Any(c => !c.Synced)) return "the caches have not synced";
        if (prices.Stale) return "the price book is stale";
        return null;
    }

    /// <summary>Handles a new plan: each recommendation seen for the first time is planned and, in dry-run, reported.</summary>
    public void OnPlan(Plan plan)
    {
        if (mode == ActuationMode.Off) return;
        var snap = model.Snapshot();
        var book = prices.Current;
        foreach (var r in plan.Recommendations)
        {
            // A refusal is retried on the next plan (the book may be fresh by then); anything else is handled once.
            lock (gate) if (states.TryGetValue(r.Id, out var seen) && !seen.StartsWith("refused", StringComparison.Ordinal)) continue;
            var actions = PlanFor(r, snap, book);
            string state;
            if (actions.IsAdvisory)
            {
                state = actions.Advisory!;
                log.LogInformation("actuation: {Id} ({Type}) stays advisory: {Why}", r.Id, r.Type, actions.Advisory);
            }
            else if (Refusal() is { } why)
            {
                state = "refused: " + why;
                foreach (var step in actions.Steps) Count(step.TypeLabel, "refused");
                log.LogWarning("actuation: {Id} ({Type}) not acted on: {Why}", r.Id, r.Type, why);
            }
            else
            {
                state = $"dry_run: would {string.Join("; ", actions.Steps.Select(s => $"{s.TypeLabel} {s.Target} ({s.Detail})"))}";
                foreach (var step in actions.Steps)
                {
                    Count(step.TypeLabel, "dry_run");
                    log.LogInformation("actuation dry-run: {Id} {Action} {Target}: {Detail}", r.Id, step.TypeLabel, step.Target, step.Detail);
                }
            }
            lock (gate) states[r.Id] = state;
        }
        // Forget recommendations that left the plan, so the state map stays bounded.
        var current = plan.Recommendations.Select(r => r.Id).ToHashSet(StringComparer.Ordinal);
        lock (gate) foreach (var id in states.Keys.Where(k => !current.Contains(k)).ToList()) states.Remove(id);
    }

    private void Count(string type, string result)
    {
        lock (gate) counts[(type, result)] = counts.GetValueOrDefault((type, result)) + 1;
    }
}
