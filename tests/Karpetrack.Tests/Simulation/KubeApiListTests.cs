using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using static Karpetrack.Tests.Simulation.SimHelpers;

namespace Karpetrack.Tests.Simulation;

public sealed class KubeApiListTests
{
    private static List<string> Names(JsonObject list) =>
        list["items"]!.AsArray().Select(i => (string)i!["metadata"]!["name"]!).ToList();

    [Fact]
    public async Task Paging_AllPagesComeFromTheFirstPagesSnapshot()
    {
        await using var server = await StartWithClusterAsync(nodes: 3, pods: 40);
        using var http = Client(server);
        var expected = server.Store.List("pods").Items.Select(p => p.Name).ToList();

        var (status, first, _) = await GetJsonAsync(http, "/api/v1/pods?limit=15");
        Assert.Equal(200, status);
        Assert.Equal("PodList", (string)first["kind"]!);
        var rv = (string)first["metadata"]!["resourceVersion"]!;
        Assert.Equal(25, (int)first["metadata"]!["remainingItemCount"]!);
        var seen = Names(first);

        // Changes between pages must not show up in the rest of this list.
        var victim = server.Store.List("pods").Items[^1];
        server.Store.Delete("pods", victim.Namespace, victim.Name);
        server.Store.Upsert("pods", SimplePod("aaa", "added-between-pages"));

        var token = (string?)first["metadata"]!["continue"];
        while (!string.IsNullOrEmpty(token))
        {
            var (s, page, _) = await GetJsonAsync(http, $"/api/v1/pods?limit=15&continue={Uri.EscapeDataString(token)}");
            Assert.Equal(200, s);
            Assert.Equal(rv, (string)page["metadata"]!["resourceVersion"]!);
            seen.AddRange(Names(page));
            token = (string?)page["metadata"]!["continue"];
        }
        Assert.Equal(expected, seen);

        var (_, fresh, _) = await GetJsonAsync(http, "/api/v1/pods");
        Assert.Contains("added-between-pages", Names(fresh));
        Assert.DoesNotContain(victim.Name, Names(fresh));
        Assert.NotEqual(rv, (string)fresh["metadata"]!["resourceVersion"]!);
    }

    [Fact]
    public async Task ContinueToken_ExpiresWith410Expired()
    {
        // The token's age is read on the server's clock, which the test moves: just inside the limit it still serves.
        var clock = new ManualClock(DateTimeOffset.UtcNow);
        await using var server = await StartWithClusterAsync(nodes: 2, pods: 10,
            new KubeApiServerOptions { ContinueTokenTtl = TimeSpan.FromMinutes(5), Clock = clock });
        using var http = Client(server);
        var (_, first, _) = await GetJsonAsync(http, "/api/v1/pods?limit=3");
        var token = (string)first["metadata"]!["continue"]!;
        clock.Advance(TimeSpan.FromMinutes(5));
        var (fresh, _, _) = await GetJsonAsync(http, $"/api/v1/pods?limit=3&continue={Uri.EscapeDataString(token)}");
        Assert.Equal(200, fresh);
        var (_, again, _) = await GetJsonAsync(http, "/api/v1/pods?limit=3");
        token = (string)again["metadata"]!["continue"]!;
        clock.Advance(TimeSpan.FromMinutes(5) + TimeSpan.FromSeconds(1));
        var (status, body, _) = await GetJsonAsync(http, $"/api/v1/pods?limit=3&continue={Uri.EscapeDataString(token)}");
        Assert.Equal(410, status);
        Assert.Equal("Status", (string)body["kind"]!);
        Assert.Equal("Expired", (string)body["reason"]!);
        Assert.Equal(410, (int)body["code"]!);
        Assert.StartsWith("The provided continue parameter is too old to display a consistent list result.", (string)body["message"]!);

        var (garbled, _, _) = await GetJsonAsync(http, "/api/v1/pods?limit=3&continue=not-a-token");
        Assert.Equal(400, garbled);
    }

