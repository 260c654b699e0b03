using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;

namespace Karpetrack.Simulation;

public sealed record DemoClusterOptions
{
    public int Seed { get; init; } = 42;
    /// <summary>At least one change happens per interval.</summary>
    public TimeSpan ChurnInterval { get; init; } = TimeSpan.FromSeconds(5);
    public int Nodes { get; init; } = 12;
    /// <summary>False leaves the churn to explicit <see cref="DemoCluster.Step"/> calls (tests).</summary>
    public bool Churn { get; init; } = true;
    public KubeApiServerOptions Server { get; init; } = new();
}

/// <summary>A demo node in a single-node pool Karpetrack created (as an earlier run would have): the Spot fake adopts these pools.</summary>
public sealed record DemoManagedNode(string Node, string Pool, string ServerClass, IReadOnlyDictionary<string, string> CustomLabels);

/// <summary>One change the demo made, for logs and for checking that a seed replays the same story.</summary>
public sealed record DemoChange(string Action, string Namespace, string Name, string? Node);

/// <summary>
/// The embedded cluster behind <c>karpetrack --demo</c>: a small Spot cluster on a real API server,
/// kept moving by a deterministic churn loop (scaling, deletions, finishing jobs, scheduling).
/// </summary>
public sealed class DemoCluster : IAsyncDisposable
{
    private sealed class DemoNode(JsonObject obj, ServerClass cls)
    {
        public JsonObject Object { get; set; } = obj;
        public string Name { get; } = (string)obj["metadata"]!["name"]!;
        public ServerClass Class { get; } = cls;
        public bool Cordoned { get; set; }
        /// <summary>NoSchedule/NoExecute taints keep the demo's workloads (none of which tolerate them) off the node.</summary>
        public bool Repels { get; init; }
        public long FreeCpu { get; set; } = SyntheticCluster.AllocatableMilliCpu(cls);
        public long FreeMem { get; set; } = SyntheticCluster.AllocatableMemoryBytes(cls);
    }

    private sealed class DemoPod(PodTemplate template, JsonObject obj)
    {
        public PodTemplate Template { get; } = template;
        public JsonObject Object { get; set; } = obj;
        public string Name => (string)Object["metadata"]!["name"]!;
        public DemoNode? Node { get; set; }
        public bool Terminating { get; set; }
        public bool Finished { get; set; }
    }

    private sealed record Deployment(PodTemplate Template, int MinReplicas, int MaxReplicas);

    private readonly DemoClusterOptions _options;
    private readonly ILogger? _logger;
    private readonly Random _rng;
    private readonly List<DemoNode> _nodes = [];
    private readonly List<DemoManagedNode> _managed = [];
    private readonly List<DemoPod> _pods = [];
    private readonly List<Deployment> _deployments = [];
    private readonly object _stepLock = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly string _tempDir;
    private Task _loop = Task.CompletedTask;
    private int _jobCounter;
    private int _nodeIndex;

    private DemoCluster(KubeApiServer api, DemoClusterOptions options, ILogger? logger)
    {
        Api = api;
        _options = options;
        _logger = logger;
        _rng = new Random(options.Seed);
        _tempDir = Directory.CreateTempSubdirectory("karpetrack-demo-").FullName;
        KubeconfigPath = api.WriteKubeconfig(Path.Combine(_tempDir, "kubeconfig"));
    }

    public KubeApiServer Api { get; }

    /// <summary>The API server's clock (real time unless a test gives its own): every time the demo stamps or waits on is read from it.</summary>
    private TimeProvider Clock => _options.Server.Clock;

    /// <summary>The nodes created in Karpetrack-managed single-node pools (the Spot fake adopts their pools).</summary>
    public IReadOnlyList<DemoManagedNode> ManagedNodes => _managed;
    public string KubeconfigPath { get; }

