using System.Text.Json.Nodes;

namespace Karpetrack.Tests.Host;

/// <summary>
/// The GC settings the shipped binary runs with, as /sync reports them (GC.GetConfigurationVariables): the NativeAOT
/// executable carries its own (Karpetrack.csproj embeds them with ilc's --runtimeopt), so no environment is needed.
/// </summary>
public sealed class GcSettingsTests(NativeDemoProcess native) : IClassFixture<NativeDemoProcess>
{
    [Fact]
    public async Task TheNativeBinaryRunsWithItsGen0BudgetRegionSizeAndConservesMemory()
    {
        var sync = JsonNode.Parse(await native.Demo.Http.GetStringAsync(new Uri(native.Demo.MetricsUrl, "/sync")))!;
        var gc = sync["runtime"]!["gc_settings"]!.AsObject();
        // 4 MiB, not the up to 128 MiB the runtime derives from the L3 cache for a workstation, non-concurrent GC.
        Assert.Equal(4L << 20, gc["GCGen0MaxBudget"]!.GetValue<long>());
        // 1 MiB regions, not the 4 MiB the runtime picks.
        Assert.Equal(1L << 20, gc["GCRegionSize"]!.GetValue<long>());
        Assert.Equal(7, gc["GCConserveMem"]!.GetValue<long>());
        Assert.False(gc["ServerGC"]!.GetValue<bool>());
        Assert.False(gc["ConcurrentGC"]!.GetValue<bool>());
    }
}
