using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>
/// Runs the service's background loops (reflectors, price feed, Spot facts, recommender, actuator,
/// leader election). A loop that throws is logged, counted and started again after a backoff that
/// doubles up to a minute, so one bad input can never end a loop for good; a loop counts as failing
/// for <see cref="FailingWindow"/> after its last crash, which /readyz and
/// karpetrack_loop_failing report. A loop that returns, or ends on cancellation, is done and not restarted.
/// </summary>
public sealed class Supervisor
{
    public static readonly TimeSpan FailingWindow = TimeSpan.FromMinutes(2);
    public static readonly TimeSpan FirstBackoff = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan MaxBackoff = TimeSpan.FromMinutes(1);

    private readonly ILogger log;
    private readonly TimeProvider clock;
    private readonly Lock gate = new();
    private readonly Dictionary<string, State> loops = new(StringComparer.Ordinal);
    private readonly Prometheus.Counter restarts;
    private readonly Prometheus.Gauge failing;

    public Supervisor(ILogger log, TimeProvider? clock = null, Telemetry? telemetry = null)
    {
        this.log = log;
        this.clock = clock ?? TimeProvider.System;
        telemetry ??= new Telemetry();
        restarts = telemetry.Counter("karpetrack_loop_restarts_total",
            "Times a supervised background loop (a reflector, the price feed, the recommender, the actuator, ...) threw and was restarted.", "loop");
        failing = telemetry.Gauge("karpetrack_loop_failing",
            "1 while a supervised background loop has crashed within the last 2 minutes (it also fails /readyz), else 0.", "loop");
        telemetry.OnScrape(() =>
        {
            foreach (var l in Health()) failing.WithLabels(l.Loop).Set(l.Failing ? 1 : 0);
        });
    }

    private sealed class State(Prometheus.Counter.Child restarts)
    {
        public readonly Prometheus.Counter.Child Restarts = restarts;
        public DateTimeOffset? LastCrash;
        public string? LastError;
    }

    /// <summary>One loop's health as of now.</summary>
    public sealed record LoopHealth(string Loop, long Restarts, bool Failing, string? LastError);

    /// <summary>Starts <paramref name="loop"/> under supervision; the task ends when the loop is done or <paramref name="ct"/> is cancelled.</summary>
    public Task Run(string name, Func<CancellationToken, Task> loop, CancellationToken ct)
    {
        lock (gate)
        {
            if (!loops.TryAdd(name, new State(restarts.WithLabels(name)))) throw new ArgumentException($"a loop named {name} is already supervised", nameof(name));
            failing.WithLabels(name).Set(0);
        }
        return Task.Run(() => Supervise(name, loop, ct), CancellationToken.None);
    }

    private async Task Supervise(string name, Func<CancellationToken, Task> loop, CancellationToken ct)
    {
        var backoff = FirstBackoff;
        while (!ct.IsCancellationRequested)
        {
            var started = clock.GetUtcNow();
            try
            {
                await loop(ct).ConfigureAwait(false);
                return;
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                var now = clock.GetUtcNow();
                // A loop that ran a good while before failing starts its backoff over.
                if (now - started >= MaxBackoff) backoff = FirstBackoff;
                lock (gate)
                {
                    var s = loops[name];
                    s.Restarts.Inc();
                    s.LastCrash = now;
                    s.LastError = $"{e.GetType().Name}: {e.Message}";
                }
                log.LogError(e, "background loop {Loop} failed; restarting it in {Backoff}", name, backoff);
            }
            try { await Task.Delay(backoff, clock, ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, MaxBackoff.Ticks));
        }
    }

    public IReadOnlyList<LoopHealth> Health()
    {
        var now = clock.GetUtcNow();
        lock (gate)
        {
            return loops.OrderBy(l => l.Key, StringComparer.Ordinal)
                .Select(l => new LoopHealth(l.Key, (long)l.Value.Restarts.Value, l.Value.LastCrash is { } t && now - t < FailingWindow, l.Value.LastError))
                .ToArray();
        }
    }
}
