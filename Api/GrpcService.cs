using System.Threading.Channels;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack;

/// <summary>
/// `karpetrack.v1.Karpetrack`: read-only views of the model, the prices and the latest plan. Every
/// answer is computed from one snapshot and one plan, never from live mutable state.
/// </summary>
public sealed class KarpetrackApi : V1.Karpetrack.KarpetrackBase
{
    public const string ServiceName = "karpetrack.v1.Karpetrack";
    public static readonly TimeSpan DefaultHeartbeat = TimeSpan.FromSeconds(15);

    private readonly ClusterModel model;
    private readonly PriceFeed prices;
    private readonly RecommenderLoop loop;
    private readonly IReadOnlyList<ReflectorStatus> caches;
    private readonly Func<RecommenderOptions> options;
    private readonly object gate = new();
    private ConvertedPlan? converted;

    /// <summary>What the actuator did with a recommendation, shown in its message; null when actuation is off.</summary>
    public Func<string, string?>? ActuationState { get; }

    /// <summary>Approvals (with --actuation approve); null otherwise, and ApproveRecommendation says why.</summary>
    public Approvals? Approvals { get; }

    /// <summary>The --label-group groups: ListNodes carries their keys' labels, and only those.</summary>
    public IReadOnlyList<IReadOnlyList<string>> LabelGroups { get; init; } = [];

    /// <summary>The --actuation mode as its flag value, for GetSummary.</summary>
    public string ActuationMode { get; init; } = "off";

    /// <summary>With actuation on: the actuator whose recent operations and refusals GetSummary shows.</summary>
    public Actuator? Actuator { get; init; }

    public KarpetrackApi(ClusterModel model, PriceFeed prices, RecommenderLoop loop, IReadOnlyList<ReflectorStatus> caches, Func<RecommenderOptions> options,
        Func<string, string?>? actuationState = null, Approvals? approvals = null)
    {
        this.model = model;
        this.prices = prices;
        this.loop = loop;
        this.caches = caches;
        this.options = options;
        ActuationState = actuationState;
        Approvals = approvals;
    }

    public bool Synced => caches.All(c => c.Synced);

    public override Task<V1.Summary> GetSummary(V1.GetSummaryRequest request, ServerCallContext context) => Task.FromResult(GetSummary());

    public override Task<V1.ListRecommendationsResponse> ListRecommendations(V1.ListRecommendationsRequest request, ServerCallContext context) =>
        Task.FromResult(ListRecommendations(request));

    public override Task WatchRecommendations(V1.WatchRecommendationsRequest request, IServerStreamWriter<V1.RecommendationEvent> responseStream, ServerCallContext context) =>
        WatchAsync(request, responseStream, context.CancellationToken);

    public override Task<V1.NodeExplanation> ExplainNode(V1.ExplainNodeRequest request, ServerCallContext context) => Task.FromResult(ExplainNode(request));

    public override Task<V1.ListNodesResponse> ListNodes(V1.ListNodesRequest request, ServerCallContext context) => Task.FromResult(ListNodes(request));

    /// <summary>The node map (Api/NodeMap.cs); before the first plan its nodes carry no blockers.</summary>
    public V1.ListNodesResponse ListNodes(V1.ListNodesRequest request)
    {
        RequireSync();
        return NodeMap.Build(model.Snapshot(), prices.Current, loop.Current, loop.LastRun, LabelGroups);
    }

