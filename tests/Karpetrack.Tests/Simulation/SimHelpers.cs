using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Karpetrack.Simulation;

namespace Karpetrack.Tests.Simulation;

/// <summary>Small helpers shared by the simulation tests: a seeded server and raw HTTP access.</summary>
internal static class SimHelpers
{
    public static readonly DateTimeOffset Now = new(2026, 11, 21, 12, 0, 0, TimeSpan.Zero);

    public static async Task<KubeApiServer> StartWithClusterAsync(int nodes = 4, int pods = 30, KubeApiServerOptions? options = null)
    {
        var server = await KubeApiServer.StartAsync(options ?? new KubeApiServerOptions());
        var nodeObjects = SyntheticCluster.Nodes(nodes, seed: 7, Now);
        foreach (var n in nodeObjects) server.Store.Upsert("nodes", n);
        foreach (var p in SyntheticCluster.Pods(nodeObjects, pods, seed: 7, Now)) server.Store.Upsert("pods", p);
        return server;
    }

    public static HttpClient Client(KubeApiServer server) => new() { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(20) };

    public static async Task<(int Status, JsonObject Body, HttpResponseMessage Response)> GetJsonAsync(HttpClient http, string path)
    {
        var response = await http.GetAsync(path);
        var text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, JsonNode.Parse(text)!.AsObject(), response);
    }

    /// <summary>Reads a watch stream line by line until <paramref name="stop"/> says so or the stream ends.</summary>
    public static async Task<List<JsonObject>> ReadWatchAsync(HttpClient http, string path, Func<List<JsonObject>, bool> stop, TimeSpan? max = null)
    {
        using var cts = new CancellationTokenSource(max ?? TimeSpan.FromSeconds(10));
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));
        var events = new List<JsonObject>();
        while (!stop(events))
        {
            var line = await reader.ReadLineAsync(cts.Token);
            if (line is null) break;
            events.Add(JsonNode.Parse(line)!.AsObject());
        }
        return events;
    }

    public static string Type(JsonObject ev) => (string)ev["type"]!;
    public static string Name(JsonObject ev) => (string)ev["object"]!["metadata"]!["name"]!;
    public static long Rv(JsonObject ev) => long.Parse((string)ev["object"]!["metadata"]!["resourceVersion"]!);

    public static JsonObject SimplePod(string ns, string name, string? nodeName = null, Dictionary<string, string>? labels = null)
    {
        var l = new JsonObject();
        foreach (var (k, v) in labels ?? new Dictionary<string, string> { ["app"] = "test" }) l[k] = v;
        var spec = new JsonObject { ["containers"] = new JsonArray(new JsonObject { ["name"] = "c", ["image"] = "busybox" }) };
        if (nodeName is not null) spec["nodeName"] = nodeName;
        return new JsonObject
        {
            ["kind"] = "Pod",
            ["apiVersion"] = "v1",
            ["metadata"] = new JsonObject { ["name"] = name, ["namespace"] = ns, ["labels"] = l },
            ["spec"] = spec,
            ["status"] = new JsonObject { ["phase"] = nodeName is null ? "Pending" : "Running" },
        };
    }

    public sealed record ProcessResult(int ExitCode, string Stdout, string Stderr);

    /// <summary>Runs a program to its end; <paramref name="env"/> sets variables of the child (null removes one).</summary>
    public static async Task<ProcessResult> RunAsync(string file, IEnumerable<string> args, TimeSpan timeout, IReadOnlyDictionary<string, string?>? env = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null)
            foreach (var (name, value) in env)
                if (value is null) psi.Environment.Remove(name);
                else psi.Environment[name] = value;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException) { p.Kill(entireProcessTree: true); await p.WaitForExitAsync(); }
        return new ProcessResult(p.ExitCode, await stdout, await stderr);
    }

    public static bool OnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => File.Exists(Path.Combine(d, program)));
}
