using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Tests.Actuation;

/// <summary>
/// The composition root's actuation part as the service runs it: flags parsed by <see cref="KarpetrackOptions.Parse"/>, the
/// actuator built by <see cref="ActuationWiring"/>, not an <see cref="ActuationOptions"/> written by hand. On the rig's stepped clock.
/// </summary>
public class ActuationWiringTests
{
    /// <summary>
    /// --node-selector filters the node cache, so a node it does not match never shows in the snapshot; the wiring must tell the
    /// actuator so, or a provisioned pool whose node the selector hides stays in <see cref="Actuator.InFlight"/> (capacity the
    /// recommender counts as on its way) until --provisioning-timeout. Red with the wiring's <c>NodeSelector = options.NodeSelector</c>
    /// removed: the provision's pools were still in flight after it succeeded.
    /// </summary>
    [Fact]
    public async Task TheParsedNodeSelectorReachesTheActuatorSoAProvisionItHidesLeavesTheInFlightList()
    {
        var selector = $"{Actuator.ManagedLabel}!=true";
        var now = DateTimeOffset.UtcNow;
        // A closed maintenance window: only provisions act.
        var window = $"{now.AddHours(2):HH\\:mm}-{now.AddHours(3):HH\\:mm}";
        var options = KarpetrackOptions.Parse(
            ["--actuation", "auto", "--cloudspace", "demo", "--node-selector", selector, "--maintenance-window", window, "--provisioning-timeout", "60m"], _ => null);
        Assert.Equal(selector, options.NodeSelector);

        await using var rig = await ActuationRig.StartAsync(ActuationRig.Quick() with { Window = options.ActuationSettings.Window },
            provisioning: TimeSpan.FromSeconds(10), steppedClock: true);
        rig.Detach(rig.Actuator);
        // The wired actuator's own timings (a 2 s tick, a 30 s pool sweep): steps of 5 s keep the run short.
        rig.Step = TimeSpan.FromSeconds(5);
        var p = await rig.NewProcessAsync(options.ActuationSettings, nodeSelector: options.NodeSelector, build: (model, statuses) =>
            ActuationWiring.Create(options, new ActuationWiring.ActuationInputs(model, rig.Prices, statuses, () => rig.Thresholds()), rig.Kube, rig.SpotClient,
                options.Cloudspace, NullLoggerFactory.Instance, new Telemetry(), rig.Clock).Item1);
        Assert.Equal(ActuationMode.Auto, p.Actuator.Mode);

        await p.RunUntilAsync(() => p.Actuator.InFlightCounts.GetValueOrDefault("wait_ready") > 0, "a provision waiting for its nodes");
        var provision = Assert.Single(p.Recommender.Current.Recommendations, r => r.Type == RecommendationType.Provision
            && p.Actuator.StateOf(r.Id)?.StartsWith("in progress", StringComparison.Ordinal) == true);
        var pools = rig.ManagedPools().Where(x => x["spec"]!["customLabels"]?[Actuator.RecommendationLabel]?.GetValue<string>() == provision.Id)
            .Select(x => x["metadata"]!["name"]!.GetValue<string>()).ToList();
        Assert.NotEmpty(pools);
        Assert.All(pools, pool => Assert.Contains(p.Actuator.InFlight(), f => f.Pool == pool));

        await p.RunUntilAsync(() => p.Actuator.StateOf(provision.Id)?.StartsWith("succeeded", StringComparison.Ordinal) == true, "the provision to succeed");
        // Its nodes are Ready on the cluster, the filtered snapshot will never show them, and nothing holds them in flight.
        Assert.All(pools, pool => Assert.Contains(rig.Demo.Api.Store.List("nodes").Items.Select(n => n.ToJsonObject()),
            n => n["metadata"]?["labels"]?[SpotLabels.Pool]?.GetValue<string>() == pool));
        Assert.DoesNotContain(p.Model.Snapshot().Nodes, n => pools.Contains(n.Pool));
        Assert.DoesNotContain(p.Actuator.InFlight(), f => pools.Contains(f.Pool));
    }
}
