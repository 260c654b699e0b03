using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using static Karpetrack.Tests.Simulation.SimHelpers;

namespace Karpetrack.Tests.Simulation;

/// <summary>
/// The embedded API server and the demo cluster stamp time from the clock they are given (KubeApiServerOptions.Clock; the
/// rig's stepped clock in the actuation tests, real time in <c>make run</c>), never from the wall clock: creation and deletion
/// timestamps, what the demo's handlers create when the actuator evicts, a node joins or leaves, or the churn moves. The
/// clock here starts years away from the real time, so any stamp taken from the wall clock shows.
/// </summary>
public sealed class DemoClockTests : IAsyncLifetime
{
    private static readonly DateTimeOffset T0 = new(2031, 3, 4, 5, 6, 7, TimeSpan.Zero);
    private readonly TimerClock clock = new(T0);
    private DemoCluster demo = null!;
    private KubeClient client = null!;

    public async Task InitializeAsync()
    {
        demo = await DemoCluster.StartAsync(new DemoClusterOptions
        {
            Seed = 7, Churn = false, Server = new KubeApiServerOptions { MaxPodGracePeriod = TimeSpan.FromSeconds(2), Clock = clock },
        });
        client = new KubeClient(KubeConnection.Resolve(demo.KubeconfigPath, null, KubeEnvironment.Process), TimeSpan.FromSeconds(10));
    }

    public async Task DisposeAsync()
    {
        client.Dispose();
        await demo.DisposeAsync();
    }

    private JsonObject[] All(string resource) => demo.Api.Store.List(resource).Items.Select(p => p.ToJsonObject()).ToArray();
    private static string NameOf(JsonObject o) => (string)o["metadata"]!["name"]!;
    private static DateTimeOffset Created(JsonObject o) => KubeTime.Parse((string?)o["metadata"]!["creationTimestamp"]) ?? throw new InvalidOperationException(NameOf(o));
    private static string? Stamp(JsonObject o, string field) => (string?)o["metadata"]![field];
    private static string? OwnerKind(JsonObject pod) => (string?)pod["metadata"]?["ownerReferences"]?[0]?["kind"];

    [Fact]
    public void TheDemoIsPopulatedAtItsClocksTime()
    {
        foreach (var resource in new[] { "nodes", "pods", "namespaces", "daemonsets", "poddisruptionbudgets" })
            Assert.All(All(resource), o => Assert.InRange(Created(o), T0.AddDays(-31), T0));
    }

    [Fact]
    public async Task AnEvictionStampsTheDeletionAndTheReplacementWithTheServersClock()
    {
        clock.Advance(TimeSpan.FromHours(1));
        var now = clock.GetUtcNow();
        var before = All("pods").Select(NameOf).ToHashSet();
        var victim = All("pods").First(p => p["spec"]?["nodeName"] is not null && OwnerKind(p) == "ReplicaSet" && (string?)p["metadata"]!["namespace"] != "payments");
        var outcome = await client.EvictPodAsync((string)victim["metadata"]!["namespace"]!, NameOf(victim), (string)victim["metadata"]!["uid"]!, 30, default);
        Assert.Equal(EvictionResult.Evicted, outcome.Result);

        var terminating = All("pods").Single(p => NameOf(p) == NameOf(victim));
        Assert.Equal(KubeTime.Format(now.AddSeconds(30)), Stamp(terminating, "deletionTimestamp"));
        var replacement = Assert.Single(All("pods"), p => !before.Contains(NameOf(p)));
        Assert.Equal(KubeTime.Format(now), Stamp(replacement, "creationTimestamp"));
    }

    [Fact]
    public void ANodeJoiningAndLeavingAndWhatLandsOnItAreStampedWithTheServersClock()
    {
        clock.Advance(TimeSpan.FromHours(2));
        var joined = clock.GetUtcNow();
        var before = All("pods").Select(NameOf).ToHashSet();
        demo.JoinNode("spot-mh-1", "mh.vs1.2xlarge-iad", new Dictionary<string, string> { ["nodepool.ngpc.rxt.io/name"] = "pool-a" }, []);
        var node = demo.Api.Store.Get("nodes", null, "spot-mh-1")!.ToJsonObject();
        Assert.Equal(KubeTime.Format(joined), Stamp(node, "creationTimestamp"));
        var onIt = All("pods").Where(p => (string?)p["spec"]?["nodeName"] == "spot-mh-1").ToArray();
        Assert.Contains(onIt, p => OwnerKind(p) == "DaemonSet");
        Assert.All(onIt.Where(p => !before.Contains(NameOf(p))), p => Assert.Equal(KubeTime.Format(joined), Stamp(p, "creationTimestamp")));
        // A pending pod scheduled onto it starts then.
        var scheduled = Assert.Single(onIt, p => before.Contains(NameOf(p)));
        Assert.Equal(KubeTime.Format(joined.AddSeconds(1)), (string?)scheduled["status"]!["startTime"]);

        clock.Advance(TimeSpan.FromMinutes(10));
        var left = clock.GetUtcNow();
        var present = All("pods").Select(NameOf).ToHashSet();
        Assert.True(demo.RemoveNode("spot-mh-1"));
        var recreated = All("pods").Where(p => !present.Contains(NameOf(p))).ToArray();
        Assert.NotEmpty(recreated);   // the trainer comes back Pending
        Assert.All(recreated, p => Assert.Equal(KubeTime.Format(left), Stamp(p, "creationTimestamp")));
    }

    [Fact]
    public void ChurnStepsStampWithTheServersClock()
    {
        int created = 0, deleted = 0;
        for (int i = 0; i < 20; i++)
        {
            clock.Advance(TimeSpan.FromMinutes(3));
            var now = clock.GetUtcNow();
            var before = All("pods").ToDictionary(p => (string)p["metadata"]!["namespace"]! + "/" + NameOf(p), p => p);
            demo.Step();
            foreach (var p in All("pods"))
            {
                var key = (string)p["metadata"]!["namespace"]! + "/" + NameOf(p);
                if (!before.TryGetValue(key, out var was)) { Assert.Equal(KubeTime.Format(now), Stamp(p, "creationTimestamp")); created++; }
                else if (Stamp(was, "deletionTimestamp") is null && Stamp(p, "deletionTimestamp") is { } deleting) { Assert.Equal(KubeTime.Format(now.AddSeconds(30)), deleting); deleted++; }
            }
        }
        // The steps did churn: both checks above ran.
        Assert.True(created > 0 && deleted > 0, $"{created} pods created, {deleted} marked for deletion in 20 steps");
    }

    [Fact]
    public async Task AnObjectCreatedThroughTheApiWithoutACreationTimestampGetsTheServersClock()
    {
        clock.Advance(TimeSpan.FromDays(3));
        using var http = Client(demo.Api);
        var response = await http.PostAsJsonAsync("/api/v1/namespaces/default/pods", SimplePod("default", "made-by-hand"));
        Assert.True(response.IsSuccessStatusCode, response.StatusCode.ToString());
        var pod = demo.Api.Store.Get("pods", "default", "made-by-hand")!.ToJsonObject();
        Assert.Equal(KubeTime.Format(clock.GetUtcNow()), Stamp(pod, "creationTimestamp"));
    }
}
