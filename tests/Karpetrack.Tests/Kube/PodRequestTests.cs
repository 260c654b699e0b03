using System.Text;
using System.Text.Json;

namespace Karpetrack.Tests.Kube;

/// <summary>The effective pod request rule (protocols.md §2.3 and DESIGN.md), decoded from real pod JSON.</summary>
public class PodRequestTests
{
    internal static PodRecord Decode(string json, ResourceTable? table = null)
    {
        var decoder = new PodDecoder(table ?? ResourceTable.Default);
        var bytes = Encoding.UTF8.GetBytes(json);
        var r = new Utf8JsonReader(bytes, isFinalBlock: true, default);
        Assert.True(r.Read());
        string? error = null;
        Assert.Equal(Karpetrack.Decode.Ok, decoder.TryDecode(ref r, bytes, out var pod, ref error));
        Assert.Null(error);
        return pod;
    }

    private static string C(string cpu, string mem, string? restart = null) =>
        """{"name":"c","image":"x",@R@"resources":{"requests":{"cpu":"@CPU@","memory":"@MEM@"},"limits":{"cpu":"8"}}}"""
            .Replace("@R@", restart is null ? "" : "\"restartPolicy\":\"" + restart + "\",").Replace("@CPU@", cpu).Replace("@MEM@", mem);

    private static string Pod(string containers, string? inits = null, string? extra = null) =>
        """{"metadata":{"name":"p","namespace":"ns","uid":"0b3c4f4e-4d1a-4c59-9f39-3d1c2f7a8b10"},"spec":{@I@"containers":[@C@]@X@},"status":{"phase":"Running"}}"""
            .Replace("@I@", inits is null ? "" : "\"initContainers\":[" + inits + "],").Replace("@C@", containers).Replace("@X@", extra ?? "");

    private static (long CpuMilli, long MemBytes) Req(string json)
    {
        var p = Decode(json);
        return (p.Requests[ResourceTable.Cpu], p.Requests[ResourceTable.Memory]);
    }

    private const long Mi = 1024 * 1024;

    [Fact]
    public void RegularContainersAreSummed() =>
        Assert.Equal((750, 192 * Mi), Req(Pod(C("250m", "64Mi") + "," + C("500m", "128Mi"))));

    [Fact]
    public void ClassicInitContainersTakeTheMaxPerPhase() =>
        Assert.Equal((1000, 1024 * Mi), Req(Pod(C("250m", "128Mi") + "," + C("250m", "128Mi"), C("1", "128Mi") + "," + C("200m", "1Gi"))));

    [Fact]
    public void NativeSidecarsJoinTheRunningSumAndLaterInitPhases() =>
        Assert.Equal((900, 576 * Mi), Req(Pod(C("500m", "512Mi"), C("100m", "64Mi", "Always") + "," + C("800m", "256Mi"))));

    [Fact]
    public void InitContainerBeforeTheSidecarDoesNotIncludeIt() =>
        // init 800m alone (no sidecar yet), then sidecar 100m: running = 500m + 100m = 600m
        Assert.Equal((800, 576 * Mi), Req(Pod(C("500m", "512Mi"), C("800m", "256Mi") + "," + C("100m", "64Mi", "Always"))));

    [Fact]
    public void PodLevelResourcesWinAndOverheadIsAdded() =>
        Assert.Equal((2250, 1144 * Mi), Req(Pod(C("1500m", "512Mi"), extra:
            ""","resources":{"requests":{"cpu":"2","memory":"1Gi"}},"overhead":{"cpu":"250m","memory":"120Mi"}""")));

    [Fact]
    public void PodLevelCpuOnlyLeavesMemoryFromContainers() =>
        Assert.Equal((2250, 632 * Mi), Req(Pod(C("1500m", "512Mi"), extra:
            ""","resources":{"requests":{"cpu":"2"}},"overhead":{"cpu":"250m","memory":"120Mi"}""")));

    [Fact]
    public void MissingRequestsCountAsZero()
    {
        var p = Decode(Pod("""{"name":"c","image":"x"}"""));
        Assert.Equal(0, p.Requests[ResourceTable.Cpu]);
        Assert.Equal(0, p.Requests[ResourceTable.Memory]);
    }

