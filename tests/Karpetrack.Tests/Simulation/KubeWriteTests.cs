using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using static Karpetrack.Tests.Simulation.SimHelpers;

namespace Karpetrack.Tests.Simulation;

/// <summary>The product's write calls (KubeClient) against the embedded server's write verbs.</summary>
public sealed class KubeWriteTests : IAsyncLifetime
{
    private KubeApiServer server = null!;
    private KubeClient client = null!;
    private HttpClient http = null!;
    private string dir = null!;
    private readonly List<ApiWrite> writes = [];

    public async Task InitializeAsync()
    {
        server = await StartWithClusterAsync(nodes: 3, pods: 10, new KubeApiServerOptions { MaxPodGracePeriod = TimeSpan.FromMilliseconds(300) });
        server.Store.Register(ResourceType.Leases);
        server.Store.Register(ResourceType.Events);
        server.Store.Register(ResourceType.PodDisruptionBudgets);
        server.Written += w => { lock (writes) writes.Add(w); };
        dir = Directory.CreateTempSubdirectory("karpetrack-writes-").FullName;
        var connection = KubeConnection.Resolve(server.WriteKubeconfig(Path.Combine(dir, "kubeconfig")), null, KubeEnvironment.Process);
        client = new KubeClient(connection, TimeSpan.FromSeconds(10));
        http = Client(server);
    }

    public async Task DisposeAsync()
    {
        client.Dispose();
        http.Dispose();
        await server.DisposeAsync();
        Directory.Delete(dir, recursive: true);
    }

    private string FirstNode() => server.Store.List("nodes").Items[0].Name;

    private static JsonObject Lease(string name, string? ns = null) => new()
    {
        ["apiVersion"] = "coordination.k8s.io/v1",
        ["kind"] = "Lease",
        ["metadata"] = ns is null ? new JsonObject { ["name"] = name } : new JsonObject { ["name"] = name, ["namespace"] = ns },
        ["spec"] = new JsonObject { ["holderIdentity"] = "a", ["leaseDurationSeconds"] = 15 },
    };

    private static JsonObject RunningPod(string ns, string name, string node, string app, bool ready = true)
    {
        var pod = SimplePod(ns, name, node, new() { ["app"] = app });
        pod["status"]!["conditions"] = new JsonArray(new JsonObject { ["type"] = "Ready", ["status"] = ready ? "True" : "False" });
        return pod;
    }

    private static JsonObject Budget(string ns, string name, string app, string field, JsonNode value) => new()
    {
        ["apiVersion"] = "policy/v1",
        ["kind"] = "PodDisruptionBudget",
        ["metadata"] = new JsonObject { ["name"] = name, ["namespace"] = ns },
        ["spec"] = new JsonObject { [field] = value, ["selector"] = new JsonObject { ["matchLabels"] = new JsonObject { ["app"] = app } } },
    };

