using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Karpetrack.Simulation;

/// <summary>The fake Spot API's SpotNodePool routes: CRD schema, admission webhook, merge patches, deletes (spot-api.md §2.6).</summary>
public sealed partial class SpotApiServer
{
    // ---- spot node pools (§2.6) --------------------------------------------------------------

    private const string Webhook = "admission webhook \"vspotnodepool.ngpc.rxt.io\" denied the request: ";
    private const string CloudspaceLabel = "ngpc.rxt.io/cloudspace";
    private const int MaxServers = 1000;
    private static readonly string[] SpecFields = ["serverClass", "desired", "bidPrice", "cloudSpace", "autoscaling", "customLabels", "customAnnotations", "customTaints"];
    private static readonly string[] RequiredSpecFields = ["bidPrice", "cloudSpace", "desired", "serverClass"];

    private static string Verb(string method, bool one) => method switch
    {
        "GET" => one ? "get" : "list",
        "POST" => "create",
        "PATCH" => "patch",
        "PUT" => "update",
        "DELETE" => one ? "delete" : "deletecollection",
        _ => method.ToLowerInvariant(),
    };

    private async Task<Reply> PoolRequest(HttpContext ctx, string ns, string? name)
    {
        var method = ctx.Request.Method;
        if (name is null)
        {
            if (HttpMethods.IsGet(method) || HttpMethods.IsDelete(method))
            {
                LabelSelector selector;
                try
                {
                    var text = ctx.Request.Query["labelSelector"].ToString();
                    selector = string.IsNullOrWhiteSpace(text) ? LabelSelector.Everything : LabelSelector.Parse(text);
                }
                catch (FormatException e)
                {
                    return Failure(400, "BadRequest", $"unable to parse requirement: {e.Message}");
                }
                return HttpMethods.IsGet(method) ? ListPools(ns, selector) : DeleteCollection(ns, selector);
            }
            if (HttpMethods.IsPost(method))
            {
                if (!IsJson(ctx.Request.ContentType))
                    return Failure(415, "UnsupportedMediaType", $"the body of the request was in an unknown format - accepted media types include: application/json");
                var (body, error) = await ReadJson(ctx);
                return error is not null ? Failure(400, "BadRequest", $"couldn't get version/kind; json parse error: {error}") : CreatePool(ns, body);
            }
        }
        else
        {
            if (HttpMethods.IsGet(method))
            {
                lock (gate) return namespaced["spotnodepools"].GetValueOrDefault($"{ns}/{name}") is { } obj ? new Reply(200, obj.DeepClone()) : NotFound(name);
            }
            if (HttpMethods.IsPatch(method))
            {
                var media = ctx.Request.ContentType?.Split(';')[0].Trim();
                // application/json is taken as a merge patch, as the brief for this fake asks; the real
                // server's other patch types (JSON patch, apply) are not modelled.
                if (media is not ("application/merge-patch+json" or "application/json"))
                    return Failure(415, "UnsupportedMediaType", $"the body of the request was in an unknown format - accepted media types include: application/merge-patch+json");
                var (patch, error) = await ReadJson(ctx);
                if (error is not null || patch is not JsonObject po) return Failure(400, "BadRequest", $"error decoding patch: {error ?? "the patch is not a JSON object"}");
                return PatchPool(ns, name, po);
            }
            if (HttpMethods.IsDelete(method)) return DeletePool(ns, name);
        }
        return Failure(405, "MethodNotAllowed", "the server does not allow this method on the requested resource");
    }

    private static bool IsJson(string? contentType) => contentType is null || contentType.Split(';')[0].Trim() == "application/json";

    private static async Task<(JsonNode?, string?)> ReadJson(HttpContext ctx)
    {
        using var ms = new MemoryStream();
        await ctx.Request.Body.CopyToAsync(ms, ctx.RequestAborted);
        try { return (JsonNode.Parse(ms.ToArray()), null); }
        catch (JsonException e) { return (null, e.Message); }
    }

    private Reply ListPools(string ns, LabelSelector selector)
    {
        List<JsonObject> list;
        lock (gate) list = namespaced["spotnodepools"].Where(kv => kv.Key.StartsWith(ns + "/", StringComparison.Ordinal) && selector.Matches(LabelsOf(kv.Value))).Select(kv => kv.Value).ToList();
        return new Reply(200, List("SpotNodePoolList", list));
    }

