using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests;

public sealed class BackgroundTests
{
    /// <summary>The calling thread's nice value, as the kernel schedules it (field 19 of its stat).</summary>
    private static int ThreadNice()
    {
        var stat = File.ReadAllText("/proc/thread-self/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return int.Parse(fields[16]);
    }

    private static T OnNewThread<T>(Func<T> f)
    {
        T result = default!;
        var t = new Thread(() => result = f());
        t.Start();
        t.Join();
        return result;
    }

    [Fact]
    public void LoweringReachesTheKernelForThatThreadOnly()
    {
        int before = OnNewThread(ThreadNice);
        var (took, lowered) = OnNewThread(() => (Background.LowerCurrentThread(), ThreadNice()));
        Assert.True(before < Background.Nice, "the test needs a process running above nice 10");
        Assert.True(took);
        Assert.Equal(Background.Nice, lowered);
        Assert.Equal(before, OnNewThread(ThreadNice));   // other threads keep theirs
    }

    [Fact]
    public async Task RecommenderRunsBelowServingThreads()
    {
        var status = new ReflectorStatus("pods");
        status.MarkSynced("1", DateTimeOffset.UtcNow);
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance);
        var loop = new RecommenderLoop(new ClusterModel(ResourceTable.Default), prices, [status], () => new RecommenderOptions(),
            TimeSpan.FromSeconds(30), NullLogger.Instance);
        var nice = new TaskCompletionSource<int>();
        loop.PlanChanged += _ => nice.TrySetResult(ThreadNice());   // raised on the run's own thread
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var running = loop.RunAsync(cts.Token);
        Assert.Equal(Background.Nice, await nice.Task.WaitAsync(cts.Token));
        await cts.CancelAsync();
        await running;
    }
}
