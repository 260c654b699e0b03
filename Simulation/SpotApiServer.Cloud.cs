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

/// <summary>The small cloud behind the fake Spot API's pools: the market, provisioning, resizing and pre-emption, told through hooks.</summary>
public sealed partial class SpotApiServer
{
    // ---- the cloud behind the pools --------------------------------------------------------

    /// <summary>
    /// Changes a class's market price, as the continuous auction does. Pools of the class bidding
    /// below it are outbid: Lost, no servers won, their nodes gone after the pre-emption notice.
    /// </summary>
    public void SetMarketPrice(string serverClass, decimal price)
    {
        lock (gate)
        {
            var sc = serverClasses.FirstOrDefault(c => Name(c) == serverClass) ?? throw new ArgumentException($"no server class {serverClass}", nameof(serverClass));
            var pricing = sc["status"]!["spotPricing"]!.AsObject();
            pricing["marketPricePerHour"] = Six(price);
            pricing["hammerPricePerHour"] = Six(price);
            sc["metadata"]!["resourceVersion"] = (++resourceVersion).ToString(CultureInfo.InvariantCulture);
            foreach (var (key, pool) in namespaced["spotnodepools"])
            {
                if (Text(pool["spec"]?["serverClass"]) != serverClass || Text(pool["status"]?["bidStatus"]) == "Lost") continue;
                if (BidOf(pool) >= price) continue;
                var status = pool["status"]!.AsObject();
                status["bidStatus"] = "Lost";
                status["wonCount"] = 0;
                pool["metadata"]!["resourceVersion"] = (++resourceVersion).ToString(CultureInfo.InvariantCulture);
                if (poolNodes.GetValueOrDefault(key) is { } nodes && nodes.Names.Count > 0)
                {
                    var leaving = nodes.Names.ToList();
                    nodes.Names.Clear();
                    Schedule(options.PreemptionNotice, () => { foreach (var n in leaving) Emit(() => options.NodeLeft?.Invoke(n)); });
                }
            }
        }
    }

    /// <summary>
    /// Registers a pool that already runs (its bid won, its nodes in the cluster): the demo starts
    /// with some nodes in pools Karpetrack manages. No hook is called for these nodes.
    /// </summary>
    public void AdoptPool(string name, string serverClass, decimal bid, IReadOnlyDictionary<string, string> customLabels, IReadOnlyList<string> nodeNames)
    {
        if (!Guid.TryParseExact(name, "D", out _) || name != name.ToLowerInvariant()) throw new ArgumentException($"pool name \"{name}\" is not a lowercase UUID", nameof(name));
        var ns = OrgNamespace;
        var cloudspace = options.Cloudspaces.Keys.First();
        var labels = new JsonObject();
        foreach (var (k, v) in customLabels.OrderBy(kv => kv.Key, StringComparer.Ordinal)) labels[k] = v;
        lock (gate)
        {
            if (!serverClasses.Any(c => Name(c) == serverClass)) throw new ArgumentException($"no server class {serverClass}", nameof(serverClass));
            var key = $"{ns}/{name}";
            var meta = Meta(name, ns);
            meta["creationTimestamp"] = clock.GetUtcNow().UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
            meta["labels"] = new JsonObject { [CloudspaceLabel] = cloudspace };
            namespaced["spotnodepools"][key] = new JsonObject
            {
                ["apiVersion"] = "ngpc.rxt.io/v1",
                ["kind"] = "SpotNodePool",
                ["metadata"] = meta,
                ["spec"] = new JsonObject
                {
                    ["serverClass"] = serverClass, ["desired"] = nodeNames.Count, ["bidPrice"] = Plain(bid), ["cloudSpace"] = cloudspace,
                    ["autoscaling"] = new JsonObject { ["enabled"] = false }, ["customLabels"] = labels,
                },
                ["status"] = new JsonObject
                {
                    ["bidStatus"] = "Fulfilled",
                    ["wonCount"] = nodeNames.Count,
                    ["customMetadataStatus"] = MetadataStatus(customLabels, []),
                },
            };
            var nodes = new PoolNodes(Text(meta["uid"])!);
            nodes.Names.AddRange(nodeNames);
            poolNodes[key] = nodes;
        }
    }

    private static JsonObject MetadataStatus(IEnumerable<string> labelKeys, IEnumerable<string> taintKeys) => new()
    {
        ["labels"] = new JsonArray([.. labelKeys.Order(StringComparer.Ordinal).Select(k => (JsonNode?)JsonValue.Create(k))]),
        ["annotations"] = new JsonArray(),
        ["taints"] = new JsonArray([.. taintKeys.Select(k => (JsonNode?)JsonValue.Create(k))]),
    };

    private static JsonObject MetadataStatus(IReadOnlyDictionary<string, string> labels, IEnumerable<string> taintKeys) => MetadataStatus(labels.Keys, taintKeys);

    private static decimal BidOf(JsonObject pool) =>
        decimal.TryParse(Text(pool["spec"]?["bidPrice"]), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var b) ? b : 0m;

