using System.Text.Json.Nodes;
using Karpetrack.Simulation;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace Karpetrack.Tests;

/// <summary>
/// Issue 16's proof: the demo rig (embedded API server, Spot fake deleting pools asynchronously) in
/// auto mode, with Karpetrack killed and restarted as a fresh process at the steps of every operation
/// type, the lease handed to a second replica mid-drain, a pool pre-empted mid-drain, 5xx and 429
/// storms from both APIs during a drain, and a --node-selector hiding the managed nodes; after each run
/// the invariants of <see cref="FaultInvariants"/> hold. The default run crashes at a sample of the
/// steps (the first and last write of each step kind of each operation type, before and after it
/// lands); KARPETRACK_FAULT_SWEEP=full (<c>make bench ARGS=faults</c>) crashes at every write.
/// </summary>
public class FaultInjectionTests(ITestOutputHelper output)
{
    public static ActuationOptions Auto() => new()
    {
        Mode = ActuationMode.Auto,
        Cloudspace = "demo",
        ScaleUpCooldown = TimeSpan.FromSeconds(5),
        MaxDisruptedNodes = 1,
        MaxDisruptedPercentPerHour = 100,
        Tick = TimeSpan.FromMilliseconds(100),
        PoolSweep = TimeSpan.FromSeconds(5),
        // Evicted pods stay terminating for the API server's 2 s (on the rig's clock), so a crash can land mid-termination.
        MaxGracePeriod = TimeSpan.FromSeconds(10),
        DrainTimeout = TimeSpan.FromMinutes(5),
        ProvisioningTimeout = TimeSpan.FromMinutes(10),
    };

    private static bool FullSweep => Environment.GetEnvironmentVariable("KARPETRACK_FAULT_SWEEP") == "full";

    /// <summary>The demo as it is: pending pods to provision for, empty managed nodes, and nodes whose pods fit elsewhere.</summary>
    private static FaultSetup Demo() => new() { Options = Auto() };

    /// <summary>The class of the busiest managed node (not the ledger's, whose budget allows no disruption) gets expensive: replacing it pays.</summary>
    private static FaultSetup Replacement() => new()
    {
        Options = Auto() with { ScaleUpCooldown = TimeSpan.Zero },
        EditFeed = (feed, demo) =>
        {
            var pods = demo.Api.Store.List("pods").Items.Select(p => p.ToJsonObject())
                .Where(p => p["metadata"]?["ownerReferences"]?[0]?["kind"]?.GetValue<string>() == "ReplicaSet").ToList();
            int On(string node) => pods.Count(p => p["spec"]?["nodeName"]?.GetValue<string>() == node);
            bool Ledger(string node) => pods.Any(p => p["spec"]?["nodeName"]?.GetValue<string>() == node
                && p["metadata"]?["labels"]?["app.kubernetes.io/name"]?.GetValue<string>() == "ledger");
            var busiest = demo.ManagedNodes.Where(m => !Ledger(m.Node)).OrderByDescending(m => On(m.Node)).First();
            var c = feed["regions"]!["us-east-iad-1"]!["serverclasses"]![busiest.ServerClass]!;
            c["market_price"] = "0.900000";
            c["20_percentile"] = 0.9;
            c["50_percentile"] = 0.9;
            c["80_percentile"] = 0.9;
        },
    };

    private sealed record RunResult(string Point, WriteLabel? Hit, bool Settled, IReadOnlyList<string> Violations, int Steps, string Detail = "");

    /// <summary>One run with no fault: the writes process p1 makes, labelled, in order.</summary>
    private async Task<List<(long Seq, WriteLabel Label)>> ReferenceAsync(FaultSetup setup)
    {
        await using var rig = await FaultRig.StartAsync(setup);
        var p = await rig.StartProcessAsync("p1");
        Assert.True(await rig.SettleAsync(p), "the reference run never settled");
        rig.Check.CheckSettled(p);
        Assert.True(rig.Check.Violations.Count == 0, "the reference run: " + string.Join("\n", rig.Check.Violations));
        return rig.Journal.Records.Where(r => r.Caller == "p1" && FaultInvariants.Counts(r)).Select(r => (r.Seq, rig.Labels[r.Seq])).ToList();
    }

