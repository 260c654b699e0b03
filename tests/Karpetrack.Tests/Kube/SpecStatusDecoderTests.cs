using System.Text;
using System.Text.Json;

namespace Karpetrack.Tests.Kube;

/// <summary>PodDisruptionBudgets and DaemonSets through their one decoder skeleton: what each keeps, and a buffer ending anywhere.</summary>
public sealed class SpecStatusDecoderTests
{
    private const string Pdb = """
        {"apiVersion":"policy/v1","kind":"PodDisruptionBudget",
         "metadata":{"name":"web","namespace":"shop","resourceVersion":"42","labels":{"team":"a"}},
         "spec":{"minAvailable":2,"selector":{"matchLabels":{"app":"web"},"matchExpressions":[{"key":"tier","operator":"In","values":["front"]}]}},
         "status":{"disruptionsAllowed":1,"currentHealthy":3,"desiredHealthy":2,"expectedPods":3,"observedGeneration":5,
           "conditions":[{"type":"DisruptionAllowed","status":"True"}]}}
        """;

    private const string DaemonSet = """
        {"apiVersion":"apps/v1","kind":"DaemonSet",
         "metadata":{"name":"node-exporter","namespace":"monitoring","resourceVersion":"9"},
         "spec":{"selector":{"matchLabels":{"app":"node-exporter"}},
           "template":{"metadata":{"labels":{"app":"node-exporter"}},
             "spec":{"containers":[{"name":"exporter","resources":{"requests":{"cpu":"100m","memory":"64Mi"}}}]}}},
         "status":{"desiredNumberScheduled":12}}
        """;

    [Fact]
    public void APdbKeepsItsSelectorAndItsDisruptionCounts()
    {
        var pdb = new PdbDecoder().DecodeComplete(Encoding.UTF8.GetBytes(Pdb), out var error);
        Assert.Null(error);
        Assert.Equal(("shop", "web", "42"), (pdb.Namespace, pdb.Name, pdb.ResourceVersion));
        Assert.Equal((1, 3, 2, 3), (pdb.DisruptionsAllowed, pdb.CurrentHealthy, pdb.DesiredHealthy, pdb.ExpectedPods));
        Assert.True(pdb.Selector.Matches(new Dictionary<string, string> { ["app"] = "web", ["tier"] = "front" }));
        Assert.False(pdb.Selector.Matches(new Dictionary<string, string> { ["app"] = "web", ["tier"] = "back" }));
        Assert.Equal("shop/web", new PdbDecoder().Describe(pdb));
    }

    [Fact]
    public void APdbWithoutASelectorSelectsNothing()
    {
        var pdb = new PdbDecoder().DecodeComplete("""{"metadata":{"name":"none","namespace":"x"},"spec":{"maxUnavailable":1}}"""u8, out var error);
        Assert.Null(error);
        Assert.False(pdb.Selector.Matches(new Dictionary<string, string>()));
    }

    [Fact]
    public void ADaemonSetKeepsItsPodTemplatesRequests()
    {
        var ds = new DaemonSetDecoder(ResourceTable.Default).DecodeComplete(Encoding.UTF8.GetBytes(DaemonSet), out var error);
        Assert.Null(error);
        Assert.Equal(("monitoring", "node-exporter", "9"), (ds.Namespace, ds.Name, ds.ResourceVersion));
        Assert.Equal(100, ds.Template.Requests[ResourceTable.Cpu]);
        Assert.Equal(64L << 20, ds.Template.Requests[ResourceTable.Memory]);
    }

    [Fact]
    public void AWrongShapedSpecIsReportedAndTheRestStillRead()
    {
        var pdb = new PdbDecoder().DecodeComplete("""{"metadata":{"name":"odd","namespace":"x"},"spec":[1],"status":{"disruptionsAllowed":4}}"""u8, out var error);
        Assert.Equal("spec: expected an object, got StartArray", error);
        Assert.Equal(4, pdb.DisruptionsAllowed);
    }

    [Fact]
    public void EveryTruncationIsIncompleteNeverAnError()
    {
        foreach (var json in new[] { Pdb, DaemonSet })
        {
            var bytes = Encoding.UTF8.GetBytes(json);
            for (int cut = 1; cut < bytes.Length; cut++)
            {
                var r = new Utf8JsonReader(bytes.AsSpan(0, cut), isFinalBlock: false, default);
                if (!r.Read()) continue;
                string? error = null;
                var outcome = json == Pdb
                    ? new PdbDecoder().TryDecode(ref r, bytes.AsSpan(0, cut), out _, ref error)
                    : Decode(ref r, bytes.AsSpan(0, cut), ref error);
                Assert.Equal(global::Karpetrack.Decode.Incomplete, outcome);
                Assert.Null(error);
            }
        }

        static global::Karpetrack.Decode Decode(ref Utf8JsonReader r, ReadOnlySpan<byte> data, ref string? error) =>
            new DaemonSetDecoder(ResourceTable.Default).TryDecode(ref r, data, out _, ref error);
    }
}
