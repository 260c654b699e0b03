using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>
/// Carries recommendations out. Off: nothing. Dry-run: every would-be step is logged once and
/// counted in karpetrack_actions_total{result="dry_run"}. Approve and auto: a loop (leader only)
/// advances one operation per recommendation through its steps (create pools → wait until their
/// nodes are Ready → cordon → drain with the Eviction API → delete the old pools), checking the
/// safety rules right before each disruptive step. In-flight state lives in the cluster (a node
/// annotation next to the cordon) and in pool labels, so a restarted Karpetrack adopts its pools
/// and rolls interrupted drains back instead of leaving nodes cordoned for good.
/// </summary>
public sealed partial class Actuator
{
    public const string ManagedLabel = "karpetrack.io/managed";
    public const string CategoryLabel = "karpetrack.io/category";
    public const string RecommendationLabel = "karpetrack.io/recommendation";
    /// <summary>Set with the cordon: which recommendation disrupts the node, and since when.</summary>
    public const string DisruptionAnnotation = "karpetrack.io/disruption";
    public const string DisruptionSinceAnnotation = "karpetrack.io/disruption-since";

    /// <summary>One recommendation being carried out. Mutated by the loop only, read under the gate.</summary>
    private sealed class Operation(Recommendation rec, DateTimeOffset started)
    {
        public Recommendation Rec { get; } = rec;
        /// <summary>Changed only through <see cref="MoveTo"/>, which allows the transitions <see cref="OperationSteps"/> lists.</summary>
        public OperationStep Stage { get; private set; } = OperationStep.Planned;
        public DateTimeOffset Started { get; set; } = started;
        public DateTimeOffset StageSince { get; set; } = started;
        /// <summary>New pools, in order, with their classes; Created counts those the Spot API accepted.</summary>
        public List<(string Pool, string ServerClass)> NewPools { get; } = [];
        public int Created { get; set; }
        /// <summary>Old node → its pool, read when the operation starts.</summary>
        public Dictionary<string, string> OldPools { get; } = new(StringComparer.Ordinal);
        public HashSet<string> Cordoned { get; } = new(StringComparer.Ordinal);
        public HashSet<string> Drained { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, DateTimeOffset> EvictAgainAt { get; } = new(StringComparer.Ordinal);
        /// <summary>Pods evicted, or found gone, by their last eviction: leaving, so the drain's state does not name them as waited for.</summary>
        public HashSet<string> Leaving { get; } = new(StringComparer.Ordinal);
        public string State { get; set; } = "in progress";
        /// <summary>Reconstructed from the cluster after a restart or a new leadership, not started by this process.</summary>
        public bool Adopted { get; init; }
        /// <summary>When the wait for new nodes last asked the unfiltered view (at most once per pool sweep).</summary>
        public DateTimeOffset? ViewAskedAt { get; set; }

        public void MoveTo(OperationStep next)
        {
            OperationSteps.Require(Stage, next);
            Stage = next;
        }

        public bool Ended => OperationSteps.IsTerminal(Stage);
    }