    /// <summary>
    /// p1 runs until its <paramref name="k"/>-th counted write, and dies right before it lands (the request never
    /// arrives) or right after (it landed, the answer is never read). p2, a fresh process, then runs until it settles.
    /// </summary>
    private static Task<RunResult> CrashRunAsync(FaultSetup setup, int k, bool before, string? restartSelector = null)
    {
        int n = 0;
        return CrashRunAsync(setup, (_, _) => ++n == k, $"{(before ? "before" : "after")} write {k}", before, restartSelector);
    }

    /// <summary>The same, dying at the first counted write of p1 that <paramref name="crashAt"/> picks.</summary>
    private static async Task<RunResult> CrashRunAsync(FaultSetup setup, Func<WriteRecord, WriteLabel, bool> crashAt, string point, bool before,
        string? restartSelector = null)
    {
        await using var rig = await FaultRig.StartAsync(setup);
        var p1 = await rig.StartProcessAsync("p1");
        WriteRecord? hit = null;
        rig.OnWrite(r =>
        {
            if (hit is not null || r.Caller != "p1" || !FaultInvariants.Counts(r) || !crashAt(r, rig.Labels[r.Seq])) return JournalVerdict.Proceed;
            hit = r;
            if (!before) return JournalVerdict.Proceed;
            p1.Kill(r.Seq + 1);
            return JournalVerdict.Drop;
        }, r =>
        {
            if (!before && ReferenceEquals(r, hit)) p1.Kill(r.Seq + 1);
        });
        await rig.RunUntilAsync(p1, () => p1.Dead, 200);
        if (!p1.Dead) return new RunResult(point, null, false, [$"p1 never made the write to crash at"], rig.Steps);
        var p2 = await rig.StartProcessAsync("p2", nodeSelector: restartSelector);
        bool settled = await rig.SettleAsync(p2);
        if (settled) rig.Check.CheckSettled(p2);
        return new RunResult(point, rig.Labels.GetValueOrDefault(hit!.Seq), settled, rig.Check.Violations, rig.Steps, settled ? "" : rig.Describe(p2));
    }

    /// <summary>The crash points of the default run: each step kind's first and last write within the first operation of each of <paramref name="types"/>.</summary>
    private static List<int> Sample(List<(long Seq, WriteLabel Label)> writes, string[] types)
    {
        var picked = new SortedSet<int>();
        foreach (var g in writes.Select((w, i) => (w.Label, K: i + 1)).Where(x => types.Contains(x.Label.Type)).GroupBy(x => x.Label.Type))
        {
            var firstOp = g.First().Label.Operation;
            foreach (var step in g.Where(x => x.Label.Operation == firstOp).GroupBy(x => x.Label.Step))
            {
                picked.Add(step.First().K);
                picked.Add(step.Last().K);
            }
        }
        return [.. picked];
    }

    private async Task<(int Runs, int Broken)> SweepAsync(string name, Func<FaultSetup> setup, string[] types)
    {
        var reference = await ReferenceAsync(setup());
        output.WriteLine($"{name}: reference run, {reference.Count} writes: {string.Join("; ", reference.Select((w, i) => $"{i + 1} {w.Label}"))}");
        foreach (var t in types) Assert.Contains(reference, w => w.Label.Type == t);
        var points = FullSweep ? Enumerable.Range(1, reference.Count).ToList() : Sample(reference, types);
        int runs = 0, broken = 0;
        var covered = new HashSet<string>();
        var failures = new List<string>();
        foreach (var k in points)
            foreach (var before in new[] { true, false })
            {
                var r = await CrashRunAsync(setup(), k, before);
                runs++;
                covered.Add(r.Hit?.Type ?? "");
                output.WriteLine($"{name}: crash {r.Point} ({r.Hit}): settled {r.Settled}, {r.Violations.Count} invariants broken, {r.Steps} steps");
                if (r.Violations.Count > 0 || !r.Settled)
                {
                    broken += r.Violations.Count;
                    failures.Add($"crash {r.Point} ({r.Hit}): {(r.Settled ? "" : $"never settled ({r.Detail}); ")}{string.Join("; ", r.Violations)}");
                }
            }
        output.WriteLine($"{name}: {runs} crash runs ({points.Count} crash points × before/after), {broken} invariants broken");
        foreach (var t in types) Assert.Contains(t, covered);
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        return (runs, broken);
    }

    [Fact]
    public async Task ACrashAtEachStepOfProvisionConsolidateAndDeleteEmptyBreaksNoInvariant() =>
        await SweepAsync("demo", Demo, ["Provision", "Consolidate", "DeleteEmpty"]);

