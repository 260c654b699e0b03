using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Google.Protobuf;
using Grpc.Core;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Tests.Api;

/// <summary>The service in process on the demo cluster, with a label group and a fast recommender.</summary>
public sealed class ApiDemoService : IAsyncLifetime
{
    private readonly CancellationTokenSource cts = new(TimeSpan.FromMinutes(5));

    public Service Service { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;
    public V1.Karpetrack.KarpetrackClient Grpc { get; private set; } = null!;
    private global::Grpc.Net.Client.GrpcChannel channel = null!;

    public async Task InitializeAsync()
    {
        Service = await Service.StartAsync(KarpetrackOptions.Parse(["--demo", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
            "--log-level", "warn", "--recommend-interval", "1s", "--label-group", "servers.ngpc.rxt.io/class"], _ => null), cts.Token);
        Http = new HttpClient(new HttpClientHandler { AutomaticDecompression = DecompressionMethods.None }) { BaseAddress = Service.MetricsUrl, Timeout = TimeSpan.FromSeconds(30) };
        channel = GrpcCli.Channel(Service.GrpcUrl.ToString());
        Grpc = new V1.Karpetrack.KarpetrackClient(channel);
        await Karpetrack.Tests.Grpc.GrpcServerTests.WaitForPlan(Grpc);
    }

    public async Task DisposeAsync()
    {
        Http.Dispose();
        channel.Dispose();
        await Service.DisposeAsync();
        cts.Dispose();
    }
}

/// <summary>The JSON API on the metrics port, called as curl would call it, against the gRPC answers.</summary>
public class JsonApiTests(ApiDemoService demo) : IClassFixture<ApiDemoService>
{
    private static readonly JsonParser Parser = new(JsonParser.Settings.Default.WithIgnoreUnknownFields(false));

    private async Task<(HttpStatusCode Status, string Body, HttpResponseMessage Response)> Get(string path)
    {
        var response = await demo.Http.GetAsync(path);
        return (response.StatusCode, await response.Content.ReadAsStringAsync(), response);
    }

    /// <summary>
    /// gRPC, then JSON, then gRPC again: the demo keeps changing, so the JSON answer must equal the
    /// gRPC one whenever the two gRPC answers around it agree (and such a moment comes soon).
    /// </summary>
    private async Task AssertSameAnswer<T>(Func<Task<T>> grpc, string path, Action<T>? normalise = null) where T : IMessage<T>, new()
    {
        for (int attempt = 0; attempt < 50; attempt++)
        {
            var before = await grpc();
            var (status, body, _) = await Get(path);
            var after = await grpc();
            Assert.True(status == HttpStatusCode.OK, $"{path}: {(int)status} {body}");
            var json = Parser.Parse<T>(body);
            normalise?.Invoke(before); normalise?.Invoke(after); normalise?.Invoke(json);
            if (!before.Equals(after)) continue;
            Assert.Equal(before, json);
            return;
        }
        Assert.Fail($"{path}: the gRPC answer never held still across one JSON call");
    }

    [Fact]
    public async Task EachReadMethodAnswersInJsonWhatGrpcAnswers()
    {
        // The caches' counters and last-event times move with every watch event; the rest must match exactly.
        await AssertSameAnswer(async () => await demo.Grpc.GetSummaryAsync(new V1.GetSummaryRequest()), "v1/summary",
            s => { s.Caches.Clear(); });
        await AssertSameAnswer(async () => await demo.Grpc.ListRecommendationsAsync(new V1.ListRecommendationsRequest()), "v1/recommendations");
        await AssertSameAnswer(async () => await demo.Grpc.ListRecommendationsAsync(
            new V1.ListRecommendationsRequest { Type = V1.RecommendationType.Provision, MinSavingsPerHour = -1 }),
            "v1/recommendations?type=provision&min_savings_per_hour=-1");
        await AssertSameAnswer(async () => await demo.Grpc.ListNodesAsync(new V1.ListNodesRequest()), "v1/nodes");
        var node = (await demo.Grpc.ListNodesAsync(new V1.ListNodesRequest())).Nodes[0].Name;
        await AssertSameAnswer(async () => await demo.Grpc.ExplainNodeAsync(new V1.ExplainNodeRequest { Node = node }), $"v1/nodes/{node}/explain");
    }

