using System.Text.RegularExpressions;

namespace Karpetrack.Tests;

/// <summary>The README's flag and metric tables stay in step with the code.</summary>
public class ReadmeTests
{
    private static readonly string Readme = File.ReadAllText(Path.Combine(RepoRoot.Path, "README.md"));

    [Fact]
    public void FlagTableListsEveryFlagWithItsEnvironmentVariableAndDefault()
    {
        var rows = Regex.Matches(Readme, @"^\| `--([a-z0-9-]+)` \| `(KARPETRACK_[A-Z0-9_]+)` \| (`[^`]*`)? \|", RegexOptions.Multiline)
            .ToDictionary(m => m.Groups[1].Value, m => (Env: m.Groups[2].Value, Default: m.Groups[3].Value.Trim('`')));
        foreach (var f in KarpetrackOptions.Flags)
        {
            Assert.True(rows.TryGetValue(f.Name, out var row), $"README has no row for --{f.Name}");
            Assert.Equal(f.EnvVar, row.Env);
            Assert.Equal(f.Default, row.Default);
        }
        Assert.Empty(rows.Keys.Except(KarpetrackOptions.Flags.Select(f => f.Name)));
    }

    /// <summary>
    /// The two sources: <see cref="Families.All"/> for the cluster families of the chunked store, and
    /// the families the components of a started service registered on its prometheus-net registry.
    /// </summary>
    [Fact]
    public async Task MetricTablesListExactlyTheExportedFamilies()
    {
        var telemetry = await ExportedFamilies.TelemetryAsync();
        var registered = await ExportedFamilies.TelemetryTextAsync();
        // Nothing reaches the registry except through a declaration (no library defaults behind its back).
        Assert.Equal(telemetry.Select(f => f.Name).Order(StringComparer.Ordinal),
            Regex.Matches(registered, "^# TYPE ([a-z_]+) ", RegexOptions.Multiline).Select(m => m.Groups[1].Value).Order(StringComparer.Ordinal));

        var metrics = Readme[Readme.IndexOf("## Metrics", StringComparison.Ordinal)..Readme.IndexOf("## Endpoints", StringComparison.Ordinal)];
        var rows = Regex.Matches(metrics, @"^\| `([a-z_]+)` \| (gauge|counter|histogram) \| ([a-z_, ]*) \|", RegexOptions.Multiline)
            .ToDictionary(m => m.Groups[1].Value, m => (Type: m.Groups[2].Value, Labels: m.Groups[3].Value.Trim()));
        var exported = await ExportedFamilies.AllAsync();
        foreach (var f in exported)
        {
            Assert.True(rows.TryGetValue(f.Name, out var row), $"README has no row for {f.Name}");
            Assert.Equal(f.TypeName, row.Type);
            Assert.Equal(string.Join(", ", f.Labels), row.Labels);
        }
        Assert.Empty(rows.Keys.Except(exported.Select(f => f.Name)));
    }

    [Fact]
    public void QuickStartHasExactlyTheTwoSetUpCommands()
    {
        var quick = Readme[Readme.IndexOf("## Quick start", StringComparison.Ordinal)..];
        var block = Regex.Match(quick, "```sh\n(.*?)```", RegexOptions.Singleline).Groups[1].Value;
        Assert.Equal(["make run", "make test"], block.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split('#')[0].Trim()));
    }
}
