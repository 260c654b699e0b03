using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http;

namespace Karpetrack.Simulation;

/// <summary>
/// A change made through the HTTP API (not through <see cref="ObjectStore"/> directly): the new
/// object, or null when it is gone. Lets the demo cluster react as controllers and kubelets would.
/// </summary>
public sealed record ApiWrite(string Resource, string? Namespace, string Name, JsonObject? Object);

/// <summary>Refusals of a write, carried to the one place that renders them as Status.</summary>
internal sealed class ApiRefusal(int code, string reason, string message, Action<Utf8JsonWriter>? details = null) : Exception(message)
{
    public int Code { get; } = code;
    public string Reason { get; } = reason;
    public Action<Utf8JsonWriter>? Details { get; } = details;
}

// The write verbs: create, replace, patch, delete and the pod eviction subresource, with the
// status codes and Status bodies of kube-apiserver. Every change goes through the store, so
// watches see it like any other.
public sealed partial class KubeApiServer
{
    /// <summary>Raised after each write made through the HTTP API, outside the store's lock.</summary>
    public event Action<ApiWrite>? Written;

    private void OnWritten(ResourceType type, string? ns, string name, JsonObject? obj) =>
        Written?.Invoke(new ApiWrite(type.Resource, type.Namespaced ? ns : null, name, obj));

    private static string Qualified(ResourceType type) => type.Group.Length == 0 ? type.Resource : $"{type.Resource}.{type.Group}";

    private static Action<Utf8JsonWriter> NameDetails(ResourceType type, string name) => w =>
    {
        w.WriteString("name", name);
        if (type.Group.Length > 0) w.WriteString("group", type.Group);
        w.WriteString("kind", type.Resource);
    };

    private static ApiRefusal NotFound(ResourceType type, string name) =>
        new(404, "NotFound", $"{Qualified(type)} \"{name}\" not found", NameDetails(type, name));

