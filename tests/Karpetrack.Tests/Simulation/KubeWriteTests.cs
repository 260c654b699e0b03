using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Karpetrack.Simulation;
using static Karpetrack.Tests.Simulation.SimHelpers;

namespace Karpetrack.Tests.Simulation;

/// <summary>The product's write calls (KubeClient, through KubernetesClient.Aot's typed client) against
/// the embedded server's write verbs: the fake must take what the library sends.</summary>
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

    private static V1Lease Lease(string name, string ns) => new()
    {
        ApiVersion = "coordination.k8s.io/v1",
        Kind = "Lease",
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns },
        Spec = new V1LeaseSpec { HolderIdentity = "a", LeaseDurationSeconds = 15 },
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

        Assert.True(patched.Spec.Unschedulable);
        Assert.True(long.Parse(patched.Metadata.ResourceVersion) > before);
        Assert.Equal((string?)server.Store.Get("nodes", null, name)!.ToJsonObject()["metadata"]!["uid"], patched.Metadata.Uid);
        var events = await watch;
        Assert.Equal("ADDED", Type(events[0]));   // newly matching the selector
        Assert.Equal(name, Name(events[0]));
        Assert.Contains(writes, w => w.Resource == "nodes" && w.Name == name && (bool?)w.Object?["spec"]?["unschedulable"] == true);

        // kubectl uncordon's patch: null removes the field (RFC 7386).
        var uncordoned = await client.PatchNodeAsync(name, new JsonObject { ["spec"] = new JsonObject { ["unschedulable"] = null } }, default);
        Assert.Null(uncordoned.Spec.Unschedulable);
        Assert.NotNull(uncordoned.Spec.ProviderID);   // siblings untouched
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
        var created = await client.CreateLeaseAsync(Lease("karpetrack", "kube-system"), default);
        Assert.Equal("kube-system", created.Metadata.NamespaceProperty);
        Assert.False(string.IsNullOrEmpty(created.Metadata.Uid));
        Assert.NotNull(created.Metadata.CreationTimestamp);
        Assert.Equal(server.Store.Get("leases", "kube-system", "karpetrack")!.ResourceVersion.ToString(), created.Metadata.ResourceVersion);

        var dup = await Assert.ThrowsAsync<KubeApiException>(() => client.CreateLeaseAsync(Lease("karpetrack", "kube-system"), default));
        Assert.Equal(409, dup.StatusCode);
        Assert.Equal("AlreadyExists", dup.Reason);
        Assert.Contains("leases.coordination.k8s.io \"karpetrack\" already exists", dup.Message);

        var raw = await SendAsync(HttpMethod.Post, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", KubernetesJson.Serialize(Lease("karpetrack", "kube-system")));
        var status = JsonNode.Parse(await raw.Content.ReadAsStringAsync())!;
        Assert.Equal("karpetrack", (string?)status["details"]!["name"]);
        Assert.Equal("coordination.k8s.io", (string?)status["details"]!["group"]);
        Assert.Equal("leases", (string?)status["details"]!["kind"]);

        var mismatch = await Assert.ThrowsAsync<HttpOperationException>(() =>
            client.Api.CoordinationV1.CreateNamespacedLeaseAsync(Lease("other", "default"), "kube-system"));
        Assert.Equal(HttpStatusCode.BadRequest, mismatch.Response.StatusCode);

        var generated = await client.Api.CoreV1.CreateNamespacedPodAsync(
            new V1Pod { Metadata = new V1ObjectMeta { GenerateName = "job-" }, Spec = new V1PodSpec() }, "default");
        Assert.Matches("^job-[a-z0-9]{5}$", generated.Metadata.Name);
        Assert.Equal("Pod", generated.Kind);
        Assert.NotNull(server.Store.Get("pods", "default", generated.Metadata.Name));
    }

    [Fact]
    public async Task Replace_NeedsTheCurrentResourceVersion()
    {
        var created = await client.CreateLeaseAsync(Lease("l1", "default"), default);
        var replaced = await client.ReplaceLeaseAsync(created with { Spec = created.Spec with { HolderIdentity = "b" } }, default);
        Assert.Equal("b", replaced.Spec.HolderIdentity);
        Assert.Equal(created.Metadata.Uid, replaced.Metadata.Uid);

        // Still the old resourceVersion.
        var conflict = await Assert.ThrowsAsync<KubeApiException>(() => client.ReplaceLeaseAsync(created with { Spec = created.Spec with { HolderIdentity = "c" } }, default));
        Assert.Equal(409, conflict.StatusCode);
        Assert.Contains("Operation cannot be fulfilled on leases.coordination.k8s.io \"l1\": the object has been modified", conflict.Message);
        Assert.Equal("b", (await client.ReadLeaseAsync("default", "l1", default))!.Spec.HolderIdentity);

        var notFound = await Assert.ThrowsAsync<KubeApiException>(() => client.ReplaceLeaseAsync(Lease("nope", "default"), default));
        Assert.Equal(404, notFound.StatusCode);
        Assert.Null(await client.ReadLeaseAsync("default", "nope", default));
    }

    [Fact]
    public async Task Lease_TimesMustBeMicroTime_AsTheApiserverParsesThem()
    {
        var lease = Lease("times", "default");
        var micro = new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc).AddTicks(10);
        var created = await client.CreateLeaseAsync(lease with { Spec = lease.Spec with { AcquireTime = micro, RenewTime = micro } }, default);
        Assert.Equal(micro, created.Spec.RenewTime);
        Assert.Equal("2026-01-01T00:00:00.000001Z", (string?)server.Store.Get("leases", "default", "times")!.ToJsonObject()["spec"]!["renewTime"]);

        // The library writes a whole second without a fraction, which kube-apiserver cannot parse as a MicroTime.
        var whole = new DateTime(2026, 1, 1, 0, 0, 1, DateTimeKind.Utc);
        var refused = await Assert.ThrowsAsync<KubeApiException>(() =>
            client.ReplaceLeaseAsync(created with { Spec = created.Spec with { RenewTime = whole } }, default));
        Assert.Equal(400, refused.StatusCode);
        Assert.Contains("parsing time \"2026-01-01T00:00:01Z\" as \"2006-01-02T15:04:05.000000Z07:00\"", refused.Message);
        Assert.Equal(whole.AddTicks(10), LeaderElector.MicroTime(whole));
    }

    [Fact]
    public async Task DeleteNode_AnswersAStatus_ThenNotFound_AndCollectionsAreNeverDeleted()
    {
        var name = FirstNode();
        var uid = (string?)server.Store.Get("nodes", null, name)!.ToJsonObject()["metadata"]!["uid"];
        var status = await client.Api.CoreV1.DeleteNodeAsync(name);
        Assert.Equal("Success", status.Status);
        Assert.Equal(name, status.Details.Name);
        Assert.Equal(uid, status.Details.Uid);
        Assert.Null(server.Store.Get("nodes", null, name));
        Assert.Contains(writes, w => w.Resource == "nodes" && w.Name == name && w.Object is null);
        var gone = await Assert.ThrowsAsync<HttpOperationException>(() => client.Api.CoreV1.DeleteNodeAsync(name));
        Assert.Equal(HttpStatusCode.NotFound, gone.Response.StatusCode);

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

        var blocked = await client.EvictPodAsync("shop", "ledger-0", null, null, default);
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
        var evicted = await client.EvictPodAsync("shop", "web-0", null, 0, default);
        Assert.Equal(EvictionResult.Evicted, evicted.Result);
        Assert.Null(server.Store.Get("pods", "shop", "web-0"));
        var pdb = server.Store.Get("poddisruptionbudgets", "shop", "web")!.ToJsonObject()["status"]!;
        Assert.Equal(2, (int)pdb["currentHealthy"]!);
        Assert.Equal(2, (int)pdb["desiredHealthy"]!);
        Assert.Equal(0, (int)pdb["disruptionsAllowed"]!);
        Assert.Equal(2, (int)pdb["expectedPods"]!);
        Assert.Equal(EvictionResult.Blocked, (await client.EvictPodAsync("shop", "web-1", null, 0, default)).Result);

        Assert.Equal(EvictionResult.Gone, (await client.EvictPodAsync("shop", "web-0", null, 0, default)).Result);
    }

    [Fact]
    public async Task Evict_PendingPodSkipsTheBudget_TwoBudgetsAre500_GraceIsHonoured()
    {
        var node = FirstNode();
        server.Store.Upsert("pods", SimplePod("batch", "waiting", null, new() { ["app"] = "job" }));
        server.Store.Upsert("poddisruptionbudgets", Budget("batch", "job", "job", "maxUnavailable", 0));
        Assert.Equal(EvictionResult.Evicted, (await client.EvictPodAsync("batch", "waiting", null, null, default)).Result);
        Assert.Null(server.Store.Get("pods", "batch", "waiting"));

        server.Store.Upsert("pods", RunningPod("batch", "both", node, "job"));
        server.Store.Upsert("poddisruptionbudgets", Budget("batch", "job2", "job", "minAvailable", 0));
        var failed = await client.EvictPodAsync("batch", "both", null, null, default);
        Assert.Equal(EvictionResult.Failed, failed.Result);
        Assert.Contains("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.", failed.Message);

        server.Store.Delete("poddisruptionbudgets", "batch", "job");
        var graceful = await client.EvictPodAsync("batch", "both", null, 20, default);
        Assert.Equal(EvictionResult.Evicted, graceful.Result);
        var pod = server.Store.Get("pods", "batch", "both")!.ToJsonObject();
        Assert.Equal(20, (int)pod["metadata"]!["deletionGracePeriodSeconds"]!);
    }

    [Fact]
    public async Task Evict_WithTheUidOfAPodThatWasReplaced_Is409_AndLeavesTheNewPod()
    {
        var node = FirstNode();
        server.Store.Upsert("pods", RunningPod("shop", "db-0", node, "db"));
        var oldUid = (string)server.Store.Get("pods", "shop", "db-0")!.ToJsonObject()["metadata"]!["uid"]!;
        // A StatefulSet recreates its pod under the same name, with a new uid.
        server.Store.Delete("pods", "shop", "db-0");
        server.Store.Upsert("pods", RunningPod("shop", "db-0", node, "db"));
        var newUid = (string)server.Store.Get("pods", "shop", "db-0")!.ToJsonObject()["metadata"]!["uid"]!;
        Assert.NotEqual(oldUid, newUid);

        var raw = await SendAsync(HttpMethod.Post, "/api/v1/namespaces/shop/pods/db-0/eviction",
            """{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"db-0","namespace":"shop"},"deleteOptions":{"preconditions":{"uid":""" + $"\"{oldUid}\"" + "}}}");
        Assert.Equal(409, (int)raw.StatusCode);
        var status = JsonNode.Parse(await raw.Content.ReadAsStringAsync())!;
        Assert.Equal("Conflict", (string?)status["reason"]);
        Assert.Equal($"Operation cannot be fulfilled on pods \"db-0\": Precondition failed: UID in precondition: {oldUid}, UID in object meta: {newUid}", (string?)status["message"]);

        var stale = await client.EvictPodAsync("shop", "db-0", oldUid, 0, default);
        Assert.Equal(EvictionResult.Gone, stale.Result);
        Assert.Contains("Precondition failed", stale.Message);
        Assert.NotNull(server.Store.Get("pods", "shop", "db-0"));

        Assert.Equal(EvictionResult.Evicted, (await client.EvictPodAsync("shop", "db-0", newUid, 0, default)).Result);
        Assert.Null(server.Store.Get("pods", "shop", "db-0"));
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