    /// <summary>
    /// Simulate is read-only (it computes, writes nothing and shows no more than ListNodes and ExplainNode), so it
    /// takes no token, but its cost is bounded: the request's size (<see cref="SimulateLimits"/>), how many run at
    /// once (more are refused with RESOURCE_EXHAUSTED), and how long one may take (the caller's deadline, at most
    /// <see cref="SimulateLimits.Deadline"/>; a grpc-timeout of years is simply that cap). The packer runs off the request
    /// thread and checks the call's cancellation between its steps, so a cancelled or timed-out call frees its slot soon.
    /// </summary>
    public override async Task<V1.SimulateResponse> Simulate(V1.SimulateRequest request, ServerCallContext context)
    {
        SimulateLimits.Check(request);
        var timeLeft = SimulateLimits.TimeLeft(context.Deadline, DateTime.UtcNow);
        if (timeLeft <= TimeSpan.Zero) throw new RpcException(new Status(StatusCode.DeadlineExceeded, "the call's deadline has passed"));
        if (!simulations.Wait(0))
            throw new RpcException(new Status(StatusCode.ResourceExhausted, $"{SimulateLimits.Concurrent} simulations are running already; try again shortly"));
        var deadline = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        Task<V1.SimulateResponse> work;
        try
        {
            deadline.CancelAfter(timeLeft);
            var token = deadline.Token;
            // The slot is given back when the computation ends, not when the caller stops waiting for it.
            work = Task.Run(() => { try { return Simulate(request, token); } finally { simulations.Release(); } }, CancellationToken.None);
        }
        catch
        {
            simulations.Release();
            deadline.Dispose();
            throw;
        }
        try { return await work.WaitAsync(deadline.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
        {
            throw new RpcException(new Status(StatusCode.DeadlineExceeded, "the simulation did not finish within its deadline"));
        }
        finally { _ = work.ContinueWith(_ => deadline.Dispose(), TaskScheduler.Default); }
    }

    /// <summary>Slots for Simulate calls in progress (see <see cref="SimulateLimits.Concurrent"/>); tests hold them.</summary>
    internal SemaphoreSlim SimulationSlots => simulations;
    private readonly SemaphoreSlim simulations = new(SimulateLimits.Concurrent, SimulateLimits.Concurrent);

    public override Task<V1.ApproveRecommendationResponse> ApproveRecommendation(V1.ApproveRecommendationRequest request, ServerCallContext context) =>
        Task.FromResult(Approve(request, context.RequestHeaders.GetValue("authorization")));

    private V1.ApproveRecommendationResponse Approve(V1.ApproveRecommendationRequest r, string? authorization)
    {
        if (Approvals is null) throw new RpcException(new Status(StatusCode.FailedPrecondition, "approvals are only taken with --actuation approve"));
        if (string.IsNullOrEmpty(r.Id)) throw new RpcException(new Status(StatusCode.InvalidArgument, "id is required"));
        RequireSync();
        var state = Approvals.Approve(authorization, r.Id);
        return new V1.ApproveRecommendationResponse { Id = r.Id, ActuationState = state };
    }

    private void RequireSync()
    {
        var missing = caches.Where(c => !c.Synced).Select(c => c.Resource).ToArray();
        if (missing.Length > 0) throw new RpcException(new Status(StatusCode.Unavailable, $"caches not synced yet: {string.Join(", ", missing)}"));
    }

    private Plan RequirePlan()
    {
        RequireSync();
        if (loop.LastRun is null) throw new RpcException(new Status(StatusCode.Unavailable, "no plan computed yet"));
        return loop.Current;
    }

    // ---- GetSummary ----------------------------------------------------------------------------

    public V1.Summary GetSummary()
    {
        RequireSync();
        var snap = model.Snapshot();
        var book = prices.Current;
        var plan = loop.Current;
        var summary = new V1.Summary
        {
            Nodes = snap.Nodes.Length,
            ReadyNodes = snap.Nodes.Count(n => n.Ready),
            Pods = model.PodCount,
            PendingPods = snap.PendingPods,
            Recommendations = plan.Recommendations.Count,
            PotentialSavingsPerHour = (double)plan.Recommendations.Sum(r => Math.Max(0, r.SavingsPerHour)),
            ProvisioningCostPerHour = (double)plan.ProvisioningCostPerHour,
            Region = plan.Region,
            ActuationMode = ActuationMode,
            PriceBook = new V1.PriceBookState
            {
                Source = book.Source, FetchedAt = Timestamp.FromDateTimeOffset(book.FetchedAt), Stale = prices.Stale,
                Embedded = book.Embedded, Classes = book.Classes.Count,
            },
        };
        if (loop.LastRun is { } at)
        {
            summary.PlanComputedAt = Timestamp.FromDateTimeOffset(at);
            summary.PlanReady = true;
            if (plan.Costs is { } outlook)
            {
                summary.CostAfterRecommendationsPerHour = CostRules.Dollars(outlook.AfterRecommendationsPerHour);
                summary.CostLowerBoundPerHour = CostRules.Dollars(outlook.LowerBoundPerHour);
                summary.CostLowerBoundExcludedPods = outlook.LowerBoundExcludedPods;
            }
        }
        var costs = CostTotals.Of(snap, book);
        summary.CostPerHour = CostRules.Dollars(costs.Cost);
        summary.IdleCostPerHour = CostRules.Dollars(costs.Idle);
        summary.UnpricedNodes = costs.Unpriced;
        foreach (var i in snap.Resources.Exported)
        {
            double allocated = 0, allocatable = 0, overhead = 0;
            foreach (var n in snap.Nodes) { allocated += n.Allocated[i]; allocatable += n.Allocatable[i]; overhead += n.DaemonSetOverhead[i]; }
            double scale = snap.Resources.IsMilli(i) ? 1000 : 1;
            summary.Resources.Add(new V1.ResourceUsage
            {
                Resource = snap.Resources.Name(i), Allocated = allocated / scale, Allocatable = allocatable / scale,
                Utilization = allocatable > 0 ? allocated / allocatable : 0, DaemonsetOverhead = overhead / scale,
            });
            summary.PendingRequests.Add(new V1.ResourceAmount { Resource = snap.Resources.Name(i), Amount = snap.PendingRequests[i] / scale });
        }
        foreach (var c in caches)
        {
            var state = new V1.CacheState { Resource = c.Resource, Synced = c.Synced, Events = c.Events, Restarts = c.TotalRestarts };
            if (c.LastEventAt is { } t) state.LastEvent = Timestamp.FromDateTimeOffset(t);
            summary.Caches.Add(state);
        }
        if (Actuator is { } actuator)
        {
            foreach (var r in actuator.RecentActions())
                summary.RecentActions.Add(new V1.ActuationRecord
                {
                    RecommendationId = r.RecommendationId, Type = Collector.LabelOf(r.Type), State = r.State, EndedAt = Timestamp.FromDateTimeOffset(r.EndedAt),
                });
            foreach (var (reason, count) in actuator.Refusals.OrderBy(x => x.Key, StringComparer.Ordinal))
                summary.ActuationRefusals.Add(new V1.RefusalCount { Reason = reason, Count = count });
        }
        return summary;
    }

    // ---- ListRecommendations / WatchRecommendations ------------------------------------------------

    /// <summary>A plan's recommendations as messages, converted once per plan and shared by every reader.</summary>
    private sealed record ConvertedPlan(Plan Plan, V1.Recommendation[] Recommendations, Dictionary<string, V1.Recommendation> ById, Timestamp? At);

    private ConvertedPlan Convert(Plan plan)
    {
        // One conversion per plan, however many watchers wake up for it at once.
        lock (gate)
        {
            if (converted is { } c && ReferenceEquals(c.Plan, plan)) return c;
            var byId = new Dictionary<string, V1.Recommendation>(StringComparer.Ordinal);
            var recs = new V1.Recommendation[plan.Recommendations.Count];
            for (int i = 0; i < recs.Length; i++)
            {
                var m = ToMessage(plan.Recommendations[i]);
                m.ActuationState = ActuationState?.Invoke(plan.Recommendations[i].Id) ?? "";
                // An unchanged recommendation keeps its message instance: watchers compare references first.
                if (converted is not null && converted.ById.TryGetValue(m.Id, out var old) && old.Equals(m)) m = old;
                recs[i] = m;
                byId[m.Id] = m;
            }
            converted = new ConvertedPlan(plan, recs, byId, loop.LastRun is { } at ? Timestamp.FromDateTimeOffset(at) : null);
            return converted;
        }
    }

    public static V1.Recommendation ToMessage(Recommendation r)
    {
        var m = new V1.Recommendation
        {
            Id = r.Id, Type = ToMessage(r.Type), CurrentCostPerHour = (double)r.CurrentCostPerHour, NewCostPerHour = (double)r.NewCostPerHour,
            LowerBoundPerHour = (double)r.LowerBoundPerHour, SavingsPerHour = (double)r.SavingsPerHour, SavingsPerMonth = (double)r.SavingsPerMonth,
            PodsEvicted = r.PodsEvicted, PdbHeadroom = r.PdbHeadroom,
        };
        m.Nodes.AddRange(r.Nodes);
        m.NewNodes.AddRange(r.NewNodes.Select(n => new V1.NewNode { ServerClass = n.ServerClass, Count = n.Count, PricePerHour = (double)n.PricePerHour }));
        m.Moves.AddRange(r.Moves.Select(x => new V1.PodMove { Namespace = x.Namespace, Pod = x.Pod, From = x.From, To = x.To }));
        m.PendingPods.AddRange(r.PendingPods);
        m.Reasons.AddRange(r.Reasons);
        if (r.ActionableAt is { } at) m.ActionableAt = Timestamp.FromDateTimeOffset(at);
        if (r.Waiting is { } waiting) m.Waiting = waiting;
        m.Expired = r.Expired;
        return m;
    }

    public static V1.RecommendationType ToMessage(RecommendationType t) => t switch
    {
        RecommendationType.Provision => V1.RecommendationType.Provision,
        RecommendationType.Replace => V1.RecommendationType.Replace,
        RecommendationType.Consolidate => V1.RecommendationType.Consolidate,
        _ => V1.RecommendationType.DeleteEmpty,
    };

    private static void CheckFilter(V1.RecommendationType type, double minSavings)
    {
        if (!System.Enum.IsDefined(type)) throw new RpcException(new Status(StatusCode.InvalidArgument, $"unknown recommendation type {(int)type}"));
        if (double.IsNaN(minSavings)) throw new RpcException(new Status(StatusCode.InvalidArgument, "min_savings_per_hour is NaN"));
    }

    private static bool Matches(V1.Recommendation r, V1.RecommendationType type, string node, double minSavings) =>
        (type == V1.RecommendationType.Unspecified || r.Type == type)
        // Provisioning costs money and saves none: an unset minimum must not hide it.
        && (minSavings <= 0 || r.SavingsPerHour >= minSavings)
        && (node.Length == 0 || r.Nodes.Contains(node) || r.Moves.Any(m => m.From == node || m.To == node));

    public V1.ListRecommendationsResponse ListRecommendations(V1.ListRecommendationsRequest request)
    {
        CheckFilter(request.Type, request.MinSavingsPerHour);
        var plan = RequirePlan();
        var c = Convert(plan);
        var response = new V1.ListRecommendationsResponse { Region = plan.Region };
        if (c.At is not null) response.ComputedAt = c.At;
        foreach (var r in c.Recommendations)
        {
            if (!Matches(r, request.Type, request.Node, request.MinSavingsPerHour)) continue;
            // The actuator moves on between plans (approved, in progress, succeeded): a list shows its state now.
            var state = ActuationState?.Invoke(r.Id) ?? "";
            response.Recommendations.Add(state == r.ActuationState ? r : new V1.Recommendation(r) { ActuationState = state });
        }
        response.Unplaceable.AddRange(plan.Unplaceable.Select(u => new V1.UnplaceablePod { Pod = u.Pod, Reason = u.Reason }));
        return response;
    }

    /// <summary>
    /// The current set as ADDED events and a SYNCED marker, then the differences with each new plan.
    /// Only the newest plan matters to a watcher, so a slow one skips intermediate plans instead of queueing them.
    /// </summary>
    private async Task WatchAsync(V1.WatchRecommendationsRequest request, IServerStreamWriter<V1.RecommendationEvent> stream, CancellationToken cancelled)
    {
        CheckFilter(request.Type, request.MinSavingsPerHour);
        if (request.HeartbeatSeconds < 0) throw new RpcException(new Status(StatusCode.InvalidArgument, "heartbeat_seconds must not be negative"));
        RequirePlan();
        var heartbeat = request.HeartbeatSeconds > 0 ? TimeSpan.FromSeconds(request.HeartbeatSeconds) : DefaultHeartbeat;
        var changes = Channel.CreateBounded<Plan>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true });
        void OnChange(Plan p) => changes.Writer.TryWrite(p);
        loop.PlanChanged += OnChange;
        try
        {
            var sent = new Dictionary<string, V1.Recommendation>(StringComparer.Ordinal);
            var current = Convert(loop.Current);
            foreach (var r in current.Recommendations)
            {
                if (!Matches(r, request.Type, request.Node, request.MinSavingsPerHour)) continue;
                sent[r.Id] = r;
                await stream.WriteAsync(Event(V1.RecommendationEvent.Types.Kind.Added, r), cancelled);
            }
            await stream.WriteAsync(Event(V1.RecommendationEvent.Types.Kind.Synced, null), cancelled);
            var lastPlan = current.Plan;
            while (true)
            {
                using var beat = CancellationTokenSource.CreateLinkedTokenSource(cancelled);
                beat.CancelAfter(heartbeat);
                Plan next;
                try
                {
                    next = await changes.Reader.ReadAsync(beat.Token);
                }
                catch (OperationCanceledException) when (!cancelled.IsCancellationRequested)
                {
                    await stream.WriteAsync(Event(V1.RecommendationEvent.Types.Kind.Heartbeat, null), cancelled);
                    continue;
                }
                if (ReferenceEquals(next, lastPlan)) continue;
                lastPlan = next;
                var c = Convert(next);
                var seen = new HashSet<string>(StringComparer.Ordinal);
                foreach (var r in c.Recommendations)
                {
                    if (!Matches(r, request.Type, request.Node, request.MinSavingsPerHour)) continue;
                    seen.Add(r.Id);
                    if (!sent.TryGetValue(r.Id, out var before)) await stream.WriteAsync(Event(V1.RecommendationEvent.Types.Kind.Added, r), cancelled);
                    else if (!ReferenceEquals(before, r) && !before.Equals(r)) await stream.WriteAsync(Event(V1.RecommendationEvent.Types.Kind.Changed, r), cancelled);
                    sent[r.Id] = r;
                }
                foreach (var id in sent.Keys.Where(id => !seen.Contains(id)).ToList())
                {
                    await stream.WriteAsync(Event(V1.RecommendationEvent.Types.Kind.Removed, sent[id]), cancelled);
                    sent.Remove(id);
                }
            }
        }
        finally
        {
            loop.PlanChanged -= OnChange;
        }
    }

