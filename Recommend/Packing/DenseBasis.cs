using System.Numerics;

namespace Karpetrack;

/// <summary>
/// The two steps the dense-inverse revised simplexes (<see cref="MasterLp"/>, <see cref="ResourceLp"/>) share: the ratio test
/// and the product-form update of the inverse, the basic solution and the duals after a pivot.
/// </summary>
internal static class DenseBasis
{
    /// <summary>The leaving row for the entering column's direction <paramref name="d"/> (B⁻¹a): least ratio, ties to the largest pivot; -1 if unbounded.</summary>
    public static int Leaving(ReadOnlySpan<double> d, ReadOnlySpan<double> xb)
    {
        int r = -1;
        double best = double.PositiveInfinity, bestD = 0;
        for (int i = 0; i < d.Length; i++)
        {
            if (d[i] <= 1e-9) continue;
            double ratio = Math.Max(0, xb[i]) / d[i];
            if (ratio < best - 1e-12 || (ratio <= best + 1e-12 && d[i] > bestD)) { best = ratio; bestD = d[i]; r = i; }
        }
        return r;
    }

    /// <summary>
    /// Pivots on row <paramref name="r"/>: the basic solution moves along <paramref name="d"/>, the duals y' = y + rc / d_r ·
    /// (row r of the old inverse), so that the entering column's reduced cost <paramref name="rc"/> becomes zero, and the m×m
    /// row-major inverse is updated in place. The caller records which column is basic in row r.
    /// </summary>
    public static void Pivot(double[] binv, int m, double[] xb, double[] duals, double[] d, int r, double rc)
    {
        double dr = d[r];
        double theta = Math.Max(0, xb[r]) / dr;
        for (int i = 0; i < m; i++) xb[i] -= theta * d[i];
        xb[r] = theta;
        var rowR = binv.AsSpan((int)((long)r * m), m);
        double f = rc / dr;
        for (int i = 0; i < m; i++) duals[i] += f * rowR[i];
        double inv = 1 / dr;
        for (int i = 0; i < m; i++) rowR[i] *= inv;
        for (int i = 0; i < m; i++)
        {
            if (i == r || d[i] == 0) continue;
            Axpy(binv.AsSpan((int)((long)i * m), m), rowR, -d[i]);
        }
    }

    private static void Axpy(Span<double> target, ReadOnlySpan<double> source, double a)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var va = new Vector<double>(a);
            for (; i <= target.Length - Vector<double>.Count; i += Vector<double>.Count)
            {
                var t = new Vector<double>(target[i..]);
                (t + va * new Vector<double>(source[i..])).CopyTo(target[i..]);
            }
        }
        for (; i < target.Length; i++) target[i] += a * source[i];
    }
}