    private static ApiRefusal Conflict(ResourceType type, string name) =>
        new(409, "Conflict", $"Operation cannot be fulfilled on {Qualified(type)} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            NameDetails(type, name));

    private async Task WriteVerbAsync(HttpContext ctx, ResourceType type, string? ns, string? name, string? subresource)
    {
        var method = ctx.Request.Method;
        try
        {
            if (type.Namespaced && ns is null && name is not null)
                throw new ApiRefusal(404, "NotFound", "the server could not find the requested resource");
            if (subresource is not null)
            {
                if (subresource == "eviction" && type.Resource == "pods" && HttpMethods.IsPost(method) && ns is not null && name is not null)
                    await EvictAsync(ctx, ns, name).ConfigureAwait(false);
                else
                    throw new ApiRefusal(405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
                return;
            }
            if (name is null)
            {
                // Creating is the only write on a collection; deletecollection is not served.
                if (!HttpMethods.IsPost(method) || (type.Namespaced && ns is null))
                    throw new ApiRefusal(405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
                await CreateAsync(ctx, type, ns).ConfigureAwait(false);
            }
            else if (HttpMethods.IsPut(method)) await ReplaceAsync(ctx, type, ns, name).ConfigureAwait(false);
            else if (HttpMethods.IsPatch(method)) await PatchAsync(ctx, type, ns, name).ConfigureAwait(false);
            else if (HttpMethods.IsDelete(method)) await DeleteAsync(ctx, type, ns, name).ConfigureAwait(false);
            else throw new ApiRefusal(405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
        }
        catch (ApiRefusal r)
        {
            await WriteStatusAsync(ctx, r.Code, r.Reason, r.Message, r.Details).ConfigureAwait(false);
        }
    }

    private static async Task<JsonObject> ReadBodyAsync(HttpContext ctx, bool required = true)
    {
        JsonNode? node;
        try
        {
            node = await JsonNode.ParseAsync(ctx.Request.Body, cancellationToken: ctx.RequestAborted).ConfigureAwait(false);
        }
        catch (JsonException e)
        {
            if (!required && ctx.Request.ContentLength is null or 0) return [];
            throw new ApiRefusal(400, "BadRequest", $"the body of the request was in an unknown format: {e.Message}");
        }
        return node as JsonObject ?? (required
            ? throw new ApiRefusal(400, "BadRequest", "the body of the request must be a JSON object")
            : []);
    }

    /// <summary>
    /// The MicroTime fields of a Lease, as the apiserver decodes them: RFC 3339 with exactly six
    /// fractional digits (Go's "2006-01-02T15:04:05.000000Z07:00"); anything else is a 400.
    /// </summary>
    private static void CheckMicroTimes(ResourceType type, JsonObject obj)
    {
        if (type.Resource != "leases") return;
        foreach (var field in (string[])["acquireTime", "renewTime"])
        {
            if (obj["spec"]?[field] is not JsonValue value) continue;
            var text = value.TryGetValue(out string? s) ? s : value.ToJsonString();
            if (!MicroTimePattern().IsMatch(text))
                throw new ApiRefusal(400, "BadRequest",
                    $"Lease in version \"v1\" cannot be handled as a Lease: parsing time \"{text}\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"{text[Math.Min(text.Length, 19)..]}\" as \".000000\"");
        }
    }

    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")]
    private static partial Regex MicroTimePattern();

    private static Task WriteObjectAsync(HttpContext ctx, int status, StoredObject obj)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = obj.Utf8.Length;
        return ctx.Response.Body.WriteAsync(obj.Utf8).AsTask();
    }

    private static Task WriteObjectAsync(HttpContext ctx, int status, JsonObject obj)
    {
        var bytes = JsonWire.Utf8(obj);
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = bytes.Length;
        return ctx.Response.Body.WriteAsync(bytes).AsTask();
    }

    private static Task WriteSuccessAsync(HttpContext ctx, int code) =>
        WriteJsonAsync(ctx, code, w => WriteStatusObject(w, code, null, null, null));

    // ---------------------------------------------------------------- POST (create)

    private const string GenerateNameAlphabet = "bcdfghjklmnpqrstvwxz2456789";

    private async Task CreateAsync(HttpContext ctx, ResourceType type, string? ns)
    {
        var obj = await ReadBodyAsync(ctx).ConfigureAwait(false);
        CheckMicroTimes(type, obj);
        var metadata = obj["metadata"] as JsonObject ?? [];
        obj["metadata"] = metadata;
        obj["apiVersion"] ??= type.GroupVersion;
        obj["kind"] ??= type.Kind;
        if (type.Namespaced)
        {
            var bodyNs = (string?)metadata["namespace"];
            if (bodyNs is { Length: > 0 } && bodyNs != ns)
                throw new ApiRefusal(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request");
            metadata["namespace"] = ns;
        }
        // Server-owned fields: whatever a client sent is replaced.
        metadata.Remove("resourceVersion");
        metadata.Remove("uid");
        metadata.Remove("creationTimestamp");
        metadata.Remove("deletionTimestamp");
        metadata.Remove("deletionGracePeriodSeconds");

        var name = (string?)metadata["name"];
        var generate = (string?)metadata["generateName"];
        if (string.IsNullOrEmpty(name) && string.IsNullOrEmpty(generate))
        {
            var kind = type.Group.Length == 0 ? type.Kind : $"{type.Kind}.{type.Group}";
            throw new ApiRefusal(422, "Invalid", $"{kind} \"\" is invalid: metadata.name: Required value: name or generateName is required", w =>
            {
                if (type.Group.Length > 0) w.WriteString("group", type.Group);
                w.WriteString("kind", type.Kind);
                w.WriteStartArray("causes");
                w.WriteStartObject();
                w.WriteString("reason", "FieldValueRequired");
                w.WriteString("message", "Required value: name or generateName is required");
                w.WriteString("field", "metadata.name");
                w.WriteEndObject();
                w.WriteEndArray();
            });
        }

        StoredObject? stored = null;
        if (!string.IsNullOrEmpty(name))
        {
            stored = Store.TryCreate(type.Resource, obj);
        }
        else
        {
            // generateName: a random 5-character suffix, drawn again on a collision.
            for (var attempt = 0; attempt < 8 && stored is null; attempt++)
            {
                name = generate + string.Concat(Enumerable.Range(0, 5).Select(_ => GenerateNameAlphabet[Random.Shared.Next(GenerateNameAlphabet.Length)]));
                metadata["name"] = name;
                stored = Store.TryCreate(type.Resource, obj);
            }
        }
        if (stored is null)
            throw new ApiRefusal(409, "AlreadyExists", $"{Qualified(type)} \"{name}\" already exists", NameDetails(type, name!));
        OnWritten(type, stored.Namespace, stored.Name, stored.ToJsonObject());
        await WriteObjectAsync(ctx, 201, stored).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- PUT (replace)

    private async Task ReplaceAsync(HttpContext ctx, ResourceType type, string? ns, string name)
    {
        var obj = await ReadBodyAsync(ctx).ConfigureAwait(false);
        CheckMicroTimes(type, obj);
        var metadata = obj["metadata"] as JsonObject ?? throw new ApiRefusal(400, "BadRequest", "the object has no metadata");
        var bodyName = (string?)metadata["name"];
        if (bodyName != name)
            throw new ApiRefusal(400, "BadRequest", $"the name of the object ({bodyName}) does not match the name on the URL ({name})");
        if (type.Namespaced)
        {
            var bodyNs = (string?)metadata["namespace"];
            if (bodyNs is { Length: > 0 } && bodyNs != ns)
                throw new ApiRefusal(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request");
            metadata["namespace"] = ns;
        }
        var expected = (string?)metadata["resourceVersion"];
        var stored = Store.Update(type.Resource, ns, name, current =>
        {
            var currentMeta = current["metadata"]!.AsObject();
            // Like the core types: an update without a resourceVersion is unconditional.
            if (!string.IsNullOrEmpty(expected) && expected != (string?)currentMeta["resourceVersion"]) throw Conflict(type, name);
            metadata["uid"] = (string?)currentMeta["uid"];
            metadata["creationTimestamp"] = (string?)currentMeta["creationTimestamp"];
            if (currentMeta["deletionTimestamp"] is { } dt) metadata["deletionTimestamp"] = dt.DeepClone();
            current.Clear();
            foreach (var (k, v) in obj.ToArray())
            {
                obj.Remove(k);
                current[k] = v;
            }
            return true;
        }) ?? throw NotFound(type, name);
        OnWritten(type, ns, name, stored.ToJsonObject());
        await WriteObjectAsync(ctx, 200, stored).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- PATCH

    private async Task PatchAsync(HttpContext ctx, ResourceType type, string? ns, string name)
    {
        var contentType = (ctx.Request.ContentType ?? "").Split(';')[0].Trim();
        var kind = contentType switch
        {
            "application/merge-patch+json" or "application/strategic-merge-patch+json" => "merge",
            "application/json-patch+json" => "json",
            _ => throw new ApiRefusal(415, "UnsupportedMediaType", $"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"),
        };
        JsonNode? patch;
        try
        {
            patch = await JsonNode.ParseAsync(ctx.Request.Body, cancellationToken: ctx.RequestAborted).ConfigureAwait(false);
        }
        catch (JsonException e)
        {
            throw new ApiRefusal(400, "BadRequest", $"error decoding patch: {e.Message}");
        }
        var stored = Store.Update(type.Resource, ns, name, current =>
        {
            var meta = current["metadata"]!.AsObject();
            var (uid, rv, created) = ((string?)meta["uid"], (string?)meta["resourceVersion"], (string?)meta["creationTimestamp"]);
            if (kind == "merge")
            {
                if (patch is not JsonObject mergePatch) throw new ApiRefusal(400, "BadRequest", "a merge patch must be a JSON object");
                // The optimistic-concurrency precondition kubectl and controllers put in a patch.
                if ((string?)mergePatch["metadata"]?["resourceVersion"] is { Length: > 0 } wanted && wanted != rv) throw Conflict(type, name);
                if ((string?)mergePatch["metadata"]?["uid"] is { Length: > 0 } wantedUid && wantedUid != uid)
                    throw new ApiRefusal(409, "Conflict", $"Operation cannot be fulfilled on {Qualified(type)} \"{name}\": Precondition failed: UID in precondition: {wantedUid}, UID in object meta: {uid}", NameDetails(type, name));
                JsonPatches.Merge(current, mergePatch);
            }
            else
            {
                if (patch is not JsonArray ops) throw new ApiRefusal(400, "BadRequest", "a JSON patch must be a JSON array");
                try { JsonPatches.Apply(current, ops); }
                catch (InvalidOperationException e) { throw new ApiRefusal(422, "Invalid", $"the server rejected our request due to an error in our request: {e.Message}"); }
            }
            // Identity cannot be patched away.
            meta = current["metadata"] as JsonObject ?? [];
            current["metadata"] = meta;
            meta["name"] = name;
            if (type.Namespaced) meta["namespace"] = ns;
            meta["uid"] = uid;
            meta["creationTimestamp"] = created;
            return true;
        }) ?? throw NotFound(type, name);
        OnWritten(type, ns, name, stored.ToJsonObject());
        await WriteObjectAsync(ctx, 200, stored).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- DELETE

    private async Task DeleteAsync(HttpContext ctx, ResourceType type, string? ns, string name)
    {
        var options = await ReadBodyAsync(ctx, required: false).ConfigureAwait(false);
        long? grace = (long?)options["gracePeriodSeconds"];
        if (ctx.Request.Query["gracePeriodSeconds"].ToString() is { Length: > 0 } q)
        {
            if (!long.TryParse(q, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var g))
                throw new ApiRefusal(400, "BadRequest", $"invalid gracePeriodSeconds: {q}");
            grace = g;
        }
        var current = Store.Get(type.Resource, ns, name) ?? throw NotFound(type, name);
        CheckPreconditions(type, name, current, options);

        if (type.Resource == "pods")
        {
            await WriteObjectAsync(ctx, 200, DeletePod(ns!, name, grace)).ConfigureAwait(false);
            return;
        }
        // As the apiserver's registry: an object deleted at once (no finalizers here) is answered with a
        // Status naming it; only pods (ReturnDeletedObject) come back as the object.
        var deleted = DeleteNow(type, ns, name);
        await WriteJsonAsync(ctx, 200, w =>
        {
            w.WriteStartObject();
            w.WriteString("kind", "Status");
            w.WriteString("apiVersion", "v1");
            w.WriteStartObject("metadata");
            w.WriteEndObject();
            w.WriteString("status", "Success");
            w.WriteStartObject("details");
            NameDetails(type, name)(w);
            w.WriteString("uid", (string?)deleted["metadata"]?["uid"]);
            w.WriteEndObject();
            w.WriteEndObject();
        }).ConfigureAwait(false);
    }

    /// <summary>DeleteOptions.preconditions, as the apiserver checks them before deleting: 409 Conflict on a mismatch.</summary>
    private static void CheckPreconditions(ResourceType type, string name, StoredObject current, JsonObject? deleteOptions)
    {
        var preconditionUid = (string?)deleteOptions?["preconditions"]?["uid"];
        var preconditionRv = (string?)deleteOptions?["preconditions"]?["resourceVersion"];
        var uid = (string?)current.ToJsonObject()["metadata"]?["uid"];
        if (preconditionUid is { Length: > 0 } && preconditionUid != uid)
            throw new ApiRefusal(409, "Conflict", $"Operation cannot be fulfilled on {Qualified(type)} \"{name}\": Precondition failed: UID in precondition: {preconditionUid}, UID in object meta: {uid}", NameDetails(type, name));
        if (preconditionRv is { Length: > 0 } && preconditionRv != current.ResourceVersion.ToString(CultureInfo.InvariantCulture))
            throw Conflict(type, name);
    }

    private JsonObject DeleteNow(ResourceType type, string? ns, string name)
    {
        var last = Store.Get(type.Resource, ns, name) ?? throw NotFound(type, name);
        if (!Store.Delete(type.Resource, ns, name)) throw NotFound(type, name);
        OnWritten(type, ns, name, null);
        return last.ToJsonObject();
    }

    /// <summary>
    /// Graceful pod deletion: a bound, running pod gets deletionTimestamp and goes after its grace
    /// period (capped by <see cref="KubeApiServerOptions.MaxPodGracePeriod"/>, standing in for the
    /// kubelet's confirmation); an unscheduled or finished pod, or grace 0, goes at once.
    /// </summary>
    private JsonObject DeletePod(string ns, string name, long? requestedGrace)
    {
        var type = ResourceType.Pods;
        var current = Store.Get("pods", ns, name)?.ToJsonObject() ?? throw NotFound(type, name);
        var bound = !string.IsNullOrEmpty((string?)current["spec"]?["nodeName"]);
        var phase = (string?)current["status"]?["phase"];
        var grace = requestedGrace ?? (long?)current["spec"]?["terminationGracePeriodSeconds"] ?? 30;
        if (!bound || phase is "Succeeded" or "Failed" || grace <= 0) return DeleteNow(type, ns, name);

        string? uid = null;
        var changed = false;
        var stored = Store.Update("pods", ns, name, pod =>
        {
            var meta = pod["metadata"]!.AsObject();
            uid = (string?)meta["uid"];
            // A second delete may shorten the grace period, never lengthen it.
            if ((long?)meta["deletionGracePeriodSeconds"] is { } already && already <= grace) return false;
            meta["deletionTimestamp"] = KubeTime.Format(_options.Clock.GetUtcNow().AddSeconds(grace));
            meta["deletionGracePeriodSeconds"] = grace;
            changed = true;
            return true;
        }) ?? throw NotFound(type, name);
        var result = stored.ToJsonObject();
        if (!changed) return result;
        OnWritten(type, ns, name, result.DeepClone().AsObject());

        var delay = TimeSpan.FromSeconds(grace) < _options.MaxPodGracePeriod ? TimeSpan.FromSeconds(grace) : _options.MaxPodGracePeriod;
        _ = FinishGracefulDeletionAsync(ns, name, uid!, delay);
        return result;
    }

    private async Task FinishGracefulDeletionAsync(string ns, string name, string uid, TimeSpan delay)
    {
        try
        {
            await Task.Delay(delay, _options.Clock, _stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        if (Store.DeleteIfUid("pods", ns, name, uid))
        {
            OnWritten(ResourceType.Pods, ns, name, null);
            DisruptionBudgets.Refresh(Store, ns);
        }
    }

    // ---------------------------------------------------------------- pods/eviction

    private async Task EvictAsync(HttpContext ctx, string ns, string name)
    {
        var eviction = await ReadBodyAsync(ctx).ConfigureAwait(false);
        // Like the apiserver's decoder, a body without kind and apiVersion defaults to the endpoint's Eviction.
        var kind = (string?)eviction["kind"] ?? "Eviction";
        var apiVersion = (string?)eviction["apiVersion"] ?? "policy/v1";
        if (kind != "Eviction" || apiVersion is not ("policy/v1" or "policy/v1beta1"))
            throw new ApiRefusal(400, "BadRequest", $"the body of the request was in an unknown format - expected an Eviction of policy/v1, got {eviction["kind"]} {apiVersion}");
        if ((string?)eviction["metadata"]?["name"] is { Length: > 0 } bodyName && bodyName != name)
            throw new ApiRefusal(400, "BadRequest", "name in URL does not match name in Eviction object");
        var grace = (long?)eviction["deleteOptions"]?["gracePeriodSeconds"];

        var stored = Store.Get("pods", ns, name) ?? throw NotFound(ResourceType.Pods, name);
        var pod = stored.ToJsonObject();
        var phase = (string?)pod["status"]?["phase"];
        // As the registry's canIgnorePDB: pods that are not running, or already going, need no budget.
        var ignoreBudget = phase is "Succeeded" or "Failed" or "Pending" || string.IsNullOrEmpty((string?)pod["spec"]?["nodeName"])
            || pod["metadata"]?["deletionTimestamp"] is not null;
        if (!ignoreBudget)
        {
            var budgets = DisruptionBudgets.Matching(Store, ns, stored.Labels);
            if (budgets.Count > 1)
                throw new ApiRefusal(500, "InternalError", "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.");
            if (budgets.Count == 1)
            {
                var budget = budgets[0];
                var status = DisruptionBudgets.Evaluate(budget.ToJsonObject(), Store.List("pods").Items.Where(p => p.Namespace == ns));
                if (status.DisruptionsAllowed <= 0)
                {
                    DisruptionBudgets.Refresh(Store, ns);
                    throw new ApiRefusal(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.", w =>
                    {
                        w.WriteStartArray("causes");
                        w.WriteStartObject();
                        w.WriteString("reason", "DisruptionBudget");
                        w.WriteString("message", $"The disruption budget {budget.Name} needs {status.DesiredHealthy} healthy pods and has {status.CurrentHealthy} currently");
                        w.WriteEndObject();
                        w.WriteEndArray();
                    });
                }
            }
        }
        CheckPreconditions(ResourceType.Pods, name, stored, eviction["deleteOptions"] as JsonObject);
        DeletePod(ns, name, grace);
        DisruptionBudgets.Refresh(Store, ns);
        await WriteSuccessAsync(ctx, 201).ConfigureAwait(false);
    }
}

/// <summary>RFC 7386 merge patches and the add/remove/replace/test subset of RFC 6902 JSON patches.</summary>
internal static class JsonPatches
{
    public static void Merge(JsonObject target, JsonObject patch)
    {
        foreach (var (key, value) in patch.ToArray())
        {
            // Strategic-merge directives ($patch, $retainKeys, $setElementOrder/…) have no meaning here.
            if (key.StartsWith('$')) continue;
            if (value is null) target.Remove(key);
            else if (value is JsonObject sub)
            {
                if (target[key] is not JsonObject existing)
                {
                    existing = [];
                    target[key] = existing;
                }
                Merge(existing, sub);
            }
            else target[key] = value.DeepClone();
        }
    }

    public static void Apply(JsonObject target, JsonArray operations)
    {
        foreach (var opNode in operations)
        {
            var op = (string?)opNode?["op"] ?? throw new InvalidOperationException("a JSON patch operation has no op");
            var path = (string?)opNode!["path"] ?? throw new InvalidOperationException("a JSON patch operation has no path");
            var (parent, last) = Locate(target, path);
            switch (op)
            {
                case "add":
                    var added = opNode["value"]?.DeepClone();
                    if (parent is JsonArray addArray)
                    {
                        if (last == "-") addArray.Add(added);
                        else addArray.Insert(Index(addArray, last, allowEnd: true), added);
                    }
                    else ((JsonObject)parent)[last] = added;
                    break;
                case "replace":
                    if (parent is JsonArray replaceArray) replaceArray[Index(replaceArray, last, false)] = opNode["value"]?.DeepClone();
                    else if (!((JsonObject)parent).ContainsKey(last)) throw new InvalidOperationException($"replace operation does not apply: doc is missing key: {path}");
                    else ((JsonObject)parent)[last] = opNode["value"]?.DeepClone();
                    break;
                case "remove":
                    if (parent is JsonArray removeArray) removeArray.RemoveAt(Index(removeArray, last, false));
                    else if (!((JsonObject)parent).Remove(last)) throw new InvalidOperationException($"remove operation does not apply: doc is missing path: {path}");
                    break;
                case "test":
                    var actual = parent is JsonArray testArray ? testArray[Index(testArray, last, false)] : ((JsonObject)parent)[last];
                    if (!JsonNode.DeepEquals(actual, opNode["value"])) throw new InvalidOperationException($"testing value {path} failed");
                    break;
                default:
                    throw new InvalidOperationException($"unsupported JSON patch operation {op}");
            }
        }
    }

    private static (JsonNode Parent, string Last) Locate(JsonObject root, string pointer)
    {
        if (!pointer.StartsWith('/')) throw new InvalidOperationException($"invalid JSON pointer {pointer}");
        var parts = pointer[1..].Split('/').Select(p => p.Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal)).ToArray();
        JsonNode node = root;
        foreach (var part in parts[..^1])
        {
            node = node switch
            {
                JsonObject o => o[part],
                JsonArray a => a[Index(a, part, false)],
                _ => null,
            } ?? throw new InvalidOperationException($"doc is missing path: {pointer}");
        }
        return (node, parts[^1]);
    }

    private static int Index(JsonArray array, string text, bool allowEnd)
    {
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var i) || i > array.Count || (!allowEnd && i == array.Count))
            throw new InvalidOperationException($"array index {text} out of bounds");
        return i;
    }
}