    private readonly ActuationOptions options;
    private readonly ClusterModel model;
    private readonly PriceFeed prices;
    private readonly IReadOnlyList<ReflectorStatus> caches;
    private readonly ILogger log;
    private readonly KubeClient? kube;
    private readonly SpotApiClient? spot;
    private readonly TimeProvider clock;
    private readonly Func<bool> isLeader;
    private readonly Func<RecommenderOptions> thresholds;
    /// <summary>--node-selector: the nodes the snapshot can show.</summary>
    private readonly LabelSelector nodeSelector;
    private readonly object gate = new();
    private readonly Dictionary<(string Type, string Result), Prometheus.Counter.Child> counts = [];
    private readonly Dictionary<string, string> states = new(StringComparer.Ordinal);   // recommendation id → what the actuator did with it
    private readonly Dictionary<string, Operation> ops = new(StringComparer.Ordinal);
    private readonly Dictionary<string, DateTimeOffset> approvals = new(StringComparer.Ordinal);
    private readonly List<DateTimeOffset> disruptions = [];                            // when each node disruption started (last hour)
    private readonly Dictionary<string, DateTimeOffset> ended = new(StringComparer.Ordinal);   // when an operation succeeded or failed
    private readonly LinkedList<ActuationRecord> recent = new();                                // the last operations that ended, newest first
    internal const int RecentLimit = 20;
    private readonly SemaphoreSlim wake = new(0);
    private Prometheus.Counter? refusalCounter;
    private readonly Dictionary<string, long> refusals = new(StringComparer.Ordinal);
    private Plan plan = Plan.Empty;
    private DateTimeOffset? planAt;
    private readonly Dictionary<string, DateTimeOffset> scaleUps = new(StringComparer.Ordinal);   // operation → its last scale-up
    private DateTimeOffset nextSweep;
    private bool recovered;
    private readonly Func<CancellationToken> leaseTerm;
    /// <summary>Plans received so far, and how many had been received when the recovery finished: only a later one is acted on.</summary>
    private long planSeq, recoveredAtSeq = long.MaxValue;
    /// <summary>The unfiltered view of Karpetrack's pools and nodes, read at most once per tick.</summary>
    private OwnedView? tickView;

    /// <param name="isLeader">Only the leader acts; every replica plans and serves. Always true without leader election.</param>
    /// <param name="thresholds">Replacement checks use the recommender's thresholds as they are now.</param>
    public Actuator(ActuationOptions options, ClusterModel model, PriceFeed prices, IReadOnlyList<ReflectorStatus> caches, ILogger log,
        KubeClient? kube = null, SpotApiClient? spot = null, TimeProvider? clock = null,
        Func<bool>? isLeader = null, Func<RecommenderOptions>? thresholds = null, Telemetry? telemetry = null,
        Func<CancellationToken>? leaseTerm = null)
    {
        if (options.Mode is ActuationMode.Approve or ActuationMode.Auto && (kube is null || spot is null || options.Cloudspace.Length == 0))
            throw new ArgumentException("acting needs the Kubernetes API, the Spot API and a cloudspace");
        this.options = options;
        this.model = model;
        this.prices = prices;
        this.caches = caches;
        this.log = log;
        this.kube = kube;
        this.spot = spot;
        this.clock = clock ?? TimeProvider.System;
        this.isLeader = isLeader ?? (() => true);
        this.thresholds = thresholds ?? (() => new RecommenderOptions());
        this.leaseTerm = leaseTerm ?? (() => CancellationToken.None);
        policy = new SafetyPolicy(options);
        nodeSelector = options.NodeSelector is { Length: > 0 } selector ? LabelSelector.Parse(selector) : LabelSelector.Everything;
        Publish(telemetry ?? new Telemetry());
    }

    private void Publish(Telemetry telemetry)
    {
        var mode = telemetry.Gauge("karpetrack_actuation_mode", "1 for the actuation mode in force (off, dry-run, approve, auto), 0 for the others.", "mode");
        foreach (var m in Enum.GetValues<ActuationMode>()) mode.WithLabels(ModeLabel(m)).Set(m == options.Mode ? 1 : 0);
        var actions = telemetry.Counter("karpetrack_actions_total",
            "Actions by type (create_pool, wait_ready, cordon, drain, delete_pool) and result (dry_run, succeeded, failed, refused).", "type", "result");
        foreach (var type in ActionStep.TypeLabels)
            foreach (var result in Results)
                counts[(type, result)] = actions.WithLabels(type, result);
        var inFlight = telemetry.Gauge("karpetrack_actions_in_flight", "Actions started and not yet finished, by type.", "type");
        refusalCounter = telemetry.Counter("karpetrack_actuation_refusals_total", "Actions the safety checks refused, by stable reason.", "reason");
        var leader = telemetry.Gauge("karpetrack_leader", "1 when this replica may act (it holds the lease, or leader election is off), 0 otherwise.");
        telemetry.OnScrape(() =>
        {
            var now = InFlightCounts;
            foreach (var type in ActionStep.TypeLabels) inFlight.WithLabels(type).Set(now.GetValueOrDefault(type));
            leader.Set(isLeader() ? 1 : 0);
        });
    }

