using System.Text;

namespace Karpetrack.Bench;

/// <summary>
/// Collects result rows per section and rewrites those sections of BENCHMARKS.md between markers,
/// leaving the hand-written text around them alone.
/// </summary>
internal sealed class Report(string path)
{
    private readonly Dictionary<string, List<string>> sections = [];

    public string Path { get; } = path;

    public static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(System.IO.Path.Combine(dir.FullName, "Karpetrack.csproj"))) dir = dir.Parent;
        return dir?.FullName ?? Directory.GetCurrentDirectory();
    }

    /// <summary>One table row: what, goal, measured, verdict.</summary>
    public void Row(string section, string what, string goal, string measured, bool? met)
    {
        if (!sections.TryGetValue(section, out var rows)) sections[section] = rows = [];
        var verdict = met switch { true => "met", false => "**missed**", null => "(info)" };
        rows.Add($"| {what} | {goal} | {measured} | {verdict} |");
        Console.WriteLine($"  {what}: {measured} (goal {goal}) {verdict}");
    }

    public void Save()
    {
        var text = File.Exists(Path) ? File.ReadAllText(Path) : "# Benchmarks\n";
        foreach (var (section, rows) in sections)
        {
            var begin = $"<!-- bench:{section}:begin -->";
            var end = $"<!-- bench:{section}:end -->";
            var table = new StringBuilder();
            table.AppendLine(begin);
            table.AppendLine($"Measured {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC on {Environment.ProcessorCount} cores, {Machine()}, .NET {Environment.Version}.");
            table.AppendLine();
            table.AppendLine("| what | goal | measured | |");
            table.AppendLine("| --- | --- | --- | --- |");
            foreach (var r in rows) table.AppendLine(r);
            table.Append(end);
            int b = text.IndexOf(begin, StringComparison.Ordinal), e = text.IndexOf(end, StringComparison.Ordinal);
            text = b >= 0 && e > b
                ? text[..b] + table + text[(e + end.Length)..]
                : text.TrimEnd() + $"\n\n## {section}\n\n" + table + "\n";
        }
        File.WriteAllText(Path, text);
    }

    private static string Machine()
    {
        try
        {
            var model = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim();
            var mem = File.ReadLines("/proc/meminfo").First().Split(':', 2)[1].Trim();
            return $"{model}, {mem} RAM";
        }
        catch (IOException) { return "unknown machine"; }
    }

    public static double Percentile(List<double> sorted, double p) => sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(p * sorted.Count) - 1)];
}
