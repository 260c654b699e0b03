using System.Text;

namespace Karpetrack.Bench;

/// <summary>
/// The provisioning benchmark family (issue 17): price models × workloads × sizes, each instance a cluster of pending
/// pods only, planned through the whole recommender. Deterministic: fixed seeds, classes in name order.
/// </summary>
internal static class PackingFamily
{
    private const long GiB = 1L << 30;
    public static readonly int[] Sizes = [1_000, 10_000, 100_000];
    public static readonly string[] Workloads = ["mix", "pinned", "anti-affinity", "gpu"];

    /// <summary>A price book and the options that go with it (region, GPUs per class).</summary>
    public sealed record PriceModel(string Name, PriceBook Book, RecommenderOptions Options, bool HasGpu);

    public static List<PriceModel> PriceModels()
    {
        var models = new List<PriceModel>();
        var feed = PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(Report.RepoRoot(), "data", "percentiles", "percentiles-2026-08-17.json")), DateTimeOffset.UnixEpoch, "bench");
        foreach (var region in feed.Classes.Values.Select(c => c.Class.Region).Distinct().Order(StringComparer.Ordinal))
            models.Add(new PriceModel(region, feed, new RecommenderOptions { Region = region },
                feed.Classes.Values.Any(c => c.Class.Region == region && c.Class.Category == "gpu")));
        foreach (var (name, exponent) in new[] { ("linear", 0.0), ("concave", -0.08), ("convex", 0.08) })
            models.Add(Synthetic(name, exponent));
        return models;
    }

    /// <summary>
    /// Prices linear in size with category factors (compute-heavy 15 % off, memory-heavy 15 % dearer), as on-demand
    /// lists and busier spot markets price; <paramref name="exponent"/> ≠ 0 scales each class by (vCPU / 2)^exponent:
    /// negative is a bulk discount (concave), positive a premium on large nodes (convex).
    /// </summary>
    private static PriceModel Synthetic(string name, double exponent)
    {
        const string region = "syn-test-1";
        var classes = new Dictionary<string, PricedClass>(StringComparer.Ordinal);
        var gpus = new Dictionary<string, int>(StringComparer.Ordinal);
        string[] sizes = ["medium", "large", "xlarge", "2xlarge", "4xlarge"];
        foreach (var (cat, catName, gbPerCpu, factor) in new[] { ("ch", "Compute Heavy", 1.875, 0.85), ("gp", "General Purpose", 3.75, 1.0), ("mh", "Memory Heavy", 7.5, 1.15) })
            for (int k = 0; k < sizes.Length; k++)
            {
                int cpu = 2 << k;
                Add(cat, catName, $"{cat}.vs1.{sizes[k]}-syn", cpu, cpu * gbPerCpu, factor, 0);
            }
        for (int k = 0; k < 3; k++)
        {
            int cpu = 8 << k, gpu = 1 << k;
            Add("gpu", "GPU", $"gpu.vs1.{sizes[k + 2]}-syn", cpu, cpu * 7.5, 1.0, gpu);
            gpus[$"gpu.vs1.{sizes[k + 2]}-syn"] = gpu;
        }
        var book = new PriceBook(classes, DateTimeOffset.UnixEpoch, "bench-" + name, embedded: false);
        return new PriceModel(name, book, new RecommenderOptions { Region = region, GpuPerClass = gpus }, true);

        void Add(string cat, string catName, string className, int cpu, double gb, double factor, int gpu)
        {
            double price = (0.012 * cpu + 0.0016 * gb + 0.6 * gpu) * factor * Math.Pow(cpu / 2.0, exponent);
            var c = new ServerClass(className, region, cat, catName, cpu, (long)(gb * 1e9), className, "synthetic", "v1");
            classes[className] = new PricedClass(c, new ClassPrices(Math.Round((decimal)price, 6), null, null, null));
        }
    }

    /// <summary>
    /// Pending pods of a workload: "mix" is perf-anchors §5 (CPU 0.25-8 cores, memory 1-8 GiB per core × U(0.6, 1.4));
    /// "pinned" puts 30 % of them on a category (half by nodeSelector, half by required node affinity that excludes the
    /// compute-heavy classes); "anti-affinity" puts 25 % in Deployments of 10-40 identical replicas that repel each
    /// other per hostname; "gpu" gives 10 % one GPU each (2-8 cores, 8-48 GiB).
    /// </summary>
    public static ClusterModel Cluster(string workload, int n, int seed)
    {
        var model = new ClusterModel(ResourceTable.Default);
        var table = ResourceTable.Default;
        var rng = new Random(seed);
        int[] cores = [250, 500, 1000, 2000, 4000, 8000];
        int[] weights = [30, 25, 20, 15, 7, 3];
        int[] gibPerCore = [1, 2, 2, 4, 4, 4, 8];
        string[] categories = ["ch", "gp", "mh"];
        int i = 0;
        (long Cpu, long Mem) Draw()
        {
            int pick = rng.Next(100), c = 0;
            while (pick >= weights[c]) pick -= weights[c++];
            long cpu = cores[c];
            return (cpu, (long)(cpu / 1000.0 * gibPerCore[rng.Next(gibPerCore.Length)] * GiB * (0.6 + 0.8 * rng.NextDouble())));
        }
        void Add(string owner, long cpu, long mem, long gpu = 0, string? labels = null, string? selector = null, string? affinity = null)
        {
            var req = new long[table.Count];
            req[ResourceTable.Cpu] = cpu; req[ResourceTable.Memory] = mem;
            if (gpu > 0) req[table.GpuIndex] = gpu;
            model.UpsertPod(new PodRecord
            {
                Uid = Json.StableGuid($"{workload}-{i}"), Name = $"{owner}-{i:x5}", Namespace = "bench", OwnerName = owner, Owner = OwnerKind.ReplicaSet,
                Phase = PodPhase.Pending, Unschedulable = true, Requests = req,
                LabelsJson = Encoding.UTF8.GetBytes(labels ?? $$"""{"app":"{{owner}}"}"""),
                NodeSelectorJson = selector is null ? [] : Encoding.UTF8.GetBytes(selector),
                AffinityJson = affinity is null ? [] : Encoding.UTF8.GetBytes(affinity),
            });
            i++;
        }
        while (i < n)
        {
            double roll = rng.NextDouble();
            if (workload == "pinned" && roll < 0.15)
            {
                var (cpu, mem) = Draw();
                string cat = categories[rng.Next(3)];
                Add("pin-" + cat, cpu, mem, selector: $$"""{"karpetrack.io/category":"{{cat}}"}""");
            }
            else if (workload == "pinned" && roll < 0.30)
            {
                var (cpu, mem) = Draw();
                Add("not-ch", cpu, mem, affinity: """{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"karpetrack.io/category","operator":"In","values":["gp","mh"]}]}]}}}""");
            }
            else if (workload == "anti-affinity" && roll < 0.25)
            {
                var (cpu, mem) = Draw();
                string app = $"spread-{i:x5}";
                string anti = $$$"""{"podAntiAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"labelSelector":{"matchLabels":{"app":"{{{app}}}"}},"topologyKey":"kubernetes.io/hostname"}]}}""";
                for (int r = 10 + rng.Next(31); r > 0 && i < n; r--) Add(app, cpu, mem, affinity: anti);
            }
            else if (workload == "gpu" && roll < 0.10)
                Add("gpu", 2000L << rng.Next(3), (8 + 8 * rng.Next(6)) * GiB, gpu: 1);
            else
            {
                var (cpu, mem) = Draw();
                Add("mix", cpu, mem);
            }
        }
        return model;
    }
}
