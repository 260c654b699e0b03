using System.Globalization;

namespace Karpetrack;

/// <summary>
/// A request or a capacity in the four dimensions the packer honours. The default of one pod suits
/// a pod's demand; a node capacity should say how many pods it takes (see <see cref="Node"/>).
/// </summary>
public readonly record struct Demand(long CpuMilli, long MemoryBytes, long Gpu = 0, long Pods = 1)
{
    public static readonly Demand Zero = new(0, 0, 0, 0);

    /// <summary>A node capacity: kubelet's default of 110 pods unless told otherwise.</summary>
    public static Demand Node(long cpuMilli, long memoryBytes, long gpu = 0, long pods = 110) => new(cpuMilli, memoryBytes, gpu, pods);

    public static Demand operator +(Demand a, Demand b) => new(a.CpuMilli + b.CpuMilli, a.MemoryBytes + b.MemoryBytes, a.Gpu + b.Gpu, a.Pods + b.Pods);
    public static Demand operator -(Demand a, Demand b) => new(a.CpuMilli - b.CpuMilli, a.MemoryBytes - b.MemoryBytes, a.Gpu - b.Gpu, a.Pods - b.Pods);
    public static Demand operator *(Demand a, long k) => new(a.CpuMilli * k, a.MemoryBytes * k, a.Gpu * k, a.Pods * k);

    public bool FitsIn(Demand capacity) =>
        CpuMilli <= capacity.CpuMilli && MemoryBytes <= capacity.MemoryBytes && Gpu <= capacity.Gpu && Pods <= capacity.Pods;

    public bool IsNonNegative => CpuMilli >= 0 && MemoryBytes >= 0 && Gpu >= 0 && Pods >= 0;

    /// <summary>The largest fraction of <paramref name="capacity"/> this takes in any dimension; infinity where it needs what the capacity lacks.</summary>
    public double ShareOf(Demand capacity) =>
        Math.Max(Math.Max(Share(CpuMilli, capacity.CpuMilli), Share(MemoryBytes, capacity.MemoryBytes)), Math.Max(Share(Gpu, capacity.Gpu), Share(Pods, capacity.Pods)));

    /// <summary>How many copies of this fit into <paramref name="capacity"/> (long.MaxValue for an all-zero demand).</summary>
    public long CopiesIn(Demand capacity) =>
        Math.Min(Math.Min(Copies(CpuMilli, capacity.CpuMilli), Copies(MemoryBytes, capacity.MemoryBytes)), Math.Min(Copies(Gpu, capacity.Gpu), Copies(Pods, capacity.Pods)));

    private static double Share(long need, long have) => need <= 0 ? 0 : have <= 0 ? double.PositiveInfinity : (double)need / have;
    private static long Copies(long need, long have) => need <= 0 ? long.MaxValue : have < 0 ? 0 : have / need;

    public override string ToString() => Describe(this);

    internal static string Cores(long milli) => (milli / 1000.0).ToString("0.##", CultureInfo.InvariantCulture) + " cores";
    internal static string GiB(long bytes) => (bytes / 1073741824.0).ToString("0.#", CultureInfo.InvariantCulture) + " GiB";

    internal static string Describe(Demand d)
    {
        var s = $"{Cores(d.CpuMilli)}, {GiB(d.MemoryBytes)}";
        if (d.Gpu != 0) s += $", {d.Gpu} GPU";
        return s;
    }
}
