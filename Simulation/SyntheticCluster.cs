using System.Globalization;
using System.Text.Json.Nodes;

namespace Karpetrack.Simulation;

/// <summary>A Spot server class as the public feed describes it, plus the OpenStack flavor its nodes report.</summary>
public sealed record ServerClass(string Name, string Category, int Vcpu, decimal MemoryGb, string Flavor, decimal MarketPrice);

public enum PodOwner { ReplicaSet, DaemonSet, Job, Node, None }

/// <summary>A quantity as written in a manifest together with its value, so generators can budget without a parser.</summary>
public sealed record Quantity(string Text, long Value);

public sealed record ContainerShape(string Name, string Image, Quantity? CpuRequest, Quantity? MemoryRequest,
    Quantity? CpuLimit = null, Quantity? MemoryLimit = null, int? Port = null);

/// <summary>What a controller would stamp out: the shape shared by all pods of one workload.</summary>
public sealed record PodTemplate
{
    public required string Namespace { get; init; }
    public required string App { get; init; }
    public PodOwner Owner { get; init; } = PodOwner.ReplicaSet;
    /// <summary>ReplicaSet, DaemonSet or Job name; ignored for mirror pods, whose owner is their node.</summary>
    public string? OwnerName { get; init; }
    public required IReadOnlyList<ContainerShape> Containers { get; init; }
    public IReadOnlyList<ContainerShape> InitContainers { get; init; } = [];
    /// <summary>Native sidecars: init containers with restartPolicy Always.</summary>
    public IReadOnlyList<ContainerShape> Sidecars { get; init; } = [];
    /// <summary>Set together with runtimeClassName kata, as the RuntimeClass admission controller would.</summary>
    public (Quantity Cpu, Quantity Memory)? Overhead { get; init; }
    public int Priority { get; init; }
    public string? PriorityClassName { get; init; }
    public IReadOnlyDictionary<string, string>? NodeSelector { get; init; }

    /// <summary>CPU (millicores) and memory (bytes) the scheduler reserves: the upstream effective-request rule.</summary>
    public (long MilliCpu, long MemoryBytes) EffectiveRequest()
    {
        long cpu = 0, mem = 0;
        foreach (var c in Containers) { cpu += c.CpuRequest?.Value ?? 0; mem += c.MemoryRequest?.Value ?? 0; }
        long sideCpu = 0, sideMem = 0;
        foreach (var s in Sidecars) { sideCpu += s.CpuRequest?.Value ?? 0; sideMem += s.MemoryRequest?.Value ?? 0; }
        cpu += sideCpu;
        mem += sideMem;
        // Classic init containers run one at a time, after the sidecars declared before them have started.
        foreach (var i in InitContainers)
        {
            cpu = Math.Max(cpu, (i.CpuRequest?.Value ?? 0) + sideCpu);
            mem = Math.Max(mem, (i.MemoryRequest?.Value ?? 0) + sideMem);
        }
        if (Overhead is { } o) { cpu += o.Cpu.Value; mem += o.Memory.Value; }
        return (cpu, mem);
    }
}

/// <summary>
/// Deterministic generator of realistic Spot nodes and pods: same seed, same objects. Node shapes
/// come from the us-east-iad-1 rows of the public server-class feed (2026-08-17) and the class to
/// flavor mapping of the Spot API; pods are about 4 KB of JSON each, like real ones with managedFields.
/// </summary>
public static class SyntheticCluster
{
    public const string Region = "IAD";
    public const string KubeletVersion = "v1.32.4";

    /// <summary>gp/ch/mh vs1 classes of us-east-iad-1 (vCPU, decimal GB and market price as the feed publishes them).</summary>
    public static IReadOnlyList<ServerClass> IadClasses { get; } =
    [
        new("gp.vs1.medium-iad", "gp", 2, 3.75m, "compute1-4", 0.001m),
        new("gp.vs1.large-iad", "gp", 4, 15m, "io1-15", 0.005m),
        new("gp.vs1.xlarge-iad", "gp", 8, 30m, "io1-30", 0.005m),
        new("gp.vs1.2xlarge-iad", "gp", 16, 60m, "io1-60", 0.01m),
        new("ch.vs1.medium-iad", "ch", 2, 3.75m, "compute1-4", 0.001m),
        new("ch.vs1.large-iad", "ch", 4, 7.5m, "compute1-8", 0.001m),
        new("ch.vs1.xlarge-iad", "ch", 8, 15m, "compute1-15", 0.005m),
        new("ch.vs1.2xlarge-iad", "ch", 16, 30m, "compute1-30", 0.01m),
        new("mh.vs1.medium-iad", "mh", 2, 15m, "memory1-15", 0.001m),
        new("mh.vs1.large-iad", "mh", 4, 30m, "memory1-30", 0.005m),
        new("mh.vs1.xlarge-iad", "mh", 8, 60m, "memory1-60", 0.01m),
        new("mh.vs1.2xlarge-iad", "mh", 16, 120m, "memory1-120", 0.02m),
    ];

    // What kubelet keeps back on these nodes: kube-reserved 100m / 100Mi plus the 100Mi hard eviction threshold.
    public const long ReservedMilliCpu = 100;
    public const long ReservedMemoryKi = 200 * 1024;
    private const long EphemeralCapacityKi = 101_430_960;          // ~96.7 GiB root disk, as observed on a medium node
    private const long EphemeralAllocatableBytes = 93_478_772_582; // minus the 10% nodefs eviction threshold

