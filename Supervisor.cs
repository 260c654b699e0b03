using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>
/// Runs the service's background loops (reflectors, price feed, Spot facts, recommender, actuator,
/// leader election). A loop that throws is logged, counted and started again after a backoff that
/// doubles up to a minute, so one bad input can never end a loop for good; a loop counts as failing
/// for <see cref="FailingWindow"/> after its last crash, which /readyz and a metric report.
/// A loop that returns, or ends on cancellation, is done and not restarted.
/// </summary>
public sealed class Supervisor(ILogger log, TimeProvider? clock = null)
{
    public static readonly TimeSpan FailingWindow = TimeSpan.FromMinutes(2);
    public static readonly TimeSpan FirstBackoff = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan MaxBackoff = TimeSpan.FromMinutes(1);

    private readonly TimeProvider clock = clock ?? TimeProvider.System;
    private readonly Lock gate = new();
    private readonly Dictionary<string, State> loops = new(StringComparer.Ordinal);

    private sealed class State
    {
        public long Restarts;
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
            if (!loops.TryAdd(name, new State())) throw new ArgumentException($"a loop named {name} is already supervised", nameof(name));
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
                    s.Restarts++;
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
                .Select(l => new LoopHealth(l.Key, l.Value.Restarts, l.Value.LastCrash is { } t && now - t < FailingWindow, l.Value.LastError))
                .ToArray();
        }
    }
}
