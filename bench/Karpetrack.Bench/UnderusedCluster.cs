using System.Text;
using System.Text.Json;

namespace Karpetrack.Bench;

/// <summary>
/// A seeded underused cluster with blockers: nodes of the iad gp/ch/mh classes filled to 20-40 % of their cpu or
/// memory (whichever the pods reach first) by ReplicaSet pods of a mixed shape, one DaemonSet pod per node, and a
/// share of nodes kept by each blocker the disruption rules name: a pod under a PodDisruptionBudget that allows no
/// disruption, a pod annotated do-not-disrupt, a bare pod (no controller), a pod with local storage, a node annotated
/// do-not-disrupt. Same seed, same cluster.
/// </summary>
internal sealed class UnderusedCluster
{
    public required ClusterModel Model { get; init; }
    public required PdbRecord[] Pdbs { get; init; }
    public required Dictionary<string, int> Blocked { get; init; }

    /// <summary>"20 % blocked: 10 pdb, 10 do-not-disrupt, ..." for the bench row.</summary>
    public string Describe() => $"{Blocked.Values.Sum()} nodes blocked: " + string.Join(", ", Blocked.Select(kv => $"{kv.Value} {kv.Key}"));

    private static readonly string[] Classes =
    [
        "gp.vs1.medium-iad", "gp.vs1.large-iad", "gp.vs1.xlarge-iad", "gp.vs1.2xlarge-iad",
        "ch.vs1.large-iad", "ch.vs1.xlarge-iad", "ch.vs1.2xlarge-iad",
        "mh.vs1.medium-iad", "mh.vs1.large-iad", "mh.vs1.xlarge-iad",
    ];

    private static readonly string[] Kinds = ["pdb", "pod-do-not-disrupt", "bare-pod", "local-storage", "node-do-not-disrupt"];

    /// <param name="blockedShare">The share of nodes that carry one blocker (spread evenly over the kinds).</param>
    public static UnderusedCluster Build(int nodes, int seed, PriceBook book, double blockedShare = 0.2)
    {
        var rng = new Random(seed);
        var model = new ClusterModel(ResourceTable.Default);
        var blocked = Kinds.ToDictionary(k => k, _ => 0);
        int[] cores = [100, 250, 250, 500, 500, 1000, 2000];
        double[] gibPerCore = [0.5, 1, 2, 2, 4, 8];
        int apps = Math.Max(10, nodes / 10);
        int uid = 0;
        for (int i = 0; i < nodes; i++)
        {
            var cls = book.Classes[Classes[rng.Next(Classes.Length)]].Class;
            string name = $"node-{seed}-{i:D5}";
            long cpu = (long)(cls.Cpu * 1000), mem = cls.MemoryBytes;
            string? kind = rng.NextDouble() < blockedShare ? Kinds[rng.Next(Kinds.Length)] : null;
            if (kind is not null) blocked[kind]++;
            var capacity = new long[model.Resources.Count];
            var allocatable = new long[model.Resources.Count];
            (capacity[ResourceTable.Cpu], capacity[ResourceTable.Memory]) = (cpu, mem);
            (allocatable[ResourceTable.Cpu], allocatable[ResourceTable.Memory]) = (cpu - 100, mem - mem / 20);
            model.UpsertNode(new NodeRecord
            {
                Name = name,
                Labels = new(StringComparer.Ordinal)
                {
                    [SpotLabels.ServerClass] = cls.Name, [SpotLabels.CapacityType] = "spot", [SpotLabels.Pool] = "pool-" + cls.Name,
                    ["kubernetes.io/hostname"] = name, ["kubernetes.io/os"] = "linux",
                },
                Annotations = kind == "node-do-not-disrupt" ? new(StringComparer.Ordinal) { [NodeAnnotations.DoNotDisrupt] = "true" } : new(StringComparer.Ordinal),
                Allocatable = allocatable, Capacity = capacity, Ready = true,
            });
            Pod(model, ref uid, name, "kube-system", "node-agent", OwnerKind.DaemonSet, 50, 64L << 20, PodTraits.None);
            double target = 0.2 + 0.2 * rng.NextDouble();
            long usedCpu = 0, usedMem = 0;
            bool first = true;
            while (true)
            {
                long c = cores[rng.Next(cores.Length)];
                long m = (long)(c / 1000.0 * gibPerCore[rng.Next(gibPerCore.Length)] * (1L << 30));
                if (!first && (usedCpu + c > target * allocatable[ResourceTable.Cpu] || usedMem + m > target * allocatable[ResourceTable.Memory])) break;
                if (first && (c > allocatable[ResourceTable.Cpu] / 2 || m > allocatable[ResourceTable.Memory] / 2)) continue;
                int app = rng.Next(apps);
                var (owner, traits, appName) = (OwnerKind.ReplicaSet, PodTraits.None, $"app-{app}");
                if (first && kind is not null)
                    switch (kind)
                    {
                        case "pdb": appName = $"guarded-{app % 10}"; break;
                        case "pod-do-not-disrupt": traits = PodTraits.DoNotDisrupt; break;
                        case "bare-pod": owner = OwnerKind.None; break;
                        case "local-storage": traits = PodTraits.LocalStorage; break;
                    }
                Pod(model, ref uid, name, "shop", appName, owner, c, m, traits);
                usedCpu += c;
                usedMem += m;
                first = false;
            }
        }
        var pdbs = Enumerable.Range(0, 10).Select(g => new PdbRecord
        {
            Namespace = "shop", Name = $"guarded-{g}", Selector = Selector($"guarded-{g}"), DisruptionsAllowed = 0,
        }).ToArray();
        return new UnderusedCluster { Model = model, Pdbs = pdbs, Blocked = blocked };
    }

    private static void Pod(ClusterModel model, ref int uid, string node, string ns, string app, OwnerKind owner, long cpu, long mem, PodTraits traits)
    {
        int id = uid++;
        model.UpsertPod(new PodRecord
        {
            Uid = Json.StableGuid($"underused-{id}"), Name = $"{app}-{id:x6}", Namespace = ns, NodeName = node, OwnerName = owner == OwnerKind.None ? null : app,
            Owner = owner, Phase = PodPhase.Running, Requests = [cpu, mem], Traits = traits,
            LabelsJson = Encoding.UTF8.GetBytes($"{{\"app\":\"{app}\"}}"),
        });
    }

    private static LabelSelector Selector(string app)
    {
        using var doc = JsonDocument.Parse($"{{\"matchLabels\":{{\"app\":\"{app}\"}}}}");
        return LabelSelector.FromJson(doc.RootElement);
    }
}