    [Fact]
    public async Task TheNodeMapCarriesEveryNodeWithItsLabelGroupLabelsOnly()
    {
        var (status, body, _) = await Get("v1/nodes");
        Assert.Equal(HttpStatusCode.OK, status);
        var nodes = Parser.Parse<V1.ListNodesResponse>(body);
        Assert.Equal(["servers.ngpc.rxt.io/class"], nodes.LabelGroups);
        var summary = await demo.Grpc.GetSummaryAsync(new V1.GetSummaryRequest());
        Assert.InRange(nodes.Nodes.Count, summary.Nodes - 3, summary.Nodes + 3);   // the demo adds and removes nodes
        Assert.All(nodes.Nodes, n =>
        {
            Assert.Equal(["servers.ngpc.rxt.io/class"], n.Labels.Keys);
            Assert.Equal(n.ServerClass, n.Labels["servers.ngpc.rxt.io/class"]);
            Assert.Equal(["cpu", "memory"], n.Resources.Select(r => r.Resource));
        });
        Assert.Contains(nodes.Nodes, n => n.Managed);
        Assert.Contains(nodes.Nodes, n => n.Cordoned && n.State == "cordoned");
        // Every field is written, defaults included: a page or a jq filter need not guess.
        using var doc = JsonDocument.Parse(body);
        var first = doc.RootElement.GetProperty("nodes")[0];
        foreach (var field in new[] { "cordoned", "deleting", "managed", "blockers", "pricePerHour", "idleCostPerHour" })
            Assert.True(first.TryGetProperty(field, out _), $"no {field} in {first}");
    }

    [Fact]
    public async Task ErrorsAreHttpStatusesWithTheGrpcStatusInAJsonBody()
    {
        async Task Expect(HttpStatusCode http, string code, string path, string? method = null, string? contains = null)
        {
            using var request = new HttpRequestMessage(new HttpMethod(method ?? "GET"), path);
            using var response = await demo.Http.SendAsync(request);
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(http == response.StatusCode, $"{method ?? "GET"} {path}: {(int)response.StatusCode} {body}");
            Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
            using var doc = JsonDocument.Parse(body);
            Assert.Equal(code, doc.RootElement.GetProperty("status").GetString());
            Assert.Equal((int)Enum.Parse<StatusCode>(code.Replace("_", ""), ignoreCase: true), doc.RootElement.GetProperty("code").GetInt32());
            if (contains is not null) Assert.Contains(contains, doc.RootElement.GetProperty("message").GetString());
        }
        await Expect(HttpStatusCode.NotFound, "NOT_FOUND", "v1/nodes/no-such-node/explain", contains: "node \"no-such-node\" not found");
        // A node name is one path segment, escaped as any other.
        await Expect(HttpStatusCode.NotFound, "NOT_FOUND", "v1/nodes/n%C5%93ud%2050%25%2Fx/explain", contains: "node \"nœud 50%/x\" not found");
        await Expect(HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "v1/recommendations?type=bogus", contains: "type");
        await Expect(HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "v1/recommendations?min_savings_per_hour=lots", contains: "min_savings_per_hour");
        await Expect(HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "v1/recommendations?min_savings=1", contains: "unknown query parameter \"min_savings\"");
        await Expect(HttpStatusCode.BadRequest, "INVALID_ARGUMENT", "v1/recommendations/watch?heartbeat_seconds=-1");
        await Expect(HttpStatusCode.NotFound, "NOT_FOUND", "v1/nothing-here");
        await Expect(HttpStatusCode.NotFound, "NOT_FOUND", "v1/nodes//explain");
        await Expect(HttpStatusCode.MethodNotAllowed, "UNIMPLEMENTED", "v1/summary", "DELETE");
        // The demo runs with actuation off: the same refusal as over gRPC.
        await Expect(HttpStatusCode.BadRequest, "FAILED_PRECONDITION", "v1/recommendations/x/approve", "POST", "approvals are only taken with --actuation approve");

        using var bad = await demo.Http.PostAsync("v1/simulate", new StringContent("{\"removeNodes\": [\"a\"], \"bogus\": 1}"));
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("bogus", await bad.Content.ReadAsStringAsync());
        using var notJson = await demo.Http.PostAsync("v1/simulate", new StringContent("{remove"));
        Assert.Equal(HttpStatusCode.BadRequest, notJson.StatusCode);
    }

    [Fact]
    public async Task ShortAndFullEnumNamesAndNumbersFilterAlike()
    {
        foreach (var type in new[] { "delete_empty", "DELETE_EMPTY", "delete-empty", "RECOMMENDATION_TYPE_DELETE_EMPTY", "4" })
        {
            var (status, body, _) = await Get($"v1/recommendations?type={type}");
            Assert.True(status == HttpStatusCode.OK, body);
            Assert.All(Parser.Parse<V1.ListRecommendationsResponse>(body).Recommendations, r => Assert.Equal(V1.RecommendationType.DeleteEmpty, r.Type));
        }
        // lowerCamelCase names are the JSON names of the same fields.
        var (camel, _, _) = await Get("v1/recommendations?minSavingsPerHour=0.001");
        Assert.Equal(HttpStatusCode.OK, camel);
    }

