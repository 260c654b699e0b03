using System.Diagnostics;
using System.Text.Json.Nodes;
using k8s.Models;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests;

/// <summary>LeaderElector against the embedded API server, with short client-go style timings.</summary>
public sealed class LeaderElectionTests : IAsyncLifetime
{
    private static readonly LeaderElectionOptions Short = new()
    {
        LeaseDuration = TimeSpan.FromSeconds(2),
        RenewDeadline = TimeSpan.FromSeconds(1),
        RetryPeriod = TimeSpan.FromMilliseconds(200),
    };

    private const string LeasePath = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/karpetrack";

    private KubeApiServer server = null!;
    private KubeConnection connection = null!;
    private string dir = null!;
    private readonly List<KubeClient> clients = [];

    public async Task InitializeAsync()
    {
        server = await KubeApiServer.StartAsync(new KubeApiServerOptions());
        server.Store.Register(ResourceType.Leases);
        dir = Directory.CreateTempSubdirectory("karpetrack-leader-").FullName;
        connection = KubeConnection.Resolve(server.WriteKubeconfig(Path.Combine(dir, "kubeconfig")), null, KubeEnvironment.Process);
    }

    public async Task DisposeAsync()
    {
        foreach (var c in clients) c.Dispose();
        await server.DisposeAsync();
        Directory.Delete(dir, recursive: true);
    }

    private KubeClient NewClient()
    {
        var c = new KubeClient(connection, TimeSpan.FromSeconds(5));
        clients.Add(c);
        return c;
    }

    private LeaderElector Elector(string identity, LeaderElectionOptions? options = null) =>
        new(NewClient(), "kube-system", "karpetrack", identity, options ?? Short, NullLogger.Instance);

