using System.Text;
using System.Text.Json;

namespace Karpetrack.Tests.Kube;

/// <summary>
/// What decoding a pod leaves behind besides its record: the LIST of 150k pods and every watch event decode one, so the
/// per-pod garbage is the sync's GC work. Error paths are built only for errors, and known phases and owner kinds are
/// compared in place; the messages and values they give are the same as before.
/// </summary>
public class PodDecoderGarbageTests
{
    private static (PodRecord Pod, string? Error) Decode(PodDecoder decoder, byte[] json)
    {
        var r = new Utf8JsonReader(json, isFinalBlock: true, default);
        Assert.True(r.Read());
        string? error = null;
        Assert.Equal(Karpetrack.Decode.Ok, decoder.TryDecodeGuarded(ref r, json, out var pod, ref error));
        return (pod, error);
    }

    /// <summary>Bytes the decoder allocates on this thread for one pod (the fewest of a few tries, after a warm-up).</summary>
    private static long Allocated(PodDecoder decoder, byte[] json)
    {
        for (int i = 0; i < 20; i++) Decode(decoder, json);
        long least = long.MaxValue;
        for (int i = 0; i < 5; i++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            Decode(decoder, json);
            least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
        }
        return least;
    }

    private static string Container(int i, string? restart = null) =>
        "{\"name\":\"c" + i + "\",\"image\":\"x\"," + (restart is null ? "" : "\"restartPolicy\":\"" + restart + "\",")
        + "\"resources\":{\"requests\":{\"cpu\":\"250m\",\"memory\":\"64Mi\"},\"limits\":{\"cpu\":\"1\"}}}";

    private static byte[] Pod(int containers, int inits = 0, string status = """{"phase":"Running"}""", string owner = "") =>
        Encoding.UTF8.GetBytes($$"""
            {"metadata":{"name":"web-7d4b9c-x2x9z","namespace":"shop","uid":"0b3c4f4e-4d1a-4c59-9f39-3d1c2f7a8b10","resourceVersion":"42"{{owner}}},
             "spec":{"nodeName":"n1",{{(inits > 0 ? "\"initContainers\":[" + string.Join(",", Enumerable.Range(0, inits).Select(i => Container(i, "Always"))) + "]," : "")}}
                     "containers":[{{string.Join(",", Enumerable.Range(0, containers).Select(i => Container(i)))}}]},
             "status":{{status}}}
            """);

    [Fact]
    public void ContainersAndTheirRequestsLeaveNoGarbage()
    {
        // Before, every container built its error paths ("spec.containers[]", "...resources.requests.cpu") whether or
        // not anything was wrong: about 250 bytes per container, ten times over here.
        var decoder = new PodDecoder(ResourceTable.Default);
        long one = Allocated(decoder, Pod(1));
        long eleven = Allocated(decoder, Pod(11));
        long sidecars = Allocated(decoder, Pod(1, inits: 10));
        Assert.True(eleven - one <= 10 * 8, $"10 more containers allocated {eleven - one} more bytes ({one} for one container)");
        Assert.True(sidecars - one <= 10 * 8, $"10 sidecars allocated {sidecars - one} more bytes ({one} for none)");
    }

    [Fact]
    public void KnownPhasesAndOwnerKindsAreNotReadIntoStrings()
    {
        var decoder = new PodDecoder(ResourceTable.Default);
        const string ReplicaSet = ""","ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d4b9c","uid":"u","controller":true}]""";
        long bare = Allocated(decoder, Pod(1, status: "{}"));
        long running = Allocated(decoder, Pod(1));
        Assert.True(running - bare <= 0, $"status.phase Running allocated {running - bare} bytes");
        long owned = Allocated(decoder, Pod(1, owner: ReplicaSet));
        // The owner's name is kept (the shape's OwnerName): one string of 10 characters, 48 bytes with its header.
        Assert.True(owned - running <= 48, $"a ReplicaSet owner allocated {owned - running} bytes");
    }

    [Theory]
    [InlineData("""{"phase":"Runn\u0069ng"}""", PodPhase.Running)]
    [InlineData("""{"phase":"Succeeded"}""", PodPhase.Succeeded)]
    [InlineData("""{"phase":"Failed"}""", PodPhase.Failed)]
    [InlineData("""{"phase":"Pending"}""", PodPhase.Pending)]
    [InlineData("""{"phase":"running"}""", PodPhase.Unknown)]
    [InlineData("""{"phase":null}""", PodPhase.Unknown)]
    public void PhasesReadAsBefore(string status, PodPhase phase)
    {
        var (pod, error) = Decode(new PodDecoder(ResourceTable.Default), Pod(1, status: status));
        Assert.Null(error);
        Assert.Equal(phase, pod.Phase);
    }

    [Fact]
    public void APhaseThatIsNotAStringIsStillAnError()
    {
        var (pod, error) = Decode(new PodDecoder(ResourceTable.Default), Pod(1, status: """{"phase":3}"""));
        Assert.Equal(PodPhase.Unknown, pod.Phase);
        Assert.StartsWith("status.phase: expected a string", error);
    }