    [Fact]
    public async Task LabelSelectors_FullSyntax()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        server.Store.Upsert("pods", SimplePod("a", "p1", labels: new() { ["app"] = "web", ["tier"] = "front" }));
        server.Store.Upsert("pods", SimplePod("a", "p2", labels: new() { ["app"] = "web", ["tier"] = "back", ["canary"] = "true" }));
        server.Store.Upsert("pods", SimplePod("b", "p3", labels: new() { ["app"] = "db" }));
        server.Store.Upsert("pods", SimplePod("b", "p4", labels: new() { ["app.kubernetes.io/name"] = "x", ["size"] = "7" }));
        using var http = Client(server);

        async Task<List<string>> Select(string selector)
        {
            var (status, body, _) = await GetJsonAsync(http, "/api/v1/pods?labelSelector=" + Uri.EscapeDataString(selector));
            Assert.True(status == 200, body.ToJsonString());
            return Names(body);
        }

        Assert.Equal(["p1", "p2"], await Select("app=web"));
        Assert.Equal(["p1", "p2"], await Select("app==web"));
        Assert.Equal(["p3", "p4"], await Select("app!=web"));
        Assert.Equal(["p1", "p2", "p3"], await Select("app in (web, db)"));
        Assert.Equal(["p3", "p4"], await Select("app notin (web)"));
        Assert.Equal(["p2"], await Select("canary"));
        Assert.Equal(["p1"], await Select("app=web,!canary"));
        Assert.Equal(["p1"], await Select("app=web,tier in (front,middle),!canary"));
        Assert.Equal(["p4"], await Select("app.kubernetes.io/name=x"));
        Assert.Equal(["p4"], await Select("size>5"));
        var (_, inB, _) = await GetJsonAsync(http, "/api/v1/namespaces/b/pods?labelSelector=" + Uri.EscapeDataString("app"));
        Assert.Equal(["p3"], Names(inB));

