using System.Buffers.Text;
using System.Text;
using System.Text.Json;

namespace Karpetrack;

public enum PodPhase : byte { Unknown, Pending, Running, Succeeded, Failed }

/// <summary>How a pod's controller is counted: DaemonSet and mirror (static) pods are per-node overhead.</summary>
public enum OwnerKind : byte { None, DaemonSet, Mirror, ReplicaSet, StatefulSet, Job, Other }

/// <summary>A pod trimmed to what Karpetrack uses, decoded straight from the API stream.</summary>
public sealed class PodRecord
{
    public Guid Uid;
    public string Namespace = "";
    public string Name = "";
    public string? NodeName;
    public PodPhase Phase;
    public bool Terminating;
    public bool Unschedulable;
    public OwnerKind Owner;
    public string? OwnerName;
    public long[] Requests = [];
    public string? ResourceVersion;
    public PodTraits Traits;
    public int Priority;
    // Raw JSON of the scheduling-relevant parts, interned by the model into a shared PodShape.
    public byte[] LabelsJson = [];
    public byte[] NodeSelectorJson = [];
    public byte[] AffinityJson = [];
    public byte[] TolerationsJson = [];
}

/// <summary>Decodes Pods, applying the upstream effective-request rule (PodRequests) on the fly.</summary>
public sealed class PodDecoder(ResourceTable table) : IObjectDecoder<PodRecord>
{
    // Scratch vectors reused across pods: a decoder belongs to one reflector, which is single-threaded.
    private readonly long[] regular = new long[table.Count];
    private readonly long[] sidecars = new long[table.Count];
    private readonly long[] initMax = new long[table.Count];
    private readonly long[] container = new long[table.Count];
    private readonly long[] overhead = new long[table.Count];
    private readonly long[] podLevel = new long[table.Count];
    private readonly bool[] podLevelSet = new bool[table.Count];

    public string? ResourceVersionOf(PodRecord value) => value.ResourceVersion;

    public string Describe(PodRecord value) => $"{value.Namespace}/{value.Name}";

