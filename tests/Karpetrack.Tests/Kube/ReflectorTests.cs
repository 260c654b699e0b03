using System.Text.Json;
using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using Karpetrack.Tests.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Kube;

/// <summary>
/// The reflectors against the embedded API server with faults injected: whatever happens, the model
/// converges to the server's state.
/// </summary>
public sealed class ReflectorTests : IAsyncLifetime
{
    private KubeApiServer server = null!;
    private KubeConnection connection = null!;
    private KubeClient client = null!;
    private readonly ClusterModel model = new(ResourceTable.Default);
    private readonly ReflectorStatus nodeStatus = new("nodes");
    private readonly ReflectorStatus podStatus = new("pods");
    private readonly CancellationTokenSource stop = new();
    private readonly List<Task> running = [];
    private string dir = "";

    private static readonly ReflectorOptions Fast = new()
    {
        PageSize = 7,
        InitialBackoff = TimeSpan.FromMilliseconds(20),
        MaxBackoff = TimeSpan.FromMilliseconds(200),
        MinWatchTimeout = TimeSpan.FromSeconds(30),
        MaxWatchTimeout = TimeSpan.FromSeconds(40),
        MinHealthyWatch = TimeSpan.FromMilliseconds(50),
    };

    public async Task InitializeAsync()
    {
        server = await SimHelpers.StartWithClusterAsync(nodes: 5, pods: 60);
        dir = Directory.CreateTempSubdirectory("karpetrack-reflector-").FullName;
        connection = KubeConnection.Resolve(server.WriteKubeconfig(Path.Combine(dir, "kubeconfig")), null, KubeEnvironment.Process);
        client = new KubeClient(connection, TimeSpan.FromSeconds(10));
    }

    public async Task DisposeAsync()
    {
        stop.Cancel();
        await Task.WhenAll(running).WaitAsync(TimeSpan.FromSeconds(10));
        client.Dispose();
        await server.DisposeAsync();
        Directory.Delete(dir, recursive: true);
    }

    private void Start(TimeProvider? clock = null)
    {
        var nodes = new Reflector<NodeRecord>(client, "/api/v1/nodes", null, null, new NodeDecoder(ResourceTable.Default),
            model.NodeTarget, nodeStatus, Fast, NullLogger.Instance, clock, seed: 1);
        var pods = new Reflector<PodRecord>(client, "/api/v1/pods", null, "status.phase!=Succeeded,status.phase!=Failed",
            new PodDecoder(ResourceTable.Default), model.PodTarget, podStatus, Fast, NullLogger.Instance, clock, seed: 2);
        running.Add(Task.Run(() => nodes.RunAsync(stop.Token)));
        running.Add(Task.Run(() => pods.RunAsync(stop.Token)));
    }



    /// <summary>What the model should hold: the server's objects decoded and tallied from scratch.</summary>
    private string Expected()
    {
        var expected = new ClusterModel(ResourceTable.Default);
        foreach (var n in server.Store.List("nodes").Items) expected.UpsertNode(new NodeDecoder(ResourceTable.Default).DecodeComplete(n.Json.Span, out _));
        foreach (var p in server.Store.List("pods").Items)
        {
            var pod = new PodDecoder(ResourceTable.Default).DecodeComplete(p.Json.Span, out _);
            if (pod.Phase is PodPhase.Succeeded or PodPhase.Failed) continue;
            expected.UpsertPod(pod);
        }
        return Describe(expected);
    }


    private static string Describe(ClusterModel m)
    {
        var s = m.Snapshot();
        var lines = s.Nodes.Select(n => $"{n.Name} cpu={n.Allocated[0]} mem={n.Allocated[1]} ds={n.DaemonSetOverhead[0]} pods={n.Pods} sched={n.Schedulable}").ToList();
        lines.Add($"pending={s.PendingPods} cpu={s.PendingRequests[0]} total={m.PodCount}");
        return string.Join("\n", lines);
    }