    private static V1.RecommendationEvent Event(V1.RecommendationEvent.Types.Kind kind, V1.Recommendation? r)
    {
        var e = new V1.RecommendationEvent { Kind = kind, At = Timestamp.FromDateTime(DateTime.UtcNow) };
        if (r is not null) e.Recommendation = r;
        return e;
    }

    // ---- ExplainNode -------------------------------------------------------------------------

    public V1.NodeExplanation ExplainNode(V1.ExplainNodeRequest request)
    {
        if (string.IsNullOrWhiteSpace(request.Node)) throw new RpcException(new Status(StatusCode.InvalidArgument, "node is required"));
        var plan = RequirePlan();
        var snap = model.Snapshot();
        var n = snap.Nodes.FirstOrDefault(x => x.Name == request.Node)
            ?? throw new RpcException(new Status(StatusCode.NotFound, $"node \"{request.Node}\" not found"));
        var e = NodeMap.Describe(new V1.NodeExplanation { Node = n.Name }, n, prices.Current, snap.Resources);
        foreach (var r in plan.Recommendations.Where(r => r.Nodes.Contains(n.Name)))
        {
            e.RecommendationIds.Add(r.Id);
            if (r.Type == RecommendationType.Replace) e.Replaceable = true;
            else e.Removable = true;
            e.Reasons.AddRange(r.Reasons);
        }
        if (plan.Blockers.TryGetValue(n.Name, out var blockers))
        {
            foreach (var b in blockers)
            {
                var m = new V1.Blocker { Reason = b.Reason };
                m.Pods.AddRange(b.Pods);
                m.Pdbs.AddRange(b.Pdbs);
                e.Blockers.Add(m);
                if (b.Detail is { } detail) e.Reasons.Add(detail);
            }
            if (blockers.Count == 0 && e.RecommendationIds.Count == 0) e.Reasons.Add("no blocker, but no cheaper shape either");
        }
        else if (e.RecommendationIds.Count == 0)
        {
            e.Reasons.Add("the node is newer than the latest plan");
        }
        return e;
    }

