using System.Globalization;
using System.Text.Json;

namespace Karpetrack.Simulation;

public sealed record TableColumn(string Name, string Type, string Format, string Description, int Priority);

/// <summary>
/// Server-side printing (meta.k8s.io/v1 Table) the way kubectl asks for it, with the columns the
/// real apiserver prints for nodes, pods and events. Other resources get Name and Age.
/// </summary>
internal static class KubeTables
{
    private static readonly TableColumn[] NodeColumns =
    [
        new("Name", "string", "name", "Name must be unique within a namespace.", 0),
        new("Status", "string", "", "The status of the node", 0),
        new("Roles", "string", "", "The roles of the node", 0),
        new("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
        new("Version", "string", "", "Kubelet Version reported by the node.", 0),
        new("Internal-IP", "string", "", "List of addresses reachable to the node.", 1),
        new("External-IP", "string", "", "List of addresses reachable to the node.", 1),
        new("OS-Image", "string", "", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).", 1),
        new("Kernel-Version", "string", "", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1),
        new("Container-Runtime", "string", "", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).", 1),
    ];

    private static readonly TableColumn[] PodColumns =
    [
        new("Name", "string", "name", "Name must be unique within a namespace.", 0),
        new("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.", 0),
        new("Status", "string", "", "The aggregate status of the containers in this pod.", 0),
        new("Restarts", "string", "", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
        new("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
        new("IP", "string", "", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", 1),
        new("Node", "string", "", "NodeName is a request to schedule this pod onto a specific node.", 1),
        new("Nominated Node", "string", "", "nominatedNodeName is set when this pod preempts other pods on the node.", 1),
        new("Readiness Gates", "string", "", "If specified, all readiness gates will be evaluated for pod readiness.", 1),
    ];

    private static readonly TableColumn[] EventColumns =
    [
        new("Last Seen", "string", "", "The time at which the most recent occurrence of this event was recorded.", 0),
        new("Type", "string", "", "Type of this event (Normal, Warning), new types could be added in the future.", 0),
        new("Reason", "string", "", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", 0),
        new("Object", "string", "", "The object that this event is about.", 0),
        new("Source", "string", "", "The component reporting this event.", 1),
        new("Message", "string", "", "A human-readable description of the status of this operation.", 0),
        new("Count", "integer", "", "The number of times this event has occurred.", 1),
        new("Name", "string", "name", "Name must be unique within a namespace.", 1),
    ];

    private static readonly TableColumn[] GenericColumns =
    [
        new("Name", "string", "name", "Name must be unique within a namespace.", 0),
        new("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
    ];

    public static TableColumn[] ColumnsFor(ResourceType type) => type.Resource switch
    {
        "nodes" => NodeColumns,
        "pods" => PodColumns,
        "events" => EventColumns,
        _ => GenericColumns,
    };

    public enum IncludeObject { None, Metadata, Object }

    public static IncludeObject ParseInclude(string? value) => value switch
    {
        "None" => IncludeObject.None,
        "Object" => IncludeObject.Object,
        _ => IncludeObject.Metadata,
    };

    /// <summary>Writes a whole Table object. Column definitions are omitted when the caller already sent them (watch).</summary>
    public static void WriteTable(Utf8JsonWriter w, ResourceType type, IEnumerable<StoredObject> rows, long resourceVersion,
        string? continueToken, long? remaining, bool includeColumns, IncludeObject include, DateTimeOffset now)
    {
        w.WriteStartObject();
        w.WriteString("kind", "Table");
        w.WriteString("apiVersion", "meta.k8s.io/v1");
        w.WriteStartObject("metadata");
        w.WriteString("resourceVersion", resourceVersion.ToString(CultureInfo.InvariantCulture));
        if (!string.IsNullOrEmpty(continueToken)) w.WriteString("continue", continueToken);
        if (remaining is > 0) w.WriteNumber("remainingItemCount", remaining.Value);
        w.WriteEndObject();
        w.WriteStartArray("columnDefinitions");
        if (includeColumns)
        {
            foreach (var c in ColumnsFor(type))
            {
                w.WriteStartObject();
                w.WriteString("name", c.Name);
                w.WriteString("type", c.Type);
                w.WriteString("format", c.Format);
                w.WriteString("description", c.Description);
                w.WriteNumber("priority", c.Priority);
                w.WriteEndObject();
            }
        }
        w.WriteEndArray();
        w.WriteStartArray("rows");
        foreach (var o in rows) WriteRow(w, type, o.Utf8, include, now);
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteRow(Utf8JsonWriter w, ResourceType type, byte[] utf8, IncludeObject include, DateTimeOffset now)
    {
        using var doc = JsonDocument.Parse(utf8);
        var root = doc.RootElement;
        w.WriteStartObject();
        w.WriteStartArray("cells");
        switch (type.Resource)
        {
            case "nodes": NodeCells(w, root, now); break;
            case "pods": PodCells(w, root, now); break;
            case "events": EventCells(w, root, now); break;
            default:
                w.WriteStringValue(Str(root, "metadata", "name"));
                w.WriteStringValue(Age(root, now));
                break;
        }
        w.WriteEndArray();
        if (include != IncludeObject.None)
        {
            w.WritePropertyName("object");
            if (include == IncludeObject.Object)
            {
                w.WriteRawValue(utf8, skipInputValidation: true);
            }
            else
            {
                w.WriteStartObject();
                w.WriteString("kind", "PartialObjectMetadata");
                w.WriteString("apiVersion", "meta.k8s.io/v1");
                w.WritePropertyName("metadata");
                root.GetProperty("metadata").WriteTo(w);
                w.WriteEndObject();
            }
        }
        w.WriteEndObject();
    }

    /// <summary>As `kubectl get events` prints them: the object as kind/name, lower-cased kind.</summary>
    private static void EventCells(Utf8JsonWriter w, JsonElement e, DateTimeOffset now)
    {
        var last = KubeTime.Parse(Str(e, "lastTimestamp")) ?? KubeTime.Parse(Str(e, "eventTime")) ?? KubeTime.Parse(Str(e, "metadata", "creationTimestamp"));
        w.WriteStringValue(last is { } t ? HumanDuration(now - t) : "<unknown>");
        w.WriteStringValue(Str(e, "type"));
        w.WriteStringValue(Str(e, "reason"));
        w.WriteStringValue($"{Str(e, "involvedObject", "kind").ToLowerInvariant()}/{Str(e, "involvedObject", "name")}");
        w.WriteStringValue(Str(e, "source", "component"));
        w.WriteStringValue(Str(e, "message"));
        w.WriteNumberValue(Path(e, "count") is { ValueKind: JsonValueKind.Number } c ? c.GetInt64() : 1);
        w.WriteStringValue(Str(e, "metadata", "name"));
    }

    private static void NodeCells(Utf8JsonWriter w, JsonElement node, DateTimeOffset now)
    {
        w.WriteStringValue(Str(node, "metadata", "name"));

        var ready = "Unknown";
        if (Path(node, "status", "conditions") is { ValueKind: JsonValueKind.Array } conditions)
            foreach (var c in conditions.EnumerateArray())
                if (Str(c, "type") == "Ready")
                    ready = Str(c, "status") switch { "True" => "Ready", "False" => "NotReady", _ => "Unknown" };
        if (Path(node, "spec", "unschedulable") is { ValueKind: JsonValueKind.True }) ready += ",SchedulingDisabled";
        w.WriteStringValue(ready);

        var roles = new List<string>();
        if (Path(node, "metadata", "labels") is { ValueKind: JsonValueKind.Object } labels)
        {
            foreach (var l in labels.EnumerateObject())
            {
                if (l.Name.StartsWith("node-role.kubernetes.io/", StringComparison.Ordinal))
                    roles.Add(l.Name["node-role.kubernetes.io/".Length..]);
                else if (l.Name == "kubernetes.io/role")
                    roles.Add(l.Value.GetString() ?? "");
            }
        }
        roles.Sort(StringComparer.Ordinal);
        w.WriteStringValue(roles.Count == 0 ? "<none>" : string.Join(',', roles));
        w.WriteStringValue(Age(node, now));
        w.WriteStringValue(Str(node, "status", "nodeInfo", "kubeletVersion"));

        string internalIp = "<none>", externalIp = "<none>";
        if (Path(node, "status", "addresses") is { ValueKind: JsonValueKind.Array } addresses)
        {
            foreach (var a in addresses.EnumerateArray())
            {
                if (Str(a, "type") == "InternalIP" && internalIp == "<none>") internalIp = Str(a, "address");
                if (Str(a, "type") == "ExternalIP" && externalIp == "<none>") externalIp = Str(a, "address");
            }
        }
        w.WriteStringValue(internalIp);
        w.WriteStringValue(externalIp);
        w.WriteStringValue(OrUnknown(Str(node, "status", "nodeInfo", "osImage")));
        w.WriteStringValue(OrUnknown(Str(node, "status", "nodeInfo", "kernelVersion")));
        w.WriteStringValue(OrUnknown(Str(node, "status", "nodeInfo", "containerRuntimeVersion")));
    }

    private static void PodCells(Utf8JsonWriter w, JsonElement pod, DateTimeOffset now)
    {
        var containers = Path(pod, "spec", "containers") is { ValueKind: JsonValueKind.Array } cs ? cs.GetArrayLength() : 0;
        var readyCount = 0;
        var restarts = 0;
        var reason = Str(pod, "status", "reason") is { Length: > 0 } r ? r : Str(pod, "status", "phase");

        // Init containers first: a pod still initializing reports Init:n/m like kubectl does.
        var initializing = false;
        if (Path(pod, "status", "initContainerStatuses") is { ValueKind: JsonValueKind.Array } initStatuses)
        {
            var total = initStatuses.GetArrayLength();
            var i = 0;
            foreach (var s in initStatuses.EnumerateArray())
            {
                restarts += Int(s, "restartCount");
                var terminatedOk = Path(s, "state", "terminated") is { ValueKind: JsonValueKind.Object } t && Int(t, "exitCode") == 0;
                var sidecarStarted = Path(s, "started") is { ValueKind: JsonValueKind.True };
                if (!terminatedOk && !sidecarStarted)
                {
                    initializing = true;
                    reason = Path(s, "state", "waiting", "reason") is { ValueKind: JsonValueKind.String } wr && wr.GetString() != "PodInitializing"
                        ? "Init:" + wr.GetString()
                        : $"Init:{i}/{total}";
                    break;
                }
                i++;
            }
        }

        if (Path(pod, "status", "containerStatuses") is { ValueKind: JsonValueKind.Array } statuses)
        {
            var anyRunning = false;
            foreach (var s in statuses.EnumerateArray())
            {
                restarts += Int(s, "restartCount");
                if (Path(s, "ready") is { ValueKind: JsonValueKind.True }) readyCount++;
                if (initializing) continue;
                if (Path(s, "state", "waiting", "reason") is { ValueKind: JsonValueKind.String } waiting && waiting.GetString()!.Length > 0)
                    reason = waiting.GetString()!;
                else if (Path(s, "state", "terminated") is { ValueKind: JsonValueKind.Object } term)
                    reason = Str(term, "reason") is { Length: > 0 } tr ? tr : "Completed";
                else if (Path(s, "state", "running") is { ValueKind: JsonValueKind.Object })
                    anyRunning = true;
            }
            if (!initializing && reason == "Completed" && anyRunning) reason = "Running";
        }

        if (Path(pod, "metadata", "deletionTimestamp") is { ValueKind: JsonValueKind.String })
            reason = Str(pod, "status", "reason") == "NodeLost" ? "Unknown" : "Terminating";

        w.WriteStringValue(Str(pod, "metadata", "name"));
        w.WriteStringValue($"{readyCount}/{containers}");
        w.WriteStringValue(reason);
        w.WriteStringValue(restarts.ToString(CultureInfo.InvariantCulture));
        w.WriteStringValue(Age(pod, now));
        w.WriteStringValue(Str(pod, "status", "podIP") is { Length: > 0 } ip ? ip : "<none>");
        w.WriteStringValue(Str(pod, "spec", "nodeName") is { Length: > 0 } n ? n : "<none>");
        w.WriteStringValue(Str(pod, "status", "nominatedNodeName") is { Length: > 0 } nn ? nn : "<none>");
        w.WriteStringValue("<none>");
    }

    private static string OrUnknown(string s) => s.Length == 0 ? "<unknown>" : s;

    private static string Age(JsonElement obj, DateTimeOffset now) =>
        KubeTime.Parse(Str(obj, "metadata", "creationTimestamp")) is { } created ? HumanDuration(now - created) : "<unknown>";

    private static JsonElement? Path(JsonElement e, params string[] path)
    {
        foreach (var p in path)
        {
            if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty(p, out e)) return null;
        }
        return e;
    }

    private static string Str(JsonElement e, params string[] path) =>
        Path(e, path) is { ValueKind: JsonValueKind.String } s ? s.GetString()! : "";

    private static int Int(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : 0;

    /// <summary>kubectl's age format (apimachinery duration.HumanDuration): precise when young, coarse when old.</summary>
    public static string HumanDuration(TimeSpan d)
    {
        if (d < TimeSpan.FromSeconds(-1)) return "<invalid>";
        if (d < TimeSpan.Zero) return "0s";
        var seconds = (long)d.TotalSeconds;
        if (seconds < 60 * 2) return $"{seconds}s";
        var minutes = seconds / 60;
        if (minutes < 10)
            return seconds % 60 == 0 ? $"{minutes}m" : $"{minutes}m{seconds % 60}s";
        if (minutes < 60 * 3) return $"{minutes}m";
        var hours = minutes / 60;
        if (hours < 8) return minutes % 60 == 0 ? $"{hours}h" : $"{hours}h{minutes % 60}m";
        if (hours < 48) return $"{hours}h";
        if (hours < 24 * 8) return hours % 24 == 0 ? $"{hours / 24}d" : $"{hours / 24}d{hours % 24}h";
        if (hours < 24 * 365 * 2) return $"{hours / 24}d";
        if (hours < 24 * 365 * 8)
        {
            var dy = hours / 24 % 365;
            return dy == 0 ? $"{hours / 24 / 365}y" : $"{hours / 24 / 365}y{dy}d";
        }
        return $"{hours / 24 / 365}y";
    }
}