    public static async Task<DemoCluster> StartAsync(DemoClusterOptions options, ILogger? logger = null, CancellationToken ct = default)
    {
        var api = await KubeApiServer.StartAsync(options.Server, ct).ConfigureAwait(false);
        var demo = new DemoCluster(api, options, logger);
        demo.Populate();
        api.Written += demo.OnApiWrite;
        logger?.LogInformation("Demo cluster on {Address}: {Nodes} nodes, {Pods} pods, kubeconfig {Path}",
            api.BaseAddress, demo._nodes.Count, demo._pods.Count, demo.KubeconfigPath);
        if (options.Churn) demo._loop = demo.ChurnLoopAsync(demo._stop.Token);
        return demo;
    }

    // A mix of shapes so that the recommender has something to say: small compute, big memory, a cordoned node.
    private static readonly string[] NodeClasses =
    [
        "gp.vs1.large-iad", "gp.vs1.xlarge-iad", "ch.vs1.large-iad", "ch.vs1.xlarge-iad", "mh.vs1.large-iad", "gp.vs1.medium-iad",
        "gp.vs1.large-iad", "ch.vs1.2xlarge-iad", "mh.vs1.medium-iad", "gp.vs1.2xlarge-iad", "ch.vs1.medium-iad", "mh.vs1.xlarge-iad",
    ];

