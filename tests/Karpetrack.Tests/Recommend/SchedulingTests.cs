using System.Text;

namespace Karpetrack.Tests.Recommend;

/// <summary>
/// Spec tables for where a pod shape may run: nodeSelector, required node affinity (ORed terms), taints and
/// tolerations, and the reason <see cref="PodShape.WhyNot"/> gives. Each row is the scheduler's answer
/// (NodeAffinity and TaintToleration filters, v1.Toleration.ToleratesTaint).
/// </summary>
public class SchedulingTests
{
    private static readonly Dictionary<string, string> NodeLabels = new()
    {
        ["kubernetes.io/hostname"] = "node-a", ["zone"] = "iad-1", ["gen"] = "3", ["disktype"] = "ssd",
    };

    private static PodShape Shape(string nodeSelector = "", string affinity = "", string tolerations = "") =>
        PodShape.Parse("default", OwnerKind.None, null, "p", PodTraits.None, 0, "{}"u8,
            Encoding.UTF8.GetBytes(nodeSelector), Encoding.UTF8.GetBytes(affinity), Encoding.UTF8.GetBytes(tolerations));

    private static string Required(params string[] terms) =>
        """{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[""" + string.Join(",", terms) + "]}}}";

    private static string Term(string key, string op, params string[] values) =>
        $$"""{"matchExpressions":[{"key":"{{key}}","operator":"{{op}}","values":[{{string.Join(",", values.Select(v => $"\"{v}\""))}}]}]}""";

    // ---- nodeSelector and required node affinity ---------------------------------------------------------------

    public static TheoryData<string, string, string?> Placement => new()
    {
        // Nothing asked: any node.
        { "", "", null },
        { "{}", "{}", null },
        // nodeSelector: every pair present with that value.
        { """{"disktype":"ssd"}""", "", null },
        { """{"disktype":"hdd"}""", "", "nodeSelector disktype=hdd" },
        { """{"gpu":"a100"}""", "", "nodeSelector gpu=a100" },
        { """{"disktype":"ssd","zone":"dfw-1"}""", "", "nodeSelector zone=dfw-1" },
        // Required node affinity: the terms are ORed.
        { "", Required(Term("zone", "In", "iad-1")), null },
        { "", Required(Term("zone", "In", "dfw-1")), "required node affinity" },
        { "", Required(Term("zone", "In", "dfw-1"), Term("gen", "Gt", "2")), null },
        { "", Required(Term("zone", "In", "dfw-1"), Term("gen", "Gt", "5")), "required node affinity" },
        // An empty term selects no node but does not veto another term.
        { "", Required("{}"), "required node affinity" },
        { "", Required("{}", Term("zone", "Exists")), null },
        // A required node selector with no terms matches no node (the API refuses to store it; the scheduler ORs nothing).
        { "", Required(), "required node affinity" },
        { "", """{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{}}}""", "required node affinity" },
        // Only the required part binds: preferences and other affinities do not restrict placement.
        { "", """{"nodeAffinity":{"preferredDuringSchedulingIgnoredDuringExecution":[{"weight":1,"preference":""" + Term("zone", "In", "dfw-1") + "}]}}", null },
        { "", """{"podAffinity":{}}""", null },
        // nodeSelector and node affinity must both hold; the nodeSelector is named first.
        { """{"disktype":"ssd"}""", Required(Term("zone", "In", "dfw-1")), "required node affinity" },
        { """{"disktype":"hdd"}""", Required(Term("zone", "In", "dfw-1")), "nodeSelector disktype=hdd" },
        // matchFields on the node's name.
        { "", Required("""{"matchFields":[{"key":"metadata.name","operator":"In","values":["node-a"]}]}"""), null },
        { "", Required("""{"matchFields":[{"key":"metadata.name","operator":"In","values":["node-b"]}]}"""), "required node affinity" },
    };

