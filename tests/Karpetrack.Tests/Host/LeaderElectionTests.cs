using System.Text.Json.Nodes;
using k8s.Models;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Host;

/// <summary>
/// LeaderElector against the embedded API server, with short client-go style timings on a clock the test
/// moves: the clock moves only while every running elector is parked in its pause between attempts (no
/// request in flight), so what a test sees does not depend on how busy the machine is.
/// </summary>
public sealed class LeaderElectionTests : IAsyncLifetime
{
    private static readonly LeaderElectionOptions Short = new()
    {
        LeaseDuration = TimeSpan.FromSeconds(2),
        RenewDeadline = TimeSpan.FromSeconds(1),
        RetryPeriod = TimeSpan.FromMilliseconds(200),
    };

    /// <summary>Longer than any pause between attempts (a non-leader's is jittered up to 1.2 retry periods).</summary>
    private static readonly TimeSpan Pause = Short.RetryPeriod * 1.25;

    private static readonly DateTimeOffset Start = new(2026, 1, 1, 0, 0, 0, 500, TimeSpan.Zero);

    private readonly TimerClock clock = new(Start);
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

    private LeaderElector Elector(string identity, LeaderElectionOptions? options = null, TimeProvider? time = null) =>
        new(NewClient(), "kube-system", "karpetrack", identity, options ?? Short, NullLogger.Instance, time ?? clock);

    /// <summary>Until each of the <paramref name="running"/> electors has made its attempt and is pausing.</summary>
    private Task SettledAsync(int running) => clock.WhenDelaysPending(running);

    /// <summary>Moves the clock on once every running elector pauses, then waits until each pauses again.</summary>
    private async Task StepAsync(int running, TimeSpan by)
    {
        await SettledAsync(running);
        clock.Advance(by);
        await SettledAsync(running);
    }

    private JsonObject LeaseSpec() => server.Store.Get("leases", "kube-system", "karpetrack")!.ToJsonObject()["spec"]!.AsObject();

    private static string KubeTime(DateTimeOffset t) => LeaderElector.MicroTime(t.UtcDateTime).ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'");

    [Fact]
    public async Task FirstAcquires_SecondWaitsWhileTheFirstRenews()
    {
        using var stop = new CancellationTokenSource();
        var a = Elector("a");
        var changes = new List<bool>();
        a.LeadershipChanged += changes.Add;
        var runA = a.RunAsync(stop.Token);
        await SettledAsync(1);
        Assert.True(a.IsLeader);
        var spec = LeaseSpec();
        Assert.Equal("a", (string?)spec["holderIdentity"]);
        Assert.Equal(2, (int)spec["leaseDurationSeconds"]!);
        Assert.Equal(0, (int)spec["leaseTransitions"]!);
        Assert.Equal(KubeTime(Start), (string?)spec["renewTime"]);
        Assert.Equal(KubeTime(Start), (string?)spec["acquireTime"]);

        var b = Elector("b");
        var runB = b.RunAsync(stop.Token);
        await SettledAsync(2);
        Assert.False(b.IsLeader);
        // Well past the lease duration: the holder renews on every pause, so b never gets it.
        while (clock.GetUtcNow() < Start + 2 * Short.LeaseDuration)
        {
            await StepAsync(2, Pause);
            Assert.True(a.IsLeader);
            Assert.False(b.IsLeader);
            spec = LeaseSpec();
            Assert.Equal("a", (string?)spec["holderIdentity"]);
            Assert.Equal(KubeTime(clock.GetUtcNow()), (string?)spec["renewTime"]);   // renewed just now
            Assert.Equal(KubeTime(Start), (string?)spec["acquireTime"]);
            Assert.Equal(0, (int)spec["leaseTransitions"]!);
        }

        stop.Cancel();
        await Task.WhenAll(runA, runB);
        Assert.Equal([true, false], changes);
    }