    [Fact]
    public async Task ACrashAtEachStepOfAReplacementBreaksNoInvariant() =>
        await SweepAsync("replace", Replacement, ["Replace"]);

    private static string? Drained(FaultRig rig) => rig.Nodes().Where(n => FaultRig.DisruptionOf(n) is not null).Select(FaultRig.NameOf).FirstOrDefault();

    /// <summary>Evictions answered 429 (a budget at zero) until <paramref name="p"/> is caught mid-drain; the node it drains.</summary>
    private static async Task<string> MidDrainAsync(FaultRig rig, FaultProcess p, CancellationToken? tick = null)
    {
        rig.Demo.Api.Faults.FailNext(10_000, 429, TimeSpan.FromSeconds(1), pathContains: "/eviction");
        for (int i = 0; i < 200 && p.Actuator.InFlightCounts.GetValueOrDefault("drain") != 1; i++) await rig.StepAsync(p, tick);
        Assert.Equal(1, p.Actuator.InFlightCounts.GetValueOrDefault("drain"));
        return Drained(rig)!;
    }

    private void Report(string name, FaultRig rig, FaultProcess live, bool settled)
    {
        output.WriteLine($"{name}: settled {settled}, {rig.Check.Violations.Count} invariants broken, {rig.Steps} steps");
        Assert.True(settled, $"{name}: never settled: {rig.Describe(live)}");
        Assert.True(rig.Check.Violations.Count == 0, string.Join("\n", rig.Check.Violations));
    }

    [Fact]
    public async Task TheLeaseHandedToASecondReplicaMidDrainLeavesTheFirstWritingNothingAndNothingHalfDone()
    {
        await using var rig = await FaultRig.StartAsync(Demo());
        var lease = new LeaderElectionOptions { LeaseDuration = TimeSpan.FromSeconds(15), RenewDeadline = TimeSpan.FromSeconds(10), RetryPeriod = TimeSpan.FromSeconds(2) };
        using var kubeA = new KubeClient(KubeConnection.Resolve(rig.Demo.KubeconfigPath, null, KubeEnvironment.Process));
        using var kubeB = new KubeClient(KubeConnection.Resolve(rig.Demo.KubeconfigPath, null, KubeEnvironment.Process));
        var clockA = new TimerClock(DateTimeOffset.UtcNow);
        var clockB = new ManualClock(DateTimeOffset.UtcNow);
        var electorA = new LeaderElector(kubeA, "default", "karpetrack", "replica-a", lease, NullLogger.Instance, clockA);
        var electorB = new LeaderElector(kubeB, "default", "karpetrack", "replica-b", lease with { RetryPeriod = TimeSpan.FromMilliseconds(100) }, NullLogger.Instance, clockB);
        using var stopA = new CancellationTokenSource();
        using var stopB = new CancellationTokenSource();
        var runA = electorA.RunAsync(stopA.Token);
        for (int i = 0; i < 300 && !electorA.IsLeader; i++) await Task.Delay(20);
        Assert.True(electorA.IsLeader);
        var termA = electorA.Term;
        var a = await rig.StartProcessAsync("replica-a", isLeader: () => electorA.IsLeader, leaseTerm: () => electorA.Term);
        termA.Register(() => a.Fence(rig.Journal.Next));
        var drained = await MidDrainAsync(rig, a, termA);

        // A stalls past its renew deadline (its lease writes fail meanwhile): its term ends by its own clock.
        rig.Demo.Api.Faults.FailNext(10_000, 503, pathContains: "/leases/");
        await clockA.WhenPending(1);
        clockA.Advance(lease.RenewDeadline);
        Assert.True(termA.IsCancellationRequested);
        Assert.NotNull(a.FencedAt);
        stopA.Cancel();
        await runA;
        rig.Demo.Api.Faults.Clear();

        // B takes the lease once it expired by B's clock; then B, a fresh process, and A's long tick both go on.
        var runB = electorB.RunAsync(stopB.Token);
        for (int i = 0; i < 300 && !electorB.IsLeader; i++)
        {
            clockB.Advance(lease.LeaseDuration);
            await Task.Delay(20);
        }
        Assert.True(electorB.IsLeader);
        var b = await rig.StartProcessAsync("replica-b", isLeader: () => electorB.IsLeader, leaseTerm: () => electorB.Term);
        bool settled = await rig.SettleAsync(b, tick: () => electorB.Term, alongside: () => rig.StepAsync(a, termA));
        Assert.True(electorB.IsLeader);
        if (settled) rig.Check.CheckSettled(b);
        output.WriteLine($"drained by A when the lease moved: {drained}");
        Report("lease handed over mid-drain", rig, b, settled);
        Assert.DoesNotContain(rig.Journal.Since(a.FencedAt!.Value), r => r.Caller == "replica-a" && FaultInvariants.Acts(r));
        stopB.Cancel();
        await runB;
    }

