using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Karpetrack.Simulation;

namespace Karpetrack.Bench;

/// <summary>The synthetic 5,000-node / 150,000-pod cluster every exporter benchmark reads, as JSON bytes.</summary>
internal sealed class SyntheticData
{
    public required byte[][] Nodes { get; init; }
    public required byte[][] Pods { get; init; }
    public long PodBytes => Pods.Sum(p => (long)p.Length);

    public static SyntheticData Build(int nodes, int pods)
    {
        var sw = Stopwatch.StartNew();
        var now = new DateTimeOffset(2026, 11, 21, 12, 0, 0, TimeSpan.Zero);
        var nodeObjects = SyntheticCluster.Nodes(nodes, seed: 1, now);
        var nodeBytes = nodeObjects.Select(n => JsonSerializer.SerializeToUtf8Bytes(n)).ToArray();
        var podBytes = SyntheticCluster.Pods(nodeObjects, pods, seed: 1, now).Select(p => JsonSerializer.SerializeToUtf8Bytes(p)).ToArray();
        Console.WriteLine($"generated {nodeBytes.Length} nodes and {podBytes.Length} pods ({podBytes.Sum(p => (long)p.Length) / 1e6:F0} MB of pod JSON, {podBytes.Average(p => p.Length):F0} B/pod) in {sw.Elapsed.TotalSeconds:F1} s");
        return new SyntheticData { Nodes = nodeBytes, Pods = podBytes };
    }

    /// <summary>One PodList body holding every pod, as a single unpaged LIST would return it.</summary>
    public byte[] PodList()
    {
        using var ms = new MemoryStream((int)Math.Min(int.MaxValue - 64, PodBytes + Pods.Length + 256));
        ms.Write("""{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"12345"},"items":["""u8);
        for (int i = 0; i < Pods.Length; i++)
        {
            if (i > 0) ms.WriteByte((byte)',');
            ms.Write(Pods[i]);
        }
        ms.Write("]}"u8);
        return ms.ToArray();
    }
}