    // ---- Simulate ----------------------------------------------------------------------------

    /// <summary>What-if, read-only: the engine is <see cref="WhatIf.Simulate"/>; this converts the messages.</summary>
    public V1.SimulateResponse Simulate(V1.SimulateRequest request, CancellationToken ct = default)
    {
        SimulateLimits.Check(request);
        RequireSync();
        var whatIf = new WhatIfRequest(
            [.. request.RemoveNodes],
            [.. request.ReplaceNodes.Select(r => new WhatIfReplacement(r.Node, r.ServerClass))],
            [.. request.AddPods.Select(p => new WhatIfPod(p.Name, p.Namespace, p.Cpu, p.Memory,
                new Dictionary<string, string>(p.Labels, StringComparer.Ordinal), new Dictionary<string, string>(p.NodeSelector, StringComparer.Ordinal)))],
            [.. request.Categories],
            request.Region);
        WhatIfResult r;
        try { r = WhatIf.Simulate(model.Snapshot(), model.Pods(), model.DaemonSets.All(), prices.Current, options(), whatIf, ct); }
        catch (WhatIfException e) { throw new RpcException(new Status(e.NotFound ? StatusCode.NotFound : StatusCode.InvalidArgument, e.Message)); }
        ct.ThrowIfCancellationRequested();
        var response = new V1.SimulateResponse
        {
            CostBeforePerHour = (double)r.CostBeforePerHour,
            CostAfterPerHour = (double)r.CostAfterPerHour,
            DeltaPerHour = (double)r.DeltaPerHour,
        };
        response.Placements.AddRange(r.Placements.Select(p => new V1.PodPlacement { Pod = p.Pod, From = p.From, Node = p.Node, NewNode = p.NewNode }));
        response.NoLongerFit.AddRange(r.NoLongerFit.Select(u => new V1.UnplaceablePod { Pod = u.Pod, Reason = u.Reason }));
        response.Unplaceable.AddRange(r.Unplaceable.Select(u => new V1.UnplaceablePod { Pod = u.Pod, Reason = u.Reason }));
        response.NewNodes.AddRange(r.NewNodes.Select(n => new V1.NewNode { ServerClass = n.ServerClass, Count = n.Count, PricePerHour = (double)n.PricePerHour }));
        response.Notes.AddRange(r.Notes);
        return response;
    }
}