    private static async Task<bool> EventuallyAsync(Func<bool> condition, TimeSpan within)
    {
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < within)
        {
            if (condition()) return true;
            await Task.Delay(20);
        }
        return condition();
    }

    private JsonObject LeaseSpec() => server.Store.Get("leases", "kube-system", "karpetrack")!.ToJsonObject()["spec"]!.AsObject();

    [Fact]
    public async Task FirstAcquires_SecondWaitsWhileTheFirstRenews()
    {
        using var stop = new CancellationTokenSource();
        // A renew deadline with room to spare: this test is about waiting, and a busy machine (the
        // whole suite on 2 cores) can delay one renewal by more than a second.
        var roomy = new LeaderElectionOptions { LeaseDuration = TimeSpan.FromSeconds(3), RenewDeadline = TimeSpan.FromMilliseconds(2500), RetryPeriod = TimeSpan.FromMilliseconds(200) };
        var a = Elector("a", roomy);
        var changes = new List<bool>();
        a.LeadershipChanged += changes.Add;
        var runA = a.RunAsync(stop.Token);
        Assert.True(await EventuallyAsync(() => a.IsLeader, TimeSpan.FromSeconds(3)));
        var spec = LeaseSpec();
        Assert.Equal("a", (string?)spec["holderIdentity"]);
        Assert.Equal(3, (int)spec["leaseDurationSeconds"]!);
        Assert.Equal(0, (int)spec["leaseTransitions"]!);
        Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", (string)spec["renewTime"]!);
        var firstRenew = (string)spec["renewTime"]!;

        var b = Elector("b", roomy);
        var runB = b.RunAsync(stop.Token);
        // Longer than the lease duration: the holder keeps renewing, so b never gets it.
        for (var i = 0; i < 40; i++)
        {
            await Task.Delay(100);
            Assert.True(a.IsLeader);
            Assert.False(b.IsLeader);
        }
        Assert.NotEqual(firstRenew, (string)LeaseSpec()["renewTime"]!);
        Assert.Equal("a", (string?)LeaseSpec()["holderIdentity"]);

        stop.Cancel();
        await Task.WhenAll(runA, runB);
        Assert.Equal([true, false], changes);
    }

    [Fact]
    public async Task ConcurrentElectors_NeverTwoLeadersAtOnce_EvenAcrossHandovers()
    {
        var stops = Enumerable.Range(0, 3).Select(_ => new CancellationTokenSource()).ToArray();
        var electors = Enumerable.Range(0, 3).Select(i => Elector($"replica-{i}")).ToArray();
        var runs = electors.Select((e, i) => e.RunAsync(stops[i].Token)).ToArray();
        var sawLeader = new HashSet<string>();
        var sw = Stopwatch.StartNew();
        var handedOver = false;
        while (sw.Elapsed < TimeSpan.FromSeconds(5))
        {
            var leaders = electors.Where(e => e.IsLeader).Select(e => e.Identity).ToArray();
            Assert.True(leaders.Length <= 1, $"two leaders at {sw.Elapsed}: {string.Join(", ", leaders)}");
            foreach (var l in leaders) sawLeader.Add(l);
            if (!handedOver && sw.Elapsed > TimeSpan.FromSeconds(2) && leaders.Length == 1)
            {
                // The leader shuts down; another must take over, and never while it still leads.
                stops[Array.FindIndex(electors, e => e.Identity == leaders[0])].Cancel();
                handedOver = true;
            }
            await Task.Delay(10);
        }
        foreach (var s in stops) s.Cancel();
        await Task.WhenAll(runs);
        Assert.True(sawLeader.Count >= 2, $"leaders seen: {string.Join(", ", sawLeader)}");
        Assert.All(electors, e => Assert.False(e.IsLeader));
    }

    [Fact]
    public async Task ReleaseOnShutdown_LetsTheOtherTakeOverWithinAboutOneRetryPeriod()
    {
        // A long lease: taking over in well under its duration is only possible after a release.
        var options = Short with { LeaseDuration = TimeSpan.FromSeconds(10), RenewDeadline = TimeSpan.FromSeconds(5) };
        using var stopA = new CancellationTokenSource();
        using var stopB = new CancellationTokenSource();
        var a = Elector("a", options);
        var b = Elector("b", options);
        var runA = a.RunAsync(stopA.Token);
        Assert.True(await EventuallyAsync(() => a.IsLeader, TimeSpan.FromSeconds(3)));
        var runB = b.RunAsync(stopB.Token);
        await Task.Delay(500);
        Assert.False(b.IsLeader);

        stopA.Cancel();
        await runA;
        Assert.False(a.IsLeader);
        var released = LeaseSpec();
        Assert.Equal("", (string?)released["holderIdentity"]);
        Assert.Equal(1, (int)released["leaseDurationSeconds"]!);

        var sw = Stopwatch.StartNew();
        Assert.True(await EventuallyAsync(() => b.IsLeader, TimeSpan.FromSeconds(3)));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(1), $"took {sw.Elapsed}");
        Assert.Equal("b", (string?)LeaseSpec()["holderIdentity"]);
        Assert.Equal(1, (int)LeaseSpec()["leaseTransitions"]!);
        stopB.Cancel();
        await runB;
    }

    [Fact]
    public async Task ApiServerRefusingRenewals_LeaderStepsDownBeforeTheLeaseCouldExpire()
    {
        using var stop = new CancellationTokenSource();
        var a = Elector("a");
        var lost = new TaskCompletionSource<TimeSpan>();
        var sw = new Stopwatch();
        a.LeadershipChanged += leader => { if (!leader) lost.TrySetResult(sw.Elapsed); };
        var run = a.RunAsync(stop.Token);
        Assert.True(await EventuallyAsync(() => a.IsLeader, TimeSpan.FromSeconds(3)));
        var lastRenew = KubeTimeMicro((string)LeaseSpec()["renewTime"]!);

        sw.Start();
        server.Faults.FailNext(1000, 500, pathContains: "/leases");
        var after = await lost.Task.WaitAsync(TimeSpan.FromSeconds(5));
        var steppedDownAt = DateTimeOffset.UtcNow;
        Assert.False(a.IsLeader);
        // RenewDeadline (1 s) after the last renewal, plus scheduling: under a full test run on two cores
        // this has taken 1.64 s, so the bound is the lease itself rather than the deadline plus 0.5 s.
        Assert.True(after > Short.RetryPeriod && after < Short.LeaseDuration, $"stepped down after {after}");
        // Others may take over only LeaseDuration after the last renewal; we let go before that.
        Assert.True(steppedDownAt < lastRenew + Short.LeaseDuration + TimeSpan.FromMilliseconds(200), $"{steppedDownAt:O} vs renew {lastRenew:O}");
        stop.Cancel();
        await run;
    }

    [Fact]
    public async Task LeaseHeldByAnotherHolder_IsRespectedUntilItExpiresByOurClock()
    {
        using var client = new KubeClient(connection, TimeSpan.FromSeconds(5));
        var now = LeaderElector.MicroTime(DateTime.UtcNow);
        await client.CreateLeaseAsync(new V1Lease
        {
            ApiVersion = "coordination.k8s.io/v1",
            Kind = "Lease",
            Metadata = new V1ObjectMeta { Name = "karpetrack", NamespaceProperty = "kube-system" },
            Spec = new V1LeaseSpec
            {
                HolderIdentity = "someone-else", LeaseDurationSeconds = 2,
                AcquireTime = now, RenewTime = now, LeaseTransitions = 4,
            },
        }, default);

        using var stop = new CancellationTokenSource();
        var a = Elector("a");
        var sw = Stopwatch.StartNew();
        var run = a.RunAsync(stop.Token);
        await Task.Delay(1200);
        Assert.False(a.IsLeader);
        Assert.Equal("someone-else", (string?)LeaseSpec()["holderIdentity"]);

        Assert.True(await EventuallyAsync(() => a.IsLeader, TimeSpan.FromSeconds(4)));
        Assert.True(sw.Elapsed >= TimeSpan.FromSeconds(2), $"took over after {sw.Elapsed}, before the lease's 2 s");
        Assert.Equal("a", (string?)LeaseSpec()["holderIdentity"]);
        Assert.Equal(5, (int)LeaseSpec()["leaseTransitions"]!);
        stop.Cancel();
        await run;
    }

    [Fact]
    public async Task ClockOnAWholeSecond_StillWritesMicroTimesTheServerAccepts()
    {
        // The library writes such a time without fractional digits, which the API server refuses.
        var clock = new ManualClock(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var a = new LeaderElector(NewClient(), "kube-system", "karpetrack", "a", Short, NullLogger.Instance, clock);
        using var stop = new CancellationTokenSource();
        var run = a.RunAsync(stop.Token);

        Assert.True(await EventuallyAsync(() => a.IsLeader, TimeSpan.FromSeconds(5)));
        Assert.Equal("2026-01-01T00:00:00.000001Z", (string?)LeaseSpec()["renewTime"]);
        Assert.Equal("2026-01-01T00:00:00.000001Z", (string?)LeaseSpec()["acquireTime"]);
        stop.Cancel();
        await run;
    }

    [Fact]
    public void DefaultNamespace_FromPodNamespaceElseDefault()
    {
        var saved = Environment.GetEnvironmentVariable("POD_NAMESPACE");
        try
        {
            Environment.SetEnvironmentVariable("POD_NAMESPACE", "karpetrack-system");
            Assert.Equal("karpetrack-system", LeaderElector.DefaultNamespace());
            Environment.SetEnvironmentVariable("POD_NAMESPACE", null);
            Assert.Equal("default", LeaderElector.DefaultNamespace());
        }
        finally
        {
            Environment.SetEnvironmentVariable("POD_NAMESPACE", saved);
        }
    }

    private static DateTimeOffset KubeTimeMicro(string s) =>
        DateTimeOffset.ParseExact(s, "yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", System.Globalization.CultureInfo.InvariantCulture,
            System.Globalization.DateTimeStyles.AssumeUniversal | System.Globalization.DateTimeStyles.AdjustToUniversal);
}