    public Decode TryDecode(ref Utf8JsonReader r, ReadOnlySpan<byte> data, out PodRecord pod, ref string? error)
    {
        pod = new PodRecord();
        Array.Clear(regular); Array.Clear(sidecars); Array.Clear(initMax);
        Array.Clear(overhead); Array.Clear(podLevel); Array.Clear(podLevelSet);
        if (!Json.ExpectObject(ref r, ref error, "pod")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) break;
            Decode d;
            if (r.ValueTextEquals("metadata"u8)) { if (!r.Read()) return Decode.Incomplete; d = Metadata(ref r, data, pod, ref error); }
            else if (r.ValueTextEquals("spec"u8)) { if (!r.Read()) return Decode.Incomplete; d = Spec(ref r, data, pod, ref error); }
            else if (r.ValueTextEquals("status"u8)) { if (!r.Read()) return Decode.Incomplete; d = Status(ref r, pod, ref error); }
            else d = Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
            if (d == Decode.Incomplete) return d;
        }
        pod.Requests = Effective();
        return Decode.Ok;
    }

    // Upstream PodRequests: regular containers summed; sidecars (restartable init containers) join
    // the running sum; classic init containers take a max per phase; pod-level requests win where
    // set; overhead is added last.
    private long[] Effective()
    {
        var v = new long[regular.Length];
        for (int i = 0; i < v.Length; i++)
        {
            long running = regular[i] + sidecars[i];
            v[i] = Math.Max(running, initMax[i]);
            if (podLevelSet[i]) v[i] = podLevel[i];
            v[i] += overhead[i];
        }
        return v;
    }

    /// <summary>Keeps the raw JSON of the value the reader is on (an object or array), skipping past it.</summary>
    private static Decode Raw(ref Utf8JsonReader r, ReadOnlySpan<byte> data, out byte[] raw, ref string? error, string path, bool stringMap = false)
    {
        raw = [];
        if (r.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray)) return Decode.Ok;
        long start = r.TokenStartIndex;
        bool ok;
        if (stringMap && r.TokenType == JsonTokenType.StartObject)
        {
            // Checked on the way past it, not by reading it a second time.
            ok = true;
            while (true)
            {
                if (!r.Read()) return Decode.Incomplete;                  // a property name, or the end
                if (r.TokenType == JsonTokenType.EndObject) break;
                if (!r.Read()) return Decode.Incomplete;                  // its value
                if (r.TokenType == JsonTokenType.String) continue;
                ok = false;
                if (!Json.Skip(ref r)) return Decode.Incomplete;
            }
        }
        else
        {
            if (!Json.Skip(ref r)) return Decode.Incomplete;
            ok = !stringMap;   // a map of strings must be an object
        }
        var slice = data[(int)start..(int)r.BytesConsumed];
        if (!ok) { Json.Fail(ref error, path, "expected a map of strings"); return Decode.Ok; }
        // Parsed later, once per pod shape, where invalid UTF-8 would throw: refuse it here, with the object.
        if (!System.Text.Unicode.Utf8.IsValid(slice)) { Json.Fail(ref error, path, "not valid UTF-8"); return Decode.Ok; }
        raw = slice.ToArray();
        return Decode.Ok;
    }

    private static Decode Metadata(ref Utf8JsonReader r, ReadOnlySpan<byte> data, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "metadata")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("name"u8)) { if (!r.Read()) return Decode.Incomplete; pod.Name = Json.String(ref r, ref error, "metadata.name") ?? ""; }
            else if (r.ValueTextEquals("namespace"u8)) { if (!r.Read()) return Decode.Incomplete; pod.Namespace = Json.String(ref r, ref error, "metadata.namespace") ?? ""; }
            else if (r.ValueTextEquals("uid"u8)) { if (!r.Read()) return Decode.Incomplete; pod.Uid = Json.Uid(ref r, ref error); }
            else if (r.ValueTextEquals("resourceVersion"u8)) { if (!r.Read()) return Decode.Incomplete; pod.ResourceVersion = Json.String(ref r, ref error, "metadata.resourceVersion"); }
            else if (r.ValueTextEquals("deletionTimestamp"u8)) { if (!r.Read()) return Decode.Incomplete; pod.Terminating = r.TokenType != JsonTokenType.Null; }
            else if (r.ValueTextEquals("ownerReferences"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (OwnerReferences(ref r, pod, ref error) == Decode.Incomplete) return Decode.Incomplete;
            }
            else if (r.ValueTextEquals("annotations"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (Annotations(ref r, pod, ref error) == Decode.Incomplete) return Decode.Incomplete;
            }
            else if (r.ValueTextEquals("labels"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (Raw(ref r, data, out pod.LabelsJson, ref error, "metadata.labels", stringMap: true) == Decode.Incomplete) return Decode.Incomplete;
            }
            else if (!Json.Skip(ref r)) return Decode.Incomplete;
        }
    }

    private static Decode Annotations(ref Utf8JsonReader r, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "metadata.annotations")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            // Mirror pods carry this annotation; the kubelet creates them for static pods.
            if (r.ValueTextEquals("kubernetes.io/config.mirror"u8)) pod.Owner = OwnerKind.Mirror;
            PodTraits ifTrue = PodTraits.None, ifFalse = PodTraits.None;
            if (r.ValueTextEquals("karpenter.sh/do-not-disrupt"u8) || r.ValueTextEquals("karpetrack.io/do-not-disrupt"u8)) ifTrue = PodTraits.DoNotDisrupt;
            else if (r.ValueTextEquals("cluster-autoscaler.kubernetes.io/safe-to-evict"u8)) { ifTrue = PodTraits.SafeToEvictTrue; ifFalse = PodTraits.SafeToEvictFalse; }
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.String && (ifTrue | ifFalse) != PodTraits.None)
            {
                if (r.ValueTextEquals("true"u8)) pod.Traits |= ifTrue;
                else if (r.ValueTextEquals("false"u8)) pod.Traits |= ifFalse;
            }
            else if (!Json.Skip(ref r)) return Decode.Incomplete;
        }
    }

    private static Decode OwnerReferences(ref Utf8JsonReader r, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectArray(ref r, ref error, "metadata.ownerReferences")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        bool haveController = false;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndArray) return Decode.Ok;
            if (!Json.ExpectObject(ref r, ref error, "metadata.ownerReferences[]")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
            string? name = null; bool controller = false;
            OwnerKind? knownKind = null;   // compared in place (KnownOwner), never read into a string; any other kind is Other
            while (true)
            {
                if (!r.Read()) return Decode.Incomplete;
                if (r.TokenType == JsonTokenType.EndObject) break;
                if (r.ValueTextEquals("kind"u8))
                {
                    if (!r.Read()) return Decode.Incomplete;
                    knownKind = r.TokenType == JsonTokenType.String ? KnownOwner(ref r) : null;
                    if (knownKind is null) _ = Json.String(ref r, ref error, "ownerReferences.kind");   // a non-string is an error
                }
                else if (r.ValueTextEquals("name"u8)) { if (!r.Read()) return Decode.Incomplete; name = Json.String(ref r, ref error, "ownerReferences.name"); }
                else if (r.ValueTextEquals("controller"u8)) { if (!r.Read()) return Decode.Incomplete; controller = Json.Bool(ref r, ref error, "ownerReferences.controller"); }
                else if (!Json.Skip(ref r)) return Decode.Incomplete;
            }
            if (pod.Owner == OwnerKind.Mirror || haveController) continue;
            if (controller || pod.Owner == OwnerKind.None)
            {
                haveController = controller;
                pod.OwnerName = name;
                pod.Owner = knownKind ?? OwnerKind.Other;
            }
        }
    }

    private Decode Spec(ref Utf8JsonReader r, ReadOnlySpan<byte> data, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "spec")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            Decode d = Decode.Ok;
            if (r.ValueTextEquals("nodeName"u8)) { if (!r.Read()) return Decode.Incomplete; pod.NodeName = Json.String(ref r, ref error, "spec.nodeName"); }
            else if (r.ValueTextEquals("containers"u8)) { if (!r.Read()) return Decode.Incomplete; d = Containers(ref r, init: false, ref error); }
            else if (r.ValueTextEquals("initContainers"u8)) { if (!r.Read()) return Decode.Incomplete; d = Containers(ref r, init: true, ref error); }
            else if (r.ValueTextEquals("overhead"u8)) { if (!r.Read()) return Decode.Incomplete; d = Json.ResourceMap(ref r, table, overhead, ref error, "spec.overhead"); }
            else if (r.ValueTextEquals("resources"u8)) { if (!r.Read()) return Decode.Incomplete; d = PodResources(ref r, ref error); }
            else if (r.ValueTextEquals("nodeSelector"u8)) { if (!r.Read()) return Decode.Incomplete; d = Raw(ref r, data, out pod.NodeSelectorJson, ref error, "spec.nodeSelector", stringMap: true); }
            else if (r.ValueTextEquals("affinity"u8)) { if (!r.Read()) return Decode.Incomplete; d = Raw(ref r, data, out pod.AffinityJson, ref error, "spec.affinity"); }
            else if (r.ValueTextEquals("tolerations"u8)) { if (!r.Read()) return Decode.Incomplete; d = Raw(ref r, data, out pod.TolerationsJson, ref error, "spec.tolerations"); }
            else if (r.ValueTextEquals("priority"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (r.TokenType == JsonTokenType.Number && r.TryGetInt32(out var prio)) pod.Priority = prio;
            }
            else if (r.ValueTextEquals("volumes"u8)) { if (!r.Read()) return Decode.Incomplete; d = Volumes(ref r, pod, ref error); }
            else if (!Json.Skip(ref r)) return Decode.Incomplete;
            if (d == Decode.Incomplete) return d;
        }
    }

    // Local storage keeps a node from being drained safely: an emptyDir not backed by memory, or a hostPath.
    private static Decode Volumes(ref Utf8JsonReader r, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectArray(ref r, ref error, "spec.volumes")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndArray) return Decode.Ok;
            if (!Json.ExpectObject(ref r, ref error, "spec.volumes[]")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
            while (true)
            {
                if (!r.Read()) return Decode.Incomplete;
                if (r.TokenType == JsonTokenType.EndObject) break;
                if (r.ValueTextEquals("hostPath"u8)) { pod.Traits |= PodTraits.LocalStorage; if (!Json.Skip(ref r)) return Decode.Incomplete; }
                else if (r.ValueTextEquals("emptyDir"u8))
                {
                    if (!r.Read()) return Decode.Incomplete;
                    bool memory = false;
                    if (r.TokenType == JsonTokenType.StartObject)
                    {
                        while (true)
                        {
                            if (!r.Read()) return Decode.Incomplete;
                            if (r.TokenType == JsonTokenType.EndObject) break;
                            if (r.ValueTextEquals("medium"u8))
                            {
                                if (!r.Read()) return Decode.Incomplete;
                                memory = r.TokenType == JsonTokenType.String && r.ValueTextEquals("Memory"u8);
                            }
                            else if (!Json.Skip(ref r)) return Decode.Incomplete;
                        }
                    }
                    if (!memory) pod.Traits |= PodTraits.LocalStorage;
                }
                else if (!Json.Skip(ref r)) return Decode.Incomplete;
            }
        }
    }

    private Decode PodResources(ref Utf8JsonReader r, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "spec.resources")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("requests"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                Array.Fill(container, -1);
                if (Json.ResourceMap(ref r, table, container, ref error, "spec.resources.requests") == Decode.Incomplete) return Decode.Incomplete;
                // Pod-level resources only cover cpu, memory and hugepages (PodLevelResources).
                for (int i = 0; i < container.Length; i++)
                {
                    var name = table.Name(i);
                    if (container[i] >= 0 && (i == ResourceTable.Cpu || i == ResourceTable.Memory || name.StartsWith("hugepages-", StringComparison.Ordinal)))
                    {
                        podLevel[i] = container[i];
                        podLevelSet[i] = true;
                    }
                }
                Array.Clear(container);
            }
            else if (!Json.Skip(ref r)) return Decode.Incomplete;
        }
    }

    /// <summary>The paths error messages name, one set per kind of container: built once, not per container of every pod.</summary>
    private sealed record ContainerPaths(string List, string Item, string RestartPolicy, string Resources, string Requests)
    {
        public static ContainerPaths Of(string list) =>
            new(list, list + "[]", list + ".restartPolicy", list + ".resources", list + ".resources.requests");
    }

    private static readonly ContainerPaths RegularPaths = ContainerPaths.Of("spec.containers"), InitPaths = ContainerPaths.Of("spec.initContainers");

    private Decode Containers(ref Utf8JsonReader r, bool init, ref string? error)
    {
        var path = init ? InitPaths : RegularPaths;
        if (!Json.ExpectArray(ref r, ref error, path.List)) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndArray) return Decode.Ok;
            if (!Json.ExpectObject(ref r, ref error, path.Item)) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
            Array.Clear(container);
            bool restartAlways = false;
            while (true)
            {
                if (!r.Read()) return Decode.Incomplete;
                if (r.TokenType == JsonTokenType.EndObject) break;
                if (r.ValueTextEquals("resources"u8))
                {
                    if (!r.Read()) return Decode.Incomplete;
                    if (ContainerResources(ref r, path, ref error) == Decode.Incomplete) return Decode.Incomplete;
                }
                else if (init && r.ValueTextEquals("restartPolicy"u8))
                {
                    if (!r.Read()) return Decode.Incomplete;
                    // Compared in place; anything but "Always" goes the way it always went (a string, or the error for a non-string).
                    restartAlways = r.TokenType == JsonTokenType.String && r.ValueTextEquals("Always"u8)
                        || Json.String(ref r, ref error, path.RestartPolicy) == "Always";
                }
                else if (!Json.Skip(ref r)) return Decode.Incomplete;
            }
            for (int i = 0; i < container.Length; i++)
            {
                if (!init) regular[i] += container[i];
                else if (restartAlways)
                {
                    sidecars[i] += container[i];
                    initMax[i] = Math.Max(initMax[i], sidecars[i]);
                }
                else initMax[i] = Math.Max(initMax[i], container[i] + sidecars[i]);
            }
        }
    }

    private Decode ContainerResources(ref Utf8JsonReader r, ContainerPaths path, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, path.Resources)) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("requests"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (Json.ResourceMap(ref r, table, container, ref error, path.Requests) == Decode.Incomplete) return Decode.Incomplete;
            }
            else if (!Json.Skip(ref r)) return Decode.Incomplete;
        }
    }

    /// <summary>The pod phases, compared in place (no string per pod); false for any other, which is Unknown.</summary>
    private static bool KnownPhase(ref Utf8JsonReader r, out PodPhase phase)
    {
        phase = r.ValueTextEquals("Running"u8) ? PodPhase.Running
            : r.ValueTextEquals("Pending"u8) ? PodPhase.Pending
            : r.ValueTextEquals("Succeeded"u8) ? PodPhase.Succeeded
            : r.ValueTextEquals("Failed"u8) ? PodPhase.Failed
            : PodPhase.Unknown;
        return phase != PodPhase.Unknown;
    }

    /// <summary>The owner kinds the model tells apart, compared in place; null for any other (Other).</summary>
    private static OwnerKind? KnownOwner(ref Utf8JsonReader r) =>
        r.ValueTextEquals("ReplicaSet"u8) ? OwnerKind.ReplicaSet
        : r.ValueTextEquals("DaemonSet"u8) ? OwnerKind.DaemonSet
        : r.ValueTextEquals("StatefulSet"u8) ? OwnerKind.StatefulSet
        : r.ValueTextEquals("Job"u8) ? OwnerKind.Job
        : r.ValueTextEquals("Node"u8) ? OwnerKind.Mirror
        : null;

    private static Decode Status(ref Utf8JsonReader r, PodRecord pod, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "status")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("phase"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (r.TokenType == JsonTokenType.String && KnownPhase(ref r, out var known)) pod.Phase = known;
                else
                {
                    _ = Json.String(ref r, ref error, "status.phase");   // a non-string is an error; any other phase is Unknown
                    pod.Phase = PodPhase.Unknown;
                }
            }
            else if (r.ValueTextEquals("conditions"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (Json.Conditions(ref r, ref error, "PodScheduled"u8, "False"u8, "Unschedulable"u8, out _, out bool unschedulable) == Decode.Incomplete)
                    return Decode.Incomplete;
                if (unschedulable) pod.Unschedulable = true;
            }
            else if (!Json.Skip(ref r)) return Decode.Incomplete;
        }
    }
}
