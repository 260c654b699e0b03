using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>The actuation part of the composition root: the actuator and, with --leader-elect, its leader elector.</summary>
internal static class ActuationWiring
{
    /// <summary>What the actuator reads: the cluster model, the price book, the caches' sync state and the recommender's thresholds.</summary>
    public sealed record ActuationInputs(ClusterModel Model, PriceFeed Prices, ReflectorStatus[] Caches, Func<RecommenderOptions> Thresholds);

    /// <summary>The actuator, and the leader elector that gates it (with --leader-elect only).</summary>
    public static (Actuator, LeaderElector?) Create(KarpetrackOptions options, ActuationInputs inputs, KubeClient kube, SpotWiring? spot,
        ILoggerFactory loggers, Telemetry telemetry) =>
        Create(options, inputs, kube, spot?.Client, spot?.Cloudspace, loggers, telemetry);

    /// <summary>
    /// The same from the Spot API client and the cloudspace it acts in (null client: no Spot API), on <paramref name="clock"/>
    /// (real time unless a test gives its own). Everything the actuator takes from the parsed options is set here.
    /// </summary>
    internal static (Actuator, LeaderElector?) Create(KarpetrackOptions options, ActuationInputs inputs, KubeClient kube, SpotApiClient? spot, string? cloudspace,
        ILoggerFactory loggers, Telemetry telemetry, TimeProvider? clock = null)
    {
        var settings = options.ActuationSettings;
        bool acting = settings.Mode is ActuationMode.Approve or ActuationMode.Auto;
        if (acting && spot is null)
            throw new OptionsException($"--actuation {Actuator.ModeLabel(settings.Mode)} acts through the Spot API: set {SpotWiring.RefreshTokenVariable} (and --spot-org)");
        if (acting && cloudspace is null)
            throw new OptionsException($"--actuation {Actuator.ModeLabel(settings.Mode)} needs --cloudspace: new pools join it");
        LeaderElector? elector = null;
        if (options.LeaderElect)
        {
            // The pod name identifies the holder (the chart sets it); a suffix keeps two processes on one host apart.
            var identity = (Environment.GetEnvironmentVariable("POD_NAME") ?? Environment.MachineName) + "_" + Guid.NewGuid().ToString("N")[..8];
            elector = new LeaderElector(kube, LeaderElector.DefaultNamespace(), "karpetrack", identity, new LeaderElectionOptions(), loggers.CreateLogger("leader"), clock);
        }
        var actuator = new Actuator(settings with { Cloudspace = cloudspace ?? "", Pools = options.Pools, NodeSelector = options.NodeSelector }, inputs.Model, inputs.Prices, inputs.Caches, loggers.CreateLogger("actuation"),
            acting ? kube : null, acting ? spot : null, clock: clock,
            isLeader: elector is null ? null : () => elector.IsLeader, thresholds: inputs.Thresholds, telemetry: telemetry,
            leaseTerm: elector is null ? null : () => elector.Term);
        return (actuator, elector);
    }
}
