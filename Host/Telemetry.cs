using System.Buffers.Text;
using Prometheus;

namespace Karpetrack;

/// <summary>
/// The service's own telemetry on prometheus-net: how its parts are doing (actions, gRPC calls,
/// Spot API requests, recommender runs, price reads, watches, background loops) as opposed to what
/// the cluster looks like, which the collector's chunked store renders. Each component registers its
/// families here from its constructor and keeps their values up to date (or refreshes them on each
/// scrape through <see cref="OnScrape"/>); /metrics writes this registry after the cluster families,
/// as kube-state-metrics writes its object metrics from its own store and its telemetry through
/// client_golang. A registry of its own per service, not prometheus-net's static default one, so that
/// tests can run several services in one process.
/// </summary>
public sealed class Telemetry
{
    private readonly CollectorRegistry registry = Metrics.NewCustomRegistry();
    private readonly MetricFactory factory;
    private readonly Lock gate = new();
    private readonly Dictionary<string, MetricFamily> declared = new(StringComparer.Ordinal);

    public Telemetry()
    {
        factory = Metrics.WithCustomRegistry(registry);
        // Exemplars only show in OpenMetrics, which /metrics does not serve: no trace lookup per increment.
        factory.ExemplarBehavior = ExemplarBehavior.NoExemplars();
    }

    /// <summary>The service's registry: its build facts and the process and runtime families next to what its components register.</summary>
    public static Telemetry ForService()
    {
        var telemetry = new Telemetry();
        telemetry.Gauge("karpetrack_build_info", "Build facts; always 1.", "version").WithLabels(BuildInfo.Version).Set(1);
        ProcessTelemetry.Register(telemetry);
        return telemetry;
    }

    /// <summary>Every family registered through this instance, in registration order (README's metric tables are checked against it).</summary>
    public IReadOnlyList<MetricFamily> Families
    {
        get { lock (gate) return declared.Values.ToArray(); }
    }

    public Counter Counter(string name, string help, params string[] labels)
    {
        Declare(new MetricFamily(name, MetricType.Counter, help, labels));
        return factory.CreateCounter(name, help, labels);
    }

    /// <summary>A gauge whose series read 0 until set.</summary>
    public Gauge Gauge(string name, string help, params string[] labels)
    {
        Declare(new MetricFamily(name, MetricType.Gauge, help, labels));
        return factory.CreateGauge(name, help, labels);
    }

    /// <summary>A gauge whose series appear once set: for values where 0 would be a claim (a timestamp, an age).</summary>
    public Gauge GaugeOnceSet(string name, string help, params string[] labels)
    {
        Declare(new MetricFamily(name, MetricType.Gauge, help, labels));
        return factory.CreateGauge(name, help, labels, new GaugeConfiguration { SuppressInitialValue = true });
    }

    public Histogram Histogram(string name, string help, double[] buckets, params string[] labels)
    {
        Declare(new MetricFamily(name, MetricType.Histogram, help, labels));
        return factory.CreateHistogram(name, help, labels, new HistogramConfiguration { Buckets = buckets });
    }

    /// <summary>Runs before every scrape: for values that are read rather than counted (ages, states, sizes).</summary>
    public void OnScrape(Action update) => registry.AddBeforeCollectCallback(update);

    /// <summary>Appends the text exposition (0.0.4, not OpenMetrics: that one ends with "# EOF") to <paramref name="output"/>.</summary>
    public Task WriteAsync(Stream output, CancellationToken ct) =>
        registry.CollectAndExportAsTextAsync(output, ExpositionFormat.PrometheusText, ct);

    /// <summary>
    /// Several instances of a component (one per watched resource, say) share a family; a family
    /// declared twice with another type, help or label set is a bug that would mix series shapes.
    /// </summary>
    private void Declare(MetricFamily family)
    {
        // prometheus-net writes HELP as given: what the text format escapes must not be in it.
        if (family.Help.Contains('\\') || family.Help.Contains('\n')) throw new ArgumentException($"{family.Name}: help text with a backslash or newline");
        lock (gate)
        {
            if (!declared.TryGetValue(family.Name, out var known))
            {
                declared.Add(family.Name, family);
                return;
            }
            if (known.Type != family.Type || known.Help != family.Help || !known.Labels.SequenceEqual(family.Labels))
                throw new InvalidOperationException($"{family.Name} is already registered as another family");
        }
    }
}

