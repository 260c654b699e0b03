namespace Karpetrack.Tests.Chart;

/// <summary>What `helm template` would give for charts/karpetrack with some values set: the manifests, parsed.</summary>
internal sealed class RenderedChart(Dictionary<string, object?> values, List<Dictionary<string, object?>> docs)
{
    public Dictionary<string, object?> Values { get; } = values;
    public List<Dictionary<string, object?>> Documents { get; } = docs;

    public IEnumerable<Dictionary<string, object?>> OfKind(string kind) => Documents.Where(d => d.Str("kind") == kind);

    public Dictionary<string, object?>? Find(string kind, string name) =>
        OfKind(kind).SingleOrDefault(d => d.Map("metadata").Str("name") == name);

    public Dictionary<string, object?> Get(string kind, string name) =>
        Find(kind, name) ?? throw new Xunit.Sdk.XunitException($"no {kind} {name}; have: {string.Join(", ", Documents.Select(d => $"{d.Str("kind")}/{d.Map("metadata").Str("name")}"))}");

    public Dictionary<string, object?> Container =>
        (Dictionary<string, object?>)OfKind("Deployment").Single().Map("spec").Map("template").Map("spec").List("containers")[0]!;

    public List<string> Args => Container.List("args").Select(a => (string)a!).ToList();
}

internal static class ChartRenderer
{
    public const string ReleaseName = "kt";
    public const string Namespace = "karpetrack-system";

    public static string ChartDir => Path.Combine(RepoRoot.Path, "charts", "karpetrack");

    public static Dictionary<string, object?> DefaultValues() =>
        (Dictionary<string, object?>)Yaml.Parse(File.ReadAllText(Path.Combine(ChartDir, "values.yaml")))!;

    /// <summary>Default values with `overrides` (YAML, like a -f file) merged in.</summary>
    public static Dictionary<string, object?> Values(string overrides = "")
    {
        var values = DefaultValues();
        if (Yaml.Parse(overrides) is Dictionary<string, object?> o) Merge(values, o);
        return values;
    }

    public static RenderedChart Render(string overrides = "")
    {
        var values = Values(overrides);
        var chart = (Dictionary<string, object?>)Yaml.Parse(File.ReadAllText(Path.Combine(ChartDir, "Chart.yaml")))!;
        var root = new Dictionary<string, object?>
        {
            ["Values"] = values,
            ["Release"] = new Dictionary<string, object?> { ["Name"] = ReleaseName, ["Namespace"] = Namespace, ["Service"] = "Helm", ["IsInstall"] = true, ["IsUpgrade"] = false },
            ["Chart"] = new Dictionary<string, object?>
            {
                ["Name"] = chart["name"], ["Version"] = chart["version"], ["AppVersion"] = chart["appVersion"], ["KubeVersion"] = chart["kubeVersion"],
            },
            ["Files"] = new Dictionary<string, object?>
            {
                ["Get"] = new Func<object?[], object?>(a => File.ReadAllText(Path.Combine(ChartDir, (string)a.Single()!))),
            },
        };
        var set = new GoTemplate();
        var templates = Directory.GetFiles(Path.Combine(ChartDir, "templates")).Order(StringComparer.Ordinal).ToList();
        // Helpers first so that every define exists before a manifest includes it.
        foreach (var f in templates.OrderBy(f => Path.GetFileName(f).StartsWith('_') ? 0 : 1))
            set.Add(Path.GetFileName(f), File.ReadAllText(f));
        var docs = new List<Dictionary<string, object?>>();
        foreach (var f in templates)
        {
            var name = Path.GetFileName(f);
            if (name.StartsWith('_') || name.EndsWith(".txt", StringComparison.Ordinal)) continue;
            string text;
            try { text = set.Render(name, root); }
            catch (TemplateException e) { throw new TemplateException($"{name}: {e.Message}"); }
            // KARPETRACK_CHART_DUMP=dir keeps what was rendered, for reading the manifests without helm.
            if (Environment.GetEnvironmentVariable("KARPETRACK_CHART_DUMP") is { Length: > 0 } dump)
            {
                Directory.CreateDirectory(dump);
                File.WriteAllText(Path.Combine(dump, name), text);
            }
            foreach (var doc in Yaml.ParseAll(text))
                docs.Add(doc as Dictionary<string, object?> ?? throw new Xunit.Sdk.XunitException($"{name} rendered a document that is not a map"));
        }
        return new RenderedChart(values, docs);
    }

    private static void Merge(Dictionary<string, object?> into, Dictionary<string, object?> from)
    {
        foreach (var (k, v) in from)
        {
            if (v is Dictionary<string, object?> m && into.GetValueOrDefault(k) is Dictionary<string, object?> existing) Merge(existing, m);
            else into[k] = v;
        }
    }
}

/// <summary>Short, throwing accessors for parsed manifests.</summary>
internal static class Tree
{
    public static Dictionary<string, object?> Map(this Dictionary<string, object?> m, string key) =>
        m.GetValueOrDefault(key) as Dictionary<string, object?> ?? throw new Xunit.Sdk.XunitException($"no map at {key}");

    public static List<object?> List(this Dictionary<string, object?> m, string key) =>
        m.GetValueOrDefault(key) as List<object?> ?? throw new Xunit.Sdk.XunitException($"no list at {key}");

    public static string? Str(this Dictionary<string, object?> m, string key) => m.GetValueOrDefault(key)?.ToString();

    public static IEnumerable<Dictionary<string, object?>> Maps(this List<object?> l) => l.Cast<Dictionary<string, object?>>();

    public static List<string> Strings(this Dictionary<string, object?> m, string key) => m.List(key).Select(x => (string)x!).ToList();
}