    private void Populate()
    {
        var created = Clock.GetUtcNow();
        var pools = new Dictionary<string, Guid>();
        for (var i = 0; i < _options.Nodes; i++)
        {
            var cls = SyntheticCluster.IadClasses.First(c => c.Name == NodeClasses[i % NodeClasses.Length]);
            var spot = i % 6 != 5;
            var key = cls.Name + (spot ? "/spot" : "/ondemand");
            if (!pools.TryGetValue(key, out var pool)) pools[key] = pool = SyntheticCluster.NewGuid(_rng);
            var obj = SyntheticCluster.Node(_rng, cls, pool, spot, i, created.AddHours(-_rng.Next(6, 24 * 14)));
            // Most Spot nodes sit in single-node pools an earlier Karpetrack created, so the actuator
            // may act on them; two nodes share one pool of their own, and on-demand nodes stay unmanaged.
            if (spot && i % 6 != 0 && i != _options.Nodes - 1)
            {
                var own = Json.StableGuid($"demo-pool/{_options.Seed}/{i}").ToString();
                var custom = new Dictionary<string, string>(StringComparer.Ordinal) { ["karpetrack.io/managed"] = "true", ["karpetrack.io/category"] = cls.Category };
                var labels = obj["metadata"]!["labels"]!.AsObject();
                labels["nodepool.ngpc.rxt.io/name"] = own;
                foreach (var (k, v) in custom) labels[k] = v;
                _managed.Add(new DemoManagedNode((string)obj["metadata"]!["name"]!, own, cls.Name, custom));
            }
            var node = new DemoNode(obj, cls);
            // The last node is cordoned, as during a drain someone forgot about.
            if (i == _options.Nodes - 1 && _options.Nodes > 2)
            {
                SyntheticCluster.Cordon(obj);
                node.Cordoned = true;
            }
            _nodes.Add(node);
            Api.Store.Upsert("nodes", obj);
        }
        _nodeIndex = _options.Nodes;

        foreach (var node in _nodes)
        {
            foreach (var t in SyntheticCluster.DaemonSetTemplates)
                Place(t, node, created.AddMinutes(-_rng.Next(60, 60 * 24)));
            Place(SyntheticCluster.KubeProxyMirror, node, created.AddMinutes(-_rng.Next(60, 60 * 24)));
        }

        var c = SyntheticCluster.Cpu;
        var m = SyntheticCluster.Mem;
        ContainerShape App(string name, string cpu, string mem, string? cpuLimit = null, string? memLimit = null) =>
            new(name, $"ghcr.io/acme/{name}:2.{_rng.Next(20)}.{_rng.Next(10)}", c(cpu), m(mem),
                cpuLimit is null ? null : c(cpuLimit), memLimit is null ? null : m(memLimit), 8080);
        PodTemplate Deploy(string ns, string app, ContainerShape main, ContainerShape[]? sidecars = null, ContainerShape[]? init = null,
            (Quantity, Quantity)? overhead = null) => new()
        {
            Namespace = ns, App = app, OwnerName = $"{app}-{SyntheticCluster.RandomSuffix(_rng, 9)}", Containers = [main],
            Sidecars = sidecars ?? [], InitContainers = init ?? [], Overhead = overhead,
        };
        var envoy = new ContainerShape("envoy", "docker.io/envoyproxy/envoy:v1.32.3", c("50m"), m("64Mi"), Port: 15001);

        _deployments.AddRange(
        [
            new(Deploy("shop", "web", App("web", "250m", "256Mi", "1", "512Mi"), sidecars: [envoy]), 2, 6),
            new(Deploy("shop", "cart", App("cart", "0.5", "512Mi", "1", "1Gi")), 2, 5),
            new(Deploy("shop", "checkout", App("checkout", "500m", "1Gi"), init: [new("migrate", "ghcr.io/acme/checkout-migrate:2.0.0", c("1"), m("256Mi"))]), 1, 4),
            new(Deploy("payments", "ledger", App("ledger", "1", "2Gi", "2", "2Gi")), 2, 4),
            new(Deploy("payments", "fraud-scorer", App("fraud-scorer", "750m", "1G"), overhead: (c("250m"), m("160Mi"))), 1, 2),
            new(Deploy("search", "indexer", App("indexer", "2", "4Gi")), 1, 3),
            new(Deploy("search", "query", App("query", "300m", "768Mi"), sidecars: [envoy]), 2, 6),
            new(Deploy("analytics", "ingest", App("ingest", "100m", "128Mi")), 3, 8),
            new(Deploy("analytics", "dashboard", App("dashboard", "200m", "300M")), 1, 3),
            new(Deploy("platform", "gateway", App("gateway", "0.2", "256Mi", "500m", "256Mi"), sidecars: [envoy]), 2, 4),
            // Too big for any node: stays Pending and Unschedulable, the demand a new node would serve.
            new(Deploy("ml-serving", "trainer", App("trainer", "14", "64Gi")), 2, 3),
        ]);
        foreach (var d in _deployments)
        {
            var replicas = d.MinReplicas + _rng.Next(0, 2);
            for (var r = 0; r < replicas; r++) Schedule(d.Template, created.AddMinutes(-_rng.Next(10, 60 * 48)));
        }
        StartJob(created.AddMinutes(-3));

        // kubectl get ns and clients that resolve namespaces find every namespace in use.
        Api.Store.Register(ResourceType.Namespaces);
        foreach (var ns in _pods.Select(p => p.Template.Namespace).Append("default").Append("batch").Distinct().Order(StringComparer.Ordinal))
        {
            Api.Store.Upsert("namespaces", new JsonObject
            {
                ["kind"] = "Namespace",
                ["apiVersion"] = "v1",
                ["metadata"] = new JsonObject
                {
                    ["name"] = ns,
                    ["uid"] = SyntheticCluster.NewGuid(_rng).ToString(),
                    ["creationTimestamp"] = KubeTime.Format(created.AddDays(-30)),
                    ["labels"] = new JsonObject { ["kubernetes.io/metadata.name"] = ns },
                },
                ["spec"] = new JsonObject { ["finalizers"] = new JsonArray("kubernetes") },
                ["status"] = new JsonObject { ["phase"] = "Active" },
            });
        }
        AddDaemonSetsAndBudgets(created);
        // What a controller needs to write: its leader lease and the events it records.
        Api.Store.Register(ResourceType.Leases);
        Api.Store.Register(ResourceType.Events);
    }

