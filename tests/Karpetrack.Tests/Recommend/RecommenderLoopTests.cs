namespace Karpetrack.Tests.Recommend;

/// <summary>The loop that runs the recommender: the interval, pending-pod batches and watch bursts, on a stepped clock.</summary>
public class RecommenderLoopTests
{
    private static (ClusterModel Model, RecommenderLoop Loop, PriceFeed Prices) Loop(TimeSpan interval, TimeProvider clock, ReflectorStatus? pods = null)
    {
        var status = pods ?? new ReflectorStatus("pods");
        status.MarkSynced("1", DateTimeOffset.UnixEpoch);
        var model = new ClusterModel(ResourceTable.Default);
        var prices = new PriceFeed(new PriceFeedOptions(), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, initial: Scenario.Book);
        var loop = new RecommenderLoop(new(model, prices, [status]), new(() => new RecommenderOptions { Region = "us-east-iad-1" }, interval),
            Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, clock);
        return (model, loop, prices);
    }

    private static int pendingSerial;

    private static void AddPending(ClusterModel model) =>
        model.UpsertPod(ClusterModelTests.Pod($"pending-{Interlocked.Increment(ref pendingSerial)}", null, 500, 1L << 30, PodPhase.Pending, unschedulable: true));

    [Fact]
    public async Task ARunsCopiesAreNotHeldOnceItsPlanIsPublished()
    {
        // At 150k pods a run's copies are 8 MB of pod facts and a snapshot. The loop collects right after it publishes;
        // the copies must be garbage by then (they were still on the stack, in the result handed to Publish, and so
        // survived that collection into gen2).
        var tick = TimeSpan.FromMilliseconds(250);
        var clock = new SteppedClock();
        var (model, loop, prices) = Loop(TimeSpan.FromHours(1), clock);
        using var stop = new CancellationTokenSource();
        using (prices)
        {
            for (int i = 0; i < 50; i++) AddPending(model);
            var copies = new List<WeakReference>();
            var aliveAtPublish = new List<bool>();
            loop.InputsCopied = input => copies.Add(new WeakReference(input));
            loop.PlanChanged += _ =>
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                GC.Collect();
                aliveAtPublish.Add(copies[^1].IsAlive);
            };
            var running = loop.RunAsync(stop.Token);
            await clock.StepAsync(tick);
            Assert.Equal(1, loop.Durations.Count);
            Assert.NotEmpty(loop.Current.Recommendations);
            Assert.False(Assert.Single(aliveAtPublish));
            await stop.CancelAsync();
            await running;
        }
    }

    [Fact]
    public async Task RecommendIntervalZeroTurnsTheLoopOff()
    {
        Assert.Equal(TimeSpan.Zero, KarpetrackOptions.Parse(["--recommend-interval", "0"], _ => null).RecommendInterval);
        var clock = new SteppedClock();
        var (model, loop, prices) = Loop(TimeSpan.Zero, clock);
        using (prices)
        {
            AddPending(model);
            var run = loop.RunAsync(CancellationToken.None);
            Assert.True(run.IsCompletedSuccessfully);          // returns at once: no timer, no run
            await run;
            Assert.False(clock.Armed.IsCompleted);
            Assert.Null(loop.LastRun);
            Assert.Equal(0, loop.Durations.Count);
        }
    }

    [Theory]
    [InlineData(false, 4)]     // one change, then quiet: a run 1 s after the change was seen (4 ticks of 250 ms)
    [InlineData(true, 40)]     // changes on every tick: a run 10 s after the first, though it never goes quiet
    public async Task PendingPodChangesTriggerARunAfterTheBatchWindow(bool keepChanging, int ticksToRun)
    {
        var tick = TimeSpan.FromMilliseconds(250);
        var clock = new SteppedClock();
        var (model, loop, prices) = Loop(TimeSpan.FromHours(1), clock);
        using var stop = new CancellationTokenSource();
        using (prices)
        {
            var running = loop.RunAsync(stop.Token);
            await clock.StepAsync(tick);
            Assert.Equal(1, loop.Durations.Count);              // the first tick runs (the timer is due at start)
            for (int i = 0; i < 8; i++) await clock.StepAsync(tick);
            Assert.Equal(1, loop.Durations.Count);              // nothing changed and the next timer is an hour away

            AddPending(model);
            await clock.StepAsync(tick);                        // the tick that sees the change
            for (int i = 1; i <= 60 && loop.Durations.Count == 1; i++)
            {
                if (keepChanging) AddPending(model);
                await clock.StepAsync(tick);
                if (loop.Durations.Count > 1) Assert.Equal(ticksToRun, i);
            }
            Assert.Equal(2, loop.Durations.Count);
            Assert.NotEmpty(loop.Current.Recommendations.Single(r => r.Type == RecommendationType.Provision).PendingPods);
            await stop.CancelAsync();
            await running;
        }
    }

    [Theory]
    [InlineData(0, 4)]         // no burst: the batch of pending pods runs 1 s after the change, as above
    [InlineData(8, 9)]         // 4,000 events/s for 2 s: the due run waits, and comes on the first quiet tick
    [InlineData(100, 44)]      // a burst that goes on: the run waits at most 10 s after it fell due
    public async Task ARunThatFallsDueDuringAWatchBurstWaitsForItToPass(int burstTicks, int ticksToRun)
    {
        var tick = TimeSpan.FromMilliseconds(250);
        var clock = new SteppedClock();
        var pods = new ReflectorStatus("pods");
        var (model, loop, prices) = Loop(TimeSpan.FromHours(1), clock, pods);
        using var stop = new CancellationTokenSource();
        using (prices)
        {
            var running = loop.RunAsync(stop.Token);
            await clock.StepAsync(tick);
            Assert.Equal(1, loop.Durations.Count);

            AddPending(model);
            await clock.StepAsync(tick);                        // the tick that sees the change
            int ranAt = -1;
            for (int i = 1; i <= 60 && ranAt < 0; i++)
            {
                if (i <= burstTicks)
                    for (int e = 0; e < RecommenderLoop.BurstEventsPerSecond / 2; e++) pods.Received("2", clock.GetUtcNow());
                await clock.StepAsync(tick);
                if (loop.Durations.Count > 1) ranAt = i;
            }
            Assert.Equal(ticksToRun, ranAt);
            Assert.Equal(2, loop.Durations.Count);
            await stop.CancelAsync();
            await running;
        }
    }

    [Fact]
    public async Task WithSpotCredentialsTheFirstPlanWaitsForTheSpotApisFacts()
    {
        var tick = TimeSpan.FromMilliseconds(250);
        var clock = new SteppedClock();
        var (model, loop, prices) = Loop(TimeSpan.FromSeconds(30), clock);
        using var stop = new CancellationTokenSource();
        using (prices)
        {
            prices.ExpectSpotFacts();                            // as SpotWiring does when a refresh token is set
            Assert.False(prices.Complete);
            AddPending(model);
            var running = loop.RunAsync(stop.Token);
            for (int i = 0; i < 200; i++) await clock.StepAsync(tick);   // 50 s: the timer fell due twice
            Assert.Null(loop.LastRun);
            Assert.Equal(0, loop.Durations.Count);
            Assert.Same(Plan.Empty, loop.Current);

            prices.SpotFactsSettled();                           // the Spot API's first read ended (here: failed)
            Assert.True(prices.Completed.IsCompletedSuccessfully);
            await clock.StepAsync(tick);
            Assert.Equal(1, loop.Durations.Count);
            Assert.NotNull(loop.LastRun);
            Assert.NotNull(loop.Current.Costs);
            await stop.CancelAsync();
            await running;
        }
    }

    [Fact]
    public async Task WithTheEmbeddedSnapshotTheFirstPlanWaitsForTheFeedsFirstReadEvenAFailedOne()
    {
        var tick = TimeSpan.FromMilliseconds(250);
        var clock = new SteppedClock();
        var status = new ReflectorStatus("pods");
        status.MarkSynced("1", DateTimeOffset.UnixEpoch);
        var model = new ClusterModel(ResourceTable.Default);
        // Nothing listens on port 9 of the loopback: the read fails at once, and the embedded snapshot stays the book.
        using var prices = new PriceFeed(new PriceFeedOptions { Endpoint = "http://127.0.0.1:9", Region = "us-east-1", Timeout = TimeSpan.FromSeconds(5) },
            Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var loop = new RecommenderLoop(new(model, prices, [status]), new(() => new RecommenderOptions { Region = "us-east-iad-1" }, TimeSpan.FromSeconds(30)),
            Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, clock);
        using var stop = new CancellationTokenSource();
        var running = loop.RunAsync(stop.Token);
        for (int i = 0; i < 8; i++) await clock.StepAsync(tick);
        Assert.False(prices.Complete);
        Assert.Equal(0, loop.Durations.Count);

        Assert.False(await prices.RefreshAsync(CancellationToken.None));
        Assert.True(prices.Current.Embedded);
        Assert.True(prices.Complete);
        await clock.StepAsync(tick);
        Assert.Equal(1, loop.Durations.Count);
        await stop.CancelAsync();
        await running;
    }

    [Fact]
    public async Task APlanIsRedoneWhenThePriceBookChanges()
    {
        var tick = TimeSpan.FromMilliseconds(250);
        var clock = new SteppedClock();
        var (_, loop, prices) = Loop(TimeSpan.FromHours(1), clock);
        using var stop = new CancellationTokenSource();
        using (prices)
        {
            var running = loop.RunAsync(stop.Token);
            await clock.StepAsync(tick);
            Assert.Equal(1, loop.Durations.Count);
            for (int i = 0; i < 8; i++) await clock.StepAsync(tick);
            Assert.Equal(1, loop.Durations.Count);               // the next timer is an hour away

            prices.SetSpotFacts(new Dictionary<string, SpotClassFacts> { ["gp.vs1.large-iad"] = new(0.5m, null, null, "available", null, null) });
            await clock.StepAsync(tick);
            Assert.Equal(2, loop.Durations.Count);               // the new book made the plan due
            for (int i = 0; i < 8; i++) await clock.StepAsync(tick);
            Assert.Equal(2, loop.Durations.Count);               // and only once
            await stop.CancelAsync();
            await running;
        }
    }
}
