using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>Timings of client-go's leader election, with its defaults.</summary>
public sealed record LeaderElectionOptions
{
    /// <summary>How long others wait, from when they last saw the lease change, before taking it over.</summary>
    public TimeSpan LeaseDuration { get; init; } = TimeSpan.FromSeconds(15);
    /// <summary>How long a leader keeps trying to renew before it steps down; shorter than LeaseDuration.</summary>
    public TimeSpan RenewDeadline { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Pause between attempts to acquire or renew.</summary>
    public TimeSpan RetryPeriod { get; init; } = TimeSpan.FromSeconds(2);
}

/// <summary>
/// Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it: a
/// lease is taken over only when it has not changed for its duration as measured by our own clock
/// (immune to clock skew between replicas), writes are optimistic (PUT with resourceVersion; a 409
/// means another replica won), and a leader that cannot renew within RenewDeadline steps down
/// before anyone else could take the lease.
/// </summary>
public sealed class LeaderElector
{
    private readonly KubeClient kube;
    private readonly string ns, leaseName;
    private readonly LeaderElectionOptions options;
    private readonly ILogger log;
    private readonly TimeProvider clock;

    // What we last saw of the lease and when (by our clock) it last changed.
    private LeaseRecord? observed;
    private V1Lease? observedObject;
    private DateTimeOffset observedAt;
    private volatile bool isLeader;
    private readonly object termGate = new();
    private CancellationTokenSource term = Ended();

    public LeaderElector(KubeClient kube, string ns, string leaseName, string identity, LeaderElectionOptions options, ILogger log, TimeProvider? clock = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(identity);
        if (options.RenewDeadline >= options.LeaseDuration) throw new ArgumentException("RenewDeadline must be shorter than LeaseDuration", nameof(options));
        if (options.RetryPeriod >= options.RenewDeadline) throw new ArgumentException("RetryPeriod must be shorter than RenewDeadline", nameof(options));
        this.kube = kube;
        this.ns = ns;
        this.leaseName = leaseName;
        this.options = options;
        this.log = log;
        this.clock = clock ?? TimeProvider.System;
        Identity = identity;
    }

    public bool IsLeader => isLeader;

    /// <summary>
    /// Fencing: the token of the current leadership term. It is cancelled when leadership is lost or
    /// released, and by itself once RenewDeadline has passed since the last renewal (even if the loop
    /// that renews is stuck), which is before any other replica may take the lease over. Every write
    /// the leader makes checks it; when not leading it is already cancelled.
    /// </summary>
    public CancellationToken Term { get { lock (termGate) return term.Token; } }

    private static CancellationTokenSource Ended()
    {
        var ended = new CancellationTokenSource();
        ended.Cancel();
        return ended;
    }

    /// <summary>After a successful acquire or renew: the term lasts until RenewDeadline after this renewal.</summary>
    private void Renewed(DateTimeOffset at)
    {
        lastRenewal = at;
        lock (termGate)
        {
            if (term.IsCancellationRequested) term = new CancellationTokenSource(Timeout.InfiniteTimeSpan, clock);
            var left = at + options.RenewDeadline - clock.GetUtcNow();
            if (left <= TimeSpan.Zero) term.Cancel();
            else term.CancelAfter(left);
        }
    }

    private void EndTerm()
    {
        lock (termGate) term.Cancel();
    }
    public string Identity { get; }

    /// <summary>Raised with true on acquiring the lease and false on losing or releasing it.</summary>
    public event Action<bool>? LeadershipChanged;

    /// <summary>POD_NAMESPACE (the downward API), else "default".</summary>
    public static string DefaultNamespace() =>
        Environment.GetEnvironmentVariable("POD_NAMESPACE") is { Length: > 0 } ns ? ns : "default";

