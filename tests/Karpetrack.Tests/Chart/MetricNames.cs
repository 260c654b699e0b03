using System.Text.RegularExpressions;

namespace Karpetrack.Tests.Chart;

/// <summary>deploy/metrics.txt: metric names by issue, each section marked "exists" or "planned".</summary>
internal sealed partial record MetricNames(IReadOnlyList<(string Name, string Section, bool Exists)> Entries)
{
    public static MetricNames Load()
    {
        var entries = new List<(string, string, bool)>();
        string? section = null;
        bool exists = false;
        foreach (var raw in File.ReadAllLines(Path.Combine(RepoRoot.Path, "deploy", "metrics.txt")))
        {
            var line = raw.Trim();
            if (line.Length == 0) continue;
            if (line.StartsWith('#'))
            {
                var m = Header().Match(line);
                if (m.Success) { section = m.Groups[1].Value; exists = m.Groups[2].Value == "exists"; }
                continue;
            }
            if (section is null) throw new InvalidOperationException($"metrics.txt: {line} is outside any section");
            entries.Add((line, section, exists));
        }
        return new MetricNames(entries);
    }

    public HashSet<string> All => Entries.Select(e => e.Name).ToHashSet(StringComparer.Ordinal);

    /// <summary>karpetrack_* names a PromQL expression reads.</summary>
    public static IEnumerable<string> InQuery(string promql) => Name().Matches(promql).Select(m => m.Value);

    [GeneratedRegex(@"^#\s*\[([a-z-]+)\]\s+(exists|planned)\s*$")]
    private static partial Regex Header();

    [GeneratedRegex(@"\bkarpetrack_[a-z0-9_]+\b")]
    private static partial Regex Name();
}