    [Fact]
    public async Task ConcurrentElectors_NeverTwoLeadersAtOnce_EvenAcrossHandovers()
    {
        var stops = Enumerable.Range(0, 3).Select(_ => new CancellationTokenSource()).ToArray();
        var electors = Enumerable.Range(0, 3).Select(i => Elector($"replica-{i}")).ToArray();
        var gate = new object();
        int leading = 0, most = 0;
        foreach (var e in electors)
            e.LeadershipChanged += leader => { lock (gate) { leading += leader ? 1 : -1; most = Math.Max(most, leading); } };
        // All three start at once: each finds no lease and tries to create it; one create wins.
        var runs = electors.Select((e, i) => e.RunAsync(stops[i].Token)).ToArray();
        var running = 3;
        await SettledAsync(running);
        var first = Assert.Single(electors, e => e.IsLeader);

        for (var i = 0; i < 5; i++)
        {
            await StepAsync(running, Pause);
            Assert.Same(first, Assert.Single(electors, e => e.IsLeader));
        }

        // The leader shuts down (releasing the lease); another takes over on its next attempt.
        var index = Array.IndexOf(electors, first);
        stops[index].Cancel();
        await runs[index];
        Assert.False(first.IsLeader);
        running--;
        await StepAsync(running, Pause);
        var second = Assert.Single(electors, e => e.IsLeader);
        Assert.NotSame(first, second);
        Assert.Equal(second.Identity, (string?)LeaseSpec()["holderIdentity"]);
        for (var i = 0; i < 5; i++)
        {
            await StepAsync(running, Pause);
            Assert.Same(second, Assert.Single(electors, e => e.IsLeader));
        }

        foreach (var s in stops) s.Cancel();
        await Task.WhenAll(runs);
        Assert.All(electors, e => Assert.False(e.IsLeader));
        Assert.Equal(1, most);
        Assert.Equal(0, leading);
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
        await SettledAsync(1);
        Assert.True(a.IsLeader);
        var runB = b.RunAsync(stopB.Token);
        await StepAsync(2, Pause);
        Assert.False(b.IsLeader);

        stopA.Cancel();
        await runA;
        Assert.False(a.IsLeader);
        var released = LeaseSpec();
        Assert.Equal("", (string?)released["holderIdentity"]);
        Assert.Equal(1, (int)released["leaseDurationSeconds"]!);

        // One pause of b's, not the 10 s lease.
        await StepAsync(1, Pause);
        Assert.True(b.IsLeader);
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
        DateTimeOffset? lostAt = null, termEndedAt = null;
        a.LeadershipChanged += leader => { if (!leader) lostAt ??= clock.GetUtcNow(); };
        var run = a.RunAsync(stop.Token);
        await SettledAsync(1);
        Assert.True(a.IsLeader);
        var lastRenew = Start;
        Assert.Equal(KubeTime(lastRenew), (string?)LeaseSpec()["renewTime"]);
        using var onTermEnd = a.Term.Register(() => termEndedAt ??= clock.GetUtcNow());

        server.Faults.FailNext(1000, 500, pathContains: "/leases");
        var step = TimeSpan.FromMilliseconds(50);
        while (a.IsLeader && clock.GetUtcNow() < Start + 2 * Short.LeaseDuration)
            await StepAsync(1, step);

        Assert.False(a.IsLeader);
        // It kept trying until RenewDeadline after the last renewal, and let go then: others may take the
        // lease over only LeaseDuration after that renewal.
        Assert.NotNull(lostAt);
        Assert.InRange(lostAt.Value, lastRenew + Short.RenewDeadline, lastRenew + Short.RenewDeadline + step);
        Assert.True(lostAt < lastRenew + Short.LeaseDuration, $"stepped down at {lostAt:O}, last renewal {lastRenew:O}");
        // Its writes were fenced off no later than that.
        Assert.NotNull(termEndedAt);
        Assert.True(termEndedAt <= lostAt, $"term ended {termEndedAt:O}, stepped down {lostAt:O}");
        Assert.True(a.Term.IsCancellationRequested);
        stop.Cancel();
        await run;
    }

    [Fact]
    public async Task LeaseHeldByAnotherHolder_IsRespectedUntilItExpiresByOurClock()
    {
        // The holder's clock runs an hour behind: its renewTime says long expired, but expiry is counted by
        // our own clock from when we first saw the lease as it is.
        using var client = new KubeClient(connection, TimeSpan.FromSeconds(5));
        var skewed = LeaderElector.MicroTime((Start - TimeSpan.FromHours(1)).UtcDateTime);
        await client.CreateLeaseAsync(new V1Lease
        {
            ApiVersion = "coordination.k8s.io/v1",
            Kind = "Lease",
            Metadata = new V1ObjectMeta { Name = "karpetrack", NamespaceProperty = "kube-system" },
            Spec = new V1LeaseSpec
            {
                HolderIdentity = "someone-else", LeaseDurationSeconds = 2,
                AcquireTime = skewed, RenewTime = skewed, LeaseTransitions = 4,
            },
        }, default);

        using var stop = new CancellationTokenSource();
        var b = Elector("b");
        DateTimeOffset? ledAt = null;
        b.LeadershipChanged += leader => { if (leader) ledAt ??= clock.GetUtcNow(); };
        var run = b.RunAsync(stop.Token);
        var step = TimeSpan.FromMilliseconds(50);
        while (!b.IsLeader && clock.GetUtcNow() < Start + 3 * TimeSpan.FromSeconds(2))
        {
            await StepAsync(1, step);
            if (clock.GetUtcNow() < Start + TimeSpan.FromSeconds(2))
            {
                Assert.False(b.IsLeader);
                Assert.Equal("someone-else", (string?)LeaseSpec()["holderIdentity"]);
            }
        }

        // b leads: not before the 2 s lease ran out by our clock, and on its first attempt after that (its
        // pause, and at most one step more that the clock moved past the pause's end).
        Assert.True(b.IsLeader);
        Assert.NotNull(ledAt);
        Assert.InRange(ledAt.Value, Start + TimeSpan.FromSeconds(2), Start + TimeSpan.FromSeconds(2) + Pause + step);
        var spec = LeaseSpec();
        Assert.Equal("b", (string?)spec["holderIdentity"]);
        Assert.Equal(5, (int)spec["leaseTransitions"]!);
        Assert.Equal(KubeTime(ledAt.Value), (string?)spec["acquireTime"]);
        // And it goes on leading: the next pause renews.
        await StepAsync(1, Pause);
        Assert.True(b.IsLeader);
        Assert.Equal(KubeTime(clock.GetUtcNow()), (string?)LeaseSpec()["renewTime"]);
        stop.Cancel();
        await run;
        Assert.False(b.IsLeader);
    }

    [Fact]
    public async Task ClockOnAWholeSecond_StillWritesMicroTimesTheServerAccepts()
    {
        // The library writes such a time without fractional digits, which the API server refuses.
        var whole = new TimerClock(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var a = Elector("a", time: whole);
        using var stop = new CancellationTokenSource();
        var run = a.RunAsync(stop.Token);

        await whole.WhenDelaysPending(1);
        Assert.True(a.IsLeader);
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
}
