using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>What the recommender reads on every run: the cluster model, the price book and the caches that must have synced.</summary>
public sealed record RecommenderSources(ClusterModel Model, PriceFeed Prices, IReadOnlyList<ReflectorStatus> Caches)
{
    /// <summary>Nodes being provisioned (the actuator's), counted as capacity for pending pods.</summary>
    public Func<IReadOnlyList<InFlightNode>>? InFlight { get; init; }
}

/// <summary>How the loop runs: the recommender's options (read afresh on every run) and the timer's interval (0: no timer).</summary>
public sealed record RecommenderLoopOptions(Func<RecommenderOptions> Recommender, TimeSpan Interval);

/// <summary>
/// Runs the recommender off the scrape path: on a timer, and after a burst of pending-pod changes
/// settles (1 s without change, at most 10 s after the first), and when the price book changes, once every
/// cache has synced and the price book is complete (<see cref="PriceFeed.Complete"/>). The latest plan is published as an immutable reference that readers (metrics, gRPC) just read.
/// </summary>
public sealed class RecommenderLoop
{
    public static readonly double[] DurationBuckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly ClusterModel model;
    private readonly PriceFeed prices;
    private readonly IReadOnlyList<ReflectorStatus> caches;
    private readonly Func<RecommenderOptions> options;
    private readonly TimeSpan interval;
    private readonly Microsoft.Extensions.Logging.ILogger log;
    private readonly TimeProvider clock;
    private readonly Func<IReadOnlyList<InFlightNode>>? inFlight;
    private readonly object gate = new();
    private readonly Prometheus.Histogram durations;
    private readonly Prometheus.Gauge lastRunGauge;
    private Plan plan = Plan.Empty;
    private PriceBook? planBook;   // the book the current plan was made on
    /// <summary>Since when each node has been removable (--consolidate-after), across runs.</summary>
    internal ConsolidationWaits Waits { get; } = new();

    public RecommenderLoop(RecommenderSources sources, RecommenderLoopOptions options, Microsoft.Extensions.Logging.ILogger log,
        TimeProvider? clock = null, Telemetry? telemetry = null)
    {
        model = sources.Model;
        prices = sources.Prices;
        caches = sources.Caches;
        inFlight = sources.InFlight;
        this.options = options.Recommender;
        interval = options.Interval;
        this.log = log;
        this.clock = clock ?? TimeProvider.System;
        telemetry ??= new Telemetry();
        durations = telemetry.Histogram("karpetrack_recommender_duration_seconds", "Time one recommender run took.", DurationBuckets);
        lastRunGauge = telemetry.GaugeOnceSet("karpetrack_recommender_last_run_timestamp_seconds", "Unix time of the last completed recommender run.");
    }

    public Plan Current { get { lock (gate) return plan; } }
    public DateTimeOffset? LastRun { get; private set; }
    public event Action<Plan>? PlanChanged;

    public (double Sum, long Count) Durations => (durations.Sum, durations.Count);

    /// <summary>One run now on the calling thread, whatever the timers say (tests and benchmarks).</summary>
    public Plan RunOnce() => Publish(Compute(Copy()));

    /// <summary>What one run reads, copied at once: the copies hold the model's lock, so they run at normal priority.</summary>
    private sealed record Inputs(long Started, DateTimeOffset Now, ClusterSnapshot Snap, PodFacts[] Pods, PdbRecord[] Pdbs,
        DaemonSetRecord[] DaemonSets, IReadOnlyList<InFlightNode>? Provisioning, PriceBook Book);

    private Inputs Copy()
    {
        var started = clock.GetTimestamp();
        var now = clock.GetUtcNow();   // the time of the snapshot: node ages (--expire-after) and removable-since are measured to it
        return new Inputs(started, now, model.Snapshot(), model.Pods(), model.Pdbs.All(), model.DaemonSets.All(), inFlight?.Invoke(), prices.Current);
    }

    /// <summary>
    /// The plan itself: pure computation over the copies (in the loop, on a lowered thread of its own, so a scrape or an
    /// API call never waits for it; nothing here may queue work to the thread pool, see <see cref="Background.RunLowered"/>).
    /// </summary>
    private Computed Compute(Inputs i)
    {
        var o = options();
        var next = Recommender.Recommend(i.Snap, i.Pods, i.Pdbs, i.DaemonSets, i.Book, o, i.Provisioning, i.Now);
        // The cost outlook (today, after the recommendations, the lower bound) comes with every published plan.
        // A failure there loses the outlook (its series absent), never the plan.
        try { next = ClusterCosts.WithOutlook(next, i.Snap, i.Pods, i.DaemonSets, i.Book, o); }
        catch (Exception e) when (e is not (OutOfMemoryException or OperationCanceledException))
        {
            log.LogError(e, "recommender: the cost outlook failed; publishing the plan without it");
        }
        // Still published while their nodes wait out --consolidate-after, but marked so that the actuator leaves them alone.
        return new(Waits.Apply(next, o.Pools, i.Now), i.Book, i.Started);
    }

    /// <summary>Makes a computed plan current and tells the listeners (on a serving-priority thread).</summary>
    private Plan Publish(Computed run)
    {
        MakeCurrent(run.Plan, run.Book, clock.GetElapsedTime(run.Started).TotalSeconds);
        return run.Plan;
    }

    /// <summary>What a run hands back for publishing: the plan and what it was made on, not the copies.</summary>
    private sealed record Computed(Plan Plan, PriceBook Book, long Started);