    [Theory]
    [MemberData(nameof(Placement))]
    public void NodeSelectorAndNodeAffinity(string nodeSelector, string affinity, string? whyNot)
    {
        var shape = Shape(nodeSelector, affinity);
        Assert.Equal(whyNot, shape.WhyNot(NodeLabels, []));
        Assert.Equal(whyNot is null, shape.AllowsNode(NodeLabels, []));
    }

    // ---- tolerations ------------------------------------------------------------------------------------------

    public static TheoryData<string, string, string?, string, bool> Tolerations => new()
    {
        // toleration (JSON as written in a pod), taint key, value, effect, tolerated?
        // Equal (the default operator): the same key and the same value.
        { """{"key":"dedicated","operator":"Equal","value":"gpu","effect":"NoSchedule"}""", "dedicated", "gpu", "NoSchedule", true },
        { """{"key":"dedicated","value":"gpu","effect":"NoSchedule"}""", "dedicated", "gpu", "NoSchedule", true },
        { """{"key":"dedicated","operator":"","value":"gpu"}""", "dedicated", "gpu", "NoSchedule", true },
        { """{"key":"dedicated","operator":"Equal","value":"batch","effect":"NoSchedule"}""", "dedicated", "gpu", "NoSchedule", false },
        { """{"key":"dedicated","operator":"Equal","effect":"NoSchedule"}""", "dedicated", null, "NoSchedule", true },
        { """{"key":"dedicated","operator":"Equal","effect":"NoSchedule"}""", "dedicated", "gpu", "NoSchedule", false },
        { """{"key":"other","operator":"Equal","value":"gpu","effect":"NoSchedule"}""", "dedicated", "gpu", "NoSchedule", false },
        // Exists: the key alone; an empty key with Exists tolerates every taint (of its effect, if it names one).
        { """{"key":"dedicated","operator":"Exists","effect":"NoSchedule"}""", "dedicated", "gpu", "NoSchedule", true },
        { """{"key":"dedicated","operator":"Exists"}""", "dedicated", null, "NoExecute", true },
        { """{"key":"other","operator":"Exists"}""", "dedicated", "gpu", "NoSchedule", false },
        { """{"operator":"Exists"}""", "dedicated", "gpu", "NoSchedule", true },
        { """{"operator":"Exists"}""", "node.kubernetes.io/unreachable", null, "NoExecute", true },
        { """{"operator":"Exists","effect":"NoSchedule"}""", "dedicated", "gpu", "NoSchedule", true },
        { """{"operator":"Exists","effect":"NoSchedule"}""", "dedicated", "gpu", "NoExecute", false },
        // An empty key with Equal matches any key with that value (ToleratesTaint checks the key only when given).
        { """{"operator":"Equal","value":"gpu"}""", "dedicated", "gpu", "NoSchedule", true },
        { """{"operator":"Equal","value":"gpu"}""", "dedicated", "cpu", "NoSchedule", false },
        // Effects: an empty effect matches every effect; a named one only itself.
        { """{"key":"dedicated","operator":"Exists","effect":"NoExecute"}""", "dedicated", "gpu", "NoSchedule", false },
        { """{"key":"dedicated","operator":"Exists","effect":"PreferNoSchedule"}""", "dedicated", "gpu", "NoSchedule", false },
        { """{"key":"dedicated","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}""", "dedicated", "gpu", "NoExecute", true },
        // An operator the API does not know tolerates nothing.
        { """{"key":"dedicated","operator":"In","value":"gpu"}""", "dedicated", "gpu", "NoSchedule", false },
    };

    [Theory]
    [MemberData(nameof(Tolerations))]
    public void TolerationAgainstTaint(string toleration, string key, string? value, string effect, bool tolerated)
    {
        var parsed = PodShape.ParseTolerations(Encoding.UTF8.GetBytes("[" + toleration + "]"));
        Assert.Equal(tolerated, Assert.Single(parsed).Tolerates(new Taint(key, value, effect)));
    }