/// <summary>
/// ApproveRecommendation's gate: the bearer token must equal the one in the mounted Secret file,
/// read at each call (a rotated Secret takes effect without a restart) and compared in constant time.
/// </summary>
public sealed class Approvals(Actuator actuator, string tokenFile)
{
    public string Approve(string? authorization, string id)
    {
        const string scheme = "Bearer ";
        if (authorization is null || !authorization.StartsWith(scheme, StringComparison.OrdinalIgnoreCase))
            throw new RpcException(new Status(StatusCode.Unauthenticated, "authorization: Bearer <token> metadata is required"));
        string expected;
        try { expected = File.ReadAllText(tokenFile).Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new RpcException(new Status(StatusCode.Unavailable, $"the approval token cannot be read: {e.Message}")); }
        if (!Actuator.TokenMatches(authorization[scheme.Length..].Trim(), expected))
            throw new RpcException(new Status(StatusCode.Unauthenticated, "the bearer token does not match the approval token"));
        var (outcome, state) = actuator.Approve(id);
        return outcome switch
        {
            ApprovalOutcome.Approved => state,
            ApprovalOutcome.NotFound => throw new RpcException(new Status(StatusCode.NotFound, state)),
            _ => throw new RpcException(new Status(StatusCode.FailedPrecondition, state)),
        };
    }
}