    // The product's exact parser: the generator's own figures must agree with what the exporter reads.
    public static Quantity Cpu(string text) => new(text, Karpetrack.Quantity.Parse(text).CeilMilli);
    public static Quantity Mem(string text) => new(text, Karpetrack.Quantity.Parse(text).CeilUnits);

    /// <summary>A random-looking but seed-determined UUID (version 4 layout).</summary>
    public static Guid NewGuid(Random rng)
    {
        Span<byte> b = stackalloc byte[16];
        rng.NextBytes(b);
        b[7] = (byte)((b[7] & 0x0F) | 0x40);
        b[8] = (byte)((b[8] & 0x3F) | 0x80);
        return new Guid(b);
    }

    private const string SuffixAlphabet = "bcdfghjklmnpqrstvwxz2456789"; // the generateName alphabet of apimachinery

    public static string RandomSuffix(Random rng, int length)
    {
        Span<char> c = stackalloc char[length];
        for (var i = 0; i < length; i++) c[i] = SuffixAlphabet[rng.Next(SuffixAlphabet.Length)];
        return new string(c);
    }

    private static string Hex(Random rng, int length)
    {
        Span<char> c = stackalloc char[length];
        for (var i = 0; i < length; i++) c[i] = "0123456789abcdef"[rng.Next(16)];
        return new string(c);
    }

    public static string NodeName(Random rng) =>
        "prod-instance-1785" + rng.NextInt64(1_000_000_000_000, 10_000_000_000_000).ToString(CultureInfo.InvariantCulture);

    /// <summary>Memory capacity as kubelet reports it: the feed's decimal GB in bytes, floored to Ki.</summary>
    public static long MemoryCapacityKi(ServerClass cls) => (long)(cls.MemoryGb * 1_000_000_000m) / 1024;

    public static long AllocatableMilliCpu(ServerClass cls) => cls.Vcpu * 1000L - ReservedMilliCpu;
    public static long AllocatableMemoryBytes(ServerClass cls) => (MemoryCapacityKi(cls) - ReservedMemoryKi) * 1024;