/// <summary>
/// Process and .NET runtime families, fed on each scrape from cheap sources. prometheus-net's own
/// defaults are left out: its DotNetStats rebuilds the whole process description per scrape (every
/// thread's /proc entry, every open file descriptor), as costly as the cluster part of a large scrape
/// (BENCHMARKS.md); its meter adapter turns the runtime's counters into gauges, five of them named
/// *_count, which promtool rejects; its event-counter adapter and debug families describe the library.
/// The names are the conventional ones (client_golang's process_*, prometheus-net's dotnet_*).
/// </summary>
public sealed class ProcessTelemetry
{
    private readonly Counter cpu, collections, pause, allocated;
    private readonly Gauge resident, virtualMemory, threads, totalMemory, committed, poolThreads, poolQueue;
    private readonly bool procfs = OperatingSystem.IsLinux() && File.Exists("/proc/self/stat");
    private readonly byte[] statBuffer = new byte[1024];
    private readonly Lock gate = new();

    private ProcessTelemetry(Telemetry t)
    {
        cpu = t.Counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.");
        t.Gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.")
            .Set(new DateTimeOffset(System.Diagnostics.Process.GetCurrentProcess().StartTime).ToUnixTimeMilliseconds() / 1000.0);
        resident = t.Gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
        virtualMemory = t.GaugeOnceSet("process_virtual_memory_bytes", "Virtual memory size in bytes.");
        threads = t.GaugeOnceSet("process_num_threads", "Total number of threads.");
        collections = t.Counter("dotnet_collection_count_total", "GC collection count.", "generation");
        totalMemory = t.Gauge("dotnet_total_memory_bytes", "Total known allocated memory.");
        committed = t.Gauge("dotnet_gc_committed_bytes", "Memory the GC had committed at its last collection.");
        pause = t.Counter("dotnet_gc_pause_seconds_total", "Time the GC paused the process for, in seconds.");
        allocated = t.Counter("dotnet_gc_allocated_bytes_total", "Bytes allocated on the managed heap.");
        poolThreads = t.Gauge("dotnet_threadpool_threads", "Thread pool threads.");
        poolQueue = t.Gauge("dotnet_threadpool_queue_length", "Work items queued to the thread pool and not yet started.");
        t.OnScrape(Update);
    }

    public static void Register(Telemetry telemetry) => _ = new ProcessTelemetry(telemetry);

    private void Update()
    {
        cpu.IncTo(Environment.CpuUsage.TotalTime.TotalSeconds);
        for (int g = 0; g <= GC.MaxGeneration; g++) collections.WithLabels(GenerationLabel(g)).IncTo(GC.CollectionCount(g));
        totalMemory.Set(GC.GetTotalMemory(false));
        committed.Set(GC.GetGCMemoryInfo().TotalCommittedBytes);
        pause.IncTo(GC.GetTotalPauseDuration().TotalSeconds);
        allocated.IncTo(GC.GetTotalAllocatedBytes());
        poolThreads.Set(ThreadPool.ThreadCount);
        poolQueue.Set(ThreadPool.PendingWorkItemCount);
        if (!procfs || !ReadStat())
            resident.Set(Environment.WorkingSet);
    }

    private static string GenerationLabel(int g) => g switch { 0 => "0", 1 => "1", 2 => "2", _ => g.ToString(System.Globalization.CultureInfo.InvariantCulture) };

    /// <summary>
    /// One read of /proc/self/stat (proc(5)): num_threads, vsize and rss are the 20th, 23rd and 24th
    /// fields, counted from the state field that follows the parenthesised command name.
    /// </summary>
    private bool ReadStat()
    {
        lock (gate)
        {
            int n;
            try
            {
                using var file = File.OpenHandle("/proc/self/stat");
                n = RandomAccess.Read(file, statBuffer, 0);
            }
            catch (IOException) { return false; }
            var line = statBuffer.AsSpan(0, n);
            int close = line.LastIndexOf((byte)')');
            if (close < 0) return false;
            var rest = line[(close + 2)..];
            long threadCount = 0, vsize = 0, rssPages = 0;
            for (int field = 3; field <= 24 && rest.Length > 0; field++)
            {
                int end = rest.IndexOf((byte)' ');
                var token = end < 0 ? rest : rest[..end];
                if (field is 20 or 23 or 24 && Utf8Parser.TryParse(token, out long value, out _))
                {
                    if (field == 20) threadCount = value;
                    else if (field == 23) vsize = value;
                    else rssPages = value;
                }
                rest = end < 0 ? [] : rest[(end + 1)..];
            }
            if (rssPages <= 0) return false;
            threads.Set(threadCount);
            virtualMemory.Set(vsize);
            resident.Set(rssPages * Environment.SystemPageSize);
            return true;
        }
    }
}
