using System.Text.RegularExpressions;

namespace Karpetrack.Tests.Chart;

public partial class ChartReadmeTests
{
    private static string Read(string name) => File.ReadAllText(Path.Combine(ChartRenderer.ChartDir, name));

    [Fact]
    public void ConfigurationTableDocumentsEveryValueAndNothingElse()
    {
        var readme = Read("README.md");
        var section = readme[readme.IndexOf("## Configuration", StringComparison.Ordinal)..];
        var documented = TableRow().Matches(section).Select(m => m.Groups[1].Value).ToList();
        var keys = SchemaCheck.DocumentedKeys(SchemaCheck.Load());
        Assert.Equal(documented.Count, documented.Distinct().Count());
        Assert.Empty(keys.Except(documented));      // undocumented values
        Assert.Empty(documented.Except(keys));      // stale rows
    }

    [Fact]
    public void EveryValueHasAComment()
    {
        var keys = SchemaCheck.DocumentedKeys(SchemaCheck.Load()).ToHashSet();
        var stack = new List<(int Indent, string Key)>();
        string previous = "";
        var uncommented = new List<string>();
        foreach (var line in Read("values.yaml").Split('\n'))
        {
            var t = line.Trim();
            if (t.Length == 0 || t.StartsWith('#') || t.StartsWith('-')) { previous = t; continue; }
            var m = KeyLine().Match(t);
            if (!m.Success) { previous = t; continue; }
            int indent = line.Length - line.TrimStart().Length;
            while (stack.Count > 0 && stack[^1].Indent >= indent) stack.RemoveAt(stack.Count - 1);
            stack.Add((indent, m.Groups[1].Value));
            var path = string.Join('.', stack.Select(s => s.Key));
            if (keys.Contains(path) && !previous.StartsWith('#')) uncommented.Add(path);
            previous = t;
        }
        Assert.Empty(uncommented);
    }

    [GeneratedRegex(@"^\| `([A-Za-z0-9_.]+)` \|", RegexOptions.Multiline)]
    private static partial Regex TableRow();

    [GeneratedRegex(@"^([A-Za-z_][A-Za-z0-9_]*):")]
    private static partial Regex KeyLine();
}