    /// <summary>One Ready Spot node of the class, in the given pool, numbered for its addresses.</summary>
    public static JsonObject Node(Random rng, ServerClass cls, Guid poolId, bool spot, int index, DateTimeOffset created)
    {
        var name = NodeName(rng);
        var (a, b) = (index / 250 % 250, index % 250 + 1);
        var internalIp = $"10.0.{a}.{b}";
        var podCidr = $"10.{64 + index / 256 % 128}.{index % 256}.0/24";
        var memKi = MemoryCapacityKi(cls);
        var vmId = NewGuid(rng);
        var heartbeat = KubeTime.Format(created.AddMinutes(rng.Next(1, 50)));
        var since = KubeTime.Format(created.AddSeconds(40));

        JsonObject Condition(string type, string status, string reason, string message, string transition) => new()
        {
            ["type"] = type, ["status"] = status, ["lastHeartbeatTime"] = heartbeat,
            ["lastTransitionTime"] = transition, ["reason"] = reason, ["message"] = message,
        };

        return new JsonObject
        {
            ["kind"] = "Node",
            ["apiVersion"] = "v1",
            ["metadata"] = new JsonObject
            {
                ["name"] = name,
                ["uid"] = NewGuid(rng).ToString(),
                ["creationTimestamp"] = KubeTime.Format(created),
                ["labels"] = new JsonObject
                {
                    ["beta.kubernetes.io/arch"] = "amd64",
                    ["beta.kubernetes.io/instance-type"] = cls.Flavor,
                    ["beta.kubernetes.io/os"] = "linux",
                    ["failure-domain.beta.kubernetes.io/region"] = Region,
                    ["failure-domain.beta.kubernetes.io/zone"] = "nova",
                    ["kubernetes.io/arch"] = "amd64",
                    ["kubernetes.io/hostname"] = name,
                    ["kubernetes.io/os"] = "linux",
                    ["node.kubernetes.io/instance-type"] = cls.Flavor,
                    ["nodepool.ngpc.rxt.io/name"] = poolId.ToString(),
                    ["servers.ngpc.rxt.io/class"] = cls.Name,
                    ["servers.ngpc.rxt.io/type"] = spot ? "spot" : "ondemand",
                    ["topology.cinder.csi.openstack.org/zone"] = "nova",
                    ["topology.kubernetes.io/region"] = Region,
                    ["topology.kubernetes.io/zone"] = "nova",
                },
                ["annotations"] = new JsonObject
                {
                    ["alpha.kubernetes.io/provided-node-ip"] = internalIp,
                    ["csi.volume.kubernetes.io/nodeid"] = $"{{\"cinder.csi.openstack.org\":\"{vmId}\"}}",
                    ["node.alpha.kubernetes.io/ttl"] = "0",
                    ["volumes.kubernetes.io/controller-managed-attach-detach"] = "true",
                },
            },
            ["spec"] = new JsonObject
            {
                ["podCIDR"] = podCidr,
                ["podCIDRs"] = new JsonArray(podCidr),
                ["providerID"] = $"openstack:///{vmId}",
            },
            ["status"] = new JsonObject
            {
                ["capacity"] = new JsonObject
                {
                    ["cpu"] = cls.Vcpu.ToString(CultureInfo.InvariantCulture),
                    ["ephemeral-storage"] = $"{EphemeralCapacityKi}Ki",
                    ["hugepages-1Gi"] = "0",
                    ["hugepages-2Mi"] = "0",
                    ["memory"] = $"{memKi}Ki",
                    ["pods"] = "110",
                },
                ["allocatable"] = new JsonObject
                {
                    ["cpu"] = $"{AllocatableMilliCpu(cls)}m",
                    ["ephemeral-storage"] = EphemeralAllocatableBytes.ToString(CultureInfo.InvariantCulture),
                    ["hugepages-1Gi"] = "0",
                    ["hugepages-2Mi"] = "0",
                    ["memory"] = $"{memKi - ReservedMemoryKi}Ki",
                    ["pods"] = "110",
                },
                ["conditions"] = new JsonArray(
                    Condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available", since),
                    Condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", since),
                    Condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", since),
                    Condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", KubeTime.Format(created.AddSeconds(75)))),
                ["addresses"] = new JsonArray(
                    new JsonObject { ["type"] = "InternalIP", ["address"] = internalIp },
                    new JsonObject { ["type"] = "Hostname", ["address"] = name }),
                ["daemonEndpoints"] = new JsonObject { ["kubeletEndpoint"] = new JsonObject { ["Port"] = 10250 } },
                ["nodeInfo"] = new JsonObject
                {
                    ["machineID"] = Hex(rng, 32),
                    ["systemUUID"] = vmId.ToString(),
                    ["bootID"] = NewGuid(rng).ToString(),
                    ["kernelVersion"] = "5.15.0-131-generic",
                    ["osImage"] = "Ubuntu 22.04.5 LTS",
                    ["containerRuntimeVersion"] = "containerd://2.2.1",
                    ["kubeletVersion"] = KubeletVersion,
                    ["kubeProxyVersion"] = KubeletVersion,
                    ["operatingSystem"] = "linux",
                    ["architecture"] = "amd64",
                },
                ["images"] = new JsonArray(
                    new JsonObject { ["names"] = new JsonArray("registry.k8s.io/kube-proxy@sha256:" + Hex(rng, 64), "registry.k8s.io/kube-proxy:" + KubeletVersion), ["sizeBytes"] = 30_832_384 },
                    new JsonObject { ["names"] = new JsonArray("docker.io/calico/node@sha256:" + Hex(rng, 64), "docker.io/calico/node:v3.29.1"), ["sizeBytes"] = 144_562_815 }),
            },
        };
    }

    /// <summary>
    /// <paramref name="count"/> nodes spread over the iad classes, one pool per class and type,
    /// about one in seven on demand. Deterministic for the seed.
    /// </summary>
    public static IReadOnlyList<JsonObject> Nodes(int count, int seed, DateTimeOffset? now = null)
    {
        var rng = new Random(seed);
        var at = now ?? DateTimeOffset.UtcNow;
        var pools = new Dictionary<(string, bool), Guid>();
        var nodes = new List<JsonObject>(count);
        for (var i = 0; i < count; i++)
        {
            var cls = IadClasses[rng.Next(IadClasses.Count)];
            var spot = rng.Next(7) != 0;
            if (!pools.TryGetValue((cls.Name, spot), out var pool)) pools[(cls.Name, spot)] = pool = NewGuid(rng);
            nodes.Add(Node(rng, cls, pool, spot, i, at.AddHours(-rng.Next(2, 24 * 20))));
        }
        return nodes;
    }

    public static ServerClass ClassOf(JsonObject node) =>
        IadClasses.First(c => c.Name == (string?)node["metadata"]!["labels"]!["servers.ngpc.rxt.io/class"]);

    private static string NodeIp(JsonObject node) => (string)node["status"]!["addresses"]![0]!["address"]!;

    private static string PodIp(JsonObject node, Random rng)
    {
        var cidr = (string)node["spec"]!["podCIDR"]!;
        return cidr[..cidr.LastIndexOf('.')] + "." + rng.Next(2, 254).ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>The pod name a controller would give it.</summary>
    public static string PodName(Random rng, PodTemplate t, string? nodeName) => t.Owner switch
    {
        PodOwner.Node => $"{t.App}-{nodeName}",
        PodOwner.None => t.App,
        _ => $"{t.OwnerName ?? t.App}-{RandomSuffix(rng, 5)}",
    };

    /// <summary>
    /// One pod of the template: Running on <paramref name="node"/> when given, else Pending and
    /// unschedulable with the scheduler's message for a cluster of <paramref name="clusterNodes"/> nodes.
    /// </summary>
    public static JsonObject Pod(Random rng, PodTemplate t, string name, JsonObject? node, DateTimeOffset created, int clusterNodes = 0)
    {
        var nodeName = (string?)node?["metadata"]?["name"];
        var uid = NewGuid(rng).ToString();
        var labels = new JsonObject
        {
            ["app.kubernetes.io/name"] = t.App,
            ["app.kubernetes.io/part-of"] = t.Namespace,
        };
        var annotations = new JsonObject();
        JsonObject? ownerRef = null;
        string? controllerField = null;
        switch (t.Owner)
        {
            case PodOwner.ReplicaSet:
                labels["pod-template-hash"] = t.OwnerName is { } rs ? rs[(rs.LastIndexOf('-') + 1)..] : RandomSuffix(rng, 10);
                annotations["kubectl.kubernetes.io/restartedAt"] = KubeTime.Format(created.AddMinutes(-rng.Next(5, 600)));
                ownerRef = OwnerRef("apps/v1", "ReplicaSet", t.OwnerName ?? t.App, rng);
                controllerField = "replicaset-controller";
                break;
            case PodOwner.DaemonSet:
                labels["controller-revision-hash"] = RandomSuffix(rng, 10);
                labels["pod-template-generation"] = "3";
                ownerRef = OwnerRef("apps/v1", "DaemonSet", t.OwnerName ?? t.App, rng);
                controllerField = "daemonset-controller";
                break;
            case PodOwner.Job:
                var jobUid = NewGuid(rng).ToString();
                labels["batch.kubernetes.io/controller-uid"] = jobUid;
                labels["batch.kubernetes.io/job-name"] = t.OwnerName ?? t.App;
                labels["job-name"] = t.OwnerName ?? t.App;
                annotations["batch.kubernetes.io/job-tracking"] = "";
                ownerRef = OwnerRef("batch/v1", "Job", t.OwnerName ?? t.App, rng, jobUid);
                controllerField = "job-controller";
                break;
            case PodOwner.Node:
                var hash = Hex(rng, 32);
                labels["tier"] = "node";
                annotations["kubernetes.io/config.hash"] = hash;
                annotations["kubernetes.io/config.mirror"] = hash;
                annotations["kubernetes.io/config.seen"] = created.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture);
                annotations["kubernetes.io/config.source"] = "file";
                ownerRef = new JsonObject
                {
                    ["apiVersion"] = "v1", ["kind"] = "Node", ["name"] = nodeName ?? "", ["uid"] = NewGuid(rng).ToString(), ["controller"] = true,
                };
                break;
        }
        annotations["prometheus.io/scrape"] = "true";
        annotations["prometheus.io/port"] = "9090";

        var containers = new JsonArray();
        foreach (var c in t.Containers) containers.Add((JsonNode)Container(rng, c, sidecar: false));
        var init = new JsonArray();
        foreach (var s in t.Sidecars) init.Add((JsonNode)Container(rng, s, sidecar: true));
        foreach (var i in t.InitContainers) init.Add((JsonNode)Container(rng, i, sidecar: false, initOnly: true));

        var spec = new JsonObject();
        if (init.Count > 0) spec["initContainers"] = init;
        spec["containers"] = containers;
        spec["restartPolicy"] = t.Owner == PodOwner.Job ? "Never" : "Always";
        spec["terminationGracePeriodSeconds"] = 30;
        spec["dnsPolicy"] = "ClusterFirst";
        if (t.NodeSelector is { } sel)
        {
            var ns = new JsonObject();
            foreach (var (k, v) in sel) ns[k] = v;
            spec["nodeSelector"] = ns;
        }
        if (t.Owner != PodOwner.Node) spec["serviceAccountName"] = t.App;
        if (nodeName is not null) spec["nodeName"] = nodeName;
        spec["securityContext"] = new JsonObject { ["runAsNonRoot"] = t.Owner != PodOwner.Node, ["fsGroup"] = 2000 };
        if (t.Owner is PodOwner.DaemonSet or PodOwner.Node) spec["hostNetwork"] = true;
        if (t.Owner == PodOwner.DaemonSet)
        {
            spec["affinity"] = new JsonObject
            {
                ["nodeAffinity"] = new JsonObject
                {
                    ["requiredDuringSchedulingIgnoredDuringExecution"] = new JsonObject
                    {
                        ["nodeSelectorTerms"] = new JsonArray(new JsonObject
                        {
                            ["matchFields"] = new JsonArray(new JsonObject
                            {
                                ["key"] = "metadata.name", ["operator"] = "In", ["values"] = new JsonArray(nodeName ?? ""),
                            }),
                        }),
                    },
                },
            };
        }
        spec["schedulerName"] = "default-scheduler";
        spec["tolerations"] = t.Owner == PodOwner.DaemonSet
            ? new JsonArray(
                Toleration("node.kubernetes.io/not-ready", "Exists", "NoExecute", null),
                Toleration("node.kubernetes.io/unreachable", "Exists", "NoExecute", null),
                Toleration("node.kubernetes.io/disk-pressure", "Exists", "NoSchedule", null),
                Toleration("node.kubernetes.io/unschedulable", "Exists", "NoSchedule", null))
            : new JsonArray(
                Toleration("node.kubernetes.io/not-ready", "Exists", "NoExecute", 300),
                Toleration("node.kubernetes.io/unreachable", "Exists", "NoExecute", 300));
        if (t.PriorityClassName is not null) spec["priorityClassName"] = t.PriorityClassName;
        spec["priority"] = t.Priority;
        spec["enableServiceLinks"] = true;
        spec["preemptionPolicy"] = "PreemptLowerPriority";
        if (t.Overhead is { } oh)
        {
            spec["runtimeClassName"] = "kata";
            spec["overhead"] = new JsonObject { ["cpu"] = oh.Cpu.Text, ["memory"] = oh.Memory.Text };
        }

        var metadata = new JsonObject
        {
            ["name"] = name,
            ["namespace"] = t.Namespace,
            ["uid"] = uid,
            ["creationTimestamp"] = KubeTime.Format(created),
            ["labels"] = labels,
            ["annotations"] = annotations,
        };
        if (t.Owner is not (PodOwner.Node or PodOwner.None))
            metadata["generateName"] = (t.OwnerName ?? t.App) + "-";
        if (ownerRef is not null) metadata["ownerReferences"] = new JsonArray(ownerRef);
        metadata["managedFields"] = ManagedFields(t, created, controllerField, node is not null);

        var pod = new JsonObject
        {
            ["kind"] = "Pod",
            ["apiVersion"] = "v1",
            ["metadata"] = metadata,
            ["spec"] = spec,
            ["status"] = node is null
                ? PendingStatus(created, clusterNodes)
                : RunningStatus(rng, t, node, created),
        };
        return pod;
    }

    private static JsonObject OwnerRef(string apiVersion, string kind, string name, Random rng, string? uid = null) => new()
    {
        ["apiVersion"] = apiVersion, ["kind"] = kind, ["name"] = name, ["uid"] = uid ?? NewGuid(rng).ToString(),
        ["controller"] = true, ["blockOwnerDeletion"] = true,
    };

    private static JsonObject Toleration(string key, string op, string effect, int? seconds)
    {
        var t = new JsonObject { ["key"] = key, ["operator"] = op, ["effect"] = effect };
        if (seconds is { } s) t["tolerationSeconds"] = s;
        return t;
    }

    private static JsonObject Container(Random rng, ContainerShape c, bool sidecar, bool initOnly = false)
    {
        var requests = new JsonObject();
        if (c.CpuRequest is { } cr) requests["cpu"] = cr.Text;
        if (c.MemoryRequest is { } mr) requests["memory"] = mr.Text;
        var limits = new JsonObject();
        if (c.CpuLimit is { } cl) limits["cpu"] = cl.Text;
        if (c.MemoryLimit is { } ml) limits["memory"] = ml.Text;
        var resources = new JsonObject();
        if (limits.Count > 0) resources["limits"] = limits;
        if (requests.Count > 0) resources["requests"] = requests;

        var container = new JsonObject
        {
            ["name"] = c.Name,
            ["image"] = c.Image,
            ["imagePullPolicy"] = "IfNotPresent",
        };
        if (!initOnly)
        {
            container["env"] = new JsonArray(
                new JsonObject { ["name"] = "POD_NAME", ["valueFrom"] = new JsonObject { ["fieldRef"] = new JsonObject { ["apiVersion"] = "v1", ["fieldPath"] = "metadata.name" } } },
                new JsonObject { ["name"] = "POD_NAMESPACE", ["valueFrom"] = new JsonObject { ["fieldRef"] = new JsonObject { ["apiVersion"] = "v1", ["fieldPath"] = "metadata.namespace" } } },
                new JsonObject { ["name"] = "LOG_LEVEL", ["value"] = rng.Next(4) == 0 ? "debug" : "info" },
                new JsonObject { ["name"] = "OTEL_EXPORTER_OTLP_ENDPOINT", ["value"] = "http://otel-collector.observability.svc:4317" },
                new JsonObject { ["name"] = "GOMAXPROCS", ["valueFrom"] = new JsonObject { ["resourceFieldRef"] = new JsonObject { ["containerName"] = c.Name, ["resource"] = "limits.cpu", ["divisor"] = "0" } } });
        }
        if (c.Port is { } port)
        {
            container["ports"] = new JsonArray(new JsonObject { ["name"] = "http", ["containerPort"] = port, ["protocol"] = "TCP" });
            if (!initOnly)
            {
                container["livenessProbe"] = new JsonObject
                {
                    ["httpGet"] = new JsonObject { ["path"] = "/healthz", ["port"] = "http", ["scheme"] = "HTTP" },
                    ["initialDelaySeconds"] = 10, ["timeoutSeconds"] = 1, ["periodSeconds"] = 10, ["successThreshold"] = 1, ["failureThreshold"] = 3,
                };
                container["readinessProbe"] = new JsonObject
                {
                    ["httpGet"] = new JsonObject { ["path"] = "/readyz", ["port"] = "http", ["scheme"] = "HTTP" },
                    ["timeoutSeconds"] = 1, ["periodSeconds"] = 5, ["successThreshold"] = 1, ["failureThreshold"] = 3,
                };
            }
        }
        container["resources"] = resources;
        if (sidecar) container["restartPolicy"] = "Always";
        container["volumeMounts"] = new JsonArray(new JsonObject
        {
            ["name"] = "kube-api-access-" + RandomSuffix(rng, 5),
            ["readOnly"] = true,
            ["mountPath"] = "/var/run/secrets/kubernetes.io/serviceaccount",
        });
        container["terminationMessagePath"] = "/dev/termination-log";
        container["terminationMessagePolicy"] = "File";
        return container;
    }

    private static JsonArray ManagedFields(PodTemplate t, DateTimeOffset created, string? controller, bool bound)
    {
        var specFields = new JsonObject();
        foreach (var c in t.Containers)
        {
            specFields[$"k:{{\"name\":\"{c.Name}\"}}"] = new JsonObject
            {
                ["."] = new JsonObject(), ["f:env"] = new JsonObject(), ["f:image"] = new JsonObject(),
                ["f:imagePullPolicy"] = new JsonObject(), ["f:name"] = new JsonObject(), ["f:resources"] = new JsonObject(),
                ["f:terminationMessagePath"] = new JsonObject(), ["f:terminationMessagePolicy"] = new JsonObject(),
            };
        }
        var entries = new JsonArray(new JsonObject
        {
            ["manager"] = controller is null ? "kubelet" : "kube-controller-manager",
            ["operation"] = "Update",
            ["apiVersion"] = "v1",
            ["time"] = KubeTime.Format(created),
            ["fieldsType"] = "FieldsV1",
            ["fieldsV1"] = new JsonObject
            {
                ["f:metadata"] = new JsonObject
                {
                    ["f:generateName"] = new JsonObject(),
                    ["f:labels"] = new JsonObject { ["."] = new JsonObject(), ["f:app.kubernetes.io/name"] = new JsonObject() },
                    ["f:ownerReferences"] = new JsonObject { ["."] = new JsonObject() },
                },
                ["f:spec"] = new JsonObject
                {
                    ["f:containers"] = specFields,
                    ["f:dnsPolicy"] = new JsonObject(), ["f:enableServiceLinks"] = new JsonObject(),
                    ["f:restartPolicy"] = new JsonObject(), ["f:schedulerName"] = new JsonObject(),
                    ["f:securityContext"] = new JsonObject(), ["f:terminationGracePeriodSeconds"] = new JsonObject(),
                },
            },
        });
        entries.Add((JsonNode)new JsonObject
        {
            ["manager"] = "kubelet",
            ["operation"] = "Update",
            ["apiVersion"] = "v1",
            ["time"] = KubeTime.Format(created.AddSeconds(bound ? 6 : 1)),
            ["fieldsType"] = "FieldsV1",
            ["subresource"] = "status",
            ["fieldsV1"] = new JsonObject
            {
                ["f:status"] = new JsonObject
                {
                    ["f:conditions"] = new JsonObject
                    {
                        ["k:{\"type\":\"ContainersReady\"}"] = new JsonObject { ["."] = new JsonObject(), ["f:status"] = new JsonObject(), ["f:type"] = new JsonObject() },
                        ["k:{\"type\":\"Initialized\"}"] = new JsonObject { ["."] = new JsonObject(), ["f:status"] = new JsonObject(), ["f:type"] = new JsonObject() },
                        ["k:{\"type\":\"Ready\"}"] = new JsonObject { ["."] = new JsonObject(), ["f:status"] = new JsonObject(), ["f:type"] = new JsonObject() },
                    },
                    ["f:containerStatuses"] = new JsonObject(), ["f:hostIP"] = new JsonObject(), ["f:phase"] = new JsonObject(),
                    ["f:podIP"] = new JsonObject(), ["f:startTime"] = new JsonObject(),
                },
            },
        });
        return entries;
    }

    private static JsonObject Cond(string type, string status, DateTimeOffset at, string? reason = null, string? message = null)
    {
        var c = new JsonObject { ["type"] = type, ["status"] = status, ["lastProbeTime"] = null, ["lastTransitionTime"] = KubeTime.Format(at) };
        if (reason is not null) c["reason"] = reason;
        if (message is not null) c["message"] = message;
        return c;
    }

    private static string QosClass(PodTemplate t)
    {
        var all = t.Containers.Concat(t.Sidecars).Concat(t.InitContainers).ToArray();
        if (all.All(c => c.CpuRequest is null && c.MemoryRequest is null && c.CpuLimit is null && c.MemoryLimit is null)) return "BestEffort";
        if (all.All(c => c.CpuLimit is not null && c.MemoryLimit is not null
                         && c.CpuLimit.Value == (c.CpuRequest ?? c.CpuLimit).Value
                         && c.MemoryLimit.Value == (c.MemoryRequest ?? c.MemoryLimit).Value)) return "Guaranteed";
        return "Burstable";
    }

    private static JsonObject PendingStatus(DateTimeOffset created, int clusterNodes) => new()
    {
        ["phase"] = "Pending",
        ["conditions"] = new JsonArray(Cond("PodScheduled", "False", created, "Unschedulable",
            $"0/{clusterNodes} nodes are available: {clusterNodes} Insufficient cpu. preemption: 0/{clusterNodes} nodes are available: {clusterNodes} No preemption victims found for incoming pod.")),
        ["qosClass"] = "Burstable",
    };

    private static JsonObject RunningStatus(Random rng, PodTemplate t, JsonObject node, DateTimeOffset created)
    {
        var started = created.AddSeconds(rng.Next(2, 8));
        var ready = started.AddSeconds(rng.Next(5, 30));
        var podIp = t.Owner is PodOwner.DaemonSet or PodOwner.Node ? NodeIp(node) : PodIp(node, rng);
        var statuses = new JsonArray();
        foreach (var c in t.Containers) statuses.Add((JsonNode)RunningContainerStatus(rng, c, started));
        var status = new JsonObject
        {
            ["phase"] = "Running",
            ["conditions"] = new JsonArray(
                Cond("PodReadyToStartContainers", "True", started),
                Cond("Initialized", "True", started),
                Cond("Ready", "True", ready),
                Cond("ContainersReady", "True", ready),
                Cond("PodScheduled", "True", created)),
            ["hostIP"] = NodeIp(node),
            ["hostIPs"] = new JsonArray(new JsonObject { ["ip"] = NodeIp(node) }),
            ["podIP"] = podIp,
            ["podIPs"] = new JsonArray(new JsonObject { ["ip"] = podIp }),
            ["startTime"] = KubeTime.Format(created.AddSeconds(1)),
        };
        if (t.Sidecars.Count + t.InitContainers.Count > 0)
        {
            var init = new JsonArray();
            foreach (var s in t.Sidecars) init.Add((JsonNode)RunningContainerStatus(rng, s, started));
            foreach (var i in t.InitContainers)
            {
                init.Add((JsonNode)new JsonObject
                {
                    ["name"] = i.Name,
                    ["state"] = new JsonObject
                    {
                        ["terminated"] = new JsonObject
                        {
                            ["exitCode"] = 0, ["reason"] = "Completed", ["startedAt"] = KubeTime.Format(started),
                            ["finishedAt"] = KubeTime.Format(started.AddSeconds(2)), ["containerID"] = "containerd://" + Hex(rng, 64),
                        },
                    },
                    ["lastState"] = new JsonObject(),
                    ["ready"] = true,
                    ["restartCount"] = 0,
                    ["image"] = i.Image,
                    ["imageID"] = ImageId(rng, i.Image),
                    ["containerID"] = "containerd://" + Hex(rng, 64),
                    ["started"] = false,
                });
            }
            status["initContainerStatuses"] = init;
        }
        status["containerStatuses"] = statuses;
        status["qosClass"] = QosClass(t);
        return status;
    }

    private static string ImageId(Random rng, string image) =>
        (image.Contains(':') ? image[..image.LastIndexOf(':')] : image) + "@sha256:" + Hex(rng, 64);

    private static JsonObject RunningContainerStatus(Random rng, ContainerShape c, DateTimeOffset started)
    {
        var restarts = rng.Next(20) == 0 ? rng.Next(1, 6) : 0;
        var s = new JsonObject
        {
            ["name"] = c.Name,
            ["state"] = new JsonObject { ["running"] = new JsonObject { ["startedAt"] = KubeTime.Format(started) } },
            ["lastState"] = restarts == 0 ? new JsonObject() : new JsonObject
            {
                ["terminated"] = new JsonObject
                {
                    ["exitCode"] = 137, ["reason"] = "OOMKilled", ["startedAt"] = KubeTime.Format(started.AddMinutes(-30)),
                    ["finishedAt"] = KubeTime.Format(started.AddSeconds(-1)), ["containerID"] = "containerd://" + Hex(rng, 64),
                },
            },
            ["ready"] = true,
            ["restartCount"] = restarts,
            ["image"] = c.Image,
            ["imageID"] = ImageId(rng, c.Image),
            ["containerID"] = "containerd://" + Hex(rng, 64),
            ["started"] = true,
        };
        return s;
    }

    // ---------------------------------------------------------------- state changes used by the demo churn

    /// <summary>Binds a pending pod to a node and marks it Running and Ready, as scheduler plus kubelet would.</summary>
    public static void Bind(JsonObject pod, PodTemplate t, JsonObject node, Random rng, DateTimeOffset at)
    {
        pod["spec"]!.AsObject()["nodeName"] = (string)node["metadata"]!["name"]!;
        pod["status"] = RunningStatus(rng, t, node, at);
    }

    /// <summary>A finished Job pod: phase Succeeded, containers terminated with exit code 0, not Ready.</summary>
    public static void MarkSucceeded(JsonObject pod, DateTimeOffset at)
    {
        var status = pod["status"]!.AsObject();
        status["phase"] = "Succeeded";
        foreach (var c in status["conditions"]!.AsArray())
        {
            var type = (string?)c!["type"];
            if (type is "Ready" or "ContainersReady" or "PodReadyToStartContainers")
            {
                c["status"] = "False";
                c["lastTransitionTime"] = KubeTime.Format(at);
                if (type != "PodReadyToStartContainers") c["reason"] = "PodCompleted";
            }
        }
        foreach (var cs in status["containerStatuses"]!.AsArray())
        {
            var startedAt = (string?)cs!["state"]?["running"]?["startedAt"] ?? KubeTime.Format(at.AddMinutes(-1));
            cs["state"] = new JsonObject
            {
                ["terminated"] = new JsonObject
                {
                    ["exitCode"] = 0, ["reason"] = "Completed", ["startedAt"] = startedAt,
                    ["finishedAt"] = KubeTime.Format(at), ["containerID"] = (string?)cs["containerID"],
                },
            };
            cs["ready"] = false;
            cs["started"] = false;
        }
    }

    /// <summary>Graceful deletion in progress: deletionTimestamp set (grace period from now) until the kubelet confirms.</summary>
    public static void MarkTerminating(JsonObject pod, DateTimeOffset at)
    {
        var metadata = pod["metadata"]!.AsObject();
        metadata["deletionTimestamp"] = KubeTime.Format(at.AddSeconds(30));
        metadata["deletionGracePeriodSeconds"] = 30;
    }

    public static void Cordon(JsonObject node) => node["spec"]!.AsObject()["unschedulable"] = true;

    // ---------------------------------------------------------------- bulk generation (benchmark)

    private static readonly Quantity[] CpuChoices = [Cpu("50m"), Cpu("100m"), Cpu("100m"), Cpu("250m"), Cpu("0.1"), Cpu("200m"), Cpu("0.25")];
    private static readonly Quantity[] MemChoices = [Mem("64Mi"), Mem("128Mi"), Mem("256Mi"), Mem("128M"), Mem("512Mi"), Mem("200Mi"), Mem("1G")];
    private static readonly string[] Namespaces = ["shop", "payments", "search", "analytics", "platform", "ml-serving", "batch"];
    private static readonly string[] Apps = ["api", "web", "worker", "cart", "checkout", "indexer", "gateway", "ledger", "recommender", "ingest"];

    /// <summary>The three DaemonSets every node runs (networking, logs, metrics).</summary>
    public static IReadOnlyList<PodTemplate> DaemonSetTemplates { get; } =
    [
        new() { Namespace = "kube-system", App = "calico-node", Owner = PodOwner.DaemonSet, OwnerName = "calico-node", PriorityClassName = "system-node-critical", Priority = 2000001000,
            InitContainers = [new("install-cni", "docker.io/calico/cni:v3.29.1", Cpu("10m"), Mem("20Mi"))],
            Containers = [new("calico-node", "docker.io/calico/node:v3.29.1", Cpu("250m"), Mem("128Mi"), Port: 9091)] },
        new() { Namespace = "observability", App = "fluent-bit", Owner = PodOwner.DaemonSet, OwnerName = "fluent-bit", PriorityClassName = "system-node-critical", Priority = 2000001000,
            Containers = [new("fluent-bit", "cr.fluentbit.io/fluent/fluent-bit:3.2.4", Cpu("100m"), Mem("64Mi"), Cpu("500m"), Mem("256Mi"), 2020)] },
        new() { Namespace = "observability", App = "node-exporter", Owner = PodOwner.DaemonSet, OwnerName = "node-exporter", PriorityClassName = "system-node-critical", Priority = 2000001000,
            Containers = [new("node-exporter", "quay.io/prometheus/node-exporter:v1.8.2", Cpu("0.05"), Mem("32Mi"), Cpu("250m"), Mem("64Mi"), 9100)] },
    ];

    public static PodTemplate KubeProxyMirror { get; } = new()
    {
        Namespace = "kube-system", App = "kube-proxy", Owner = PodOwner.Node, PriorityClassName = "system-node-critical", Priority = 2000001000,
        Containers = [new("kube-proxy", "registry.k8s.io/kube-proxy:" + KubeletVersion, Cpu("100m"), Mem("50Mi"))],
    };

    /// <summary>A random application workload shape; varied quantity spellings on purpose.</summary>
    public static PodTemplate RandomWorkload(Random rng, string? ns = null, string? app = null)
    {
        ns ??= Namespaces[rng.Next(Namespaces.Length)];
        app ??= Apps[rng.Next(Apps.Length)];
        var cpu = CpuChoices[rng.Next(CpuChoices.Length)];
        var mem = MemChoices[rng.Next(MemChoices.Length)];
        var kind = rng.Next(10);
        return new PodTemplate
        {
            Namespace = ns,
            App = app,
            OwnerName = $"{app}-{Hex(rng, 9)}",
            Containers = [new(app, $"ghcr.io/acme/{app}:1.{rng.Next(30)}.{rng.Next(10)}", cpu, mem, Cpu("1"), Mem("1Gi"), 8080)],
            Sidecars = kind == 0 ? [new("envoy", "docker.io/envoyproxy/envoy:v1.32.3", Cpu("50m"), Mem("64Mi"), Port: 15001)] : [],
            InitContainers = kind == 1 ? [new("migrate", $"ghcr.io/acme/{app}-migrate:1.0.0", Cpu("0.5"), Mem("256Mi"))] : [],
            Priority = 0,
        };
    }

    /// <summary>
    /// <paramref name="count"/> pods over <paramref name="nodes"/>: per node the three DaemonSet pods and a
    /// kube-proxy mirror pod while the budget lasts, then application pods placed first-fit by
    /// allocatable CPU and memory; pods that fit nowhere stay Pending and Unschedulable. Deterministic for the seed.
    /// </summary>
    public static IEnumerable<JsonObject> Pods(IReadOnlyList<JsonObject> nodes, int count, int seed, DateTimeOffset? now = null)
    {
        var rng = new Random(seed);
        var at = now ?? DateTimeOffset.UtcNow;
        var freeCpu = new long[nodes.Count];
        var freeMem = new long[nodes.Count];
        for (var i = 0; i < nodes.Count; i++)
        {
            var cls = ClassOf(nodes[i]);
            freeCpu[i] = AllocatableMilliCpu(cls);
            freeMem[i] = AllocatableMemoryBytes(cls);
        }

        // generateName retries on a clash; 5,000 DaemonSet pods share one prefix, so clashes do happen.
        var used = new HashSet<string>(StringComparer.Ordinal);
        string UniqueName(PodTemplate t, string? nodeName)
        {
            string name;
            do name = PodName(rng, t, nodeName);
            while (!used.Add(t.Namespace + "/" + name));
            return name;
        }

        var produced = 0;
        var perNode = DaemonSetTemplates.Append(KubeProxyMirror).ToArray();
        for (var n = 0; n < nodes.Count && produced < count; n++)
        {
            foreach (var t in perNode)
            {
                if (produced >= count) break;
                var (c, m) = t.EffectiveRequest();
                freeCpu[n] -= c;
                freeMem[n] -= m;
                var nodeName = (string)nodes[n]["metadata"]!["name"]!;
                yield return Pod(rng, t, UniqueName(t, nodeName), nodes[n], at.AddHours(-rng.Next(1, 24 * 7)));
                produced++;
            }
        }

        var workloads = Enumerable.Range(0, Math.Max(8, (count - produced) / 20)).Select(_ => RandomWorkload(rng)).ToArray();
        var cursor = 0;
        while (produced < count)
        {
            var t = workloads[rng.Next(workloads.Length)];
            var (cpu, mem) = t.EffectiveRequest();
            JsonObject? node = null;
            for (var tries = 0; tries < Math.Min(nodes.Count, 64) && node is null; tries++)
            {
                var i = (cursor + tries) % nodes.Count;
                if (freeCpu[i] >= cpu && freeMem[i] >= mem && nodes[i]["spec"]?["unschedulable"] is null)
                {
                    freeCpu[i] -= cpu;
                    freeMem[i] -= mem;
                    node = nodes[i];
                    cursor = (i + 1) % nodes.Count;
                }
            }
            yield return Pod(rng, t, UniqueName(t, null), node, at.AddMinutes(-rng.Next(1, 60 * 24 * 3)), nodes.Count);
            produced++;
        }
    }
}