    private static Dictionary<string, string> LabelsOf(JsonObject obj) => StringMap(obj["metadata"]?["labels"]);

    private static Dictionary<string, string> StringMap(JsonNode? node)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        if (node is JsonObject o)
            foreach (var (k, v) in o)
                if (Text(v) is { } s) map[k] = s;
        return map;
    }

    private Reply CreatePool(string ns, JsonNode? body)
    {
        if (body is not JsonObject obj) return Failure(400, "BadRequest", "couldn't get version/kind; json parse error: the body is not a JSON object");
        if (Text(obj["apiVersion"]) is { } av && av != "ngpc.rxt.io/v1")
            return Failure(400, "BadRequest", $"the API version in the data ({av}) does not match the expected API version (ngpc.rxt.io/v1)");
        if (Text(obj["kind"]) is { } kind && kind != "SpotNodePool")
            return Failure(400, "BadRequest", $"the kind in the data ({kind}) does not match the expected kind (SpotNodePool)");
        var meta = obj["metadata"] as JsonObject;
        if (Text(meta?["namespace"]) is { } metaNs && metaNs != ns)
            return Failure(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request");
        var name = Text(meta?["name"]) ?? "";
        // Stage 1, the CRD's structural schema and CEL rule: every broken field at once, 422.
        var causes = SchemaCauses(obj);
        if (name.Length == 0) causes.Insert(0, ("metadata.name", "FieldValueRequired", "Required value: name or generateName is required"));
        if (causes.Count > 0) return Invalid(name, causes);
        var spec = (JsonObject)obj["spec"]!;
        lock (gate)
        {
            // Stage 2, the validating webhook: the first rule broken, 403.
            if (AdmitCreate(ns, name, spec) is { } denied) return Failure(403, "Forbidden", Webhook + denied);
            // Stage 3, storage.
            var key = $"{ns}/{name}";
            if (namespaced["spotnodepools"].ContainsKey(key))
                return Failure(409, "AlreadyExists", $"spotnodepools.ngpc.rxt.io \"{name}\" already exists",
                    new JsonObject { ["name"] = name, ["group"] = "ngpc.rxt.io", ["kind"] = "spotnodepools" });
            var rv = ++resourceVersion;
            var storedMeta = new JsonObject
            {
                ["name"] = name,
                ["namespace"] = ns,
                ["uid"] = new Guid(MD5.HashData(Encoding.UTF8.GetBytes($"{key}/{rv}"))).ToString(),
                ["resourceVersion"] = rv.ToString(CultureInfo.InvariantCulture),
                ["generation"] = 1,
                ["creationTimestamp"] = clock.GetUtcNow().UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture),
            };
            if (meta?["labels"] is JsonObject labels) storedMeta["labels"] = labels.DeepClone();
            if (meta?["annotations"] is JsonObject annotations) storedMeta["annotations"] = annotations.DeepClone();
            var stored = new JsonObject
            {
                ["apiVersion"] = "ngpc.rxt.io/v1",
                ["kind"] = "SpotNodePool",
                ["metadata"] = storedMeta,
                ["spec"] = Pruned(spec),
                ["status"] = new JsonObject
                {
                    ["bidStatus"] = "Pending",
                    ["wonCount"] = 0,
                    ["customMetadataStatus"] = new JsonObject { ["labels"] = new JsonArray(), ["annotations"] = new JsonArray(), ["taints"] = new JsonArray() },
                },
            };
            namespaced["spotnodepools"][key] = stored;
            var uid = (string)storedMeta["uid"]!;
            poolNodes[key] = new PoolNodes(uid);
            Schedule(options.ProvisioningDelay, () => Provision(key, uid));
            return new Reply(201, stored.DeepClone());
        }
    }

    /// <summary>A structural schema drops unknown fields (Kubernetes pruning).</summary>
    private static JsonObject Pruned(JsonObject spec)
    {
        var copy = new JsonObject();
        foreach (var f in SpecFields)
            if (spec.TryGetPropertyValue(f, out var v)) copy[f] = v?.DeepClone();
        return copy;
    }

    /// <summary>What the CRD's OpenAPI schema and its one CEL rule say about an object, as Kubernetes words it.</summary>
    private static List<(string Field, string Reason, string Message)> SchemaCauses(JsonObject obj)
    {
        var causes = new List<(string, string, string)>();
        void WrongType(string field, JsonNode? value, string expected) =>
            causes.Add((field, "FieldValueInvalid", $"Invalid value: \"{TypeName(value)}\": {field} in body must be of type {expected}: \"{TypeName(value)}\""));
        if (obj["metadata"] is { } m && m is not JsonObject) WrongType("metadata", m, "object");
        if (obj["metadata"]?["labels"] is { } l && l is not JsonObject) WrongType("metadata.labels", l, "object");
        if (!obj.TryGetPropertyValue("spec", out var specNode) || specNode is null)
        {
            causes.Add(("spec", "FieldValueRequired", "Required value"));
            return causes;
        }
        if (specNode is not JsonObject spec)
        {
            WrongType("spec", specNode, "object");
            return causes;
        }
        foreach (var (field, expected) in new[] { ("serverClass", "string"), ("desired", "integer"), ("bidPrice", "string"), ("cloudSpace", "string"),
                     ("autoscaling", "object"), ("customLabels", "object"), ("customAnnotations", "object"), ("customTaints", "array") })
        {
            if (spec.TryGetPropertyValue(field, out var v) && v is not null && TypeName(v) != expected)
                WrongType($"spec.{field}", v, expected);
        }
        foreach (var field in RequiredSpecFields)
            if (!spec.TryGetPropertyValue(field, out var v) || v is null) causes.Add(($"spec.{field}", "FieldValueRequired", "Required value"));
        if (spec["autoscaling"] is JsonObject auto)
        {
            if (!auto.ContainsKey("enabled")) causes.Add(("spec.autoscaling.enabled", "FieldValueRequired", "Required value"));
            else if (TypeName(auto["enabled"]) != "boolean") WrongType("spec.autoscaling.enabled", auto["enabled"], "boolean");
        }
        if (spec["customTaints"] is JsonArray taints)
        {
            for (int i = 0; i < taints.Count; i++)
            {
                foreach (var f in new[] { "effect", "key" })
                    if (taints[i] is not JsonObject t || Text(t[f]) is null) causes.Add(($"spec.customTaints[{i}].{f}", "FieldValueRequired", "Required value"));
            }
        }
        // The CEL rule runs on a string only; Kubernetes names the type, not the value, in its message.
        if (Text(spec["bidPrice"]) is { } bid && !BidPattern().IsMatch(bid))
            causes.Add(("spec.bidPrice", "FieldValueInvalid", "Invalid value: \"string\": bidPrice can only be a positive number up to three decimal places"));
        return causes;
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^\d+(\.\d{1,3})?$")]
    private static partial System.Text.RegularExpressions.Regex BidPattern();

    private static Reply Invalid(string name, List<(string Field, string Reason, string Message)> causes)
    {
        var lines = causes.Select(c => $"{c.Field}: {c.Message}").ToList();
        var message = $"SpotNodePool.ngpc.rxt.io \"{name}\" is invalid: " + (lines.Count == 1 ? lines[0] : $"[{string.Join(", ", lines)}]");
        var array = new JsonArray();
        foreach (var c in causes) array.Add((JsonNode)new JsonObject { ["reason"] = c.Reason, ["message"] = c.Message, ["field"] = c.Field });
        return Failure(422, "Invalid", message, new JsonObject { ["name"] = name, ["group"] = "ngpc.rxt.io", ["kind"] = "SpotNodePool", ["causes"] = array });
    }

    /// <summary>The webhook's create rules in the order it applies them; null admits. Caller holds the gate.</summary>
    private string? AdmitCreate(string ns, string name, JsonObject spec)
    {
        // Exact texts of the first three rules are not recorded anywhere (§2.1, §2.6): worded plainly here.
        if (!Guid.TryParseExact(name, "D", out _) || name != name.ToLowerInvariant()) return $"SpotNodePool name \"{name}\" must be a lowercase UUID";
        var desired = (long)Num(spec["desired"]);
        if (desired < 1) return $"desired must be at least 1, but got {desired}";
        // The platform's limit of servers per organization (§2.9); the exact check is not documented.
        if (desired > MaxServers) return $"desired must be at most {MaxServers}, but got {desired}";
        var cloudSpace = Text(spec["cloudSpace"])!;
        if (!namespaced["cloudspaces"].ContainsKey($"{ns}/{cloudSpace}")) return $"cloudspace \"{cloudSpace}\" not found in namespace \"{ns}\"";
        return AdmitBid(Text(spec["serverClass"])!, decimal.Parse(Text(spec["bidPrice"])!, CultureInfo.InvariantCulture));
    }

    private string? AdmitBid(string serverClass, decimal bid)
    {
        var sc = serverClasses.FirstOrDefault(c => Name(c) == serverClass);
        if (sc is null) return $"serverclass \"{serverClass}\" not found";
        var minText = Text(sc["spec"]?["minBidPricePerHour"]) ?? "";
        if (!decimal.TryParse(minText, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var min))
            return $"failed to parse serverclass min bid price for {serverClass}: strconv.ParseFloat: parsing \"{minText}\": invalid syntax";
        if (bid < min) return $"BidPrice must be greater than or equal to the minimum bid price of {Six(min)}, but got {Six(bid)}";
        var market = MarketOf(sc);
        if (bid < market) return $"BidPrice must be greater than or equal to the market price of {Six(market)}, but got {Six(bid)}";
        return BidRule(bid);
    }

    private static decimal MarketOf(JsonObject serverClass) =>
        decimal.TryParse(Text(serverClass["status"]?["spotPricing"]?["marketPricePerHour"]), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var m) ? m : 0m;

    private Reply PatchPool(string ns, string name, JsonObject patch)
    {
        var key = $"{ns}/{name}";
        lock (gate)
        {
            if (namespaced["spotnodepools"].GetValueOrDefault(key) is not { } current) return NotFound(name);
            if (patch["metadata"]?["resourceVersion"] is { } rvNode)
            {
                var rv = Text(rvNode) ?? rvNode.ToJsonString();
                if (!ulong.TryParse(rv, NumberStyles.None, CultureInfo.InvariantCulture, out _))
                    return Failure(500, "InternalError", $"strconv.ParseUint: parsing \"{rv}\": invalid syntax");
                if (rv != Text(current["metadata"]!["resourceVersion"]))
                    return Failure(409, "Conflict",
                        $"Operation cannot be fulfilled on spotnodepools.ngpc.rxt.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        new JsonObject { ["name"] = name, ["group"] = "ngpc.rxt.io", ["kind"] = "spotnodepools" });
            }
            var merged = (JsonObject)current.DeepClone();
            MergeInto(merged, patch);
            // The server owns identity and status: a patch only reaches labels, annotations and spec.
            var meta = (JsonObject)current["metadata"]!.DeepClone();
            meta["labels"] = merged["metadata"]?["labels"]?.DeepClone();
            meta["annotations"] = merged["metadata"]?["annotations"]?.DeepClone();
            if (meta["labels"] is null) meta.Remove("labels");
            if (meta["annotations"] is null) meta.Remove("annotations");
            merged["metadata"] = meta;
            merged["status"] = current["status"]!.DeepClone();
            merged["apiVersion"] = "ngpc.rxt.io/v1";
            merged["kind"] = "SpotNodePool";
            var causes = SchemaCauses(merged);
            if (causes.Count > 0) return Invalid(name, causes);
            merged["spec"] = Pruned((JsonObject)merged["spec"]!);
            if (JsonNode.DeepEquals(merged, current)) return new Reply(200, current.DeepClone());   // no-op: resourceVersion kept
            var spec = (JsonObject)merged["spec"]!;
            var before = (JsonObject)current["spec"]!;
            if (AdmitUpdate(name, before, spec) is { } denied) return Failure(403, "Forbidden", Webhook + denied);
            meta["resourceVersion"] = (++resourceVersion).ToString(CultureInfo.InvariantCulture);
            if (!JsonNode.DeepEquals(spec, before)) meta["generation"] = (long)Num(meta["generation"]) + 1;
            namespaced["spotnodepools"][key] = merged;
            Resize(key, merged);
            return new Reply(200, merged.DeepClone());
        }
    }

    /// <summary>
    /// Update rules: desired at least 1, and a bid or class that changed passes the bid rules again.
    /// Whether the real webhook re-checks an unchanged bid on update is unknown; here it does not.
    /// </summary>
    private string? AdmitUpdate(string name, JsonObject before, JsonObject after)
    {
        var desired = (long)Num(after["desired"]);
        if (desired < 1) return $"desired must be at least 1, but got {desired}";
        if (desired > MaxServers) return $"desired must be at most {MaxServers}, but got {desired}";
        if (Text(after["bidPrice"]) == Text(before["bidPrice"]) && Text(after["serverClass"]) == Text(before["serverClass"])) return null;
        return AdmitBid(Text(after["serverClass"])!, decimal.Parse(Text(after["bidPrice"])!, CultureInfo.InvariantCulture));
    }

    /// <summary>RFC 7386: objects merge, null removes, anything else replaces.</summary>
    private static void MergeInto(JsonObject target, JsonObject patch)
    {
        foreach (var (k, v) in patch)
        {
            if (v is null) target.Remove(k);
            else if (v is JsonObject po && target[k] is JsonObject to) MergeInto(to, po);
            else if (v is JsonObject fresh)
            {
                var o = new JsonObject();
                MergeInto(o, fresh);   // nulls inside a new object are dropped too
                target[k] = o;
            }
            else target[k] = v.DeepClone();
        }
    }

    private Reply DeletePool(string ns, string name)
    {
        var key = $"{ns}/{name}";
        OnPoolDelete?.Invoke(name);
        lock (gate)
        {
            if (options.AsyncDeleteDelay is { } delay && namespaced["spotnodepools"].TryGetValue(key, out var doomed))
            {
                // Accepted, not done: the finalizer holds the pool (and its nodes) until the cleanup ends.
                var meta = doomed["metadata"]!.AsObject();
                if (meta["deletionTimestamp"] is null)
                {
                    meta["deletionTimestamp"] = clock.GetUtcNow().UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);
                    meta["finalizers"] = new JsonArray("ngpc.rxt.io/cleanup");
                    Interlocked.Increment(ref asyncDeletes);
                    Schedule(delay, () =>
                    {
                        lock (gate)
                        {
                            if (namespaced["spotnodepools"].Remove(key)) ReleaseNodes(key);
                        }
                    });
                }
                return new Reply(202, doomed.DeepClone());
            }
            if (!namespaced["spotnodepools"].Remove(key, out var gone)) return NotFound(name);
            ReleaseNodes(key);
            return new Reply(200, new JsonObject
            {
                ["kind"] = "Status", ["apiVersion"] = "v1", ["metadata"] = new JsonObject(), ["status"] = "Success",
                ["details"] = new JsonObject { ["name"] = name, ["group"] = "ngpc.rxt.io", ["kind"] = "spotnodepools", ["uid"] = Text(gone["metadata"]?["uid"]) },
            });
        }
    }

    /// <summary>What the real collection DELETE does: every pool of the namespace (that the selector matches) is gone.</summary>
    private Reply DeleteCollection(string ns, LabelSelector selector)
    {
        Interlocked.Increment(ref collectionDeletes);
        lock (gate)
        {
            var doomed = namespaced["spotnodepools"].Where(kv => kv.Key.StartsWith(ns + "/", StringComparison.Ordinal) && selector.Matches(LabelsOf(kv.Value))).ToList();
            foreach (var (key, _) in doomed)
            {
                namespaced["spotnodepools"].Remove(key);
                ReleaseNodes(key);
            }
            return new Reply(200, List("SpotNodePoolList", doomed.Select(kv => kv.Value).ToList()));
        }
    }

    private static Reply NotFound(string name) => Failure(404, "NotFound", $"spotnodepools.ngpc.rxt.io \"{name}\" not found",
        new JsonObject { ["name"] = name, ["group"] = "ngpc.rxt.io", ["kind"] = "spotnodepools" });

    private static Reply Failure(int code, string reason, string message, JsonObject? details = null)
    {
        var body = new JsonObject
        {
            ["kind"] = "Status", ["apiVersion"] = "v1", ["metadata"] = new JsonObject(),
            ["status"] = "Failure", ["message"] = message, ["reason"] = reason, ["code"] = code,
        };
        if (details is not null) body["details"] = details;
        return new Reply(code, body);
    }
}
