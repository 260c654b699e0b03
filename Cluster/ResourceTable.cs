namespace Karpetrack;

/// <summary>
/// The resources Karpetrack tracks, each at a fixed index: cpu and memory always (the recommender
/// needs both), then whatever `--resources` adds, then nvidia.com/gpu when not listed (the
/// recommender must know which pods need GPUs and which nodes have them free, whatever is exported).
/// Only <see cref="Exported"/> appear on /metrics. Values are integers in the unit the scheduler
/// compares: millicores for cpu, plain units (bytes, counts) for everything else.
/// </summary>
public sealed class ResourceTable
{
    public const int Cpu = 0;
    public const int Memory = 1;
    public const string NvidiaGpu = "nvidia.com/gpu";

    private readonly string[] names;
    private readonly Dictionary<string, int> index;

    public ResourceTable(IEnumerable<string> exported)
    {
        var all = new List<string> { "cpu", "memory" };
        var exportedList = new List<int>();
        foreach (var raw in exported)
        {
            var name = raw.Trim();
            if (name.Length == 0) continue;
            int i = all.IndexOf(name);
            if (i < 0) { all.Add(name); i = all.Count - 1; }
            if (!exportedList.Contains(i)) exportedList.Add(i);
        }
        if (exportedList.Count == 0) throw new ArgumentException("at least one resource must be exported");
        // Last, so the indexes of the listed resources do not depend on whether it was listed.
        if (!all.Contains(NvidiaGpu)) all.Add(NvidiaGpu);
        names = all.ToArray();
        index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < names.Length; i++) index[names[i]] = i;
        Exported = exportedList.ToArray();
        PodsIndex = index.TryGetValue("pods", out var p) ? p : -1;
        GpuIndex = index[NvidiaGpu];
        AmdGpuIndex = index.TryGetValue("amd.com/gpu", out var amd) ? amd : -1;
    }

    public static ResourceTable Default { get; } = new(["cpu", "memory"]);

    public int Count => names.Length;

    /// <summary>Indexes of the resources exported on /metrics, in flag order.</summary>
    public int[] Exported { get; }

    /// <summary>Index of nvidia.com/gpu, always tracked.</summary>
    public int GpuIndex { get; }

    /// <summary>Index of amd.com/gpu when `--resources` lists it, else -1.</summary>
    public int AmdGpuIndex { get; }

    /// <summary>Index of the `pods` resource when tracked: every counted pod requests one.</summary>
    public int PodsIndex { get; }

    public string Name(int i) => names[i];

    public int IndexOf(string name) => index.TryGetValue(name, out var i) ? i : -1;

    public int IndexOf(ReadOnlySpan<byte> utf8Name)
    {
        // Resource names are short ASCII; a linear scan over a handful of names beats hashing a span.
        for (int i = 0; i < names.Length; i++)
        {
            var n = names[i];
            if (n.Length != utf8Name.Length) continue;
            bool eq = true;
            for (int k = 0; k < n.Length; k++)
            {
                if (n[k] != utf8Name[k]) { eq = false; break; }
            }
            if (eq) return i;
        }
        return -1;
    }

    /// <summary>Cpu is compared in millicores (MilliValue), everything else in units (Value).</summary>
    public bool IsMilli(int i) => i == Cpu;

    public long ToStored(int i, Quantity q) => IsMilli(i) ? q.CeilMilli : q.CeilUnits;
}
