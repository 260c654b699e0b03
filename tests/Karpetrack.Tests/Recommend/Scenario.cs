namespace Karpetrack.Tests.Recommend;

/// <summary>A small cluster built by hand, priced with the real 2026-08-17 feed snapshot (us-east-iad-1).</summary>
internal sealed class Scenario
{
    public static readonly PriceBook Book = PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(RepoRoot.Path, "data", "percentiles", "percentiles-2026-08-17.json")), DateTimeOffset.UnixEpoch, "test");
    public readonly ClusterModel Model = new(ResourceTable.Default);
    public readonly List<PdbRecord> Pdbs = [];
    public readonly List<DaemonSetRecord> DaemonSets = [];
    private int uid;

    public Scenario Node(string name, string cls, bool ready = true, bool cordoned = false, Dictionary<string, string>? annotations = null,
        string type = "spot", Dictionary<string, string>? labels = null, Taint[]? taints = null, int gpus = 0, long reservedMilliCpu = 100, bool deleting = false, DateTimeOffset? created = null)
    {
        var c = Book.Classes[cls].Class;
        long cpu = (long)(c.Cpu * 1000), mem = c.MemoryBytes;
        var capacity = new long[Model.Resources.Count];
        var allocatable = new long[Model.Resources.Count];
        (capacity[ResourceTable.Cpu], capacity[ResourceTable.Memory], capacity[Model.Resources.GpuIndex]) = (cpu, mem, gpus);
        (allocatable[ResourceTable.Cpu], allocatable[ResourceTable.Memory], allocatable[Model.Resources.GpuIndex]) = (cpu - reservedMilliCpu, mem - (mem / 20), gpus);
        var l = new Dictionary<string, string>(labels ?? [], StringComparer.Ordinal)
        {
            [SpotLabels.ServerClass] = cls, [SpotLabels.CapacityType] = type, [SpotLabels.Pool] = "pool-" + name,
            ["kubernetes.io/hostname"] = name, ["kubernetes.io/os"] = "linux",
        };
        Model.UpsertNode(new NodeRecord
        {
            Name = name, Labels = l, Annotations = annotations ?? [], Ready = ready, Unschedulable = cordoned, Taints = taints ?? [],
            Capacity = capacity, Allocatable = allocatable, Deleting = deleting, Created = created,
        });
        return this;
    }

    /// <summary>A pod decoded from real-shaped JSON, so the shape goes through the same decoder as a live one.</summary>
    public Scenario Pod(string name, string? node, string cpu, string mem, string ns = "shop", string ownerKind = "ReplicaSet", string? owner = "app-5d9f",
        string labels = """{"app":"app"}""", string annotations = "{}", string extraSpec = "", bool pending = false, int gpu = 0)
    {
        var ownerRefs = ownerKind == "None" ? "[]"
            : """[{"apiVersion":"apps/v1","kind":"@K@","name":"@O@","uid":"x","controller":true}]""".Replace("@K@", ownerKind).Replace("@O@", owner);
        var status = pending
            ? """{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False","reason":"Unschedulable"}]}"""
            : """{"phase":"Running"}""";
        var json = """
            {"metadata":{"name":"@NAME@","namespace":"@NS@","uid":"@UID@","labels":@LABELS@,"annotations":@ANN@,"ownerReferences":@OWN@},
             "spec":{@NODE@"containers":[{"name":"c","resources":{"requests":{"cpu":"@CPU@","memory":"@MEM@"@GPU@}}}]@EXTRA@},
             "status":@STATUS@}
            """
            .Replace("@NAME@", name).Replace("@NS@", ns).Replace("@UID@", Json.StableGuid(ns + "/" + name + "/" + uid++).ToString())
            .Replace("@LABELS@", labels).Replace("@ANN@", annotations).Replace("@OWN@", ownerRefs)
            .Replace("@NODE@", node is null ? "" : "\"nodeName\":\"" + node + "\",").Replace("@CPU@", cpu).Replace("@MEM@", mem)
            .Replace("@GPU@", gpu > 0 ? $",\"nvidia.com/gpu\":\"{gpu}\"" : "").Replace("@EXTRA@", extraSpec).Replace("@STATUS@", status);
        Model.UpsertPod(PodRequestTests.Decode(json));
        return this;
    }

    /// <summary>A DaemonSet whose pod template requests cpu and memory, with the given nodeSelector (JSON).</summary>
    public Scenario DaemonSet(string name, string cpu, string mem, string nodeSelector = "{}")
    {
        var template = PodRequestTests.Decode("""
            {"metadata":{"name":"@N@","namespace":"kube-system","labels":{"app":"@N@"}},
             "spec":{"nodeSelector":@SEL@,"containers":[{"name":"c","resources":{"requests":{"cpu":"@CPU@","memory":"@MEM@"}}}]}}
            """.Replace("@N@", name).Replace("@SEL@", nodeSelector).Replace("@CPU@", cpu).Replace("@MEM@", mem));
        DaemonSets.Add(new DaemonSetRecord { Namespace = "kube-system", Name = name, Template = template });
        return this;
    }

    public Scenario Pdb(string ns, string name, string app, int allowed)
    {
        using var doc = System.Text.Json.JsonDocument.Parse("""{"matchLabels":{"app":"@A@"}}""".Replace("@A@", app));
        Pdbs.Add(new PdbRecord { Namespace = ns, Name = name, Selector = LabelSelector.FromJson(doc.RootElement), DisruptionsAllowed = allowed });
        return this;
    }

    public Plan Run(RecommenderOptions? o = null, IReadOnlyList<InFlightNode>? inFlight = null, PriceBook? book = null, DateTimeOffset? now = null) =>
        Recommender.Recommend(Model.Snapshot(), Model.Pods(), Pdbs.ToArray(), DaemonSets.ToArray(), book ?? Book, o ?? new RecommenderOptions { Region = "us-east-iad-1" }, inFlight, now);

    /// <summary>Node annotations that keep a node out of every disruption (and so a fixed destination).</summary>
    public static readonly Dictionary<string, string> DoNotDisrupt = new() { ["karpetrack.io/do-not-disrupt"] = "true" };

    /// <summary>The one recommendation of that type in the plan.</summary>
    public static Recommendation Single(Plan plan, RecommendationType type) => Assert.Single(plan.Recommendations, r => r.Type == type);

    /// <summary>Labels and a required hostname anti-affinity (extraSpec) that keep pods of one spread on different nodes.</summary>
    public const string Spread = """{"app":"spread"}""";
    public const string AntiSpread = ""","affinity":{"podAntiAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"topologyKey":"kubernetes.io/hostname","labelSelector":{"matchLabels":{"app":"spread"}}}]}}""";
}