    public ActuationMode Mode => options.Mode;

    /// <summary>The operations that ended most recently, newest first (at most <see cref="RecentLimit"/>).</summary>
    public IReadOnlyList<ActuationRecord> RecentActions() { lock (gate) return recent.ToList(); }

    /// <summary>Refusals so far by stable reason (karpetrack_actuation_refusals_total).</summary>
    public IReadOnlyDictionary<string, long> Refusals { get { lock (gate) return refusals.ToDictionary(); } }

    private void CountRefusal(Refusal why)
    {
        var reason = why.Label;
        lock (gate) refusals[reason] = refusals.GetValueOrDefault(reason) + 1;
        refusalCounter?.WithLabels(reason).Inc();
        log.LogInformation("actuation: refused ({Reason}): {Why}", reason, why.Message);
    }

    public static readonly string[] Results = ["dry_run", "succeeded", "failed", "refused"];

    /// <summary>Actions so far by type and result (pairs with none left out).</summary>
    public IReadOnlyDictionary<(string Type, string Result), long> Counts
    {
        get { lock (gate) return counts.Where(kv => kv.Value.Value > 0).ToDictionary(kv => kv.Key, kv => (long)kv.Value.Value); }
    }

    /// <summary>Operations now in each step, by action type.</summary>
    public IReadOnlyDictionary<string, int> InFlightCounts
    {
        get
        {
            lock (gate)
                return ops.Values.Where(o => !o.Ended)
                    .GroupBy(o => TypeOf(o.Stage)).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        }
    }

    /// <summary>What the actuator did with a recommendation ("dry_run: …", "advisory only: …", "refused: …", "in progress: …", "succeeded: …"), if anything.</summary>
    public string? StateOf(string recommendationId)
    {
        lock (gate) return ops.TryGetValue(recommendationId, out var op) ? op.State : states.GetValueOrDefault(recommendationId);
    }

    /// <summary>
    /// Nodes being provisioned for pending pods: their pools exist, their nodes have not joined the snapshot the
    /// recommender plans on. That includes the pools of a provision that ended on the unfiltered view while the
    /// snapshot has not shown their node yet (see <see cref="landing"/>): a lagging cache never makes pods bought for twice.
    /// </summary>
    public IReadOnlyList<InFlightNode> InFlight()
    {
        var joined = PoolsWithNodes(model.Snapshot());
        var now = clock.GetUtcNow();
        lock (gate)
        {
            PruneLanding(joined, now);
            return ops.Values.Where(o => o.Rec.Type == RecommendationType.Provision && o.Stage is OperationStep.CreatePools or OperationStep.WaitReady)
                .SelectMany(o => o.NewPools).Concat(landing.Select(kv => (Pool: kv.Key, kv.Value.ServerClass)))
                .Where(p => !joined.Contains(p.Pool)).DistinctBy(p => p.Pool)
                .Select(p => new InFlightNode(p.Pool, p.ServerClass)).ToList();
        }
    }

    /// <summary>
    /// Pools whose node is Ready on the unfiltered view (their provision ended, or a restart found them so) but not yet in
    /// the snapshot, as under a watch-error storm: they stay in <see cref="InFlight"/> until the snapshot shows their node,
    /// or until <see cref="Landing.Until"/> (--provisioning-timeout after the provision started), so a node that never shows
    /// cannot hold real provisions back for longer. A node --node-selector does not match never shows, and is never put here.
    /// </summary>
    private readonly Dictionary<string, Landing> landing = new(StringComparer.Ordinal);

    private readonly record struct Landing(string ServerClass, DateTimeOffset Until);

    /// <summary>Under the gate: the pools the snapshot shows now, and those past their time, leave <see cref="landing"/>.</summary>
    private void PruneLanding(HashSet<string> joined, DateTimeOffset now)
    {
        foreach (var pool in landing.Where(kv => joined.Contains(kv.Key) || now >= kv.Value.Until).Select(kv => kv.Key).ToList()) landing.Remove(pool);
    }