    /// <summary>Makes a plan built elsewhere current, as a run would (benchmarks and tests of the plan's readers).</summary>
    internal void Publish(Plan next) => MakeCurrent(next, prices.Current, null);

    private void MakeCurrent(Plan next, PriceBook book, double? seconds)
    {
        lock (gate) { plan = next; planBook = book; }
        if (seconds is { } s)
        {
            durations.Observe(s);
            log.LogDebug("recommender: {Count} recommendations in {Ms:0.0} ms", next.Recommendations.Count, s * 1000);
        }
        MarkRun();
        PlanChanged?.Invoke(next);
    }

    private void MarkRun()
    {
        var now = clock.GetUtcNow();
        LastRun = now;
        lastRunGauge.Set(now.ToUnixTimeMilliseconds() / 1000.0);
    }

    /// <summary>
    /// A run that falls due while the caches take in more events than this per second (a rollout, a
    /// relist) waits for the burst to pass, at most <see cref="BurstDeferLimit"/>: a plan made halfway
    /// through is stale at once, and the run would take the CPU the watch needs to catch up.
    /// </summary>
    internal const int BurstEventsPerSecond = 2_000;
    internal static readonly TimeSpan BurstDeferLimit = TimeSpan.FromSeconds(10);

    /// <summary>
    /// One run of the loop: the copies here, the plan on a lowered thread of its own, the publishing back here. The copies
    /// (150k pods: 8 MB of pod facts and the run's snapshot) must be garbage by the time the loop collects after the run:
    /// the result handed to Publish used to carry them (alive on the stack through that collection, so promoted to gen2
    /// and held until a later one), and the lowered thread's closure can outlive the run briefly (the thread pool's wait
    /// registration), so it holds them in a box it empties.
    /// </summary>
    private async Task RunAndPublishAsync(CancellationToken ct)
    {
        // The lowered thread takes the copies out of the box: whatever still holds the closure after the run (the
        // thread pool's wait registration, the finished thread) then holds an empty box.
        var input = new System.Runtime.CompilerServices.StrongBox<Inputs?>(Copy());
        InputsCopied?.Invoke(input.Value!);
        ct.ThrowIfCancellationRequested();
        Publish(await Background.RunLowered(() =>
        {
            var copies = input.Value!;
            input.Value = null;
            return Compute(copies);
        }).ConfigureAwait(false));
    }

    /// <summary>Tests: sees each run's copies (to check that nothing holds them after the run).</summary>
    internal Action<object>? InputsCopied { get; set; }

    public async Task RunAsync(CancellationToken ct)
    {
        if (interval <= TimeSpan.Zero) return;
        long seenPending = -1;
        bool waitLogged = false;
        DateTimeOffset? firstChange = null, lastChange = null, deferredSince = null;
        var nextTimer = clock.GetUtcNow();
        long seenEvents = caches.Sum(c => c.Events);
        var seenAt = nextTimer;
        while (!ct.IsCancellationRequested)
        {
            try { await Task.Delay(TimeSpan.FromMilliseconds(250), clock, ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            var now = clock.GetUtcNow();
            long events = caches.Sum(c => c.Events);
            double eventRate = now > seenAt ? (events - seenEvents) / (now - seenAt).TotalSeconds : 0;
            (seenEvents, seenAt) = (events, now);
            if (caches.Any(c => !c.Synced)) continue;
            // The first plan is made on the whole price book: the feed's first read (or its definite failure)
            // and, with Spot credentials, the Spot API's facts. Until then no plan, and no plan series.
            if (!prices.Complete)
            {
                if (!waitLogged) log.LogInformation("recommender: waiting for the first read of the price book before the first plan");
                waitLogged = true;
                continue;
            }
            // A new price book makes the plan due at once.
            bool bookChanged;
            lock (gate) bookChanged = !ReferenceEquals(planBook, prices.Current);
            long pendingVersion = model.PendingVersion;
            if (seenPending >= 0 && pendingVersion != seenPending)
            {
                firstChange ??= now;
                lastChange = now;
            }
            seenPending = pendingVersion;
            bool batchDone = firstChange is { } f && lastChange is { } l && (now - l >= TimeSpan.FromSeconds(1) || now - f >= TimeSpan.FromSeconds(10));
            if (now < nextTimer && !batchDone && !bookChanged) continue;
            if (eventRate > BurstEventsPerSecond && now - (deferredSince ??= now) < BurstDeferLimit) continue;
            deferredSince = null;
            firstChange = lastChange = null;
            nextTimer = now + interval;
            try
            {
                await RunAndPublishAsync(ct).ConfigureAwait(false);
                // A run over a large cluster allocates tens of MB that the runtime would otherwise keep
                // committed until the next run: give it back. Not on the lowered thread: every thread
                // waits for a blocking collection, so it must not queue behind other processes' work.
                // The run's native garbage (JIT, type loads) goes back too: malloc keeps freed memory otherwise.
                if (model.PodCount >= 20_000)
                {
                    GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                    NativeHeap.Trim();
                }
                // The binary's pages touched only at start-up and by the run (~16 MB of the NativeAOT binary at 5,000
                // nodes) leave the process's resident set; what the scrapes use comes back from the page cache.
                NativeHeap.ReleaseImagePages();
            }
            catch (OperationCanceledException) { return; }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                log.LogError(e, "recommender run failed; keeping the previous plan");
            }
        }
    }
}