/// <summary>How much one Simulate may ask and take: enough for any real what-if, far from what a misuse would need.</summary>
public static class SimulateLimits
{
    public const int MaxNodes = 1000;          // remove_nodes + replace_nodes
    public const int MaxAddedPods = 10_000;
    public const int MaxLabels = 64;           // per added pod, labels and node selector each
    public const int MaxStringLength = 1024;   // any name, class, quantity, label key or value
    public const int Concurrent = 2;
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    /// <summary>How long a call may run: its own deadline if sooner than <see cref="Deadline"/>; never negative, never more (DateTime.MaxValue is no deadline).</summary>
    public static TimeSpan TimeLeft(DateTime callDeadline, DateTime now)
    {
        if (callDeadline == DateTime.MaxValue || callDeadline - now >= Deadline) return Deadline;
        var left = callDeadline - now;
        return left > TimeSpan.Zero ? left : TimeSpan.Zero;
    }

    /// <summary>INVALID_ARGUMENT naming the first limit the request goes past.</summary>
    public static void Check(V1.SimulateRequest r)
    {
        if (r.RemoveNodes.Count + r.ReplaceNodes.Count > MaxNodes)
            Refuse($"remove_nodes and replace_nodes name {r.RemoveNodes.Count + r.ReplaceNodes.Count} nodes; at most {MaxNodes}");
        if (r.AddPods.Count > MaxAddedPods) Refuse($"add_pods has {r.AddPods.Count} pods; at most {MaxAddedPods}");
        if (r.Categories.Count > 16) Refuse($"categories has {r.Categories.Count} entries; at most 16");
        Text(r.Region, "region");
        foreach (var n in r.RemoveNodes) Text(n, "remove_nodes");
        foreach (var n in r.ReplaceNodes) { Text(n.Node, "replace_nodes.node"); Text(n.ServerClass, "replace_nodes.server_class"); }
        foreach (var c in r.Categories) Text(c, "categories");
        for (int i = 0; i < r.AddPods.Count; i++)
        {
            var p = r.AddPods[i];
            foreach (var (v, f) in new[] { (p.Name, "name"), (p.Namespace, "namespace"), (p.Cpu, "cpu"), (p.Memory, "memory") }) Text(v, $"add_pods[{i}].{f}");
            if (p.Labels.Count > MaxLabels) Refuse($"add_pods[{i}].labels has {p.Labels.Count} entries; at most {MaxLabels}");
            if (p.NodeSelector.Count > MaxLabels) Refuse($"add_pods[{i}].node_selector has {p.NodeSelector.Count} entries; at most {MaxLabels}");
            foreach (var (k, v) in p.Labels.Concat(p.NodeSelector)) { Text(k, $"add_pods[{i}] label key"); Text(v, $"add_pods[{i}] label value"); }
        }
    }

    private static void Text(string s, string field)
    {
        if (s.Length > MaxStringLength) Refuse($"{field} is {s.Length} characters long; at most {MaxStringLength}");
    }

    private static void Refuse(string why) => throw new RpcException(new Status(StatusCode.InvalidArgument, why));
}
