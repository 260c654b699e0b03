using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Karpetrack.Bench;

/// <summary>
/// Provisioning through the whole recommender on the benchmark family (<see cref="PackingFamily"/>): each plan's cost
/// against its own lower bound, against today's plans (the recorded baseline file) and its time.
/// `make bench ARGS="family"`; `--max-pods N` keeps the smaller sizes, `--models a,b` some price models, `--workloads a,b`
/// some workloads (a run so filtered replaces only the rows and sizes it ran; the others keep their figures and date),
/// `--record-baseline` rewrites the baseline file from this run.
/// </summary>
internal static class FamilyBench
{
    private const string Section = "provisioning family";

    public sealed record Result(string Model, string Workload, int Pods, decimal Cost, decimal Bound, decimal Dearest, int Nodes, int Unplaced, double P50Ms, double CpuP50Ms = 0,
        decimal ResourceBound = 0, decimal ConfigurationBound = 0)
    {
        public string Key => $"{Model}\t{Workload}\t{Pods}";
        public decimal Goal => Bound * 1.02m + Dearest;
    }

    private static string BaselinePath => Path.Combine(Report.RepoRoot(), "bench", "Karpetrack.Bench", "family-baseline.tsv");

    public static void Run(Report report, string[] args)
    {
        int maxPods = Arg(args, "--max-pods") is { } m ? int.Parse(m, CultureInfo.InvariantCulture) : int.MaxValue;
        var only = Arg(args, "--models")?.Split(',').ToHashSet(StringComparer.Ordinal);
        var workloads = Arg(args, "--workloads")?.Split(',').ToHashSet(StringComparer.Ordinal);
        var baseline = LoadBaseline();
        bool filtered = only is not null || workloads is not null || maxPods < PackingFamily.Sizes.Max();
        var before = PreviousTable.Read(report.Path, Section);
        var results = new List<Result>();
        var rows = new Dictionary<string, (string Measured, bool Met)>(StringComparer.Ordinal);
        foreach (var model in PackingFamily.PriceModels().Where(x => only is null || only.Contains(x.Name)))
            foreach (var workload in PackingFamily.Workloads.Where(w => workloads is null || workloads.Contains(w)))
            {
                if (workload == "gpu" && !model.HasGpu) continue;
                var row = new List<Result>();
                foreach (int n in PackingFamily.Sizes.Where(s => s <= maxPods))
                {
                    var r = Measure(model, workload, n);
                    row.Add(r);
                    Console.WriteLine($"  {r.Model} {r.Workload} {r.Pods}: ${r.Cost}/h, bound ${r.Bound}/h ({Gap(r):P2}; resource LP {r.ResourceBound}, configuration LP {r.ConfigurationBound}), {r.Nodes} nodes, {r.Unplaced} unplaced, p50 {r.P50Ms:F1} ms (cpu {r.CpuP50Ms:F1})"
                        + (baseline.TryGetValue(r.Key, out var b) ? $", today ${b.Cost}/h" : ""));
                }
                results.AddRange(row);
                bool met = row.All(r => r.Cost <= r.Goal && (!baseline.TryGetValue(r.Key, out var b) || (r.Cost <= b.Cost && r.Unplaced <= b.Unplaced)));
                var parts = row.Select(r => (Size(r.Pods), $"{Gap(r):+0.0 %;-0.0 %} ({r.Cost:0.###} / {r.Bound:0.###} $/h{Bounds(r)}{Today(r, baseline)}{(r.Unplaced > 0 ? $", {r.Unplaced} unplaced" : "")})")).ToList();
                string what = $"{model.Name}, {workload}";
                // Sizes left out by --max-pods keep what the table had for them, with their own date.
                if (before.Rows.TryGetValue(what, out var old) && PreviousTable.KeptParts(old.Measured, parts.Select(q => q.Item1), before.Measured) is { Count: > 0 } kept)
                {
                    parts.AddRange(kept);
                    met &= old.Verdict == "met";   // the kept sizes' own verdict is not in the table: met only if the whole row was
                }
                rows[what] = (string.Join("; ", parts.Select(q => $"{q.Item1}: {q.Item2}")), met);
            }
        // Every row of the family in its order: the ones this run measured, the others as the table had them (a filtered run
        // used to rewrite the whole table, losing the rows it did not run).
        foreach (var model in PackingFamily.PriceModels())
            foreach (var workload in PackingFamily.Workloads)
            {
                if (workload == "gpu" && !model.HasGpu) continue;
                string what = $"{model.Name}, {workload}";
                if (rows.TryGetValue(what, out var mine)) report.Row(Section, what, "≤ bound + 2 % + 1 node; ≤ today", mine.Measured, mine.Met);
                else if (filtered && before.Rows.TryGetValue(what, out var old)) before.Put(report, Section, old);
            }
        foreach (int n in PackingFamily.Sizes)
        {
            var at = results.Where(r => r.Pods == n).ToList();
            string title = $"Time for {n:N0} pending pods through the whole recommender";
            // The time rows are over every instance of a size: a run that left some out prints its figures and keeps the row.
            bool complete = only is null && workloads is null && n <= maxPods;
            if (at.Count == 0 || !complete)
            {
                if (at.Count > 0) Console.WriteLine($"  {title}, slowest of the {at.Count} instances run: wall {at.Max(r => r.P50Ms):F0} ms, CPU {at.Max(r => r.CpuP50Ms):F0} ms, median CPU {Median(at.Select(r => r.CpuP50Ms)):F0} ms (not in the table: not every instance ran)");
                if (before.TimeRows.TryGetValue(title, out var keptRow)) before.Put(report, Section, keptRow);
                continue;
            }
            var worst = at.MaxBy(r => r.P50Ms)!;
            var worstCpu = at.MaxBy(r => r.CpuP50Ms)!;
            double? goal = n switch { 10_000 => 50, 100_000 => 500, _ => null };
            report.Row(Section, $"{title}, slowest of {at.Count} instances (p50 of its runs; CPU time beside)",
                goal is { } g ? $"≤ {g:F0} ms" : "(none)",
                $"wall {worst.P50Ms:F0} ms ({worst.Model}, {worst.Workload}), median instance {Median(at.Select(r => r.P50Ms)):F0} ms; "
                + $"CPU {worstCpu.CpuP50Ms:F0} ms ({worstCpu.Model}, {worstCpu.Workload}), median {Median(at.Select(r => r.CpuP50Ms)):F0} ms",
                goal is { } g2 ? worst.P50Ms <= g2 : null);
        }
        if (args.Contains("--record-baseline")) SaveBaseline(results);
    }

