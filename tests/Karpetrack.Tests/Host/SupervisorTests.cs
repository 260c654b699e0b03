using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Host;

public sealed class SupervisorTests
{
    /// <summary>A clock that records every delay asked of it and lets it pass at once.</summary>
    private sealed class RecordingClock : TimeProvider
    {
        private readonly Lock gate = new();
        public DateTimeOffset Now = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        public List<TimeSpan> Delays { get; } = [];

        public override DateTimeOffset GetUtcNow() { lock (gate) return Now; }

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            lock (gate) { Delays.Add(dueTime); Now += dueTime; }
            ThreadPool.QueueUserWorkItem(_ => callback(state));
            return new Noop();
        }

        private sealed class Noop : ITimer
        {
            public bool Change(TimeSpan dueTime, TimeSpan period) => true;
            public void Dispose() { }
            public ValueTask DisposeAsync() => ValueTask.CompletedTask;
        }
    }

    [Fact]
    public async Task AThrowingLoopIsRestartedWithADoublingBackoffAndCounted()
    {
        var clock = new RecordingClock();
        var supervisor = new Supervisor(NullLogger.Instance, clock);
        int attempts = 0;
        var done = supervisor.Run("prices", _ =>
        {
            if (++attempts <= 8) throw new OverflowException("Value was either too large or too small for an Int64.");
            return Task.CompletedTask;
        }, CancellationToken.None);
        await done.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(9, attempts);
        Assert.Equal([1, 2, 4, 8, 16, 32, 60, 60], clock.Delays.Select(d => d.TotalSeconds));
        var health = Assert.Single(supervisor.Health());
        Assert.Equal(("prices", 8L), (health.Loop, health.Restarts));
        Assert.Contains("OverflowException", health.LastError);
        Assert.True(health.Failing);
        clock.Now += Supervisor.FailingWindow;
        Assert.False(supervisor.Health()[0].Failing);   // healthy again once it has not crashed for a while
    }

    [Fact]
    public async Task CancellationEndsTheLoopWithoutARestart()
    {
        var supervisor = new Supervisor(NullLogger.Instance, new RecordingClock());
        using var cts = new CancellationTokenSource();
        var started = new TaskCompletionSource();
        var done = supervisor.Run("reflector", async ct => { started.SetResult(); await Task.Delay(Timeout.Infinite, ct); }, cts.Token);
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        cts.Cancel();
        await done.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(new Supervisor.LoopHealth("reflector", 0, false, null), supervisor.Health()[0]);
    }

    [Fact]
    public async Task ALoopThatRanLongBeforeFailingStartsItsBackoffOver()
    {
        var clock = new RecordingClock();
        var supervisor = new Supervisor(NullLogger.Instance, clock);
        int attempts = 0;
        var done = supervisor.Run("spot", _ =>
        {
            attempts++;
            if (attempts == 4) clock.Now += TimeSpan.FromMinutes(5);   // the fourth run goes well for five minutes
            if (attempts <= 5) throw new InvalidOperationException("boom");
            return Task.CompletedTask;
        }, CancellationToken.None);
        await done.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal([1, 2, 4, 1, 2], clock.Delays.Select(d => d.TotalSeconds));
    }

    [Fact]
    public void ALoopNameIsSupervisedOnce()
    {
        var supervisor = new Supervisor(NullLogger.Instance);
        supervisor.Run("x", _ => Task.CompletedTask, CancellationToken.None);
        Task? second = null;
        void RunAgain() => second = supervisor.Run("x", _ => Task.CompletedTask, CancellationToken.None);
        Assert.IsType<ArgumentException>(Record.Exception(RunAgain));
        Assert.Null(second);   // refused before anything started
    }
}
