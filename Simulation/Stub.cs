// TEMPORARY stand-in until the simulation branch lands.
namespace Karpetrack.Simulation;
public sealed record DemoClusterOptions { public int Seed { get; init; } = 42; public TimeSpan ChurnInterval { get; init; } = TimeSpan.FromSeconds(5); }
public sealed class DemoCluster : IAsyncDisposable
{
    public string KubeconfigPath => "";
    public static Task<DemoCluster> StartAsync(DemoClusterOptions o, Microsoft.Extensions.Logging.ILogger? log, CancellationToken ct) => throw new NotImplementedException();
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