    private static string Size(int n) => n >= 1000 ? $"{n / 1000}k" : n.ToString(CultureInfo.InvariantCulture);
    private static double Gap(Result r) => r.Bound > 0 ? (double)(r.Cost / r.Bound) - 1 : 0;
    private static double Median(IEnumerable<double> xs) { var l = xs.Order().ToList(); return l[l.Count / 2]; }

    /// <summary>Which bound is the plan's: the resource LP's (with its integrality terms) and, where it ran, the configuration LP's.</summary>
    private static string Bounds(Result r) =>
        r.ConfigurationBound > 0 ? $"; bounds: resource {r.ResourceBound:0.###}, configuration {r.ConfigurationBound:0.###}" : "";

    private static string Today(Result r, Dictionary<string, Result> baseline) =>
        baseline.TryGetValue(r.Key, out var b) ? r.Cost == b.Cost ? ", = today" : $", today {b.Cost:0.###}" : "";

    private static Result Measure(PackingFamily.PriceModel model, string workload, int n)
    {
        var cluster = PackingFamily.Cluster(workload, n, seed: n + Array.IndexOf(PackingFamily.Workloads, workload));
        var snap = cluster.Snapshot();
        var pods = cluster.Pods();
        var times = new List<double>();
        var cpu = new List<double>();
        Plan plan = Recommender.Recommend(snap, pods, [], [], model.Book, model.Options); // a warm-up, untimed
        for (int run = 0; run < (n >= 100_000 ? 3 : 5); run++)
        {
            // CPU time beside wall time: on a shared machine the wall time also counts the waits for a core.
            var c0 = Process.GetCurrentProcess().TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            plan = Recommender.Recommend(snap, pods, [], [], model.Book, model.Options);
            times.Add(sw.Elapsed.TotalMilliseconds);
            cpu.Add((Process.GetCurrentProcess().TotalProcessorTime - c0).TotalMilliseconds);
        }
        times.Sort();
        cpu.Sort();
        var rec = plan.Recommendations.SingleOrDefault(r => r.Type == RecommendationType.Provision);
        return new Result(model.Name, workload, n, rec?.NewCostPerHour ?? 0, plan.ProvisioningLowerBoundPerHour,
            rec?.NewNodes.Max(x => x.PricePerHour) ?? 0, rec?.NewNodes.Sum(x => x.Count) ?? 0, plan.Unplaceable.Count, Report.Percentile(times, 0.5), Report.Percentile(cpu, 0.5),
            plan.ProvisioningResourceBoundPerHour, plan.ProvisioningConfigurationBoundPerHour);
    }