    private async Task Converged(string because, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? TimeSpan.FromSeconds(15));
        string expected = "", actual = "";
        while (DateTime.UtcNow < deadline)
        {
            expected = Expected();
            actual = Describe(model);
            if (expected == actual && nodeStatus.Synced && podStatus.Synced) return;
            await Task.Delay(50);
        }
        Assert.Fail($"model did not converge ({because}).\nexpected:\n{expected}\nactual:\n{actual}");
    }

    /// <summary>
    /// Waits until both reflectors have their watch streams open: a converged model only says the LIST
    /// is in, and closing watches before they open would cut nothing.
    /// </summary>
    private Task WatchesOpen() =>
        WaitFor(() => server.Faults.OpenWatchesOf("pods") >= 1 && server.Faults.OpenWatchesOf("nodes") >= 1,
            () => $"open watches: pods {server.Faults.OpenWatchesOf("pods")}, nodes {server.Faults.OpenWatchesOf("nodes")}");

    private JsonObject AnyPod(int i) => server.Store.List("pods").Items.Where(p => p.Namespace != "kube-system").ElementAt(i).ToJsonObject();

    private void Churn(string tag)
    {
        // A new pending pod, a deletion, a rebind of requests, and a cordon: every kind of change.
        var nodes = server.Store.List("nodes").Items;
        var pending = SimHelpers.SimplePod("default", "pending-" + tag);
        pending["spec"]!["containers"]![0]!["resources"] = new JsonObject { ["requests"] = new JsonObject { ["cpu"] = "3", ["memory"] = "1Gi" } };
        pending["status"] = new JsonObject
        {
            ["phase"] = "Pending",
            ["conditions"] = new JsonArray(new JsonObject { ["type"] = "PodScheduled", ["status"] = "False", ["reason"] = "Unschedulable" }),
        };
        server.Store.Upsert("pods", pending);
        var victim = AnyPod(0);
        server.Store.Delete("pods", (string)victim["metadata"]!["namespace"]!, (string)victim["metadata"]!["name"]!);
        var bound = SimHelpers.SimplePod("default", "bound-" + tag, nodes[0].Name);
        bound["spec"]!["containers"]![0]!["resources"] = new JsonObject { ["requests"] = new JsonObject { ["cpu"] = "250m", ["memory"] = "64Mi" } };
        server.Store.Upsert("pods", bound);
        var node = nodes[^1].ToJsonObject();
        node["spec"]!["unschedulable"] = !(bool?)node["spec"]!["unschedulable"] ?? true;
        server.Store.Upsert("nodes", node);
    }

    [Fact]
    public async Task ListsInPagesThenFollowsTheWatch()
    {
        Start();
        await Converged("initial list");
        Assert.Equal(0, podStatus.TotalRestarts);
        Churn("a");
        await Converged("watch events");
        Assert.True(podStatus.Events > 0);
    }

    [Fact]
    public void AStatusOutOfTouchPastTheLimitIsNoLongerInTouchUntilAWatchOpens()
    {
        var clock = new ManualClock(new DateTimeOffset(2026, 12, 7, 8, 0, 0, TimeSpan.Zero));
        var status = new ReflectorStatus("pods", clock: clock);
        Assert.False(status.InTouch(TimeSpan.FromMinutes(2)));   // never synced
        status.MarkSynced("1", clock.Now);
        Assert.True(status.InTouch(TimeSpan.FromMinutes(2)));
        status.Restarted("network_error");
        clock.Advance(TimeSpan.FromSeconds(90));
        status.Restarted("http_error");   // a second failure does not move the start of the outage
        clock.Advance(TimeSpan.FromSeconds(30));
        Assert.True(status.InTouch(TimeSpan.FromMinutes(2)));
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.False(status.InTouch(TimeSpan.FromMinutes(2)));
        Assert.Equal(clock.Now.AddSeconds(-121), status.OutOfTouchSince);
        status.WatchOpened();
        Assert.True(status.InTouch(TimeSpan.FromMinutes(2)));
        Assert.Null(status.OutOfTouchSince);
    }

    [Fact]
    public async Task AReflectorThatCannotWatchIsOutOfTouchUntilItWatchesAgain()
    {
        Start();
        await Converged("initial list");
        await WatchesOpen();
        Assert.Null(podStatus.OutOfTouchSince);
        // Every watch request fails (and the lists: a failed watch relists): the cache stays synced, but frozen.
        server.Faults.FailNext(1_000, 500, pathContains: "/api/v1/pods");
        server.Faults.CloseAllWatches();
        await WaitFor(() => podStatus.OutOfTouchSince is not null && podStatus.TotalRestarts >= 2,
            () => $"out of touch since {podStatus.OutOfTouchSince}, restarts {podStatus.TotalRestarts}");
        Assert.True(podStatus.Synced);
        Assert.False(podStatus.InTouch(TimeSpan.Zero));
        server.Faults.Clear();
        await WaitFor(() => podStatus.OutOfTouchSince is null, () => $"still out of touch since {podStatus.OutOfTouchSince}");
        Assert.True(podStatus.InTouch(TimeSpan.Zero));
    }

    [Fact]
    public async Task WatchClosedMidStreamResumesWithoutRelisting()
    {
        Start();
        await Converged("initial list");
        await WatchesOpen();
        server.Faults.CloseAllWatches();
        Churn("b");
        await Converged("after the watch was cut");
        Assert.True(podStatus.Restarts.GetValueOrDefault("network_error") + podStatus.Restarts.GetValueOrDefault("closed") >= 1);
        Assert.Equal(0, podStatus.Restarts.GetValueOrDefault("expired"));
    }

    [Fact]
    public async Task ExpiredResourceVersionRelistsAndAppliesDeletionsThatHappenedMeanwhile()
    {
        Start();
        await Converged("initial list");
        // Cut the watches and hold them off for a second (429 Retry-After keeps the resourceVersion, no relist),
        // make changes the reflector cannot see, then drop the history it would resume from.
        await WatchesOpen();
        server.Faults.FailNext(2, 429, TimeSpan.FromSeconds(1), pathContains: "watch=1");
        server.Faults.CloseAllWatches();
        await WaitFor(() => podStatus.Restarts.GetValueOrDefault("throttled") >= 1);
        for (int i = 0; i < 5; i++)
        {
            var p = AnyPod(i);
            server.Store.Delete("pods", (string)p["metadata"]!["namespace"]!, (string)p["metadata"]!["name"]!);
        }
        Churn("c");
        server.Faults.CompactHistory();
        await Converged("after 410 and relist");
        Assert.True(podStatus.Restarts.GetValueOrDefault("expired") >= 1);
    }

    [Fact]
    public async Task ExecCredentialFailingAfterStartUp_BacksOffAndRecovers()
    {
        // A plugin whose credential is always expired runs before every request; it fails while "broken" exists.
        var broken = Path.Combine(dir, "broken");
        var plugin = Path.Combine(dir, "plugin.sh");
        File.WriteAllText(plugin, $$$"""
            #!/bin/sh
            if [ -e '{{{broken}}}' ]; then echo 'login expired' >&2; exit 1; fi
            printf '{"apiVersion":"client.authentication.k8s.io/v1","status":{"token":"t","expirationTimestamp":"2000-01-01T00:00:00Z"}}'
            """);
        if (!OperatingSystem.IsWindows()) // the plugin is a shell script; this test assumes a Unix host
            File.SetUnixFileMode(plugin, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var kubeconfig = Path.Combine(dir, "exec-kubeconfig");
        File.WriteAllText(kubeconfig, $$$"""
            current-context: t
            clusters: [{name: c, cluster: {server: "{{{server.BaseAddress.GetLeftPart(UriPartial.Authority)}}}"}}]
            contexts: [{name: t, context: {cluster: c, user: u}}]
            users:
            - name: u
              user:
                exec: {apiVersion: client.authentication.k8s.io/v1, command: ./plugin.sh, interactiveMode: Never}
            """);
        client.Dispose();
        client = new KubeClient(KubeConnection.Resolve(kubeconfig, null, KubeEnvironment.Process), TimeSpan.FromSeconds(10));
        Start();
        await Converged("initial list");

        await WatchesOpen();
        File.WriteAllText(broken, "");
        server.Faults.CloseAllWatches();
        await WaitFor(() => podStatus.Restarts.GetValueOrDefault("http_error") >= 2,
            () => "restarts by reason: " + string.Join(", ", podStatus.Restarts.Select(r => $"{r.Key} {r.Value}")));
        Assert.DoesNotContain(running, t => t.IsCompleted);

        File.Delete(broken);
        Churn("exec");
        await Converged("after the plugin works again");
    }

    [Fact]
    public async Task ServerErrorsAndThrottlingBackOffAndRecover()
    {
        server.Faults.FailNext(3, 500, pathContains: "/api/v1/pods");
        server.Faults.FailNext(2, 429, TimeSpan.FromSeconds(1), pathContains: "/api/v1/nodes");
        Start();
        await Converged("after 500s and 429s");
        Assert.True(podStatus.Restarts.GetValueOrDefault("http_error") >= 3);
        Assert.True(nodeStatus.Restarts.GetValueOrDefault("throttled") >= 2);
    }

    [Fact]
    public async Task ThrottledList_WaitsTheServersRetryAfterByTheClock()
    {
        var clock = new TimerClock(DateTimeOffset.UtcNow);
        server.Faults.FailNext(2, 429, TimeSpan.FromSeconds(1), pathContains: "/api/v1/nodes");
        Start(clock);
        for (var i = 1; i <= 2; i++)
        {
            // The wait armed after each 429 is the server's Retry-After, not the (at most 400 ms) backoff.
            await clock.WhenDelaysPending(1);
            Assert.Equal(clock.GetUtcNow() + TimeSpan.FromSeconds(1), clock.NextDelayDue);
            Assert.Equal(i, nodeStatus.Restarts.GetValueOrDefault("throttled"));
            Assert.False(nodeStatus.Synced);
            clock.Advance(TimeSpan.FromSeconds(1));
        }
        await Converged("after two 429s");
        Assert.Equal(2, nodeStatus.Restarts.GetValueOrDefault("throttled"));
    }

    [Fact]
    public async Task MalformedObjectInAStreamIsSkippedAndCounted()
    {
        Start();
        await Converged("initial list");
        await WaitFor(() => server.Faults.OpenWatchCount >= 2);
        var bad = """{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"broken","namespace":"default","uid":"0b3c4f4e-4d1a-4c59-9f39-3d1c2f7a8b99","resourceVersion":"1"},"spec":{"nodeName":"x","containers":[{"name":"c","resources":{"requests":{"cpu":"12x"}}}]},"status":{"phase":"Running"}}}""";
        Assert.True(server.Faults.InjectWatchEvent("pods", bad) >= 1);
        Churn("d");
        await Converged("after a malformed event");
        Assert.Equal(1, podStatus.DecodeErrors);
        Assert.Equal(0, podStatus.Restarts.GetValueOrDefault("decode_error"));
    }

    [Fact]
    public async Task UnconvertibleValuesInAStreamAreDecodeErrorsAndTheWatchGoesOn()
    {
        Start();
        await Converged("initial list");
        await WaitFor(() => server.Faults.OpenWatchCount >= 2);
        // A label of invalid UTF-8 (a string cannot hold it) and a number where a string belongs:
        // the reader throws on both when asked for the value, which once ended the reflector for good.
        var utf8 = System.Text.Encoding.UTF8.GetBytes("""{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"bad-utf8","namespace":"default","uid":"1b3c4f4e-4d1a-4c59-9f39-3d1c2f7a8b99","resourceVersion":"1","labels":{"app":"XX"}},"spec":{"nodeName":"x","containers":[]},"status":{"phase":"Running"}}}""");
        utf8[Array.IndexOf(utf8, (byte)'X')] = 0xC3;
        Assert.True(server.Faults.InjectWatchEvent("pods", utf8) >= 1);
        var number = """{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"bad-type","namespace":"default","uid":"2b3c4f4e-4d1a-4c59-9f39-3d1c2f7a8b99","resourceVersion":"1","labels":{"app":7}},"spec":{"nodeName":"x","containers":[]},"status":{"phase":"Running"}}}""";
        Assert.True(server.Faults.InjectWatchEvent("pods", number) >= 1);
        Churn("u");
        await Converged("after unconvertible values");
        Assert.Equal(2, podStatus.DecodeErrors);
        Assert.Equal(0, podStatus.Restarts.GetValueOrDefault("decode_error"));
    }

    [Fact]
    public async Task ServerRestartWithANewHistoryConverges()
    {
        Start();
        await Converged("initial list");
        server.Faults.Restart(1_000_000);
        Churn("e");
        await Converged("after an API server restart");
        Assert.True(podStatus.TotalRestarts >= 1);
        Assert.True(long.Parse(podStatus.ResourceVersion!) >= 1_000_000);
    }

    /// <summary>Polls until <paramref name="condition"/> holds; gives up (failing with <paramref name="state"/>) after 20 s.</summary>
    internal static async Task WaitFor(Func<bool> condition, Func<string>? state = null)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!condition() && DateTime.UtcNow < deadline) await Task.Delay(20);
        Assert.True(condition(), state?.Invoke());
    }
}
