using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Host;

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
    public void PacerCollectsEveryStepOfAllocationAndNotBefore()
    {
        var pacer = new AllocationPacer(1 << 20);
        int gen0 = GC.CollectionCount(0);
        var keep = new List<byte[]>();
        for (int i = 0; i < 100; i++) { keep.Add(new byte[64 * 1024]); pacer.Tick(); }   // 6.4 MB in 64 KB steps
        Assert.True(pacer.Collections >= 5, $"{pacer.Collections} collections for 6.4 MB at a 1 MB step");   // other tests' threads may add some
        Assert.True(GC.CollectionCount(0) - gen0 >= pacer.Collections);
        var idle = new AllocationPacer(1 << 30);
        for (int i = 0; i < 10; i++) { keep.Add(new byte[64 * 1024]); idle.Tick(); }
        Assert.Equal(0, idle.Collections);
        GC.KeepAlive(keep);
    }

    [Fact]
    public async Task RecommenderComputesBelowServingThreadsAndPublishesAtTheirs()
    {
        var status = new ReflectorStatus("pods");
        status.MarkSynced("1", DateTimeOffset.UtcNow);
        // A book from the feed: the first plan waits for one (the embedded snapshot alone is not a first read).
        using var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: Scenario.Book);
        int computedAt = -1;
        // The options are read by the computation itself, so they see the nice value the plan is computed at.
        var loop = new RecommenderLoop(new(new ClusterModel(ResourceTable.Default), prices, [status]),
            new(() => { computedAt = ThreadNice(); return new RecommenderOptions(); }, TimeSpan.FromSeconds(30)), NullLogger.Instance);
        int serving = OnNewThread(ThreadNice);
        var published = new TaskCompletionSource<int>();
        // The listeners (gRPC watches, the actuator) run where the plan is published: a serving thread, never the lowered one,
        // whose continuations would start pool workers that inherit its nice value (the defect this pins: they did).
        loop.PlanChanged += _ => published.TrySetResult(ThreadNice());
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var running = loop.RunAsync(cts.Token);
        int publishedAt = await published.Task.WaitAsync(cts.Token);
        await cts.CancelAsync();
        await running;
        Assert.Equal(Background.Nice, computedAt);
        Assert.Equal(serving, publishedAt);
    }

    [Fact]
    public async Task RunLoweredRunsTheWorkLoweredAndItsCallerContinuesAtItsOwnPriority()
    {
        int serving = OnNewThread(ThreadNice);
        Assert.True(serving < Background.Nice, "the test needs a process running above nice 10");
        Assert.Equal(Background.Nice, await Background.RunLowered(ThreadNice));
        Assert.Equal(serving, ThreadNice());   // the continuation: queued by the pool's wait thread, not the lowered one
        // Pool work queued after many lowered runs still starts at the serving priority (a worker spawned by a
        // lowered thread would not).
        for (int i = 0; i < 20; i++) await Background.RunLowered(() => i);
        var nices = await Task.WhenAll(Enumerable.Range(0, 64).Select(_ => Task.Run(() => { Thread.Sleep(5); return ThreadNice(); })));
        Assert.All(nices, n => Assert.Equal(serving, n));
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => Background.RunLowered<int>(() => throw new InvalidOperationException("boom")));
        Assert.Equal("boom", e.Message);
    }

    [Fact]
    public void GlibcTakesTheArenaCapAndGivesFreedMemoryBack()
    {
        // This machine's libc is glibc: mallopt answers 1 when it accepts a setting, 0 when not.
        Assert.True(NativeHeap.LimitArenas(16));
        // 64 MB in small blocks (below the mmap threshold, so they come from an arena), written, then
        // freed while one small block allocated after them stays: free() only shrinks an arena from its
        // top, so the freed pages below that block stay mapped until a trim hands them back.
        var page = new byte[4096];
        Array.Fill(page, (byte)1);
        var blocks = new nint[16_384];
        for (int i = 0; i < blocks.Length; i++)
        {
            blocks[i] = System.Runtime.InteropServices.Marshal.AllocHGlobal(page.Length);
            System.Runtime.InteropServices.Marshal.Copy(page, 0, blocks[i], page.Length);
        }
        var top = System.Runtime.InteropServices.Marshal.AllocHGlobal(64);
        try
        {
            foreach (var b in blocks) System.Runtime.InteropServices.Marshal.FreeHGlobal(b);
            Assert.True(NativeHeap.Trim());
        }
        finally
        {
            System.Runtime.InteropServices.Marshal.FreeHGlobal(top);
        }
    }

    /// <summary>Resident bytes and private (anonymous) bytes of every mapping of <paramref name="path"/>, read from smaps apart from the product's parser.</summary>
    private static (long Rss, long Anonymous) Resident(string path)
    {
        long rss = 0, anon = 0;
        bool ours = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length > 0 && f[0].Contains('-') && !f[0].EndsWith(':')) ours = f.Length >= 6 && line.EndsWith(" " + path, StringComparison.Ordinal);
            else if (ours && f[0] == "Rss:") rss += long.Parse(f[1]) * 1024;
            else if (ours && f[0] == "Anonymous:") anon += long.Parse(f[1]) * 1024;
        }
        return (rss, anon);
    }

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int mprotect(nint addr, nuint len, int prot);

    [Fact]
    public void ReleasedImagePagesLeaveTheProcessAndComeBackWithTheSameBytes()
    {
        const int Size = 4 << 20;
        var path = Path.Combine(Path.GetTempPath(), $"karpetrack-image-{Guid.NewGuid():N}");
        var bytes = new byte[Size];
        new Random(7).NextBytes(bytes);
        File.WriteAllBytes(path, bytes);
        try
        {
            using var file = System.IO.MemoryMappedFiles.MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read);
            using var view = file.CreateViewAccessor(0, Size, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.Read);
            long sum = 0;
            for (int i = 0; i < Size; i += 4096) sum += view.ReadByte(i);   // every page resident
            Assert.True(Resident(path).Rss >= Size, $"{Resident(path).Rss} resident before");
            long released = NativeHeap.ReleaseImagePages(path);
            Assert.True(released >= Size, $"released {released}");
            Assert.True(Resident(path).Rss < Size / 16, $"{Resident(path).Rss} resident after");
            var again = new byte[Size];
            view.ReadArray(0, again, 0, Size);
            Assert.Equal(bytes, again);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void PagesOfOurOwnInAReadOnlyMappingAndWritableMappingsAreKept()
    {
        const int Size = 1 << 20;
        var path = Path.Combine(Path.GetTempPath(), $"karpetrack-image-{Guid.NewGuid():N}");
        File.WriteAllBytes(path, new byte[Size]);
        try
        {
            using var file = System.IO.MemoryMappedFiles.MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.CopyOnWrite);
            using var view = file.CreateViewAccessor(0, Size, System.IO.MemoryMappedFiles.MemoryMappedFileAccess.CopyOnWrite);
            for (int i = 0; i < Size; i += 4096) view.ReadByte(i);
            // Writable (rw-p), read only: nothing of ours in it yet, but a writable mapping is never given back.
            Assert.Equal(0, NativeHeap.ReleaseImagePages(path));
            Assert.True(Resident(path).Rss >= Size);
            // A private copy of one page (what a relocation makes of a page of read-only data), then read-only (r--p):
            // that page holds our bytes, the file has zeros, so the mapping is kept.
            view.Write(8192, (byte)42);
            nint start = view.SafeMemoryMappedViewHandle.DangerousGetHandle() + (nint)view.PointerOffset;
            Assert.Equal(0, mprotect(start, Size, 1 /* PROT_READ */));
            Assert.True(Resident(path).Anonymous >= 4096);
            Assert.Equal(0, NativeHeap.ReleaseImagePages(path));
            Assert.Equal(42, System.Runtime.InteropServices.Marshal.ReadByte(start + 8192));
            Assert.True(Resident(path).Rss >= Size);
        }
        finally { File.Delete(path); }
    }
}
