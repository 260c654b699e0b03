using System.Runtime.InteropServices;

namespace Karpetrack;

/// <summary>
/// Puts the calling thread below the serving threads. On Linux the runtime does not apply
/// Thread.Priority to the kernel's scheduler, so the thread's own nice value is raised instead
/// (setpriority on its thread id, which needs no privilege); elsewhere Thread.Priority does it.
/// </summary>
internal static class Background
{
    /// <summary>The nice value background threads run at: about a tenth of a serving thread's share under contention.</summary>
    public const int Nice = 10;

    /// <summary>True when the kernel took the lower priority.</summary>
    public static bool LowerCurrentThread()
    {
        Thread.CurrentThread.Priority = ThreadPriority.BelowNormal;
        if (!OperatingSystem.IsLinux()) return true;
        try
        {
            return setpriority(PrioProcess, gettid(), Nice) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;   // a libc without gettid: the thread keeps its priority
        }
    }

    /// <summary>
    /// Runs <paramref name="work"/> on a thread of its own, lowered, and completes with its result. The lowered thread
    /// runs nothing but the work and ends with it: on Linux a new thread inherits the nice value of the thread that
    /// creates it, and the thread pool starts a new worker on whichever thread queues work, so a lowered thread that
    /// queued a continuation or a work item could leave a pool worker at nice 10 for the life of the process, serving
    /// scrapes and calls at a tenth of the share. So the work must not queue anything (no tasks, no awaits), and the
    /// end is signalled through a wait handle that a wait thread of the pool, not the lowered one, turns into the task.
    /// </summary>
    public static Task<T> RunLowered<T>(Func<T> work)
    {
        var done = new ManualResetEvent(false);
        var finished = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        T result = default!;
        System.Runtime.ExceptionServices.ExceptionDispatchInfo? failure = null;
        RegisteredWaitHandle? registration = null;
        registration = ThreadPool.RegisterWaitForSingleObject(done, (_, _) =>
        {
            registration!.Unregister(null);
            done.Dispose();
            if (failure is not null) finished.SetException(failure.SourceException);
            else finished.SetResult(result);
        }, null, Timeout.Infinite, executeOnlyOnce: true);
        var thread = new Thread(() =>
        {
            LowerCurrentThread();
            try { result = work(); }
            catch (Exception e) { failure = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e); }
            done.Set();
        })
        { IsBackground = true, Name = "karpetrack lowered" };
        thread.Start();
        return finished.Task;
    }

    private const int PrioProcess = 0;   // with a thread id as `who`, Linux applies it to that thread only

    [DllImport("libc", SetLastError = true)]
    private static extern int setpriority(int which, int who, int prio);

    [DllImport("libc")]
    private static extern int gettid();
}

/// <summary>
/// Collects the young garbage of a long, allocating job every <c>step</c> bytes the process allocates
/// (all threads: an async job hops between them). The runtime sizes its gen0 budget from the L3 cache
/// (over 100 MB on large server parts) and keeps what it allocated up to it committed, so a job that
/// allocates hundreds of MB in one go would otherwise lift the process's RSS by about that budget.
/// A gen0 collection with few survivors costs about a millisecond.
/// </summary>
internal sealed class AllocationPacer(long step)
{
    private long next = GC.GetTotalAllocatedBytes() + step;

    public int Collections { get; private set; }

    public void Tick()
    {
        if (GC.GetTotalAllocatedBytes() < next) return;
        GC.Collect(0, GCCollectionMode.Forced, blocking: true);
        Collections++;
        next = GC.GetTotalAllocatedBytes() + step;
    }
}

/// <summary>
/// glibc's malloc, which the runtime's native side (type loader, JIT, sockets, TLS) allocates through.
/// By default it keeps up to eight arenas per core and keeps what was freed in them mapped; for a
/// service that allocates its native memory in bursts (start-up, a sync, a recommender run) that is
/// tens of MB held for nothing. Elsewhere (musl, macOS, Windows) these are no-ops.
/// </summary>
internal static class NativeHeap
{
    private const int ArenaMax = -8;   // M_ARENA_MAX in glibc's malloc.h

    /// <summary>Caps the number of malloc arenas; call before the service starts its threads.</summary>
    public static bool LimitArenas(int arenas) => Call(() => mallopt(ArenaMax, arenas) == 1);

    /// <summary>Returns the free memory of every arena to the kernel; true when some was released.</summary>
    public static bool Trim() => Call(() => malloc_trim(0) == 1);

    private static bool Call(Func<bool> glibc)
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            return glibc();
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;   // not glibc
        }
    }

    [DllImport("libc")]
    private static extern int mallopt(int param, int value);

    [DllImport("libc")]
    private static extern int malloc_trim(nuint pad);
}