    /// <summary>
    /// A pool whose node the unfiltered view shows and the snapshot does not: it stays in flight until the snapshot shows
    /// it (or <paramref name="until"/>), unless no node of it matches --node-selector (the snapshot never will).
    /// </summary>
    private void Land(string pool, string serverClass, OwnedView owned, HashSet<string> joined, DateTimeOffset until)
    {
        if (joined.Contains(pool) || until <= clock.GetUtcNow()) return;
        if (!owned.NodesOf(pool).Any(n => nodeSelector.Matches(n.Labels ?? NoLabels))) return;
        lock (gate) landing[pool] = new Landing(serverClass, until);
    }

    private static readonly IReadOnlyDictionary<string, string> NoLabels = new Dictionary<string, string>(StringComparer.Ordinal);

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

    /// <summary>Constant-time comparison of an approval bearer token with the mounted one (hashes first, so lengths leak nothing).</summary>
    public static bool TokenMatches(string presented, string expected) =>
        expected.Length > 0 && CryptographicOperations.FixedTimeEquals(
            SHA256.HashData(Encoding.UTF8.GetBytes(presented)), SHA256.HashData(Encoding.UTF8.GetBytes(expected)));

    // ---- planning ------------------------------------------------------------------------------

    /// <summary>The steps a recommendation needs, or an advisory reason when it touches nodes Karpetrack does not own.</summary>
    public ActionPlan PlanFor(Recommendation r, ClusterSnapshot snap, PriceBook book) => PlanFor(r, NodeIndex.Of(snap), book);

    /// <summary>A snapshot's nodes by name and how many nodes each pool holds, built once per plan, not per recommendation.</summary>
    private sealed record NodeIndex(Dictionary<string, NodeView> Nodes, Dictionary<string, int> PoolSizes)
    {
        public static NodeIndex Of(ClusterSnapshot snap) => new(
            snap.Nodes.ToDictionary(n => n.Name, StringComparer.Ordinal),
            snap.Nodes.Where(n => n.Pool.Length > 0).GroupBy(n => n.Pool, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal));
    }