    [Fact]
    public void ExtraResourcesAreTrackedWhenConfigured()
    {
        var table = new ResourceTable(["cpu", "memory", "nvidia.com/gpu", "ephemeral-storage"]);
        var p = Decode(Pod("""{"name":"c","resources":{"requests":{"cpu":"1","nvidia.com/gpu":"2","ephemeral-storage":"1Gi"}}}"""), table);
        Assert.Equal(2, p.Requests[table.IndexOf("nvidia.com/gpu")]);
        Assert.Equal(1L << 30, p.Requests[table.IndexOf("ephemeral-storage")]);
    }

    [Fact]
    public void GpuRequestsAreTrackedButNotExportedUnlessListed()
    {
        // The recommender needs every pod's GPUs; /metrics shows only what --resources lists.
        var table = ResourceTable.Default;
        var p = Decode(Pod("""{"name":"c","resources":{"requests":{"cpu":"1","nvidia.com/gpu":"1"}}}"""), table);
        Assert.Equal(1, p.Requests[table.GpuIndex]);
        Assert.DoesNotContain(table.GpuIndex, table.Exported);
        // Listed, it keeps its flag position and is exported; listed resources keep their indexes either way.
        var listed = new ResourceTable(["cpu", "memory", "pods", "nvidia.com/gpu"]);
        Assert.Equal(3, listed.GpuIndex);
        Assert.Contains(3, listed.Exported);
        Assert.Equal(2, new ResourceTable(["cpu", "memory", "pods"]).IndexOf("pods"));
    }

    [Fact]
    public void QuantitiesMayBeJsonNumbers() =>
        Assert.Equal((2000, 1000), Req(Pod("""{"name":"c","resources":{"requests":{"cpu":2,"memory":1e3}}}""")));

    [Fact]
    public void OwnersAndStatesAreRecognised()
    {
        var ds = Decode("""{"metadata":{"name":"ds-1","namespace":"kube-system","uid":"u1","ownerReferences":[{"apiVersion":"apps/v1","kind":"DaemonSet","name":"calico","uid":"x","controller":true}]},"spec":{"nodeName":"n1","containers":[]},"status":{"phase":"Running"}}""");
        Assert.Equal(OwnerKind.DaemonSet, ds.Owner);
        Assert.Equal("calico", ds.OwnerName);
        Assert.Equal("n1", ds.NodeName);

        var mirror = Decode("""{"metadata":{"name":"etcd-n1","namespace":"kube-system","annotations":{"kubernetes.io/config.mirror":"abc"},"ownerReferences":[{"kind":"Node","name":"n1"}]},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}}""");
        Assert.Equal(OwnerKind.Mirror, mirror.Owner);

        var pending = Decode("""{"metadata":{"name":"web-1","namespace":"shop","deletionTimestamp":"2026-11-21T23:28:12Z"},"spec":{"containers":[]},"status":{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False","reason":"Unschedulable","message":"0/3 nodes are available"}]}}""");
        Assert.True(pending.Unschedulable);
        Assert.True(pending.Terminating);
        Assert.Equal(PodPhase.Pending, pending.Phase);
    }

    [Theory]
    [InlineData("""{"metadata":{"name":"p"},"spec":{"containers":5}}""", "spec.containers: expected an array")]
    [InlineData("""{"metadata":{"name":"p"},"spec":{"containers":[{"resources":{"requests":{"cpu":"12x"}}}]}}""", "quantity \"12x\"")]
    [InlineData("""{"metadata":{"name":"p"},"spec":{"containers":[{"resources":{"requests":{"memory":"-1Gi"}}}]}}""", "negative quantity")]
    [InlineData("""{"metadata":"oops","spec":{}}""", "metadata: expected an object")]
    [InlineData("""{"metadata":{"name":"p"},"spec":{"containers":[{"resources":{"requests":{"cpu":true}}}]}}""", "expected a quantity")]
    public void MalformedFieldsAreReportedNotGuessed(string json, string expected)
    {
        var decoder = new PodDecoder(ResourceTable.Default);
        var bytes = Encoding.UTF8.GetBytes(json);
        var r = new Utf8JsonReader(bytes, isFinalBlock: true, default);
        Assert.True(r.Read());
        string? error = null;
        Assert.Equal(Karpetrack.Decode.Ok, decoder.TryDecode(ref r, bytes, out _, ref error));
        Assert.NotNull(error);
        Assert.Contains(expected, error);
        // The decoder consumed exactly the object, so a stream can go on after it.
        Assert.Equal(JsonTokenType.EndObject, r.TokenType);
        Assert.False(r.Read());
    }
}
