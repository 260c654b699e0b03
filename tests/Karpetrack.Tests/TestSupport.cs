namespace Karpetrack.Tests;

/// <summary>A clock tests move by hand.</summary>
internal sealed class ManualClock(DateTimeOffset start) : TimeProvider
{
    public ManualClock() : this(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero)) { }

    public DateTimeOffset Now { get; set; } = start;

    public override DateTimeOffset GetUtcNow() => Now;

    public void Advance(TimeSpan by) => Now += by;
}

/// <summary>
/// The timers of a clock that tests move by hand: each fires (once: Task.Delay uses no period) when the
/// clock is moved past its due time. A subclass hears of every timer armed.
/// </summary>
internal abstract class HandMovedClock(DateTimeOffset start) : TimeProvider
{
    protected readonly object gate = new();
    protected readonly List<HandTimer> timers = [];
    private DateTimeOffset now = start;

    public override DateTimeOffset GetUtcNow() { lock (gate) return now; }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var t = new HandTimer(this, callback, state);
        t.Change(dueTime, period);
        return t;
    }

    /// <summary>Called under the lock each time a timer is armed.</summary>
    protected abstract void OnArmed();

    /// <summary>Moves the time on and fires every timer then due; <paramref name="moved"/> runs under the lock first.</summary>
    protected void MoveOn(TimeSpan by, Action? moved = null)
    {
        List<HandTimer> due;
        lock (gate)
        {
            moved?.Invoke();
            now += by;
            due = timers.Where(t => t.Due <= now).ToList();
            timers.RemoveAll(due.Contains);
        }
        foreach (var t in due) t.Fire();
    }

    protected sealed class HandTimer(HandMovedClock clock, TimerCallback callback, object? state) : ITimer
    {
        public DateTimeOffset Due;

        /// <summary>Task.Delay arms its timer with the delay's own task as the state.</summary>
        public bool IsDelay => state is Task;

        public void Fire() => callback(state);

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (clock.gate)
            {
                clock.timers.Remove(this);
                if (dueTime == Timeout.InfiniteTimeSpan) return true;
                Due = clock.now + dueTime;
                clock.timers.Add(this);
                clock.OnArmed();
            }
            return true;
        }

        public void Dispose() { lock (clock.gate) clock.timers.Remove(this); }

        public ValueTask DisposeAsync() { Dispose(); return ValueTask.CompletedTask; }
    }
}

/// <summary>
/// A clock tests move by hand whose timers fire when it passes their due time. <see cref="WhenPending"/>
/// waits (on an event, not a timer) until something has armed that many timers, so a test can advance
/// only once the code under test is waiting.
/// </summary>
internal sealed class TimerClock(DateTimeOffset start) : HandMovedClock(start)
{
    private readonly List<(Func<bool> Ready, TaskCompletionSource Done)> waiters = [];

    /// <summary>Completes once at least <paramref name="count"/> timers are armed and not yet fired.</summary>
    public Task WhenPending(int count) => When(() => timers.Count >= count);

    /// <summary>
    /// Completes once at least <paramref name="count"/> Task.Delay waits on this clock are armed and not yet
    /// fired; the timers behind a CancellationTokenSource (a deadline, a CancelAfter) do not count. A loop
    /// that pauses between attempts is parked in its pause then, with no attempt in flight.
    /// </summary>
    public Task WhenDelaysPending(int count) => When(() => timers.Count(t => t.IsDelay) >= count);

    /// <summary>When the earliest Task.Delay wait armed on this clock ends; null when none is armed.</summary>
    public DateTimeOffset? NextDelayDue
    {
        get { lock (gate) return timers.Where(t => t.IsDelay).Select(t => (DateTimeOffset?)t.Due).Min(); }
    }

    private Task When(Func<bool> ready)
    {
        lock (gate)
        {
            if (ready()) return Task.CompletedTask;
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            waiters.Add((ready, done));
            return done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    /// <summary>Moves the time on and fires every timer then due.</summary>
    public void Advance(TimeSpan by) => MoveOn(by);

    protected override void OnArmed()
    {
        foreach (var w in waiters.Where(w => w.Ready()).ToList())
        {
            waiters.Remove(w);
            w.Done.TrySetResult();
        }
    }
}

/// <summary>
/// A clock whose timers fire only when a test steps it: each step moves the time on, fires the timers
/// then due, and returns once a new timer has been armed (a loop that waits on this clock is back waiting).
/// </summary>
internal sealed class SteppedClock() : HandMovedClock(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero))
{
    private TaskCompletionSource armed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes once something waits on this clock.</summary>
    public Task Armed { get { lock (gate) return armed.Task; } }

    public async Task StepAsync(TimeSpan by)
    {
        await Armed.WaitAsync(TimeSpan.FromSeconds(30));
        Task next = null!;
        MoveOn(by, () =>
        {
            armed = new(TaskCreationOptions.RunContinuationsAsynchronously);
            next = armed.Task;
        });
        await next.WaitAsync(TimeSpan.FromSeconds(30));
    }

    protected override void OnArmed() => armed.TrySetResult();
}

/// <summary>The repository's root folder (the one holding Karpetrack.csproj), found upwards from the test binaries.</summary>
internal static class RepoRoot
{
    public static string Path { get; } = Find();

    private static string Find()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(System.IO.Path.Combine(dir.FullName, "Karpetrack.csproj"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("repository root not found");
    }
}

/// <summary>A kubeconfig, in a fresh temporary folder, whose API server refuses every connection (port 1 on loopback).</summary>
internal static class UnreachableCluster
{
    public static async Task<string> KubeconfigAsync(string folderPrefix)
    {
        var kubeconfig = Path.Combine(Directory.CreateTempSubdirectory(folderPrefix).FullName, "kubeconfig");
        await File.WriteAllTextAsync(kubeconfig, """
            apiVersion: v1
            kind: Config
            clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
            users: [{name: u, user: {token: t}}]
            contexts: [{name: x, context: {cluster: c, user: u}}]
            current-context: x
            """);
        return kubeconfig;
    }
}

/// <summary>
/// What a started service exports, for the tests that check lists of metric names against the code: the
/// cluster families (<see cref="Families.All"/>) and the families its components registered on its
/// telemetry, with the text that registry writes. One demo service, started once, in dry-run so that
/// every component (the Spot API client among them) is built.
/// </summary>
internal static class ExportedFamilies
{
    private static readonly Lazy<Task<(IReadOnlyList<MetricFamily> Telemetry, string Text)>> Started = new(StartAsync);

    public static async Task<IReadOnlyList<MetricFamily>> AllAsync() => [.. Families.All, .. (await Started.Value).Telemetry];

    public static async Task<IReadOnlyList<MetricFamily>> TelemetryAsync() => (await Started.Value).Telemetry;

    /// <summary>The text exposition of the service's telemetry registry alone.</summary>
    public static async Task<string> TelemetryTextAsync() => (await Started.Value).Text;

    private static async Task<(IReadOnlyList<MetricFamily>, string)> StartAsync()
    {
        var options = KarpetrackOptions.Parse(["--demo", "--actuation", "dry-run", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
            "--log-level", "error"], _ => null);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await using var service = await Service.StartAsync(options, cts.Token);
        using var buffer = new MemoryStream();
        await service.Telemetry.WriteAsync(buffer, cts.Token);
        return (service.Telemetry.Families, System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
    }
}