    private async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, string body, string contentType = "application/json")
    {
        using var request = new HttpRequestMessage(method, path) { Content = new StringContent(body, Encoding.UTF8) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
        return await http.SendAsync(request);
    }

    [Fact]
    public async Task PatchNode_MergePatchCordons_BumpsResourceVersion_AndWatchersSeeIt()
    {
        var name = FirstNode();
        var before = server.Store.Get("nodes", null, name)!.ResourceVersion;
        var watch = ReadWatchAsync(http, $"/api/v1/nodes?watch=true&resourceVersion={server.Store.CurrentResourceVersion}&fieldSelector=spec.unschedulable%3Dtrue",
            events => events.Count >= 1);
        await Task.Delay(200);

        var patched = await client.PatchNodeAsync(name, new JsonObject { ["spec"] = new JsonObject { ["unschedulable"] = true } }, default);

        Assert.True((bool)patched["spec"]!["unschedulable"]!);
        Assert.True(long.Parse((string)patched["metadata"]!["resourceVersion"]!) > before);
        Assert.Equal((string?)server.Store.Get("nodes", null, name)!.ToJsonObject()["metadata"]!["uid"], (string?)patched["metadata"]!["uid"]);
        var events = await watch;
        Assert.Equal("ADDED", Type(events[0]));   // newly matching the selector
        Assert.Equal(name, Name(events[0]));
        Assert.Contains(writes, w => w.Resource == "nodes" && w.Name == name && (bool?)w.Object?["spec"]?["unschedulable"] == true);

        // kubectl uncordon's patch: null removes the field (RFC 7386).
        var uncordoned = await client.PatchNodeAsync(name, new JsonObject { ["spec"] = new JsonObject { ["unschedulable"] = null } }, default);
        Assert.Null(uncordoned["spec"]!["unschedulable"]);
        Assert.NotNull(uncordoned["spec"]!["providerID"]);   // siblings untouched
    }

    [Fact]
    public async Task PatchNode_StaleResourceVersion_Is409WithTheApiserverMessage()
    {
        var name = FirstNode();
        var stale = server.Store.Get("nodes", null, name)!.ResourceVersion;
        await client.PatchNodeAsync(name, new JsonObject { ["metadata"] = new JsonObject { ["labels"] = new JsonObject { ["x"] = "1" } } }, default);

        var e = await Assert.ThrowsAsync<KubeApiException>(() => client.PatchNodeAsync(name, new JsonObject
        {
            ["metadata"] = new JsonObject { ["resourceVersion"] = stale.ToString(), ["labels"] = new JsonObject { ["x"] = "2" } },
        }, default));
        Assert.Equal(409, e.StatusCode);
        Assert.Equal("Conflict", e.Reason);
        Assert.Contains($"Operation cannot be fulfilled on nodes \"{name}\": the object has been modified; please apply your changes to the latest version and try again", e.Message);
        Assert.Equal("1", (string?)server.Store.Get("nodes", null, name)!.ToJsonObject()["metadata"]!["labels"]!["x"]);
    }

    [Fact]
    public async Task Patch_ContentTypes_JsonPatchApplies_UnknownIs415_MissingIs404()
    {
        var name = FirstNode();
        var r = await SendAsync(HttpMethod.Patch, $"/api/v1/nodes/{name}",
            """[{"op":"add","path":"/metadata/annotations/karpetrack.io~1note","value":"hi"},{"op":"test","path":"/kind","value":"Node"}]""",
            "application/json-patch+json");
        Assert.Equal(200, (int)r.StatusCode);
        Assert.Equal("hi", (string?)server.Store.Get("nodes", null, name)!.ToJsonObject()["metadata"]!["annotations"]!["karpetrack.io/note"]);

        r = await SendAsync(HttpMethod.Patch, $"/api/v1/nodes/{name}", "{}", "application/apply-patch+cbor");
        Assert.Equal(415, (int)r.StatusCode);

        var missing = await Assert.ThrowsAsync<KubeApiException>(() => client.PatchNodeAsync("no-such-node", new JsonObject(), default));
        Assert.Equal(404, missing.StatusCode);
        Assert.Contains("nodes \"no-such-node\" not found", missing.Message);
    }

    [Fact]
    public async Task Create_StampsServerFields_RefusesDuplicates_AndNamespaceMismatch()
    {
        var created = await client.CreateJsonAsync("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", Lease("karpetrack"), default);
        Assert.Equal("kube-system", (string?)created["metadata"]!["namespace"]);
        Assert.False(string.IsNullOrEmpty((string?)created["metadata"]!["uid"]));
        Assert.NotNull(KubeTime.Parse((string?)created["metadata"]!["creationTimestamp"]));
        Assert.Equal(server.Store.Get("leases", "kube-system", "karpetrack")!.ResourceVersion.ToString(), (string?)created["metadata"]!["resourceVersion"]);

        var dup = await Assert.ThrowsAsync<KubeApiException>(() =>
            client.CreateJsonAsync("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", Lease("karpetrack"), default));
        Assert.Equal(409, dup.StatusCode);
        Assert.Equal("AlreadyExists", dup.Reason);
        Assert.Contains("leases.coordination.k8s.io \"karpetrack\" already exists", dup.Message);

        var raw = await SendAsync(HttpMethod.Post, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", Lease("karpetrack").ToJsonString());
        var status = JsonNode.Parse(await raw.Content.ReadAsStringAsync())!;
        Assert.Equal("karpetrack", (string?)status["details"]!["name"]);
        Assert.Equal("coordination.k8s.io", (string?)status["details"]!["group"]);
        Assert.Equal("leases", (string?)status["details"]!["kind"]);

        var mismatch = await Assert.ThrowsAsync<KubeApiException>(() =>
            client.CreateJsonAsync("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", Lease("other", "default"), default));
        Assert.Equal(400, mismatch.StatusCode);

        var generated = await client.CreateJsonAsync("/api/v1/namespaces/default/pods", new JsonObject
        {
            ["metadata"] = new JsonObject { ["generateName"] = "job-" },
            ["spec"] = new JsonObject(),
        }, default);
        var generatedName = (string)generated["metadata"]!["name"]!;
        Assert.Matches("^job-[a-z0-9]{5}$", generatedName);
        Assert.Equal("Pod", (string?)generated["kind"]);
        Assert.NotNull(server.Store.Get("pods", "default", generatedName));
    }

    [Fact]
    public async Task Replace_NeedsTheCurrentResourceVersion()
    {
        var created = await client.CreateJsonAsync("/apis/coordination.k8s.io/v1/namespaces/default/leases", Lease("l1"), default);
        var path = "/apis/coordination.k8s.io/v1/namespaces/default/leases/l1";
        created["spec"]!["holderIdentity"] = "b";
        var replaced = await client.ReplaceJsonAsync(path, created.DeepClone().AsObject(), default);
        Assert.Equal("b", (string?)replaced["spec"]!["holderIdentity"]);
        Assert.Equal((string?)created["metadata"]!["uid"], (string?)replaced["metadata"]!["uid"]);

        created["spec"]!["holderIdentity"] = "c";   // still the old resourceVersion
        var conflict = await Assert.ThrowsAsync<KubeApiException>(() => client.ReplaceJsonAsync(path, created, default));
        Assert.Equal(409, conflict.StatusCode);
        Assert.Contains("Operation cannot be fulfilled on leases.coordination.k8s.io \"l1\": the object has been modified", conflict.Message);
        Assert.Equal("b", (string?)(await client.GetJsonAsync(path, default))!["spec"]!["holderIdentity"]);

        var missing = Lease("nope", "default");
        var notFound = await Assert.ThrowsAsync<KubeApiException>(() => client.ReplaceJsonAsync("/apis/coordination.k8s.io/v1/namespaces/default/leases/nope", missing, default));
        Assert.Equal(404, notFound.StatusCode);
        Assert.Null(await client.GetJsonAsync("/apis/coordination.k8s.io/v1/namespaces/default/leases/nope", default));
    }

    [Fact]
    public async Task DeleteNode_TrueThenFalse_AndCollectionsAreNeverDeleted()
    {
        var name = FirstNode();
        Assert.True(await client.DeleteNodeAsync(name, default));
        Assert.Null(server.Store.Get("nodes", null, name));
        Assert.Contains(writes, w => w.Resource == "nodes" && w.Name == name && w.Object is null);
        Assert.False(await client.DeleteNodeAsync(name, default));

        var r = await http.DeleteAsync("/api/v1/nodes");
        Assert.Equal(405, (int)r.StatusCode);
        Assert.Equal(2, server.Store.Count("nodes"));
    }

    [Fact]
    public async Task DeletePod_GracefulThenGone_ZeroGraceAtOnce()
    {
        var node = FirstNode();
        server.Store.Upsert("pods", RunningPod("default", "slow", node, "x"));
        server.Store.Upsert("pods", RunningPod("default", "fast", node, "x"));

        var r = await SendAsync(HttpMethod.Delete, "/api/v1/namespaces/default/pods/slow", """{"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":30}""");
        Assert.Equal(200, (int)r.StatusCode);
        var terminating = server.Store.Get("pods", "default", "slow")!.ToJsonObject();
        Assert.NotNull(terminating["metadata"]!["deletionTimestamp"]);
        Assert.Equal(30, (int)terminating["metadata"]!["deletionGracePeriodSeconds"]!);

        r = await http.DeleteAsync("/api/v1/namespaces/default/pods/fast?gracePeriodSeconds=0");
        Assert.Equal(200, (int)r.StatusCode);
        Assert.Null(server.Store.Get("pods", "default", "fast"));

        // The grace is capped by MaxPodGracePeriod (300 ms here).
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (server.Store.Get("pods", "default", "slow") is not null && DateTime.UtcNow < deadline) await Task.Delay(50);
        Assert.Null(server.Store.Get("pods", "default", "slow"));
        Assert.Contains(writes, w => w.Resource == "pods" && w.Name == "slow" && w.Object is null);

        r = await http.DeleteAsync("/api/v1/namespaces/default/pods/slow");
        Assert.Equal(404, (int)r.StatusCode);
    }

    [Fact]
    public async Task Evict_BlockedByBudgetWithNoneAllowed_AllowedOtherwise_StatusUpdated()
    {
        var node = FirstNode();
        foreach (var i in Enumerable.Range(0, 3)) server.Store.Upsert("pods", RunningPod("shop", $"ledger-{i}", node, "ledger"));
        foreach (var i in Enumerable.Range(0, 3)) server.Store.Upsert("pods", RunningPod("shop", $"web-{i}", node, "web", ready: i != 2));
        server.Store.Upsert("poddisruptionbudgets", Budget("shop", "ledger", "ledger", "maxUnavailable", 0));
        // 60% of 3 (1.8) rounds up to 2; two of the three are healthy, so nothing may go.
        server.Store.Upsert("poddisruptionbudgets", Budget("shop", "web", "web", "minAvailable", "60%"));

        var blocked = await client.EvictPodAsync("shop", "ledger-0", null, default);
        Assert.Equal(EvictionResult.Blocked, blocked.Result);
        Assert.Contains("Cannot evict pod as it would violate the pod's disruption budget.", blocked.Message);
        Assert.NotNull(server.Store.Get("pods", "shop", "ledger-0"));

        var raw = await SendAsync(HttpMethod.Post, "/api/v1/namespaces/shop/pods/web-0/eviction",
            """{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"web-0","namespace":"shop"}}""");
        Assert.Equal(429, (int)raw.StatusCode);
        var status = JsonNode.Parse(await raw.Content.ReadAsStringAsync())!;
        Assert.Equal("TooManyRequests", (string?)status["reason"]);
        Assert.Equal("DisruptionBudget", (string?)status["details"]!["causes"]![0]!["reason"]);
        Assert.Equal("The disruption budget web needs 2 healthy pods and has 2 currently", (string?)status["details"]!["causes"]![0]!["message"]);

        // Make the third web pod ready: one disruption allowed, then none again.
        server.Store.Upsert("pods", RunningPod("shop", "web-2", node, "web"));
        var evicted = await client.EvictPodAsync("shop", "web-0", 0, default);
        Assert.Equal(EvictionResult.Evicted, evicted.Result);
        Assert.Null(server.Store.Get("pods", "shop", "web-0"));
        var pdb = server.Store.Get("poddisruptionbudgets", "shop", "web")!.ToJsonObject()["status"]!;
        Assert.Equal(2, (int)pdb["currentHealthy"]!);
        Assert.Equal(2, (int)pdb["desiredHealthy"]!);
        Assert.Equal(0, (int)pdb["disruptionsAllowed"]!);
        Assert.Equal(2, (int)pdb["expectedPods"]!);
        Assert.Equal(EvictionResult.Blocked, (await client.EvictPodAsync("shop", "web-1", 0, default)).Result);

        Assert.Equal(EvictionResult.Gone, (await client.EvictPodAsync("shop", "web-0", 0, default)).Result);
    }

    [Fact]
    public async Task Evict_PendingPodSkipsTheBudget_TwoBudgetsAre500_GraceIsHonoured()
    {
        var node = FirstNode();
        server.Store.Upsert("pods", SimplePod("batch", "waiting", null, new() { ["app"] = "job" }));
        server.Store.Upsert("poddisruptionbudgets", Budget("batch", "job", "job", "maxUnavailable", 0));
        Assert.Equal(EvictionResult.Evicted, (await client.EvictPodAsync("batch", "waiting", null, default)).Result);
        Assert.Null(server.Store.Get("pods", "batch", "waiting"));

        server.Store.Upsert("pods", RunningPod("batch", "both", node, "job"));
        server.Store.Upsert("poddisruptionbudgets", Budget("batch", "job2", "job", "minAvailable", 0));
        var failed = await client.EvictPodAsync("batch", "both", null, default);
        Assert.Equal(EvictionResult.Failed, failed.Result);
        Assert.Contains("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.", failed.Message);

        server.Store.Delete("poddisruptionbudgets", "batch", "job");
        var graceful = await client.EvictPodAsync("batch", "both", 20, default);
        Assert.Equal(EvictionResult.Evicted, graceful.Result);
        var pod = server.Store.Get("pods", "batch", "both")!.ToJsonObject();
        Assert.Equal(20, (int)pod["metadata"]!["deletionGracePeriodSeconds"]!);
    }

    [Fact]
    public async Task CreateEvent_WritesACoreV1EventAboutTheObject()
    {
        var node = FirstNode();
        await client.CreateEventAsync(new KubeEventRecord("default", "Node", node, null, "Cordoned", "cordoned for replacement", "Normal"), default);
        await client.CreateEventAsync(new KubeEventRecord("default", "Node", node, null, "Cordoned", "again", "Warning"), default);

        var events = server.Store.List("events").Items.Select(e => e.ToJsonObject()).ToArray();
        Assert.Equal(2, events.Length);
        Assert.Equal(2, events.Select(e => (string)e["metadata"]!["name"]!).Distinct().Count());
        var ev = events.Single(e => (string?)e["message"] == "cordoned for replacement");
        Assert.Matches($"^{System.Text.RegularExpressions.Regex.Escape(node)}\\.[0-9a-f]{{16}}$", (string)ev["metadata"]!["name"]!);
        Assert.Equal("Node", (string?)ev["involvedObject"]!["kind"]);
        Assert.Equal(node, (string?)ev["involvedObject"]!["name"]);
        Assert.Equal("v1", (string?)ev["involvedObject"]!["apiVersion"]);
        Assert.Equal("Cordoned", (string?)ev["reason"]);
        Assert.Equal("Normal", (string?)ev["type"]);
        Assert.Equal(1, (int)ev["count"]!);
        Assert.Equal("karpetrack", (string?)ev["source"]!["component"]);
        Assert.Equal("karpetrack", (string?)ev["reportingComponent"]);
        Assert.NotNull(KubeTime.Parse((string?)ev["firstTimestamp"]));
        Assert.Equal((string?)ev["firstTimestamp"], (string?)ev["lastTimestamp"]);
    }

    [Fact]
    public async Task Discovery_AdvertisesWriteVerbsAndTheEvictionSubresource()
    {
        var (status, body, _) = await GetJsonAsync(http, "/api/v1");
        Assert.Equal(200, status);
        var resources = body["resources"]!.AsArray();
        var nodes = resources.Single(r => (string?)r!["name"] == "nodes")!;
        Assert.Equal(["create", "delete", "get", "list", "patch", "update", "watch"], nodes["verbs"]!.AsArray().Select(v => (string)v!));
        var eviction = resources.Single(r => (string?)r!["name"] == "pods/eviction")!;
        Assert.Equal("policy", (string?)eviction["group"]);
        Assert.Equal("v1", (string?)eviction["version"]);
        Assert.Equal("Eviction", (string?)eviction["kind"]);
    }
}