    // The DaemonSet objects behind the per-node pods (so a recommender knows what lands on a new
    // node), and disruption budgets: one that allows a disruption and one that allows none.
    private void AddDaemonSetsAndBudgets(DateTimeOffset created)
    {
        Api.Store.Register(ResourceType.DaemonSets);
        Api.Store.Register(ResourceType.PodDisruptionBudgets);
        foreach (var t in SyntheticCluster.DaemonSetTemplates)
        {
            var pod = SyntheticCluster.Pod(_rng, t, t.OwnerName + "-template", null, created);
            var spec = pod["spec"]!.AsObject();
            spec.Remove("nodeName");
            var labels = pod["metadata"]!["labels"]!.DeepClone().AsObject();
            labels.Remove("pod-template-generation");
            labels.Remove("controller-revision-hash");
            Api.Store.Upsert("daemonsets", new JsonObject
            {
                ["apiVersion"] = "apps/v1",
                ["kind"] = "DaemonSet",
                ["metadata"] = new JsonObject { ["name"] = t.OwnerName, ["namespace"] = t.Namespace, ["creationTimestamp"] = KubeTime.Format(created.AddDays(-30)) },
                ["spec"] = new JsonObject
                {
                    ["selector"] = new JsonObject { ["matchLabels"] = new JsonObject { ["app.kubernetes.io/name"] = t.App } },
                    ["template"] = new JsonObject { ["metadata"] = new JsonObject { ["labels"] = labels }, ["spec"] = spec.DeepClone() },
                },
                ["status"] = new JsonObject { ["desiredNumberScheduled"] = _nodes.Count, ["numberReady"] = _nodes.Count },
            });
        }
        foreach (var (ns, app, allowed) in new[] { ("payments", "ledger", 0), ("shop", "web", 1) })
        {
            var healthy = _pods.Count(p => p.Template.Namespace == ns && p.Template.App == app && p.Node is not null);
            Api.Store.Upsert("poddisruptionbudgets", new JsonObject
            {
                ["apiVersion"] = "policy/v1",
                ["kind"] = "PodDisruptionBudget",
                ["metadata"] = new JsonObject { ["name"] = app, ["namespace"] = ns, ["creationTimestamp"] = KubeTime.Format(created.AddDays(-30)) },
                ["spec"] = new JsonObject
                {
                    [allowed == 0 ? "maxUnavailable" : "minAvailable"] = allowed == 0 ? 0 : Math.Max(0, healthy - 1),
                    ["selector"] = new JsonObject { ["matchLabels"] = new JsonObject { ["app.kubernetes.io/name"] = app } },
                },
                ["status"] = new JsonObject
                {
                    ["currentHealthy"] = healthy, ["desiredHealthy"] = healthy - allowed, ["disruptionsAllowed"] = allowed, ["expectedPods"] = healthy,
                },
            });
        }
    }

    private PodTemplate JobTemplate(string name) => new()
    {
        Namespace = "batch", App = "report", Owner = PodOwner.Job, OwnerName = name,
        Containers = [new("report", "ghcr.io/acme/report:1.4.0", SyntheticCluster.Cpu("1"), SyntheticCluster.Mem("1Gi"))],
        InitContainers = [new("fetch", "ghcr.io/acme/fetch:1.0.2", SyntheticCluster.Cpu("250m"), SyntheticCluster.Mem("128Mi"))],
    };

    private DemoChange StartJob(DateTimeOffset at)
    {
        var name = $"nightly-report-{29000000 + ++_jobCounter}";
        return Schedule(JobTemplate(name), at);
    }

    // generateName semantics: draw again when the name is taken.
    private string NewPodName(PodTemplate t, string? nodeName)
    {
        string name;
        do name = SyntheticCluster.PodName(_rng, t, nodeName);
        while (Api.Store.Get("pods", t.Namespace, name) is not null);
        return name;
    }

    private DemoPod Place(PodTemplate t, DemoNode node, DateTimeOffset at)
    {
        var obj = SyntheticCluster.Pod(_rng, t, NewPodName(t, node.Name), node.Object, at);
        var pod = new DemoPod(t, obj) { Node = node };
        Reserve(node, t, +1);
        _pods.Add(pod);
        Api.Store.Upsert("pods", obj);
        return pod;
    }

    private static void Reserve(DemoNode node, PodTemplate t, int sign)
    {
        var (cpu, mem) = t.EffectiveRequest();
        node.FreeCpu -= sign * cpu;
        node.FreeMem -= sign * mem;
    }

    /// <summary>First fit over schedulable nodes; no room means Pending and Unschedulable.</summary>
    private DemoNode? FindRoom(PodTemplate t)
    {
        var (cpu, mem) = t.EffectiveRequest();
        return _nodes.FirstOrDefault(n => !n.Cordoned && !n.Repels && n.FreeCpu >= cpu && n.FreeMem >= mem);
    }

