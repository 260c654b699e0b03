using System.Buffers.Text;
using System.Text;
using System.Text.Json;

namespace Karpetrack;

public sealed record Taint(string Key, string? Value, string Effect);

/// <summary>A node trimmed to what Karpetrack uses.</summary>
public sealed class NodeRecord
{
    public string Name = "";
    public Dictionary<string, string> Labels = new(StringComparer.Ordinal);
    public Dictionary<string, string> Annotations = new(StringComparer.Ordinal);
    public long[] Allocatable = [];
    public long[] Capacity = [];
    public bool Unschedulable;
    public bool Ready;
    public bool Deleting;
    public Taint[] Taints = [];
    public DateTimeOffset? Created;
    public string? ResourceVersion;
}

/// <summary>The node annotations Karpetrack reads: the decoder keeps these and drops the rest.</summary>
public static class NodeAnnotations
{
    /// <summary>Every karpetrack.io/ annotation is kept (the actuator's own markers among them).</summary>
    public const string KarpetrackPrefix = "karpetrack.io/";
    public const string DoNotDisrupt = KarpetrackPrefix + "do-not-disrupt";
    public const string ScaleDownDisabled = "cluster-autoscaler.kubernetes.io/scale-down-disabled";
}

/// <summary>Decodes Nodes: labels, annotations, allocatable, capacity, taints, readiness, cordon.</summary>
public sealed class NodeDecoder(ResourceTable table) : IObjectDecoder<NodeRecord>
{
    /// <summary>
    /// The node annotations Karpetrack reads; the rest (node IPs, CSI ids, CNI state, often kilobytes
    /// a node) are skipped at decode time.
    /// </summary>
    public static bool KeptAnnotation(string key) =>
        key.StartsWith(NodeAnnotations.KarpetrackPrefix, StringComparison.Ordinal) || key == NodeAnnotations.ScaleDownDisabled;

    // Thousands of nodes carry the same label keys and a few distinct values (class, pool, region):
    // one string each instead of one per node.
    private readonly StringPool pool = new();

    public string? ResourceVersionOf(NodeRecord value) => value.ResourceVersion;

    public string Describe(NodeRecord value) => value.Name;

    public Decode TryDecode(ref Utf8JsonReader r, ReadOnlySpan<byte> data, out NodeRecord node, ref string? error)
    {
        node = new NodeRecord { Allocatable = new long[table.Count], Capacity = new long[table.Count] };
        if (!Json.ExpectObject(ref r, ref error, "node")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            Decode d;
            if (r.ValueTextEquals("metadata"u8)) { if (!r.Read()) return Decode.Incomplete; d = Metadata(ref r, node, ref error); }
            else if (r.ValueTextEquals("spec"u8)) { if (!r.Read()) return Decode.Incomplete; d = Spec(ref r, node, ref error); }
            else if (r.ValueTextEquals("status"u8)) { if (!r.Read()) return Decode.Incomplete; d = Status(ref r, node, ref error); }
            else d = Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
            if (d == Decode.Incomplete) return d;
        }
    }

    private Decode Metadata(ref Utf8JsonReader r, NodeRecord node, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "metadata")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            Decode d = Decode.Ok;
            if (r.ValueTextEquals("name"u8)) { if (!r.Read()) return Decode.Incomplete; node.Name = Json.String(ref r, ref error, "metadata.name", pool) ?? ""; }
            else if (r.ValueTextEquals("resourceVersion"u8)) { if (!r.Read()) return Decode.Incomplete; node.ResourceVersion = Json.String(ref r, ref error, "metadata.resourceVersion"); }
            else if (r.ValueTextEquals("deletionTimestamp"u8)) { if (!r.Read()) return Decode.Incomplete; node.Deleting = r.TokenType != JsonTokenType.Null; }
            else if (r.ValueTextEquals("creationTimestamp"u8)) { if (!r.Read()) return Decode.Incomplete; node.Created = Json.Time(ref r); }
            else if (r.ValueTextEquals("labels"u8)) { if (!r.Read()) return Decode.Incomplete; d = Json.StringMap(ref r, node.Labels, ref error, "metadata.labels", pool); }
            else if (r.ValueTextEquals("annotations"u8)) { if (!r.Read()) return Decode.Incomplete; d = Json.StringMap(ref r, node.Annotations, ref error, "metadata.annotations", pool, KeptAnnotation); }
            else if (!Json.Skip(ref r)) return Decode.Incomplete;
            if (d == Decode.Incomplete) return d;
        }
    }

    private Decode Spec(ref Utf8JsonReader r, NodeRecord node, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "spec")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            if (r.ValueTextEquals("unschedulable"u8)) { if (!r.Read()) return Decode.Incomplete; node.Unschedulable = Json.Bool(ref r, ref error, "spec.unschedulable"); }
            else if (r.ValueTextEquals("taints"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                if (!Json.ExpectArray(ref r, ref error, "spec.taints")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
                var taints = new List<Taint>();
                while (true)
                {
                    if (!r.Read()) return Decode.Incomplete;
                    if (r.TokenType == JsonTokenType.EndArray) break;
                    if (!Json.ExpectObject(ref r, ref error, "spec.taints[]")) { if (!Json.Skip(ref r)) return Decode.Incomplete; continue; }
                    string? key = null, value = null, effect = null;
                    while (true)
                    {
                        if (!r.Read()) return Decode.Incomplete;
                        if (r.TokenType == JsonTokenType.EndObject) break;
                        if (r.ValueTextEquals("key"u8)) { if (!r.Read()) return Decode.Incomplete; key = Json.String(ref r, ref error, "spec.taints.key", pool); }
                        else if (r.ValueTextEquals("value"u8)) { if (!r.Read()) return Decode.Incomplete; value = Json.String(ref r, ref error, "spec.taints.value", pool); }
                        else if (r.ValueTextEquals("effect"u8)) { if (!r.Read()) return Decode.Incomplete; effect = Json.String(ref r, ref error, "spec.taints.effect", pool); }
                        else if (!Json.Skip(ref r)) return Decode.Incomplete;
                    }
                    if (key is not null) taints.Add(new Taint(key, value, effect ?? ""));
                }
                node.Taints = taints.ToArray();
            }
            else if (!Json.Skip(ref r)) return Decode.Incomplete;
        }
    }

    private Decode Status(ref Utf8JsonReader r, NodeRecord node, ref string? error)
    {
        if (!Json.ExpectObject(ref r, ref error, "status")) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        while (true)
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.EndObject) return Decode.Ok;
            Decode d = Decode.Ok;
            if (r.ValueTextEquals("allocatable"u8)) { if (!r.Read()) return Decode.Incomplete; d = Json.ResourceMap(ref r, table, node.Allocatable, ref error, "status.allocatable"); }
            else if (r.ValueTextEquals("capacity"u8)) { if (!r.Read()) return Decode.Incomplete; d = Json.ResourceMap(ref r, table, node.Capacity, ref error, "status.capacity"); }
            else if (r.ValueTextEquals("conditions"u8))
            {
                if (!r.Read()) return Decode.Incomplete;
                d = Json.Conditions(ref r, ref error, "Ready"u8, "True"u8, default, out var ready, out _);
                if (ready is { } isReady) node.Ready = isReady;
            }
            else if (!Json.Skip(ref r)) return Decode.Incomplete;
            if (d == Decode.Incomplete) return d;
        }
    }
}