    [Fact]
    public async Task APoolPreemptedMidDrainBreaksNoInvariant()
    {
        await using var rig = await FaultRig.StartAsync(Demo());
        var p = await rig.StartProcessAsync("p1");
        var drained = await MidDrainAsync(rig, p);
        var pool = rig.Demo.Api.Store.Get("nodes", null, drained)!.ToJsonObject()["metadata"]!["labels"]![SpotLabels.Pool]!.GetValue<string>();
        var spec = rig.Spot.Pool(pool)!["spec"]!;
        var bid = decimal.Parse(spec["bidPrice"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture);
        rig.Spot.SetMarketPrice(spec["serverClass"]!.GetValue<string>(), bid + 0.05m);
        rig.Demo.Api.Faults.Clear();
        bool settled = await rig.SettleAsync(p);
        if (settled) rig.Check.CheckSettled(p);
        Report("pre-empted mid-drain", rig, p, settled);
        Assert.Null(rig.Spot.Pool(pool));
        Assert.Null(rig.Demo.Api.Store.Get("nodes", null, drained));
    }

    [Fact]
    public async Task StormsOf5xxAnd429FromBothApisDuringADrainBreakNoInvariant()
    {
        await using var rig = await FaultRig.StartAsync(Demo());
        var p = await rig.StartProcessAsync("p1");
        await MidDrainAsync(rig, p);
        rig.Demo.Api.Faults.Clear();
        long mark = rig.Journal.Next;
        // On the writes of the drain and the removal, and on the reads the reflectors and the steps make.
        rig.Demo.Api.Faults.FailNext(15, 503, pathContains: "/eviction");
        rig.Demo.Api.Faults.FailNext(15, 429, TimeSpan.FromSeconds(1), pathContains: "/eviction");
        rig.Demo.Api.Faults.FailNext(10, 503, pathContains: "/api/v1/nodes");
        rig.Demo.Api.Faults.FailNext(10, 429, TimeSpan.FromSeconds(1), pathContains: "/api/v1/nodes");
        rig.Demo.Api.Faults.FailNext(10, 500, pathContains: "/api/v1/pods");
        // (The Spot client waits out each Retry-After on real time: a few 429s, many 503s.)
        rig.Spot.FailNext(20, 503, pathContains: "spotnodepools");
        rig.Spot.FailNext(3, 429, TimeSpan.FromSeconds(1), pathContains: "spotnodepools");
        // And answers lost after the Spot API carried the request out.
        rig.Spot.FailAfterHandling(2, 503, method: "DELETE", pathContains: "spotnodepools");
        bool settled = await rig.SettleAsync(p);
        if (settled) rig.Check.CheckSettled(p);
        Report("5xx and 429 storms mid-drain", rig, p, settled);
        var hit = rig.Journal.Since(mark).Where(r => r.Status is 503 or 429).GroupBy(r => r.Api).ToDictionary(g => g.Key, g => g.Count());
        output.WriteLine($"writes answered 503/429 during the storm: {string.Join(", ", hit.Select(kv => $"{kv.Key} {kv.Value}"))}");
        Assert.True(hit.ContainsKey("kube"), "the Kubernetes storm hit no write");
        Assert.True(hit.ContainsKey("spot"), "the Spot storm hit no write");
    }

    [Theory]
    [InlineData("evict")]
    [InlineData("delete_pool")]
    public async Task ARestartWithANodeSelectorHidingTheManagedNodesBreaksNoInvariant(string step)
    {
        var r = await CrashRunAsync(Demo(), (_, l) => l.Step == step && l.Type == "Consolidate", $"after the first Consolidate {step}", before: false,
            restartSelector: $"{Actuator.ManagedLabel}!=true");
        output.WriteLine($"node selector: crash {r.Point} ({r.Hit}): settled {r.Settled}, {r.Violations.Count} invariants broken, {r.Steps} steps");
        Assert.True(r.Settled && r.Violations.Count == 0, r.Detail + string.Join("\n", r.Violations));
    }
}