    public static TheoryData<string, string, string?> Taints => new()
    {
        // pod tolerations, taint (key=value:effect), WhyNot
        // Only NoSchedule and NoExecute keep a pod off a node; PreferNoSchedule is a preference.
        { "", "dedicated=gpu:NoSchedule", "taint dedicated=gpu:NoSchedule" },
        { "", "dedicated=gpu:NoExecute", "taint dedicated=gpu:NoExecute" },
        { "", "dedicated=gpu:PreferNoSchedule", null },
        { "", "dedicated=:NoSchedule", "taint dedicated=:NoSchedule" },
        { """[{"key":"dedicated","operator":"Exists"}]""", "dedicated=gpu:NoSchedule", null },
        { """[{"key":"dedicated","operator":"Exists","effect":"NoSchedule"}]""", "dedicated=gpu:NoExecute", "taint dedicated=gpu:NoExecute" },
        { """[{"key":"other","operator":"Exists"}]""", "dedicated=gpu:NoSchedule", "taint dedicated=gpu:NoSchedule" },
        // Any one toleration may tolerate a taint.
        { """[{"key":"other","operator":"Exists"},{"key":"dedicated","value":"gpu"}]""", "dedicated=gpu:NoSchedule", null },
    };

    [Theory]
    [MemberData(nameof(Taints))]
    public void TaintsKeepPodsOff(string tolerations, string taint, string? whyNot)
    {
        var (kv, effect) = (taint[..taint.IndexOf(':')], taint[(taint.IndexOf(':') + 1)..]);
        var (key, value) = (kv[..kv.IndexOf('=')], kv[(kv.IndexOf('=') + 1)..]);
        var shape = Shape(tolerations: tolerations);
        Assert.Equal(whyNot, shape.WhyNot(NodeLabels, [new Taint(key, value.Length == 0 ? null : value, effect)]));
    }

    [Fact]
    public void EveryTaintMustBeToleratedAndTheFirstUntoleratedOneIsNamed()
    {
        var shape = Shape(tolerations: """[{"key":"a","operator":"Exists"}]""");
        Taint[] taints = [new("a", "1", "NoSchedule"), new("soft", "x", "PreferNoSchedule"), new("b", "2", "NoExecute"), new("c", "3", "NoSchedule")];
        Assert.Equal("taint b=2:NoExecute", shape.WhyNot(NodeLabels, taints));
        Assert.Null(shape.WhyNot(NodeLabels, taints[..2]));
    }

    [Fact]
    public void TheNodeSelectorIsNamedBeforeAffinityAndAffinityBeforeTaints()
    {
        Taint[] taint = [new("dedicated", "gpu", "NoSchedule")];
        Assert.Equal("nodeSelector disktype=hdd", Shape("""{"disktype":"hdd"}""", Required(Term("zone", "In", "dfw-1"))).WhyNot(NodeLabels, taint));
        Assert.Equal("required node affinity", Shape("", Required(Term("zone", "In", "dfw-1"))).WhyNot(NodeLabels, taint));
        Assert.Equal("taint dedicated=gpu:NoSchedule", Shape("", Required(Term("zone", "In", "iad-1"))).WhyNot(NodeLabels, taint));
    }

    // ---- hostname anti-affinity -------------------------------------------------------------------------------

    private static PodShape Labelled(string ns, string labels, string affinity = "") =>
        PodShape.Parse(ns, OwnerKind.None, null, "p", PodTraits.None, 0, Encoding.UTF8.GetBytes(labels), [], Encoding.UTF8.GetBytes(affinity), []);

    private static string AntiAffinity(string selector, string topologyKey = "kubernetes.io/hostname", string namespaces = "", string namespaceSelector = "") =>
        """{"podAntiAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"labelSelector":""" + selector
        + ",\"topologyKey\":\"" + topologyKey + "\"" + (namespaces.Length > 0 ? ",\"namespaces\":" + namespaces : "")
        + (namespaceSelector.Length > 0 ? ",\"namespaceSelector\":" + namespaceSelector : "") + "}]}}";