    /// <summary>The auction's answer to a pool, once its provisioning delay is over: won when the bid reaches the market.</summary>
    private void Provision(string key, string uid)
    {
        lock (gate)
        {
            if (namespaced["spotnodepools"].GetValueOrDefault(key) is not { } pool || Text(pool["metadata"]?["uid"]) != uid) return;
            var status = pool["status"]!.AsObject();
            if (Text(status["bidStatus"]) == "Lost") return;
            var serverClass = Text(pool["spec"]!["serverClass"])!;
            var sc = serverClasses.FirstOrDefault(c => Name(c) == serverClass);
            if (sc is null || BidOf(pool) < MarketOf(sc)) return;   // outbid before it was decided: stays Pending
            var desired = (int)Num(pool["spec"]!["desired"]);
            var customLabels = StringMap(pool["spec"]!["customLabels"]);
            var taints = Taints(pool["spec"]!["customTaints"]);
            status["bidStatus"] = "Fulfilled";
            status["wonCount"] = desired;
            status["customMetadataStatus"] = MetadataStatus(customLabels, taints.Select(t => t.Key));
            pool["metadata"]!["resourceVersion"] = (++resourceVersion).ToString(CultureInfo.InvariantCulture);
            var nodes = poolNodes.TryGetValue(key, out var n) && n.Uid == uid ? n : poolNodes[key] = new PoolNodes(uid);
            var poolName = Text(pool["metadata"]!["name"])!;
            if (neverJoin.Contains(poolName)) return;
            var region = Text(sc["spec"]?["region"]) ?? "";
            var regionCode = RegionFacts.TryGetValue(region, out var facts) ? facts.Code : region.ToUpperInvariant();
            while (nodes.Names.Count < desired)
            {
                var nodeName = $"prod-instance-{options.NodeNumberSeed + ++nodeCounter * 7_919_131L:D17}";
                nodes.Names.Add(nodeName);
                // Custom labels first: Spot's own labels and the cloud controller's win over them (§2.9).
                var labels = new Dictionary<string, string>(customLabels, StringComparer.Ordinal)
                {
                    ["servers.ngpc.rxt.io/class"] = serverClass,
                    ["servers.ngpc.rxt.io/type"] = "spot",
                    ["nodepool.ngpc.rxt.io/name"] = poolName,
                    ["node.kubernetes.io/instance-type"] = Text(sc["spec"]?["provider"]?["providerFlavorID"]) ?? serverClass,
                    ["topology.kubernetes.io/region"] = regionCode,
                };
                var node = new SpotPoolNode(nodeName, poolName, serverClass, labels, taints);
                Emit(() => options.NodeJoined?.Invoke(node));
            }
        }
    }

    private static List<Taint> Taints(JsonNode? node)
    {
        var list = new List<Taint>();
        if (node is JsonArray array)
            foreach (var t in array)
                if (Text(t?["key"]) is { } key && Text(t?["effect"]) is { } effect) list.Add(new Taint(key, Text(t?["value"]), effect));
        return list;
    }

    /// <summary>After a desired change: newest servers leave at once on a scale-down; a scale-up is provisioned like a create. Caller holds the gate.</summary>
    private void Resize(string key, JsonObject pool)
    {
        var status = pool["status"]!.AsObject();
        if (Text(status["bidStatus"]) != "Fulfilled") return;
        var desired = (int)Num(pool["spec"]!["desired"]);
        var uid = Text(pool["metadata"]!["uid"])!;
        var nodes = poolNodes.TryGetValue(key, out var n) ? n : poolNodes[key] = new PoolNodes(uid);
        if (desired < (int)Num(status["wonCount"])) status["wonCount"] = desired;
        while (nodes.Names.Count > desired)
        {
            var gone = nodes.Names[^1];
            nodes.Names.RemoveAt(nodes.Names.Count - 1);
            Emit(() => options.NodeLeft?.Invoke(gone));
        }
        if (desired > (int)Num(status["wonCount"])) Schedule(options.ProvisioningDelay, () => Provision(key, uid));
    }

    /// <summary>A deleted pool's servers are released; caller holds the gate.</summary>
    private void ReleaseNodes(string key)
    {
        if (!poolNodes.Remove(key, out var nodes)) return;
        foreach (var n in nodes.Names) Emit(() => options.NodeLeft?.Invoke(n));
    }

    /// <summary>Hooks run one at a time, in the order the fake decided them, outside its lock.</summary>
    private void Emit(Action hook)
    {
        Interlocked.Increment(ref unsettled);
        if (!hooks.Writer.TryWrite(hook)) Interlocked.Decrement(ref unsettled);
    }

    private async Task PumpHooksAsync()
    {
        await foreach (var hook in hooks.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            try { hook(); }
            catch (Exception e) { LastHookError = e; }
            finally { Interlocked.Decrement(ref unsettled); }
        }
    }

    /// <summary>Hooks queued and not yet run, and actions due at once that have not run yet.</summary>
    private int unsettled;

    /// <summary>
    /// Every hook the fake queued (a node joining or leaving) and every action it decided to take at once has run. Timed
    /// actions run on the thread that moves the clock past them, so with a hand-moved clock a test moves the clock and then
    /// waits for this, instead of sleeping.
    /// </summary>
    public bool Settled => Volatile.Read(ref unsettled) == 0;

    private void Schedule(TimeSpan delay, Action action)
    {
        var token = stopping.Token;
        // The wait is armed here, when the fake decides, not later on a pool thread (a clock moved right after the request
        // that scheduled it fires it on time), and the action runs where the timer fires.
        if (delay <= TimeSpan.Zero)
        {
            // Never inline: the caller may hold the gate in the middle of a change. Unsettled until it has run.
            Interlocked.Increment(ref unsettled);
            _ = Task.Run(() =>
            {
                try { action(); }
                finally { Interlocked.Decrement(ref unsettled); }
            }, CancellationToken.None);
            return;
        }
        var wait = Task.Delay(delay, clock, token);
        _ = wait.ContinueWith(t =>
        {
            if (t.IsCompletedSuccessfully) action();
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }
}