    /// <summary>
    /// Tries to acquire, then renews while leader; steps down (and goes back to trying) when a renewal
    /// does not succeed within RenewDeadline. On cancellation a leader releases the lease so that the
    /// next replica need not wait out its duration.
    /// </summary>
    public async Task RunAsync(CancellationToken ct)
    {
        try
        {
            while (!ct.IsCancellationRequested)
            {
                if (!isLeader)
                {
                    if (await TryAcquireOrRenewAsync(options.RetryPeriod, ct).ConfigureAwait(false))
                    {
                        SetLeader(true);
                        continue;
                    }
                    // client-go jitters acquisition (factor 1.2) so that replicas do not retry in step.
                    await Task.Delay(options.RetryPeriod * (1 + Random.Shared.NextDouble() * 0.2), clock, ct).ConfigureAwait(false);
                    continue;
                }

                await Task.Delay(options.RetryPeriod, clock, ct).ConfigureAwait(false);
                // Keep trying until the deadline, which is measured from the last renewal, so a leader
                // whose writes fail lets go before others see the lease expire.
                var deadline = lastRenewal + options.RenewDeadline;
                var renewed = false;
                while (!renewed && clock.GetUtcNow() < deadline)
                {
                    renewed = await TryAcquireOrRenewAsync(deadline - clock.GetUtcNow(), ct).ConfigureAwait(false);
                    if (renewed) break;
                    var wait = Min(options.RetryPeriod, deadline - clock.GetUtcNow());
                    if (wait > TimeSpan.Zero) await Task.Delay(wait, clock, ct).ConfigureAwait(false);
                }
                if (!renewed)
                {
                    log.LogWarning("Leader election: could not renew lease {Namespace}/{Lease} within {Deadline}; stepping down", ns, leaseName, options.RenewDeadline);
                    SetLeader(false);
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        finally
        {
            if (isLeader)
            {
                EndTerm();   // no write of ours after this point, then the lease goes
                await ReleaseAsync().ConfigureAwait(false);
                SetLeader(false);
            }
        }
    }

    private DateTimeOffset lastRenewal;

    private void SetLeader(bool leader)
    {
        if (!leader) EndTerm();
        if (isLeader == leader) return;
        isLeader = leader;
        log.LogInformation("Leader election: {Identity} {Change} lease {Namespace}/{Lease}", Identity, leader ? "acquired" : "lost", ns, leaseName);
        LeadershipChanged?.Invoke(leader);
    }

    private sealed record LeaseRecord(string Holder, int DurationSeconds, DateTime? AcquireTime, DateTime? RenewTime, int Transitions);

    private static LeaseRecord RecordOf(V1Lease lease)
    {
        var spec = lease.Spec;
        return new LeaseRecord(spec?.HolderIdentity ?? "", spec?.LeaseDurationSeconds ?? 0, spec?.AcquireTime, spec?.RenewTime, spec?.LeaseTransitions ?? 0);
    }

    /// <summary>
    /// kube's MicroTime, which the API server parses with exactly six fractional digits. The library
    /// writes a time that falls on a whole second without any, which the server would refuse; that
    /// second is moved on by one microsecond.
    /// </summary>
    public static DateTime MicroTime(DateTime t)
    {
        var utc = t.ToUniversalTime().Ticks;
        var ticks = utc - utc % 10;
        if (ticks % TimeSpan.TicksPerSecond == 0) ticks += 10;
        return new DateTime(ticks, DateTimeKind.Utc);
    }

    /// <summary>One attempt, bounded by <paramref name="budget"/>; true when we hold the lease afterwards.</summary>
    private async Task<bool> TryAcquireOrRenewAsync(TimeSpan budget, CancellationToken ct)
    {
        if (budget <= TimeSpan.Zero) return false;
        using var bounded = new CancellationTokenSource(budget, clock);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, bounded.Token);
        var started = clock.GetUtcNow();
        var now = started.UtcDateTime;
        try
        {
            var current = await kube.ReadLeaseAsync(ns, leaseName, linked.Token).ConfigureAwait(false);
            if (current is null)
            {
                var created = await kube.CreateLeaseAsync(new V1Lease
                {
                    ApiVersion = "coordination.k8s.io/v1",
                    Kind = "Lease",
                    Metadata = new V1ObjectMeta { Name = leaseName, NamespaceProperty = ns },
                    Spec = Spec(Identity, now, now, 0),
                }, linked.Token).ConfigureAwait(false);
                Observe(created, started);
                Renewed(started);
                return true;
            }

            var record = RecordOf(current);
            if (observed != record) Observe(current, started);
            if (record.Holder.Length > 0 && record.Holder != Identity
                && observedAt + TimeSpan.FromSeconds(record.DurationSeconds) > clock.GetUtcNow())
                return false;   // held, and not yet expired by our clock

            var mine = record.Holder == Identity;
            // The read's resourceVersion goes back with the write: a rival write in between is a 409.
            var replacement = current with { Spec = Spec(Identity, mine ? record.AcquireTime ?? now : now, now, mine ? record.Transitions : record.Transitions + 1) };
            var updated = await kube.ReplaceLeaseAsync(replacement, linked.Token).ConfigureAwait(false);
            Observe(updated, started);
            Renewed(started);
            return true;
        }
        catch (KubeApiException e) when (e.StatusCode == 409)
        {
            return false;   // someone else wrote first
        }
        catch (Exception e) when (e is KubeApiException or HttpRequestException or TimeoutException or KubeConfigException
                                  || (e is OperationCanceledException && !ct.IsCancellationRequested))
        {
            log.LogDebug("Leader election: attempt on {Namespace}/{Lease} failed: {Error}", ns, leaseName, e.Message);
            return false;
        }
    }

    private V1LeaseSpec Spec(string holder, DateTime acquireTime, DateTime renewTime, int transitions) => new()
    {
        HolderIdentity = holder,
        LeaseDurationSeconds = (int)Math.Ceiling(options.LeaseDuration.TotalSeconds),
        AcquireTime = MicroTime(acquireTime),
        RenewTime = MicroTime(renewTime),
        LeaseTransitions = transitions,
    };

    private void Observe(V1Lease lease, DateTimeOffset at)
    {
        observed = RecordOf(lease);
        observedObject = lease;
        observedAt = at;
    }

    /// <summary>
    /// As client-go's ReleaseOnCancel: clear the holder and shorten the duration to one second, so
    /// another replica takes over on its next attempt. Only from the version we last wrote.
    /// </summary>
    private async Task ReleaseAsync()
    {
        if (observedObject is null || observed?.Holder != Identity) return;
        var now = MicroTime(clock.GetUtcNow().UtcDateTime);
        var released = observedObject with
        {
            Spec = new V1LeaseSpec
            {
                HolderIdentity = "",
                LeaseDurationSeconds = 1,
                AcquireTime = now,
                RenewTime = now,
                LeaseTransitions = observed.Transitions,
            },
        };
        try
        {
            using var bounded = new CancellationTokenSource(options.RenewDeadline, clock);
            await kube.ReplaceLeaseAsync(released, bounded.Token).ConfigureAwait(false);
            log.LogInformation("Leader election: released lease {Namespace}/{Lease}", ns, leaseName);
        }
        catch (Exception e) when (e is KubeApiException or HttpRequestException or TimeoutException or KubeConfigException or OperationCanceledException)
        {
            log.LogWarning("Leader election: could not release lease {Namespace}/{Lease}: {Error}", ns, leaseName, e.Message);
        }
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
