using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Spot;

/// <summary>Runs a callback before each request leaves the client: another writer racing us, seen from the wire.</summary>
internal sealed class Interceptor(Func<HttpRequestMessage, Task> before) : DelegatingHandler(new SocketsHttpHandler())
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        await before(request);
        return await base.SendAsync(request, ct);
    }
}

/// <summary>What the Spot client tests and the fake Spot API tests share: the fake, a client of it, specs, raw requests.</summary>
internal static class SpotTestKit
{
    internal const string Ns = "org-knyiltp8zznvkz5g";
    internal const string PoolsPath = $"/apis/ngpc.rxt.io/v1/namespaces/{Ns}/spotnodepools";
    internal const string Medium = "gp.vs1.medium-iad";     // min bid 0.01, market 0.001 in the embedded snapshot

    internal static SpotApiClient Client(SpotApiServer server, TimeProvider? clock = null, Func<SpotApiOptions, SpotApiOptions>? tweak = null, HttpMessageHandler? handler = null)
    {
        var options = new SpotApiOptions
        {
            ApiUrl = server.BaseAddress, AuthUrl = server.BaseAddress, RatePerSecond = 0,
            BackoffBase = TimeSpan.FromMilliseconds(10), BackoffMax = TimeSpan.FromMilliseconds(50), RandomSeed = 1,
        };
        return new SpotApiClient(tweak is null ? options : tweak(options), SpotApiServer.DemoRefreshToken, NullLogger.Instance, clock, handler);
    }

    internal static Task<SpotApiServer> Start(TimeSpan? provisioning = null, TimeSpan? notice = null, Action<SpotPoolNode>? joined = null, Action<string>? left = null,
        TimeProvider? clock = null, TimeSpan? tokenLifetime = null) =>
        SpotApiServer.StartAsync(new SpotApiServerOptions
        {
            ProvisioningDelay = provisioning ?? TimeSpan.FromHours(1),
            PreemptionNotice = notice ?? TimeSpan.Zero,
            NodeJoined = joined,
            NodeLeft = left,
            Clock = clock,
            TokenLifetime = tokenLifetime ?? TimeSpan.FromHours(24),
            Cloudspaces = new Dictionary<string, string> { ["demo"] = "us-east-iad-1", ["other"] = "us-east-iad-1" },
        });

    internal static Dictionary<string, string> Managed(params (string Key, string Value)[] more)
    {
        var labels = new Dictionary<string, string> { [Actuator.ManagedLabel] = "true" };
        foreach (var (k, v) in more) labels[k] = v;
        return labels;
    }

    internal static SpotNodePoolSpec Spec(string? name = null, string serverClass = Medium, int desired = 1, decimal bid = 0.01m,
        IReadOnlyDictionary<string, string>? labels = null, IReadOnlyList<Taint>? taints = null, string cloudspace = "demo") =>
        new(name ?? Guid.NewGuid().ToString(), serverClass, desired, bid, cloudspace, labels ?? Managed(), taints);

    internal static long Count(SpotApiClient c, string method, string code) => c.Requests.GetValueOrDefault((method, code));

    internal static int Sent(SpotApiServer server, string method) => server.RequestLog.Count(l => l.StartsWith(method + " " + PoolsPath, StringComparison.Ordinal));

    /// <summary>The client never addresses the pool collection with DELETE: the real API would delete every pool.</summary>
    internal static void NoCollectionDelete(SpotApiServer server)
    {
        Assert.Equal(0, server.CollectionDeletes);
        Assert.DoesNotContain(server.RequestLog, l => l.StartsWith("DELETE ", StringComparison.Ordinal) && !Regex.IsMatch(l, "/spotnodepools/[^/?]+$"));
    }

    internal static async Task Until(Func<bool> done, string what, int seconds = 10)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (!done())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"timed out waiting for {what}");
            await Task.Delay(20);
        }
    }

    internal static string PoolJson(string name, string serverClass, string bid, string customLabels = """{"karpetrack.io/managed":"true"}""",
        string desired = "1", string cloudspace = "demo", string bidJson = "")
    {
        var bidValue = bidJson.Length > 0 ? bidJson : $"\"{bid}\"";
        return $$$"""
            {"apiVersion":"ngpc.rxt.io/v1","kind":"SpotNodePool",
             "metadata":{"name":"{{{name}}}","namespace":"{{{Ns}}}","labels":{"ngpc.rxt.io/cloudspace":"{{{cloudspace}}}"}},
             "spec":{"serverClass":"{{{serverClass}}}","desired":{{{desired}}},"bidPrice":{{{bidValue}}},"cloudSpace":"{{{cloudspace}}}",
                     "autoscaling":{"enabled":false},"customLabels":{{{customLabels}}}}}
            """;
    }


    internal static async Task<(int Status, JsonObject Body)> RawAsync(SpotApiServer server, string method, string path, string? body = null,
        string contentType = "application/json", int? expect = null)
    {
        if (server.LastIssued is null)
        {
            using var warm = Client(server);
            await warm.GetOrgNamespaceAsync(default);
        }
        using var http = new HttpClient { BaseAddress = server.BaseAddress };
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", server.LastIssued!.IdToken);
        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
        }
        using var response = await http.SendAsync(request);
        var json = JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject();
        if (expect is { } want) Assert.True((int)response.StatusCode == want, $"{method} {path}: {(int)response.StatusCode} {json.ToJsonString()}");
        return ((int)response.StatusCode, json);
    }

}