        foreach (var bad in new[] { "app in web", "app=web=x", "-bad=1", "app in (a", "app=" + new string('v', 64), "a b" })
        {
            var (status, body, _) = await GetJsonAsync(http, "/api/v1/pods?labelSelector=" + Uri.EscapeDataString(bad));
            Assert.True(status == 400, $"{bad}: {status}");
            Assert.Equal("BadRequest", (string)body["reason"]!);
        }
    }

    [Fact]
    public async Task FieldSelectors_PodsAndNodes()
    {
        await using var server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        var nodes = SyntheticCluster.Nodes(2, seed: 1, Now);
        SyntheticCluster.Cordon(nodes[1]);
        foreach (var n in nodes) server.Store.Upsert("nodes", n);
        var n0 = (string)nodes[0]["metadata"]!["name"]!;
        server.Store.Upsert("pods", SimplePod("a", "bound", n0));
        server.Store.Upsert("pods", SimplePod("a", "pending"));
        server.Store.Upsert("pods", SimplePod("b", "other", n0));
        using var http = Client(server);

        async Task<List<string>> Select(string path)
        {
            var (status, body, _) = await GetJsonAsync(http, path);
            Assert.True(status == 200, body.ToJsonString());
            return Names(body);
        }

        Assert.Equal(["bound", "other"], await Select($"/api/v1/pods?fieldSelector=spec.nodeName%3D{n0}"));
        Assert.Equal(["pending"], await Select("/api/v1/pods?fieldSelector=spec.nodeName%3D"));
        Assert.Equal(["bound", "other"], await Select("/api/v1/pods?fieldSelector=status.phase%3D%3DRunning"));
        Assert.Equal(["pending"], await Select("/api/v1/pods?fieldSelector=status.phase!%3DRunning"));
        Assert.Equal(["bound"], await Select($"/api/v1/pods?fieldSelector=metadata.namespace%3Da,spec.nodeName%3D{n0}"));
        Assert.Equal(["other"], await Select("/api/v1/pods?fieldSelector=metadata.name%3Dother"));
        Assert.Equal(["bound", "pending", "other"], await Select("/api/v1/pods?fieldSelector=spec.schedulerName!%3Dcustom"));
        Assert.Equal([(string)nodes[1]["metadata"]!["name"]!], await Select("/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue"));
        Assert.Equal([n0], await Select("/api/v1/nodes?fieldSelector=spec.unschedulable%3Dfalse"));

        var (status, body, _) = await GetJsonAsync(http, "/api/v1/pods?fieldSelector=spec.containers%3Dx");
        Assert.Equal(400, status);
        Assert.Equal("field label not supported: spec.containers", (string)body["message"]!);
        var (nodeStatus, nodeBody, _) = await GetJsonAsync(http, "/api/v1/nodes?fieldSelector=status.phase%3DRunning");
        Assert.Equal(400, nodeStatus);
        Assert.Equal("field label not supported: status.phase", (string)nodeBody["message"]!);
    }

    [Fact]
    public async Task GetOne_DiscoveryAndErrors()
    {
        await using var server = await StartWithClusterAsync(nodes: 1, pods: 3);
        using var http = Client(server);
        var pod = server.Store.List("pods").Items[0];
        var (s1, one, _) = await GetJsonAsync(http, $"/api/v1/namespaces/{pod.Namespace}/pods/{pod.Name}");
        Assert.Equal(200, s1);
        Assert.Equal(pod.ResourceVersion.ToString(), (string)one["metadata"]!["resourceVersion"]!);

        var (s2, missing, _) = await GetJsonAsync(http, "/api/v1/namespaces/x/pods/nope");
        Assert.Equal(404, s2);
        Assert.Equal("NotFound", (string)missing["reason"]!);
        Assert.Equal("pods \"nope\" not found", (string)missing["message"]!);
        Assert.Equal("pods", (string)missing["details"]!["kind"]!);

        var (_, version, _) = await GetJsonAsync(http, "/version");
        Assert.Equal("v1.32.4", (string)version["gitVersion"]!);
        Assert.Equal("32", (string)version["minor"]!);

        using var aggregated = new HttpRequestMessage(HttpMethod.Get, "/api");
        aggregated.Headers.TryAddWithoutValidation("Accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json");
        using var apiResponse = await http.SendAsync(aggregated);
        Assert.Equal("application/json", apiResponse.Content.Headers.ContentType!.MediaType);
        Assert.Equal("APIVersions", (string)JsonNode.Parse(await apiResponse.Content.ReadAsStringAsync())!["kind"]!);

        var (_, groups, _) = await GetJsonAsync(http, "/apis");
        Assert.Equal("APIGroupList", (string)groups["kind"]!);
        Assert.Empty(groups["groups"]!.AsArray());

        var (_, v1, _) = await GetJsonAsync(http, "/api/v1");
        var resources = v1["resources"]!.AsArray();
        Assert.Contains(resources, r => (string)r!["name"]! == "pods" && (bool)r["namespaced"]! && (string)r["shortNames"]![0]! == "po");
        Assert.Contains(resources, r => (string)r!["name"]! == "nodes" && !(bool)r["namespaced"]! && (string)r["shortNames"]![0]! == "no");

        server.Store.Register(ResourceType.Leases);
        var (_, groups2, _) = await GetJsonAsync(http, "/apis");
        Assert.Equal("coordination.k8s.io", (string)groups2["groups"]![0]!["name"]!);
        var (s3, leases, _) = await GetJsonAsync(http, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases");
        Assert.Equal(200, s3);
        Assert.Equal("LeaseList", (string)leases["kind"]!);
        Assert.Equal("coordination.k8s.io/v1", (string)leases["apiVersion"]!);

        var (s4, _, _) = await GetJsonAsync(http, "/api/v1/pods?sendInitialEvents=true");
        Assert.Equal(422, s4);
        var (s5, _, _) = await GetJsonAsync(http, "/api/v1/pods?resourceVersionMatch=NotOlderThan");
        Assert.Equal(422, s5);
        var (s6, _, _) = await GetJsonAsync(http, "/api/v1/widgets");
        Assert.Equal(404, s6);
    }
}
