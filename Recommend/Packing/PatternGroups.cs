namespace Karpetrack;

/// <summary>
/// The rows of the configuration LP (<see cref="ColumnGeneration"/>): shapes that agree in the types they may use, in
/// anti-affinity (kept or not), GPU and pods, with cpu and memory on one geometric grid, become one group whose demand
/// is the least (rounded down, for a bound: no member is smaller, so every real bin's contents stay a feasible pattern)
/// or the largest (rounded up, for a plan: every member fits where the group fits) of its members. The grid is the
/// finest that leaves at most the target number of groups, so that the master LP's size does not grow with the pods.
/// </summary>
internal sealed class PatternGroups
{
    private const int D = PackingInstance.D;
    /// <summary>The coarsest memory step before cpu is coarsened too.</summary>
    private const double MaxStep = 0.5;
    public readonly int G;
    public readonly long[] Dem;         // G×D
    public readonly long[] Count;       // items per group
    /// <summary>Most members one bin may hold: the distinct anti-affinity groups among them, else long.MaxValue.</summary>
    public readonly long[] PerBin;
    public readonly bool[] TypeOk;      // G×T
    public readonly int[] GroupOf;      // per shape: its group, or -1 when left out
    public readonly double Step;        // the grid's relative step (0: exact demands)

    private PatternGroups(int g, long[] dem, long[] count, long[] perBin, bool[] typeOk, int[] groupOf, double step)
    {
        G = g; Dem = dem; Count = count; PerBin = perBin; TypeOk = typeOk; GroupOf = groupOf; Step = step;
    }

    /// <summary>Groups of the shapes <paramref name="include"/> names, each with the count <paramref name="count"/> gives it.</summary>
    public static PatternGroups Build(PackingInstance x, bool[] include, Func<int, long> count, int target, bool roundUp)
    {
        int S = x.S, T = x.T;
        var sig = Signatures(x, include);
        var logs = new double[S * 2];
        for (int s = 0; s < S; s++)
            for (int r = 0; r < 2; r++) logs[s * 2 + r] = x.SDem[s * D + r] > 0 ? Math.Log(x.SDem[s * D + r]) : 0;
        Key KeyOf(int s, double lc, double lm) => new(sig[s], x.SAa[s] >= 0, x.SDem[s * D + 2], x.SDem[s * D + 3], Bucket(x, logs, s, 0, lc), Bucket(x, logs, s, 1, lm));

        // The finest grid that leaves at most `target` groups, memory coarsened first: cpu requests take few values, and
        // where cpu is what fills the bins, keeping it exact keeps what makes the configuration LP strong. A grid that is
        // too fine is given up as soon as it passes the target.
        double stepCpu = 0, stepMem = 0;
        var map = new Dictionary<Key, int>();
        for (int attempt = 0; ; attempt++)
        {
            double lc = stepCpu > 0 ? Math.Log(1 + stepCpu) : 0, lm = stepMem > 0 ? Math.Log(1 + stepMem) : 0;
            bool last = attempt == 60;
            map.Clear();
            bool over = false;
            for (int s = 0; s < S && (last || !over); s++)
                if (include[s] && sig[s] >= 0) { map.TryAdd(KeyOf(s, lc, lm), map.Count); over = map.Count > target; }
            if (!over || last) break;
            if (stepMem < MaxStep) stepMem = stepMem == 0 ? 0.002 : Math.Min(MaxStep, stepMem * 1.5);
            else if (stepCpu < MaxStep) stepCpu = stepCpu == 0 ? 0.002 : Math.Min(MaxStep, stepCpu * 1.5);
            else { stepCpu *= 1.5; stepMem *= 1.5; }
        }
        double step = Math.Max(stepCpu, stepMem);
        int G = map.Count;
        var dem = new long[G * D];
        var cnt = new long[G];
        var perBin = new long[G];
        var typeOk = new bool[G * T];
        var groupOf = new int[S];
        Array.Fill(groupOf, -1);
        Array.Fill(dem, roundUp ? long.MinValue : long.MaxValue);
        var aaGroups = new HashSet<(int, int)>();
        var aaCount = new long[G];
        double lcFinal = stepCpu > 0 ? Math.Log(1 + stepCpu) : 0, lmFinal = stepMem > 0 ? Math.Log(1 + stepMem) : 0;
        for (int s = 0; s < S; s++)
        {
            if (!include[s] || sig[s] < 0) continue;
            int g = map[KeyOf(s, lcFinal, lmFinal)];
            groupOf[s] = g;
            for (int r = 0; r < D; r++)
                dem[g * D + r] = roundUp ? Math.Max(dem[g * D + r], x.SDem[s * D + r]) : Math.Min(dem[g * D + r], x.SDem[s * D + r]);
            cnt[g] += count(s);
            for (int t = 0; t < T; t++) typeOk[g * T + t] = x.TypeOk[s * T + t];
            if (x.SAa[s] >= 0 && aaGroups.Add((g, x.SAa[s]))) aaCount[g]++;
        }
        for (int g = 0; g < G; g++) perBin[g] = aaCount[g] > 0 ? aaCount[g] : long.MaxValue;
        if (roundUp)
        {
            // A rounded-up demand may no longer fit a type every member fits: such types leave the group.
            for (int g = 0; g < G; g++)
                for (int t = 0; t < T; t++)
                    if (typeOk[g * T + t])
                        for (int r = 0; r < D; r++) if (dem[g * D + r] > x.Cap[t * D + r]) { typeOk[g * T + t] = false; break; }
        }
        return new PatternGroups(G, dem, cnt, perBin, typeOk, groupOf, step);
    }

    private static long Bucket(PackingInstance x, double[] logs, int s, int r, double lg)
    {
        long d = x.SDem[s * D + r];
        return d <= 0 ? -1 : lg == 0 ? d : (long)Math.Floor(logs[s * 2 + r] / lg);
    }

    /// <summary>Per shape, an id of the set of types it may use (-1 when it may use none).</summary>
    private static int[] Signatures(PackingInstance x, bool[] include)
    {
        int S = x.S, T = x.T;
        var sig = new int[S];
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        var row = new char[T];
        // Shapes of one constraint class and one size band mostly share a row: the string is built only when the row
        // differs from the previous shape's.
        int last = -1;
        for (int s = 0; s < S; s++)
        {
            if (!include[s] || !x.AnyType[s]) { sig[s] = -1; continue; }
            bool same = last >= 0;
            for (int t = 0; t < T && same; t++) same = x.TypeOk[s * T + t] == x.TypeOk[last * T + t];
            if (same) { sig[s] = sig[last]; last = s; continue; }
            for (int t = 0; t < T; t++) row[t] = x.TypeOk[s * T + t] ? '1' : '0';
            var key = new string(row);
            if (!ids.TryGetValue(key, out int id)) ids[key] = id = ids.Count;
            sig[s] = id;
            last = s;
        }
        return sig;
    }

    private readonly record struct Key(int Sig, bool Aa, long Gpu, long Pods, long Cpu, long Mem);
}