    private static Dictionary<string, Result> LoadBaseline()
    {
        var map = new Dictionary<string, Result>(StringComparer.Ordinal);
        if (!File.Exists(BaselinePath)) return map;
        foreach (var line in File.ReadLines(BaselinePath).Where(l => l.Length > 0 && l[0] != '#'))
        {
            var f = line.Split('\t');
            var r = new Result(f[0], f[1], int.Parse(f[2], CultureInfo.InvariantCulture), decimal.Parse(f[3], CultureInfo.InvariantCulture),
                decimal.Parse(f[4], CultureInfo.InvariantCulture), 0, 0, int.Parse(f[5], CultureInfo.InvariantCulture), 0);
            map[r.Key] = r;
        }
        return map;
    }

    private static void SaveBaseline(List<Result> results)
    {
        var sb = new StringBuilder("# model\tworkload\tpods\tcost $/h\tbound $/h\tunplaced: the plans of the packer this file was recorded with\n");
        foreach (var r in results) sb.Append(CultureInfo.InvariantCulture, $"{r.Key}\t{r.Cost}\t{r.Bound}\t{r.Unplaced}\n");
        File.WriteAllText(BaselinePath, sb.ToString());
        Console.WriteLine($"wrote {BaselinePath}");
    }

    private static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}

/// <summary>
/// The family table as BENCHMARKS.md has it before a run (its rows by "what", and its date), so a filtered run can keep
/// the rows and sizes it did not measure, each marked with the date it was measured.
/// </summary>
internal sealed partial class PreviousTable
{
    public sealed record Row(string What, string Goal, string Measured, string Verdict);

    public string Measured { get; private init; } = "";
    public Dictionary<string, Row> Rows { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, Row> TimeRows { get; } = new(StringComparer.Ordinal);

    [GeneratedRegex(@" \(measured [^)]*\)$")]
    private static partial Regex DateSuffix();

    [GeneratedRegex(@"(?:^|; )(\d+k)( \(measured [^)]*\))?: ")]
    private static partial Regex SizePart();

    public static PreviousTable Read(string path, string section)
    {
        if (!File.Exists(path)) return new PreviousTable();
        var text = File.ReadAllText(path);
        string begin = $"<!-- bench:{section}:begin -->", end = $"<!-- bench:{section}:end -->";
        int b = text.IndexOf(begin, StringComparison.Ordinal), e = text.IndexOf(end, StringComparison.Ordinal);
        if (b < 0 || e < b) return new PreviousTable();
        var lines = text[(b + begin.Length)..e].Split('\n');
        var dated = lines.FirstOrDefault(l => l.StartsWith("Measured ", StringComparison.Ordinal));
        var table = new PreviousTable { Measured = dated is null ? "" : dated["Measured ".Length..].Split(" on ")[0] };
        foreach (var line in lines.Where(l => l.StartsWith("| ", StringComparison.Ordinal) && !l.StartsWith("| what |", StringComparison.Ordinal) && !l.StartsWith("| ---", StringComparison.Ordinal)))
        {
            var cells = line.Trim().Trim('|').Split(" | ");
            if (cells.Length != 4) continue;
            var row = new Row(cells[0].Trim(), cells[1].Trim(), cells[2].Trim(), cells[3].Trim());
            string key = DateSuffix().Replace(row.What, "");
            if (key.StartsWith("Time for ", StringComparison.Ordinal)) table.TimeRows[key.Split(", slowest of")[0]] = row;
            else table.Rows[key] = row;
        }
        return table;
    }

    /// <summary>Writes a kept row as it was, its "what" marked with the date it was measured (unless it already is).</summary>
    public void Put(Report report, string section, Row row)
    {
        string what = DateSuffix().IsMatch(row.What) || Measured.Length == 0 ? row.What : $"{row.What} (measured {Measured})";
        bool? met = row.Verdict switch { "met" => true, "**missed**" => false, _ => null };
        report.Row(section, what, row.Goal, row.Measured, met);
    }

    /// <summary>The sizes of an old "measured" cell that <paramref name="ran"/> does not have, each marked with its date.</summary>
    public static List<(string, string)> KeptParts(string measured, IEnumerable<string> ran, string date)
    {
        var have = ran.ToHashSet(StringComparer.Ordinal);
        var matches = SizePart().Matches(measured);
        var kept = new List<(string, string)>();
        for (int i = 0; i < matches.Count; i++)
        {
            var m = matches[i];
            int start = m.Index + m.Length, stop = i + 1 < matches.Count ? matches[i + 1].Index : measured.Length;
            if (have.Contains(m.Groups[1].Value)) continue;
            string stamp = m.Groups[2].Success ? m.Groups[2].Value : date.Length > 0 ? $" (measured {date})" : "";
            kept.Add((m.Groups[1].Value + stamp, measured[start..stop]));
        }
        return kept;
    }
}