    [Fact]
    public void HostnameAntiAffinityRepelsTheSelectedPodsOfItsNamespace()
    {
        var web = Labelled("shop", """{"app":"web"}""", AntiAffinity("""{"matchLabels":{"app":"web"}}"""));
        Assert.True(web.Repels(Labelled("shop", """{"app":"web"}""")));
        Assert.False(web.Repels(Labelled("shop", """{"app":"api"}""")));
        Assert.False(web.Repels(Labelled("other", """{"app":"web"}""")));                  // the term's own namespace by default
        Assert.NotNull(web.SelfAntiAffinityKey);

        // An empty labelSelector selects every pod; a null one none.
        Assert.True(Labelled("shop", "{}", AntiAffinity("{}")).Repels(Labelled("shop", """{"app":"api"}""")));
        Assert.False(Labelled("shop", "{}", AntiAffinity("null")).Repels(Labelled("shop", """{"app":"api"}""")));

        // Named namespaces replace the pod's own.
        var spread = Labelled("shop", """{"app":"web"}""", AntiAffinity("""{"matchLabels":{"app":"web"}}""", namespaces: """["other"]"""));
        Assert.True(spread.Repels(Labelled("other", """{"app":"web"}""")));
        Assert.False(spread.Repels(Labelled("shop", """{"app":"web"}""")));
        Assert.Null(spread.SelfAntiAffinityKey);                                          // it does not repel its own kind

        // A namespaceSelector adds namespaces: an empty one every namespace; a null one none (the pod's own then).
        var everywhere = Labelled("shop", """{"app":"web"}""", AntiAffinity("""{"matchLabels":{"app":"web"}}""", namespaceSelector: "{}"));
        Assert.True(everywhere.Repels(Labelled("other", """{"app":"web"}""")));
        Assert.True(everywhere.Repels(Labelled("shop", """{"app":"web"}""")));
        Assert.NotNull(everywhere.SelfAntiAffinityKey);
        var ownOnly = Labelled("shop", """{"app":"web"}""", AntiAffinity("""{"matchLabels":{"app":"web"}}""", namespaceSelector: "null"));
        Assert.False(ownOnly.Repels(Labelled("other", """{"app":"web"}""")));
        Assert.True(ownOnly.Repels(Labelled("shop", """{"app":"web"}""")));

        // Only the hostname topology keeps pods off one node.
        var zonal = Labelled("shop", """{"app":"web"}""", AntiAffinity("""{"matchLabels":{"app":"web"}}""", "topology.kubernetes.io/zone"));
        Assert.False(zonal.Repels(Labelled("shop", """{"app":"web"}""")));
    }

    [Fact]
    public void PodsOfOneSpreadShareTheirAntiAffinityKey()
    {
        const string term = """{"matchExpressions":[{"key":"app","operator":"In","values":["db"]}]}""";
        var a = Labelled("shop", """{"app":"db","statefulset.kubernetes.io/pod-name":"db-0"}""", AntiAffinity(term));
        var b = Labelled("shop", """{"app":"db","statefulset.kubernetes.io/pod-name":"db-1"}""", AntiAffinity(term));
        Assert.Equal(a.SelfAntiAffinityKey, b.SelfAntiAffinityKey);
        Assert.NotEqual(a.SelfAntiAffinityKey, Labelled("other", """{"app":"db"}""", AntiAffinity(term)).SelfAntiAffinityKey);
        // A term over every namespace groups the pods of every namespace.
        Assert.Equal(Labelled("shop", """{"app":"db"}""", AntiAffinity(term, namespaceSelector: "{}")).SelfAntiAffinityKey,
            Labelled("other", """{"app":"db"}""", AntiAffinity(term, namespaceSelector: "{}")).SelfAntiAffinityKey);
    }
}