    [Fact]
    public async Task SimulateTakesItsRequestAsJson()
    {
        var node = (await demo.Grpc.ListNodesAsync(new V1.ListNodesRequest())).Nodes.First(n => n.Priced).Name;
        using var response = await demo.Http.PostAsync("v1/simulate", new StringContent($"{{\"removeNodes\": [\"{node}\"]}}"));
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        var simulated = Parser.Parse<V1.SimulateResponse>(body);
        Assert.True(simulated.CostAfterPerHour < simulated.CostBeforePerHour, body);
        Assert.Contains("read-only: nothing in the cluster was changed", simulated.Notes);
    }

    [Fact]
    public async Task AnUnchangedAnswerIsA304AndLargeAnswersAreGzipped()
    {
        for (int attempt = 0; ; attempt++)
        {
            var (_, _, first) = await Get("v1/recommendations");
            var etag = first.Headers.ETag!;
            using var again = new HttpRequestMessage(HttpMethod.Get, "v1/recommendations");
            again.Headers.IfNoneMatch.Add(etag);
            using var second = await demo.Http.SendAsync(again);
            // The plan may have moved between the two calls: then the second is the new answer with a new tag.
            if (second.StatusCode == HttpStatusCode.OK && attempt < 20) { Assert.NotEqual(etag, second.Headers.ETag); continue; }
            Assert.Equal(HttpStatusCode.NotModified, second.StatusCode);
            Assert.Empty(await second.Content.ReadAsByteArrayAsync());
            break;
        }
        using var gz = new HttpRequestMessage(HttpMethod.Get, "v1/nodes");
        gz.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("gzip"));
        using var zipped = await demo.Http.SendAsync(gz);
        Assert.Equal(["gzip"], zipped.Content.Headers.ContentEncoding);
        await using var inflate = new System.IO.Compression.GZipStream(await zipped.Content.ReadAsStreamAsync(), System.IO.Compression.CompressionMode.Decompress);
        var text = await new StreamReader(inflate).ReadToEndAsync();
        Assert.NotEmpty(Parser.Parse<V1.ListNodesResponse>(text).Nodes);
    }

    [Fact]
    public async Task WatchIsAStreamOfServerSentEvents()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var response = await demo.Http.GetAsync("v1/recommendations/watch", HttpCompletionOption.ResponseHeadersRead, cts.Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));
        var kinds = new List<V1.RecommendationEvent.Types.Kind>();
        while (kinds.LastOrDefault() != V1.RecommendationEvent.Types.Kind.Synced)
        {
            var line = await reader.ReadLineAsync(cts.Token) ?? throw new Xunit.Sdk.XunitException("the stream ended before SYNCED");
            if (line.Length == 0) continue;
            Assert.StartsWith("data: ", line);
            kinds.Add(Parser.Parse<V1.RecommendationEvent>(line["data: ".Length..]).Kind);
        }
        Assert.All(kinds[..^1], k => Assert.Equal(V1.RecommendationEvent.Types.Kind.Added, k));
        Assert.NotEmpty(kinds[..^1]);
    }
}

/// <summary>Before the caches have synced the API answers 503, as gRPC answers UNAVAILABLE.</summary>
public class JsonApiBeforeSyncTests
{
    [Fact]
    public async Task EveryReadIs503WithRetryAfterUntilTheCachesSync()
    {
        // A Kubernetes API that refuses connections: the caches never sync.
        var kubeconfig = await UnreachableCluster.KubeconfigAsync("karpetrack-nosync-");
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await using var service = await Service.StartAsync(KarpetrackOptions.Parse(["--kubeconfig", kubeconfig, "--metrics-addr", "127.0.0.1:0",
            "--grpc-addr", "127.0.0.1:0", "--log-level", "error", "--price-feed-endpoint", "http://127.0.0.1:1"], _ => null), cts.Token);
        using var http = new HttpClient { BaseAddress = service.MetricsUrl };
        foreach (var path in new[] { "v1/summary", "v1/recommendations", "v1/nodes", "v1/nodes/a/explain" })
        {
            using var response = await http.GetAsync(path, cts.Token);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(1), response.Headers.RetryAfter?.Delta);
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync(cts.Token));
            Assert.Equal("UNAVAILABLE", doc.RootElement.GetProperty("status").GetString());
            Assert.StartsWith("caches not synced yet: nodes", doc.RootElement.GetProperty("message").GetString());
        }
    }
}