    private DemoChange Schedule(PodTemplate t, DateTimeOffset at)
    {
        var node = FindRoom(t);
        if (node is not null)
        {
            var placed = Place(t, node, at);
            return new DemoChange("created", t.Namespace, placed.Name, node.Name);
        }
        var obj = SyntheticCluster.Pod(_rng, t, NewPodName(t, null), null, at, _nodes.Count);
        var pod = new DemoPod(t, obj);
        _pods.Add(pod);
        Api.Store.Upsert("pods", obj);
        return new DemoChange("pending", t.Namespace, pod.Name, null);
    }

    private async Task ChurnLoopAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(_options.ChurnInterval, Clock);
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
            {
                foreach (var change in Step())
                    _logger?.LogDebug("demo: {Action} {Namespace}/{Name} {Node}", change.Action, change.Namespace, change.Name, change.Node);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>
    /// One churn step: finishes pending deletions, schedules pending pods that now fit, then one or two
    /// random actions. Always changes something. Same seed, same sequence of steps.
    /// </summary>
    public IReadOnlyList<DemoChange> Step()
    {
        lock (_stepLock)
        {
            var now = Clock.GetUtcNow();
            var changes = new List<DemoChange>();

            // The kubelet confirms graceful deletions started in the previous step.
            foreach (var p in _pods.Where(p => p.Terminating).ToArray()) Remove(p, changes);

            SchedulePending(now, changes);

            var actions = 1 + _rng.Next(2);
            for (var a = 0; a < actions; a++)
            {
                switch (_rng.Next(10))
                {
                    case < 4: ScaleUp(now, changes); break;
                    case < 8: ScaleDown(changes); break;
                    default: AdvanceJob(now, changes); break;
                }
            }
            if (changes.Count == 0) ScaleUp(now, changes);
            DisruptionBudgets.Refresh(Api.Store);
            return changes;
        }
    }

    private void SchedulePending(DateTimeOffset now, List<DemoChange> changes)
    {
        foreach (var p in _pods.Where(p => p.Node is null && !p.Finished).ToArray())
        {
            if (FindRoom(p.Template) is not { } room) continue;
            p.Node = room;
            Reserve(room, p.Template, +1);
            SyntheticCluster.Bind(p.Object, p.Template, room.Object, _rng, now);
            Api.Store.Upsert("pods", p.Object);
            changes.Add(new DemoChange("scheduled", p.Template.Namespace, p.Name, room.Name));
        }
    }

    // ---------------------------------------------------------------- nodes joining and leaving

    /// <summary>
    /// A Spot node of <paramref name="serverClass"/> joins Ready, with the usual Spot labels plus
    /// <paramref name="labels"/> (which carry nodepool.ngpc.rxt.io/name when the pool is known). The
    /// DaemonSets land on it, then pending pods that fit are scheduled onto it at once.
    /// </summary>
    public void JoinNode(string name, string serverClass, IReadOnlyDictionary<string, string> labels, IReadOnlyList<Taint> taints)
    {
        var cls = ClassNamed(serverClass);
        lock (_stepLock)
        {
            if (_nodes.Any(n => n.Name == name) || Api.Store.Get("nodes", null, name) is not null)
                throw new InvalidOperationException($"node {name} already exists");
            var now = Clock.GetUtcNow();
            var obj = SyntheticCluster.Node(_rng, cls, Guid.Empty, spot: true, _nodeIndex++, now);
            var metadata = obj["metadata"]!.AsObject();
            metadata["name"] = name;
            var nodeLabels = metadata["labels"]!.AsObject();
            nodeLabels["kubernetes.io/hostname"] = name;
            nodeLabels.Remove("nodepool.ngpc.rxt.io/name");
            foreach (var (k, v) in labels) nodeLabels[k] = v;
            foreach (var a in obj["status"]!["addresses"]!.AsArray())
                if ((string?)a!["type"] == "Hostname") a["address"] = name;
            if (taints.Count > 0)
            {
                var array = new JsonArray();
                foreach (var t in taints)
                {
                    var taint = new JsonObject { ["key"] = t.Key, ["effect"] = t.Effect };
                    if (t.Value is not null) taint["value"] = t.Value;
                    array.Add((JsonNode)taint);
                }
                obj["spec"]!.AsObject()["taints"] = array;
            }
            var node = new DemoNode(obj, cls) { Repels = taints.Any(t => t.Effect is "NoSchedule" or "NoExecute") };
            _nodes.Add(node);
            Api.Store.Upsert("nodes", obj);
            foreach (var t in SyntheticCluster.DaemonSetTemplates) Place(t, node, now);
            Place(SyntheticCluster.KubeProxyMirror, node, now);
            SchedulePending(now, []);
            DisruptionBudgets.Refresh(Api.Store);
        }
    }

    /// <summary>
    /// A node leaves (pre-empted, or its pool deleted): it and its pods are gone, and the pods of
    /// Deployments come back Pending as their ReplicaSets recreate them. False when there was no such node.
    /// </summary>
    public bool RemoveNode(string name)
    {
        lock (_stepLock)
        {
            var node = _nodes.FirstOrDefault(n => n.Name == name);
            if (node is null) return false;
            Api.Store.Delete("nodes", null, name);
            DropNode(node, Clock.GetUtcNow(), []);
            DisruptionBudgets.Refresh(Api.Store);
            return true;
        }
    }

    /// <summary>True while the demo counts the node as cordoned (for tests and logs).</summary>
    public bool IsCordoned(string node)
    {
        lock (_stepLock) return _nodes.FirstOrDefault(n => n.Name == node)?.Cordoned ?? false;
    }

    private static ServerClass ClassNamed(string name)
    {
        if (SyntheticCluster.IadClasses.FirstOrDefault(c => c.Name == name) is { } iad) return iad;
        // Other regions: the shape from the embedded price snapshot, which the demo market also uses.
        if (PriceFeedParser.Embedded().Classes.TryGetValue(name, out var priced))
        {
            var c = priced.Class;
            return new ServerClass(c.Name, c.Category, (int)Math.Ceiling(c.Cpu), c.MemoryBytes / 1_000_000_000m, c.Category + "-" + c.Name, priced.Prices.Market);
        }
        throw new ArgumentException($"unknown server class {name}", nameof(name));
    }

    // The pod garbage collector removes pods bound to a node that no longer exists.
    private void DropNode(DemoNode node, DateTimeOffset now, List<DemoChange> changes)
    {
        _nodes.Remove(node);
        foreach (var p in _pods.Where(p => p.Node == node).ToArray())
        {
            _pods.Remove(p);
            // By UID: the pod bound to the gone node, never another that took its name since (bound elsewhere).
            Api.Store.DeleteIfUid("pods", p.Template.Namespace, p.Name, (string)p.Object["metadata"]!["uid"]!);
            changes.Add(new DemoChange("deleted", p.Template.Namespace, p.Name, node.Name));
            if (!p.Terminating && !p.Finished) Replace(p, now, changes);
        }
    }

    /// <summary>What a ReplicaSet does when one of its pods goes: a new pod, scheduled if there is room.</summary>
    private void Replace(DemoPod gone, DateTimeOffset now, List<DemoChange> changes)
    {
        if (gone.Template.Owner != PodOwner.ReplicaSet) return;   // DaemonSet and mirror pods are not recreated by an eviction
        changes.Add(Schedule(gone.Template, now));
    }

    // ---------------------------------------------------------------- reacting to API writes

    /// <summary>
    /// Writes made through the API server (kubectl, the actuator): cordons, deletions and evictions
    /// change the demo's own model as the kubelet and the controllers would react to them.
    /// </summary>
    private void OnApiWrite(ApiWrite write)
    {
        if (write.Resource is not ("nodes" or "pods")) return;
        lock (_stepLock)
        {
            var now = Clock.GetUtcNow();
            var changes = new List<DemoChange>();
            if (write.Resource == "nodes")
            {
                var node = _nodes.FirstOrDefault(n => n.Name == write.Name);
                if (node is null) return;
                if (write.Object is null)
                {
                    DropNode(node, now, changes);
                }
                else
                {
                    node.Object = write.Object;
                    node.Cordoned = (bool?)write.Object["spec"]?["unschedulable"] == true;
                }
            }
            else
            {
                var pod = _pods.FirstOrDefault(p => p.Template.Namespace == write.Namespace && p.Name == write.Name);
                if (pod is null) return;
                if (write.Object is null)
                {
                    _pods.Remove(pod);
                    if (pod.Node is not null && !pod.Finished) Reserve(pod.Node, pod.Template, -1);
                    if (!pod.Terminating) Replace(pod, now, changes);
                    // A churn step may have rewritten the pod between the API's delete and this call.
                    Api.Store.Delete("pods", pod.Template.Namespace, pod.Name);
                }
                else
                {
                    pod.Object = write.Object;
                    if (write.Object["metadata"]?["deletionTimestamp"] is not null && !pod.Terminating)
                    {
                        // Terminating pods no longer count for their ReplicaSet, which makes a new one now.
                        pod.Terminating = true;
                        Replace(pod, now, changes);
                    }
                }
            }
            DisruptionBudgets.Refresh(Api.Store);
            foreach (var change in changes)
                _logger?.LogDebug("demo (api write): {Action} {Namespace}/{Name} {Node}", change.Action, change.Namespace, change.Name, change.Node);
        }
    }

    private List<DemoPod> PodsOf(Deployment d) =>
        _pods.Where(p => p.Template == d.Template && !p.Terminating).ToList();

    private void ScaleUp(DateTimeOffset now, List<DemoChange> changes)
    {
        var candidates = _deployments.Where(d => PodsOf(d).Count < d.MaxReplicas).ToArray();
        if (candidates.Length == 0) return;
        var d = candidates[_rng.Next(candidates.Length)];
        changes.Add(Schedule(d.Template, now));
    }

    private void ScaleDown(List<DemoChange> changes)
    {
        var candidates = _deployments.Where(d => PodsOf(d).Count > d.MinReplicas).ToArray();
        if (candidates.Length == 0) return;
        var d = candidates[_rng.Next(candidates.Length)];
        var pods = PodsOf(d);
        // A ReplicaSet removes unscheduled pods first, then the youngest.
        var victim = pods.FirstOrDefault(p => p.Node is null) ?? pods[^1];
        if (victim.Node is not null && _rng.Next(2) == 0)
        {
            victim.Terminating = true;
            SyntheticCluster.MarkTerminating(victim.Object, Clock.GetUtcNow());
            Api.Store.Upsert("pods", victim.Object);
            changes.Add(new DemoChange("terminating", d.Template.Namespace, victim.Name, victim.Node.Name));
        }
        else
        {
            Remove(victim, changes);
        }
    }

    private void AdvanceJob(DateTimeOffset now, List<DemoChange> changes)
    {
        var running = _pods.FirstOrDefault(p => p.Template.Owner == PodOwner.Job && !p.Finished && p.Node is not null);
        if (running is not null)
        {
            running.Finished = true;
            Reserve(running.Node!, running.Template, -1); // a finished pod no longer holds its requests
            SyntheticCluster.MarkSucceeded(running.Object, now);
            Api.Store.Upsert("pods", running.Object);
            changes.Add(new DemoChange("succeeded", running.Template.Namespace, running.Name, running.Node!.Name));
            return;
        }
        // The CronJob's history limit removes the old pod when the next run starts.
        foreach (var done in _pods.Where(p => p.Finished).ToArray())
        {
            _pods.Remove(done);
            Api.Store.Delete("pods", done.Template.Namespace, done.Name);
            changes.Add(new DemoChange("deleted", done.Template.Namespace, done.Name, done.Node?.Name));
        }
        if (!_pods.Any(p => p.Template.Owner == PodOwner.Job)) changes.Add(StartJob(now));
    }

    private void Remove(DemoPod p, List<DemoChange> changes)
    {
        _pods.Remove(p);
        if (p.Node is not null && !p.Finished) Reserve(p.Node, p.Template, -1);
        Api.Store.Delete("pods", p.Template.Namespace, p.Name);
        changes.Add(new DemoChange("deleted", p.Template.Namespace, p.Name, p.Node?.Name));
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        await Api.DisposeAsync().ConfigureAwait(false);
        _stop.Dispose();
        try { Directory.Delete(_tempDir, recursive: true); } catch (IOException) { }
    }
}
