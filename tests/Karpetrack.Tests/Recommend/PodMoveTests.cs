namespace Karpetrack.Tests.Recommend;

/// <summary>
/// A move made from the model's pod facts (shape and packed name suffix, the name built when read) reads, compares,
/// hashes, prints and sorts exactly as the move made from the texts.
/// </summary>
public class PodMoveTests
{
    private static PodFacts[] Pods()
    {
        var s = new Scenario().Node("n1", "gp.vs1.large-iad").Node("n2", "gp.vs1.large-iad");
        // Packed suffixes of several lengths, with digits and dashes; a name that is not the owner's plus a suffix;
        // an owner whose name is another's prefix; a mirror pod named after its node; another namespace.
        foreach (var name in new[] { "app-5d9f-b", "app-5d9f-ab", "app-5d9f-a", "app-5d9f-a-9", "app-5d9f-z0z0z0z0z0z0", "app-5d9f-Upper", "other" })
            s.Pod(name, "n1", "100m", "64Mi");
        s.Pod("app-5d9-x", "n1", "100m", "64Mi", owner: "app-5d9");
        s.Pod("app-5d9f-a", "n1", "100m", "64Mi", ns: "a-first");
        s.Pod("kube-proxy-n1", "n1", "10m", "16Mi", ns: "kube-system", ownerKind: "Node", owner: "n1");
        return s.Model.Pods();
    }

    [Fact]
    public void AMoveOfPodFactsReadsAsTheMoveOfItsTexts()
    {
        var pods = Pods();
        Assert.Contains(pods, p => p.NameSuffix > 0);
        Assert.Contains(pods, p => p.NameSuffix == 0);
        Assert.Contains(pods, p => p.NameSuffix == PodFacts.NodeNameSuffix);
        foreach (var p in pods)
        {
            var compact = new PodMove(p, p.Node!, "gp.vs1.medium-iad#1");
            var text = new PodMove(p.Namespace, p.Name, p.Node!, "gp.vs1.medium-iad#1");
            Assert.Equal(p.Name, compact.Pod);
            Assert.Equal(p.Namespace, compact.Namespace);
            Assert.Equal(text, compact);
            Assert.Equal(text.GetHashCode(), compact.GetHashCode());
            Assert.Equal($"PodMove {{ Namespace = {p.Namespace}, Pod = {p.Name}, From = {p.Node}, To = gp.vs1.medium-iad#1 }}", compact.ToString());
            Assert.NotEqual(new PodMove(p, p.Node!, "elsewhere"), compact);
        }
    }

    [Fact]
    public void MovesSortByNamespaceThenNameOrdinalWithoutBuildingNames()
    {
        var pods = Pods();
        var moves = pods.Select(p => new PodMove(p, p.Node!, "n2")).ToList();
        // Names too long for the comparison's stack buffers are compared as built strings: the same order.
        string longName = new string('z', 250), longer = new string('z', 300);
        moves.Add(new PodMove(pods[0].Namespace, longer, "n1", "n2"));
        moves.Add(new PodMove(pods[0].Namespace, longName + "a", "n1", "n2"));
        moves.Add(new PodMove(pods[0].Namespace, longName, "n1", "n2"));
        moves.Sort(PodMove.CompareByPod);
        var expected = pods.Select(p => (p.Namespace, p.Name)).Concat([(pods[0].Namespace, Name: longer), (pods[0].Namespace, Name: longName + "a"), (pods[0].Namespace, Name: longName)]).ToList();
        expected.Sort((a, b) => string.CompareOrdinal(a.Namespace, b.Namespace) is var c and not 0 ? c : string.CompareOrdinal(a.Name, b.Name));
        Assert.Equal(expected, moves.Select(m => (m.Namespace, m.Pod)));
    }
}