    [Theory]
    [InlineData("ReplicaSet", OwnerKind.ReplicaSet)]
    [InlineData("Daemon\\u0053et", OwnerKind.DaemonSet)]
    [InlineData("StatefulSet", OwnerKind.StatefulSet)]
    [InlineData("Job", OwnerKind.Job)]
    [InlineData("Node", OwnerKind.Mirror)]
    [InlineData("CronJob", OwnerKind.Other)]
    [InlineData("replicaset", OwnerKind.Other)]
    public void OwnerKindsReadAsBefore(string kind, OwnerKind owner)
    {
        var (pod, error) = Decode(new PodDecoder(ResourceTable.Default),
            Pod(1, owner: $$""","ownerReferences":[{"kind":"{{kind}}","name":"o","controller":true}]"""));
        Assert.Null(error);
        Assert.Equal(owner, pod.Owner);
        Assert.Equal("o", pod.OwnerName);
    }

    [Fact]
    public void AnEscapedAlwaysStillMakesASidecar()
    {
        var decoder = new PodDecoder(ResourceTable.Default);
        var (sidecar, _) = Decode(decoder, Pod(1, inits: 1));
        var escaped = Encoding.UTF8.GetString(Pod(1, inits: 1)).Replace("\"Always\"", "\"Alw\\u0061ys\"");
        var (same, error) = Decode(decoder, Encoding.UTF8.GetBytes(escaped));
        Assert.Null(error);
        Assert.Equal(500, sidecar.Requests[ResourceTable.Cpu]);   // sidecar 250m runs beside the 250m container
        Assert.Equal(sidecar.Requests, same.Requests);
    }

    [Theory]
    [InlineData("initContainers", "cpu", "\"2 cores\"", "spec.initContainers.resources.requests.cpu: ")]
    [InlineData("containers", "memory", "\"-1Gi\"", "spec.containers.resources.requests.memory: negative quantity")]
    [InlineData("containers", "cpu", "true", "spec.containers.resources.requests.cpu: expected a quantity, got True")]
    public void ErrorsStillNameTheFullPath(string list, string resource, string value, string expected)
    {
        var json = """{"metadata":{"name":"p","namespace":"ns","uid":"0b3c4f4e-4d1a-4c59-9f39-3d1c2f7a8b10"},"spec":{"@L@":[{"name":"c","resources":{"requests":{"@R@":@V@}}}]},"status":{"phase":"Running"}}"""
            .Replace("@L@", list).Replace("@R@", resource).Replace("@V@", value);
        var (pod, error) = Decode(new PodDecoder(ResourceTable.Default), Encoding.UTF8.GetBytes(json));
        Assert.NotNull(error);
        Assert.StartsWith(expected, error);
        Assert.Equal("p", pod.Name);
    }

    [Theory]
    [InlineData("metadata", "labels", """{"app":"web","replicas":3}""", "metadata.labels: expected a map of strings")]
    [InlineData("spec", "nodeSelector", """["a","b"]""", "spec.nodeSelector: expected a map of strings")]
    [InlineData("spec", "nodeSelector", """{"zone":{"nested":"x"},"b":"c"}""", "spec.nodeSelector: expected a map of strings")]
    public void AMapOfStringsThatIsNotOneIsAnErrorAndKeptEmpty(string part, string field, string value, string expected)
    {
        var json = part == "metadata"
            ? $$$"""{"metadata":{"name":"p","namespace":"ns","{{{field}}}":{{{value}}},"uid":"0b3c4f4e-4d1a-4c59-9f39-3d1c2f7a8b10"},"spec":{"nodeName":"n1","containers":[]},"status":{"phase":"Running"}}"""
            : $$$"""{"metadata":{"name":"p","namespace":"ns","uid":"0b3c4f4e-4d1a-4c59-9f39-3d1c2f7a8b10"},"spec":{"{{{field}}}":{{{value}}},"nodeName":"n1","containers":[]},"status":{"phase":"Running"}}""";
        var (pod, error) = Decode(new PodDecoder(ResourceTable.Default), Encoding.UTF8.GetBytes(json));
        Assert.Equal(expected, error);
        Assert.Empty(part == "metadata" ? pod.LabelsJson : pod.NodeSelectorJson);
        // The rest of the pod is read past the bad map.
        Assert.Equal("n1", pod.NodeName);
        Assert.Equal(PodPhase.Running, pod.Phase);
    }

    [Fact]
    public void AMapOfStringsIsKeptAsItsRawJson()
    {
        var json = """{"metadata":{"name":"p","labels":{"app":"web","tier":"front\u0065nd"}},"spec":{"nodeSelector":{},"containers":[]}}""";
        var (pod, error) = Decode(new PodDecoder(ResourceTable.Default), Encoding.UTF8.GetBytes(json));
        Assert.Null(error);
        Assert.Equal("""{"app":"web","tier":"front\u0065nd"}""", Encoding.UTF8.GetString(pod.LabelsJson));
        Assert.Equal("{}", Encoding.UTF8.GetString(pod.NodeSelectorJson));
    }
}
