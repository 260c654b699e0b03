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

    /// <summary>
    /// Unmaps the resident pages of a file's read-only mappings in this process (by default the executable's own: its code
    /// and read-only data, ~30 MB of the NativeAOT binary of which most is touched only at start-up) and returns the bytes
    /// they held. The pages stay in the kernel's page cache, so one touched again comes back with a minor fault and the
    /// same contents. Only mappings that cannot hold data of ours are given back: not writable, and without a page of
    /// their own (smaps' Anonymous 0: a relocated read-only page is a private copy, which MADV_DONTNEED would drop back
    /// to the file's bytes; the kernel keeps such pages in mappings of their own, a few KB). Elsewhere than Linux: 0.
    /// </summary>
    public static long ReleaseImagePages(string? path = null)
    {
        if (!OperatingSystem.IsLinux()) return 0;
        path ??= Environment.ProcessPath;
        if (path is null) return 0;
        string target;
        try { target = Path.GetFullPath(new FileInfo(path).ResolveLinkTarget(true)?.FullName ?? path); }
        catch (IOException) { return 0; }
        long released = 0;
        try
        {
            foreach (var m in ReadOnlyMappings(target))
                if (madvise((nint)m.Start, (nuint)m.Length, MadvDontNeed) == 0) released += m.Rss;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DllNotFoundException or EntryPointNotFoundException)
        {
            return released;
        }
        return released;
    }

    private const int MadvDontNeed = 4;   // MADV_DONTNEED in Linux's mman-common.h

    /// <summary>The mappings of <paramref name="path"/> in /proc/self/smaps that are not writable and hold no page of their own.</summary>
    internal static List<(ulong Start, ulong Length, long Rss)> ReadOnlyMappings(string path)
    {
        var found = new List<(ulong, ulong, long)>();
        ulong start = 0, end = 0;
        long rss = 0, anon = -1;
        bool candidate = false;
        void Close()
        {
            if (candidate && anon == 0 && rss > 0) found.Add((start, end - start, rss));
            candidate = false;
        }
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-');
            int space = line.IndexOf(' ');
            if (dash > 0 && space > dash && ulong.TryParse(line.AsSpan(0, dash), System.Globalization.NumberStyles.HexNumber, null, out var a)
                && ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), System.Globalization.NumberStyles.HexNumber, null, out var b))
            {
                Close();
                // "start-end perms offset dev inode path": the path is everything after the fifth field.
                var fields = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
                candidate = fields.Length == 6 && fields[1].Length == 4 && fields[1][1] != 'w' && fields[5].Trim() == path;
                start = a; end = b; rss = 0; anon = -1;
            }
            else if (candidate && line.StartsWith("Rss:", StringComparison.Ordinal)) rss = Kb(line);
            else if (candidate && line.StartsWith("Anonymous:", StringComparison.Ordinal)) anon = Kb(line);
        }
        Close();
        return found;
    }

    private static long Kb(string line)
    {
        var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return f.Length >= 2 && long.TryParse(f[1], out var kb) ? kb * 1024 : -1;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int madvise(nint addr, nuint length, int advice);

    [DllImport("libc")]
    private static extern int mallopt(int param, int value);

    [DllImport("libc")]
    private static extern int malloc_trim(nuint pad);
}
