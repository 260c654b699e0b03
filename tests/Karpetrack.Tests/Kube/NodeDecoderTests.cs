using System.Text;

namespace Karpetrack.Tests.Kube;

/// <summary>Nodes decoded into trimmed records: what is kept, what is dropped, and what is shared.</summary>
public class NodeDecoderTests
{
    private static string NodeJson(string name, string cls, string extraAnnotation = "") => $$$"""
        {"kind":"Node","apiVersion":"v1",
         "metadata":{"name":"{{{name}}}","resourceVersion":"7",
           "labels":{"kubernetes.io/hostname":"{{{name}}}","servers.ngpc.rxt.io/class":"{{{cls}}}","topology.kubernetes.io/region":"us-east-iad-1"},
           "annotations":{"csi.volume.kubernetes.io/nodeid":"{\"cinder.csi.openstack.org\":\"0c6b\"}","alpha.kubernetes.io/provided-node-ip":"10.0.0.1",
             "karpetrack.io/do-not-disrupt":"true"{{{extraAnnotation}}}}},
         "spec":{"unschedulable":true,"taints":[{"key":"dedicated","value":"batch","effect":"NoSchedule"}]},
         "status":{"allocatable":{"cpu":"3800m","memory":"7Gi"},"capacity":{"cpu":"4","memory":"8Gi"},
           "conditions":[{"type":"Ready","status":"True"}]}}
        """;

    private static NodeRecord Decode(NodeDecoder decoder, string json)
    {
        var node = decoder.DecodeComplete(Encoding.UTF8.GetBytes(json), out var error);
        Assert.Null(error);
        return node;
    }

    [Fact]
    public void KeepsTheFieldsKarpetrackReadsAndOnlyTheAnnotationsItActsOn()
    {
        var node = Decode(new NodeDecoder(ResourceTable.Default), NodeJson("n1", "gp.vs1.medium-iad",
            ""","cluster-autoscaler.kubernetes.io/scale-down-disabled":"true","karpetrack.io/disruption":"r-1","node.alpha.kubernetes.io/ttl":"0" """));
        Assert.Equal("n1", node.Name);
        Assert.Equal("gp.vs1.medium-iad", node.Labels[SpotLabels.ServerClass]);
        Assert.Equal(3, node.Labels.Count);
        Assert.Equal(["cluster-autoscaler.kubernetes.io/scale-down-disabled", "karpetrack.io/disruption", "karpetrack.io/do-not-disrupt"],
            node.Annotations.Keys.Order(StringComparer.Ordinal));
        Assert.Equal("r-1", node.Annotations["karpetrack.io/disruption"]);
        Assert.Equal([new Taint("dedicated", "batch", "NoSchedule")], node.Taints);
        Assert.True(node.Unschedulable);
        Assert.True(node.Ready);
        Assert.Equal(3800, node.Allocatable[ResourceTable.Cpu]);
    }

    [Fact]
    public void NodesDecodedOneAfterAnotherShareTheirRepeatedStrings()
    {
        var decoder = new NodeDecoder(ResourceTable.Default);
        var a = Decode(decoder, NodeJson("n1", "gp.vs1.medium-iad"));
        var b = Decode(decoder, NodeJson("n2", "gp.vs1.medium-iad"));
        var keyA = a.Labels.Keys.Single(k => k == SpotLabels.ServerClass);
        var keyB = b.Labels.Keys.Single(k => k == SpotLabels.ServerClass);
        Assert.Same(keyA, keyB);
        Assert.Same(a.Labels[SpotLabels.ServerClass], b.Labels[SpotLabels.ServerClass]);
        Assert.Same(a.Taints[0].Effect, b.Taints[0].Effect);
        // The hostname label is the node's own name: one string for both.
        Assert.Same(a.Name, a.Labels["kubernetes.io/hostname"]);
        Assert.NotSame(a.Name, b.Name);
    }

    [Fact]
    public void EscapedValuesDecodeUnpooledAndNonAsciiOnesPooled()
    {
        var decoder = new NodeDecoder(ResourceTable.Default);
        var escaped = Decode(decoder, NodeJson("n1", "gp\\u002Evs1.m\u00e9dium-iad"));
        Assert.Equal("gp.vs1.médium-iad", escaped.Labels[SpotLabels.ServerClass]);
        var plain = Decode(decoder, NodeJson("n2", "gp.vs1.m\u00e9dium-iad"));
        var again = Decode(decoder, NodeJson("n3", "gp.vs1.m\u00e9dium-iad"));
        Assert.Equal(escaped.Labels[SpotLabels.ServerClass], plain.Labels[SpotLabels.ServerClass]);
        Assert.Same(plain.Labels[SpotLabels.ServerClass], again.Labels[SpotLabels.ServerClass]);
    }

    [Fact]
    public void InvalidUtf8InALabelIsTheObjectsDecodeErrorNotAnException()
    {
        var bytes = Encoding.UTF8.GetBytes(NodeJson("n1", "gp.vs1.XX-iad"));
        int at = Encoding.UTF8.GetString(bytes).IndexOf("XX", StringComparison.Ordinal);
        bytes[at] = 0xC3;   // a lead byte followed by an ASCII byte: not UTF-8
        var decoder = new NodeDecoder(ResourceTable.Default);
        decoder.DecodeComplete(bytes, out var error);
        Assert.Contains("UTF-8", error);
        // The decoder goes on with the next object as before.
        Assert.Equal("n2", decoder.DecodeComplete(Encoding.UTF8.GetBytes(NodeJson("n2", "gp.vs1.large-iad")), out var none).Name);
        Assert.Null(none);
    }

    [Fact]
    public void ThePoolStartsOverWhenFullAndStillReturnsEqualStrings()
    {
        var pool = new StringPool(capacity: 4);
        string Get(string s)
        {
            var json = Encoding.UTF8.GetBytes($"\"{s}\"");
            var r = new System.Text.Json.Utf8JsonReader(json);
            r.Read();
            return pool.Get(ref r);
        }
        var first = Get("a");
        Assert.Same(first, Get("a"));
        foreach (var s in new[] { "b", "c", "d" }) Get(s);
        Assert.Equal(4, pool.Count);
        Assert.Equal("e", Get("e"));   // full: starts over with "e"
        Assert.Equal(1, pool.Count);
        var again = Get("a");
        Assert.Equal("a", again);
        Assert.NotSame(first, again);
        Assert.Equal(new string('x', 300), Get(new string('x', 300)));   // too long to pool, still decoded
        Assert.Equal(2, pool.Count);
    }
}