    private ActionPlan PlanFor(Recommendation r, NodeIndex index, PriceBook book)
    {
        var nodes = index.Nodes;
        var unmanaged = r.Nodes.Where(n => !nodes.TryGetValue(n, out var v) || !IsManaged(v)).ToList();
        // Deleting a pool removes all its nodes, and scaling one down lets Spot pick which node goes:
        // only a pool holding exactly this node can be removed exactly.
        var shared = r.Nodes.Except(unmanaged).Where(n => index.PoolSizes.GetValueOrDefault(nodes[n].Pool) > 1).ToList();
        string? advisory = unmanaged.Count > 0
            ? $"advisory only: {string.Join(", ", unmanaged)} {(unmanaged.Count == 1 ? "is" : "are")} not in a pool Karpetrack created"
            : shared.Count > 0
                ? $"advisory only: the pool of {string.Join(", ", shared)} holds other nodes too; Karpetrack removes only single-node pools"
                : null;
        var steps = new List<ActionStep>();
        int pool = 0;
        foreach (var n in r.NewNodes)
        {
            for (int i = 0; i < n.Count; i++)
            {
                string detail = book.Classes.TryGetValue(n.ServerClass, out var pc) && options.Bids.Bid(pc.Prices) is { } bid
                    ? $"{n.ServerClass}, desired 1, bid {bid:0.00#}"
                    : $"{n.ServerClass}, desired 1, no bid within the policy";
                steps.Add(new ActionStep(ActionKind.CreatePool, PoolName(r.Id, pool++), detail));
            }
        }
        if (r.NewNodes.Count > 0) steps.Add(new ActionStep(ActionKind.WaitReady, r.Id, r.Nodes.Count > 0 ? "new nodes Ready before any drain" : "new nodes Ready"));
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

    /// <summary>A node of a pool Karpetrack created (the managed label and a pool): the only nodes it acts on.</summary>
    internal static bool IsManaged(NodeView n) => n.Labels.GetValueOrDefault(ManagedLabel) == "true" && n.Pool.Length > 0;

    /// <summary>Safety checks that hold for every action (dry-run included), on the world as it is now.</summary>
    public Refusal? GlobalRefusal() => policy.Global(World(null, null));

    /// <summary>Handles a new plan: dry-run reports each recommendation seen for the first time; approve and auto hand it to the loop.</summary>
    public void OnPlan(Plan next)
    {
        if (options.Mode == ActuationMode.Off) return;
        lock (gate)
        {
            plan = next;
            planAt = clock.GetUtcNow();
            planSeq++;
        }
        if (options.Mode == ActuationMode.DryRun) DryRun(next);
        else
        {
            var index = NodeIndex.Of(model.Snapshot());
            var book = prices.Current;
            foreach (var r in next.Recommendations)
            {
                var actions = PlanFor(r, index, book);
                lock (gate)
                {
                    if (ops.ContainsKey(r.Id)) continue;
                    var seen = states.GetValueOrDefault(r.Id);
                    if (actions.IsAdvisory) states[r.Id] = actions.Advisory!;
                    // A recommendation that was advisory (its node not yet labelled as Karpetrack's, say) may be actionable now.
                    else if (seen is null || seen.StartsWith("advisory", StringComparison.Ordinal))
                    {
                        if (options.Mode == ActuationMode.Approve && !approvals.ContainsKey(r.Id)) states[r.Id] = "waiting for approval";
                        else states.Remove(r.Id);
                    }
                }
            }
            wake.Release();
        }
        Forget(next);
    }

    private void DryRun(Plan next)
    {
        var index = NodeIndex.Of(model.Snapshot());
        var book = prices.Current;
        foreach (var r in next.Recommendations)
        {
            // A refusal is retried on the next plan (the book may be fresh by then), and a recommendation that was waiting
            // is looked at again (its wait may be over); anything else is handled once.
            string? seen;
            lock (gate)
                if (states.TryGetValue(r.Id, out seen) && !seen.StartsWith("refused", StringComparison.Ordinal) && !seen.StartsWith(DryRunWaiting, StringComparison.Ordinal))
                    continue;
            var actions = PlanFor(r, index, book);
            string state;
            if (actions.IsAdvisory)
            {
                state = actions.Advisory!;
                log.LogInformation("actuation: {Id} ({Type}) stays advisory: {Why}", r.Id, r.Type, actions.Advisory);
            }
            else if (GlobalRefusal() is { } why)
            {
                state = "refused: " + why.Message;
                foreach (var step in actions.Steps) Count(step.TypeLabel, "refused");
                log.LogWarning("actuation: {Id} ({Type}) not acted on: {Why}", r.Id, r.Type, why);
            }
            else if (r.WaitingAt(clock.GetUtcNow()))
            {
                // Auto would not start it before its --consolidate-after wait is over: say so, and when, not what it would do.
                var until = r.ActionableAt!.Value.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
                state = r.Waiting is { Length: > 0 } waiting
                    ? $"dry_run: {waiting}; nothing would be done before then"
                    : $"dry_run: waiting until {until}; nothing would be done before then";
                if (state != seen) log.LogInformation("actuation dry-run: {Id} ({Type}) is waiting until {Until}: {Why}", r.Id, r.Type, until, r.Waiting);
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
    }

    /// <summary>How the dry-run state of a recommendation still in its --consolidate-after wait begins.</summary>
    private const string DryRunWaiting = "dry_run: waiting";

    /// <summary>Forget recommendations that left the plan (unless an operation still runs), so the maps stay bounded.</summary>
    private void Forget(Plan next)
    {
        var current = next.Recommendations.Select(r => r.Id).ToHashSet(StringComparer.Ordinal);
        lock (gate)
        {
            foreach (var id in states.Keys.Where(k => !current.Contains(k) && !ops.ContainsKey(k)).ToList()) { states.Remove(id); ended.Remove(id); }
            foreach (var id in approvals.Keys.Where(k => !current.Contains(k) && !ops.ContainsKey(k)).ToList()) approvals.Remove(id);
        }
    }

    /// <summary>Approves one recommendation of the current plan (mode approve): the loop carries it out once the safety checks pass.</summary>
    public (ApprovalOutcome Outcome, string State) Approve(string id)
    {
        if (options.Mode != ActuationMode.Approve) return (ApprovalOutcome.NotApproveMode, $"actuation is {ModeLabel(options.Mode)}, not approve");
        Recommendation? r;
        lock (gate) r = plan.Recommendations.FirstOrDefault(x => x.Id == id);
        if (r is null) return (ApprovalOutcome.NotFound, $"recommendation {id} is not in the current plan");
        var actions = PlanFor(r, model.Snapshot(), prices.Current);
        if (actions.IsAdvisory) return (ApprovalOutcome.Advisory, actions.Advisory!);
        lock (gate)
        {
            if (!ops.ContainsKey(id))
            {
                approvals[id] = clock.GetUtcNow();
                states[id] = "approved";
            }
        }
        log.LogInformation("actuation: {Id} ({Type}) approved", id, r.Type);
        wake.Release();
        return (ApprovalOutcome.Approved, StateOf(id) ?? "approved");
    }

    // ---- the loop ------------------------------------------------------------------------------

    /// <summary>Advances operations and starts new ones (approve and auto only), until cancelled.</summary>
    public async Task RunAsync(CancellationToken ct)
    {
        if (options.Mode is not (ActuationMode.Approve or ActuationMode.Auto)) return;
        bool wasLeader = false, looped = false;
        while (!ct.IsCancellationRequested)
        {
            if (looped) Interlocked.Increment(ref passes);   // the pass before this one is over (a tick, or a turn as a non-leader)
            looped = true;
            // The tick period runs on the actuator's clock (a test moves it by hand); a new plan or an approval wakes it early.
            using (var period = new CancellationTokenSource(options.Tick, clock))
            using (var wait = CancellationTokenSource.CreateLinkedTokenSource(ct, period.Token))
            {
                try { await wake.WaitAsync(wait.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) when (!ct.IsCancellationRequested) { }
                catch (OperationCanceledException) { return; }
            }
            bool leader = isLeader();
            if (!leader)
            {
                if (wasLeader) StepDown();
                wasLeader = false;
                continue;
            }
            wasLeader = true;
            // Fencing: the tick runs on the leadership term's token, cancelled when the lease is lost or
            // its renew deadline passes, so a long tick cannot write once another replica may lead.
            var term = leaseTerm();
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, term);
            try { await TickAsync(linked.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { return; }
            catch (OperationCanceledException) when (term.IsCancellationRequested)
            {
                StepDown();
                wasLeader = false;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                log.LogError(e, "actuation: tick failed; trying again");
            }
        }
    }

    private long passes;

    /// <summary>Passes of <see cref="RunAsync"/> finished so far (ticks, and turns as a non-leader): tests wait on it instead of sleeping.</summary>
    internal long Passes => Interlocked.Read(ref passes);

    /// <summary>Leadership lost: stop acting at once. The next leader adopts the pools and rolls interrupted drains back.</summary>
    private void StepDown()
    {
        lock (gate)
        {
            foreach (var op in ops.Values.Where(o => !o.Ended))
                states[op.Rec.Id] = "interrupted: leadership lost";
            ops.Clear();
            landing.Clear();   // the recovery of the next term finds these pools again
            recovered = false;
            recoveredAtSeq = long.MaxValue;
        }
        log.LogWarning("actuation: no longer the leader; stopped acting");
    }

    /// <summary>One pass: recovery after start or a new leadership, the pool sweep, every operation advanced, new ones started.</summary>
    public async Task TickAsync(CancellationToken ct)
    {
        if (caches.Any(c => !c.Synced)) return;
        ct.ThrowIfCancellationRequested();
        var now = clock.GetUtcNow();
        tickView = null;
        try
        {
            if (!recovered)
            {
                await RecoverAsync(ct).ConfigureAwait(false);
                recovered = true;
                // Plans computed before now did not know the pools just adopted: none of them is acted on.
                lock (gate) recoveredAtSeq = planSeq;
                nextSweep = now + options.PoolSweep;
            }
            else if (now >= nextSweep)
            {
                // Set first: a sweep that fails (transient or not) is tried again a sweep period later, and never keeps
                // the operations below from advancing.
                nextSweep = now + options.PoolSweep;
                await SweepAsync(ct).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (!ct.IsCancellationRequested && e is not (OutOfMemoryException or OperationCanceledException) && (recovered || IsTransient(e)))
        {
            // Nothing new starts before the recovery has run: it is what keeps pools from being bought twice.
            log.LogWarning("actuation: {What} will be retried: {Error}", recovered ? "the pool sweep" : "the recovery after start", e.Message);
            if (!recovered) return;
        }
        List<Operation> active;
        lock (gate) active = ops.Values.Where(o => !o.Ended).ToList();
        foreach (var op in active)
        {
            // One operation's unexpected error (a 403, a node deleted under a patch) never stops the others; its
            // step is tried again next tick and its own timeout still applies.
            try { await AdvanceAsync(op, ct).ConfigureAwait(false); }
            catch (Exception e) when (!ct.IsCancellationRequested && e is not (OutOfMemoryException or OperationCanceledException))
            {
                if (!op.Ended) Set(op, op.Stage, $"in progress: {TypeOf(op.Stage)} failed and will be retried: {e.Message}");
                log.LogError(e, "actuation: {Id} {Step} failed; retrying next tick", op.Rec.Id, TypeOf(op.Stage));
            }
        }
        lock (gate)
            foreach (var done in ops.Values.Where(o => o.Ended).ToList())
            {
                states[done.Rec.Id] = done.State;
                ended[done.Rec.Id] = now;
                recent.AddFirst(new ActuationRecord(done.Rec.Id, done.Rec.Type, done.State, now));
                if (recent.Count > RecentLimit) recent.RemoveLast();
                ops.Remove(done.Rec.Id);
            }
        await StartNewAsync(ct).ConfigureAwait(false);
    }

    private async Task StartNewAsync(CancellationToken ct)
    {
        Plan current;
        lock (gate)
        {
            if (planSeq <= recoveredAtSeq) return;   // a plan from before the recovery: wait for the next one
            current = plan;
        }
        var snap = model.Snapshot();
        var book = prices.Current;
        var index = NodeIndex.Of(snap);
        // A disruption check may scan the pods of a node: a bounded number per tick keeps a tick cheap
        // on a large cluster (the rest wait for the next tick, and most fail the budget check anyway).
        int disruptiveChecks = 0;
        // Provisioning first: it serves pending pods and disrupts nothing.
        foreach (var r in current.Recommendations.OrderBy(r => r.Type == RecommendationType.Provision ? 0 : 1))
        {
            if (r.WaitingAt(clock.GetUtcNow())) continue;   // its nodes have not been removable for --consolidate-after yet
            if (r.Nodes.Count > 0 && ++disruptiveChecks > MaxDisruptiveChecksPerTick) break;
            lock (gate)
            {
                if (ops.ContainsKey(r.Id)) continue;
                // Refused and interrupted ones are tried again at once; one that ended is tried again only
                // after a while if it comes back (a provision whose pods are still pending, say).
                var seen = states.GetValueOrDefault(r.Id);
                bool again = seen is null || seen is "approved" or "waiting for approval"
                    || seen.StartsWith("refused", StringComparison.Ordinal) || seen.StartsWith("advisory", StringComparison.Ordinal) || seen.StartsWith("interrupted", StringComparison.Ordinal)
                    || (ended.TryGetValue(r.Id, out var at) && clock.GetUtcNow() - at >= options.RetryAfter);
                if (!again) continue;
                if (options.Mode == ActuationMode.Approve && !approvals.ContainsKey(r.Id)) continue;
            }
            var actions = PlanFor(r, index, book);
            if (actions.IsAdvisory) continue;
            OwnedView? owned = null;
            if (r.Nodes.Count > 0)
            {
                try { owned = await ViewAsync(ct).ConfigureAwait(false); }
                catch (Exception e) when (IsTransient(e) && !ct.IsCancellationRequested)
                {
                    log.LogWarning("actuation: the view of Karpetrack's pools and nodes could not be read: {Error}; no disruption starts this tick", e.Message);
                    break;
                }
            }
            // Before the operation's first write (its first pool, or its first cordon): everything the policy knows.
            var why = Decide(r.NewNodes.Count > 0 ? SafetyWrite.CreatePool : SafetyWrite.Cordon, new SafetyOperation(r, OperationStep.Planned),
                World(null, owned, index.Nodes) with { PlannedBlockers = current.Blockers }, ct);
            if (why is not null)
            {
                Refuse(r, actions.Steps[0].TypeLabel, why);
                continue;
            }
            var op = new Operation(r, clock.GetUtcNow());
            int poolIndex = 0;
            foreach (var n in r.NewNodes)
                for (int i = 0; i < n.Count; i++) op.NewPools.Add((PoolName(r.Id, poolIndex++), n.ServerClass));
            foreach (var node in r.Nodes) op.OldPools[node] = index.Nodes.TryGetValue(node, out var view) ? view.Pool : "";
            op.MoveTo(op.NewPools.Count > 0 ? OperationStep.CreatePools : OperationStep.Cordon);
            op.State = "in progress: started";
            lock (gate)
            {
                ops[r.Id] = op;
                approvals.Remove(r.Id);   // an approval is used up by one attempt; a failed one needs a new approval
            }
            log.LogInformation("actuation: starting {Id} ({Type}): {Steps}", r.Id, r.Type, string.Join("; ", actions.Steps.Select(s => $"{s.TypeLabel} {s.Target}")));
            await AdvanceAsync(op, ct).ConfigureAwait(false);
        }
    }

    private void Refuse(Recommendation r, string type, Refusal why)
    {
        lock (gate)
        {
            var state = "refused: " + why.Message;
            if (states.GetValueOrDefault(r.Id) == state) return;   // counted once per reason, not once per tick
            states[r.Id] = state;
        }
        Count(type, "refused");
        CountRefusal(why);
        log.LogInformation("actuation: {Id} ({Type}) not acted on: {Why}", r.Id, r.Type, why.Message);
    }

    /// <summary>A disruption check may scan the pods of a node: at most this many per tick.</summary>
    private const int MaxDisruptiveChecksPerTick = 50;

    // ---- audit ---------------------------------------------------------------------------------

    /// <summary>A Kubernetes Event per action (the structured log line is written by the caller); losing one never stops an action.</summary>
    private void Audit(string kind, string name, string reason, string message, string type, CancellationToken ct)
    {
        var term = leaseTerm();
        if (kube is null || ct.IsCancellationRequested || term.IsCancellationRequested) return;
        var e = new KubeEventRecord(options.EventNamespace, kind, name, null, reason, message, type,
            InvolvedApiVersion: kind == "SpotNodePool" ? "ngpc.rxt.io/v1" : "v1");
        _ = Task.Run(async () =>
        {
            // The term's own token, not the tick's (disposed when the tick ends): an Event is never written after the lease is lost.
            try { await kube.CreateEventAsync(e, term).ConfigureAwait(false); }
            catch (Exception ex) when (ex is not OutOfMemoryException) { log.LogDebug("actuation: event {Reason} not written: {Error}", reason, ex.Message); }
        }, CancellationToken.None);
    }

    private static string KubeTime(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    /// <summary>The action type (metric label) of the step an operation is in.</summary>
    private static string TypeOf(OperationStep s) => ActionStep.LabelOf(s switch
    {
        OperationStep.CreatePools => ActionKind.CreatePool,
        OperationStep.WaitReady => ActionKind.WaitReady,
        OperationStep.Cordon => ActionKind.Cordon,
        OperationStep.Drain => ActionKind.Drain,
        _ => ActionKind.DeletePool,
    });

    private void Count(ActionKind kind, string result) => Count(ActionStep.LabelOf(kind), result);

    private void Count(string type, string result) => counts[(type, result)].Inc();
}

/// <summary>An operation the actuator finished, with its final state ("succeeded: …" or "failed: …").</summary>
public sealed record ActuationRecord(string RecommendationId, RecommendationType Type, string State, DateTimeOffset EndedAt);
