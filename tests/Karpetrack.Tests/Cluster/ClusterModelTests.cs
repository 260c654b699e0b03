namespace Karpetrack.Tests.Cluster;

public class ClusterModelTests
{
    private static readonly ResourceTable Table = ResourceTable.Default;

    internal static NodeRecord Node(string name, long cpuMilli = 4000, long mem = 8L << 30, bool ready = true, bool cordoned = false,
        Dictionary<string, string>? labels = null) => new()
    {
        Name = name,
        Allocatable = [cpuMilli, mem],
        Capacity = [cpuMilli + 100, mem + (256L << 20)],
        Ready = ready,
        Unschedulable = cordoned,
        Labels = labels ?? new Dictionary<string, string>(),
    };

    internal static PodRecord Pod(string name, string? node, long cpuMilli, long mem, PodPhase phase = PodPhase.Running,
        OwnerKind owner = OwnerKind.ReplicaSet, bool unschedulable = false, bool terminating = false, Guid? uid = null) => new()
    {
        Uid = uid ?? Json.StableGuid(name),
        Name = name,
        Namespace = "default",
        NodeName = node,
        Phase = phase,
        Owner = owner,
        Unschedulable = unschedulable,
        Terminating = terminating,
        Requests = [cpuMilli, mem],
    };

    private static NodeView View(ClusterModel m, string name) => m.Snapshot().Nodes.Single(n => n.Name == name);

    [Fact]
    public void AddUpdateDeleteKeepTalliesExact()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("a"));
        m.UpsertPod(Pod("p1", "a", 500, 1L << 30));
        m.UpsertPod(Pod("p2", "a", 250, 1L << 29));
        var a = View(m, "a");
        Assert.Equal(750, a.Allocated[0]);
        Assert.Equal((1L << 30) + (1L << 29), a.Allocated[1]);
        Assert.Equal(2, a.Pods);

        m.UpsertPod(Pod("p1", "a", 1000, 1L << 30));   // requests changed (a new pod revision)
        Assert.Equal(1250, View(m, "a").Allocated[0]);

        m.DeletePod(Json.StableGuid("p2"));
        a = View(m, "a");
        Assert.Equal(1000, a.Allocated[0]);
        Assert.Equal(1, a.Pods);
    }

    [Fact]
    public void RebindMovesTheReservation()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("a"));
        m.UpsertNode(Node("b"));
        m.UpsertPod(Pod("p", null, 500, 100, PodPhase.Pending, unschedulable: true));
        var s = m.Snapshot();
        Assert.Equal(1, s.PendingPods);
        Assert.Equal(500, s.PendingRequests[0]);
        Assert.All(s.Nodes, n => Assert.Equal(0, n.Allocated[0]));

        m.UpsertPod(Pod("p", "a", 500, 100));
        s = m.Snapshot();
        Assert.Equal(0, s.PendingPods);
        Assert.Equal(0, s.PendingRequests[0]);
        Assert.Equal(500, View(m, "a").Allocated[0]);

        m.UpsertPod(Pod("p", "b", 500, 100));
        Assert.Equal(0, View(m, "a").Allocated[0]);
        Assert.Equal(500, View(m, "b").Allocated[0]);
    }

    [Fact]
    public void TerminalPodsReleaseTerminatingPodsHold()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("a"));
        m.UpsertPod(Pod("job", "a", 300, 0));
        m.UpsertPod(Pod("old", "a", 200, 0, terminating: true));
        Assert.Equal(500, View(m, "a").Allocated[0]);
        m.UpsertPod(Pod("job", "a", 300, 0, PodPhase.Succeeded));
        Assert.Equal(200, View(m, "a").Allocated[0]);
        Assert.Equal(1, View(m, "a").Pods);
        m.UpsertPod(Pod("old", "a", 200, 0, PodPhase.Failed, terminating: true));
        Assert.Equal(0, View(m, "a").Allocated[0]);
    }

    [Fact]
    public void PendingButNotUnschedulableIsNotDemand()
    {
        var m = new ClusterModel(Table);
        m.UpsertPod(Pod("fresh", null, 100, 0, PodPhase.Pending, unschedulable: false));
        Assert.Equal(0, m.Snapshot().PendingPods);
    }

    [Fact]
    public void DaemonSetAndMirrorPodsAreOverheadAndAllocated()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("a"));
        m.UpsertPod(Pod("ds", "a", 100, 10, owner: OwnerKind.DaemonSet));
        m.UpsertPod(Pod("static", "a", 50, 5, owner: OwnerKind.Mirror));
        m.UpsertPod(Pod("app", "a", 400, 40));
        var a = View(m, "a");
        Assert.Equal(150, a.DaemonSetOverhead[0]);
        Assert.Equal(550, a.Allocated[0]);
    }

    [Fact]
    public void PodsArrivingBeforeTheirNodeAreCountedOnceItAppears()
    {
        var m = new ClusterModel(Table);
        m.UpsertPod(Pod("early", "late-node", 700, 0));
        Assert.Empty(m.Snapshot().Nodes);
        m.UpsertNode(Node("late-node"));
        Assert.Equal(700, View(m, "late-node").Allocated[0]);
        m.DeleteNode("late-node");
        Assert.Empty(m.Snapshot().Nodes);
        m.UpsertNode(Node("late-node"));
        Assert.Equal(700, View(m, "late-node").Allocated[0]);
    }

    [Fact]
    public void RelistDeletesWhatWasNotSeenAgain()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("a"));
        m.UpsertNode(Node("gone"));
        m.UpsertPod(Pod("stay", "a", 100, 0));
        m.UpsertPod(Pod("vanished", "a", 200, 0));

        m.BeginPodRelist();
        m.UpsertPod(Pod("stay", "a", 100, 0));
        Assert.Equal(1, m.EndPodRelist());
        m.BeginNodeRelist();
        m.UpsertNode(Node("a"));
        Assert.Equal(1, m.EndNodeRelist());

        var s = m.Snapshot();
        Assert.Equal(["a"], s.Nodes.Select(n => n.Name));
        Assert.Equal(100, s.Nodes[0].Allocated[0]);
        Assert.Equal(1, m.PodCount);
    }

    [Fact]
    public void RelistKeepsPodsUpsertedDuringItAndForgetsTheRestAcrossManyPods()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("a", cpuMilli: 1_000_000));
        for (int i = 0; i < 3_000; i++) m.UpsertPod(Pod($"p{i}", "a", 10, 0));
        m.BeginPodRelist();
        for (int i = 0; i < 3_000; i += 3) m.UpsertPod(Pod($"p{i}", "a", 10, 0));
        m.DeletePod(Json.StableGuid("p3"));                       // a deletion during the relist
        m.UpsertPod(Pod("new", "a", 10, 0));
        Assert.Equal(2_000, m.EndPodRelist());
        Assert.Equal(1_000, m.PodCount);
        Assert.Equal(10_000, View(m, "a").Allocated[0]);
        Assert.Equal(0, m.EndPodRelist());                         // no relist under way: nothing to delete

        // A later relist starts from a clean slate: being seen in the previous one does not count.
        m.BeginPodRelist();
        m.UpsertPod(Pod("new", "a", 10, 0));
        Assert.Equal(999, m.EndPodRelist());
        Assert.Equal(["new"], m.Pods().Select(p => p.Name));
    }

    [Fact]
    public void PodNamesSurviveCompactStorage()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("node-1"));
        PodRecord Owned(string name, string owner, OwnerKind kind = OwnerKind.ReplicaSet, string? node = "node-1")
        {
            var p = Pod(name, node, 10, 0, owner: kind);
            p.OwnerName = owner;
            return p;
        }
        m.UpsertPod(Owned("web-7d9f8-x2k4q", "web-7d9f8"));            // a five-character suffix
        m.UpsertPod(Owned("db-0", "db", OwnerKind.StatefulSet));          // an ordinal
        m.UpsertPod(Owned("job-abcdefghijkl", "job", OwnerKind.Job));    // twelve characters: does not fit 32 bits
        m.UpsertPod(Owned("job-zzzzzzz", "job", OwnerKind.Job));         // seven
        m.UpsertPod(Owned("kube-proxy-node-1", "node-1", OwnerKind.Mirror));
        m.UpsertPod(Owned("bare", ""));
        m.UpsertPod(Owned("pending-abc12", "pending", node: null));
        Assert.Equal(["bare", "db-0", "job-abcdefghijkl", "job-zzzzzzz", "kube-proxy-node-1", "web-7d9f8-x2k4q"],
            m.PodsOn("node-1").Select(p => p.Name).Order(StringComparer.Ordinal));
        m.DeletePod(Json.StableGuid("job-abcdefghijkl"));
        m.UpsertPod(Owned("job-abcdefghijkl", "job", OwnerKind.Job));
        Assert.Contains("job-abcdefghijkl", m.PodsOn("node-1").Select(p => p.Name));
    }

    [Fact]
    public void ShapesShareTheirNamespaceAndPartsAndGiveThemBackWhenTheLastPodGoes()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("a"));
        PodRecord Shaped(string name, string app, string ns)
        {
            var p = Pod(name, "a", 10, 0);
            p.OwnerName = app;
            p.Namespace = new string(ns.AsSpan());                      // a fresh string each time, as the decoder makes
            p.LabelsJson = System.Text.Encoding.UTF8.GetBytes($$"""{"app":"{{app}}"}""");
            p.TolerationsJson = """[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}]"""u8.ToArray();
            p.NodeSelectorJson = """{"disk":"ssd"}"""u8.ToArray();
            return p;
        }
        m.UpsertPod(Shaped("one-a", "one", "team"));
        m.UpsertPod(Shaped("two-a", "two", "team"));
        m.UpsertPod(Shaped("two-b", "two", "team"));
        Assert.Equal(2, m.ShapeCount);
        var pods = m.Pods();
        var one = pods.Single(p => p.Name == "one-a").Shape;
        var two = pods.Single(p => p.Name == "two-a").Shape;
        Assert.Same(two, pods.Single(p => p.Name == "two-b").Shape);
        Assert.NotSame(one, two);
        Assert.Same(one.Namespace, two.Namespace);
        Assert.Same(one.Tolerations, two.Tolerations);
        Assert.Same(one.NodeSelector, two.NodeSelector);
        Assert.Equal("two", two.Labels["app"]);
        Assert.Equal("ssd", two.NodeSelector["disk"]);
        Assert.Single(two.Tolerations);
        Assert.Equal(["team"], View(m, "a").NamespaceRequests.Keys);

        foreach (var p in new[] { "one-a", "two-a", "two-b" }) m.DeletePod(Json.StableGuid(p));
        Assert.Equal(0, m.ShapeCount);
        Assert.Empty(View(m, "a").NamespaceRequests);
        m.UpsertPod(Shaped("two-c", "two", "other"));
        Assert.Equal(["other"], View(m, "a").NamespaceRequests.Keys);
    }

    [Fact]
    public void SnapshotsAreImmutableAndSharedWhenNothingChanged()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("a"));
        m.UpsertNode(Node("b"));
        var s1 = m.Snapshot();
        Assert.Same(s1, m.Snapshot());
        m.UpsertPod(Pod("p", "b", 100, 0));
        var s2 = m.Snapshot();
        Assert.NotSame(s1, s2);
        Assert.Same(s1.Nodes[0], s2.Nodes[0]);          // untouched node keeps its view
        Assert.Equal(0, s1.Nodes[1].Allocated[0]);      // the old snapshot did not change
        Assert.Equal(100, s2.Nodes[1].Allocated[0]);
    }

    [Fact]
    public void AnOldSnapshotKeepsItsTalliesWhileTheModelChanges()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("a"));
        m.UpsertPod(Pod("p", "a", 100, 10));
        m.UpsertPod(Pod("ds", "a", 5, 1, owner: OwnerKind.DaemonSet));
        var before = View(m, "a");
        m.UpsertPod(Pod("q", "a", 200, 20));
        m.UpsertPod(Pod("ds2", "a", 7, 1, owner: OwnerKind.DaemonSet));
        m.DeletePod(Json.StableGuid("p"));
        var after = View(m, "a");
        // cpu, memory and nvidia.com/gpu (always tracked, for the recommender)
        Assert.Equal([105L, 11L, 0L], before.Allocated);
        Assert.Equal([5L, 1L, 0L], before.DaemonSetOverhead);
        Assert.Equal([105L, 11L, 0L], before.NamespaceRequests["default"]);
        Assert.Equal([212L, 22L, 0L], after.Allocated);
        Assert.Equal([12L, 2L, 0L], after.DaemonSetOverhead);
        Assert.Equal([212L, 22L, 0L], after.NamespaceRequests["default"]);
        m.DeletePod(Json.StableGuid("q"));
        Assert.Equal([212L, 22L, 0L], after.NamespaceRequests["default"]);
        Assert.Equal([12L, 2L, 0L], View(m, "a").NamespaceRequests["default"]);
    }

    [Fact]
    public void NodeStatesAreReported()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("ready"));
        m.UpsertNode(Node("cordoned", cordoned: true));
        m.UpsertNode(Node("notready", ready: false));
        var deleting = Node("deleting");
        deleting.Deleting = true;
        m.UpsertNode(deleting);
        var states = m.Snapshot().Nodes.ToDictionary(n => n.Name, ClusterSnapshot.StateOf);
        Assert.Equal(NodeState.Ready, states["ready"]);
        Assert.Equal(NodeState.Cordoned, states["cordoned"]);
        Assert.Equal(NodeState.NotReady, states["notready"]);
        Assert.Equal(NodeState.Deleting, states["deleting"]);
    }

    [Fact]
    public void PodsResourceCountsOnePerPod()
    {
        var table = new ResourceTable(["cpu", "memory", "pods"]);
        var m = new ClusterModel(table);
        var n = Node("a");
        n.Allocatable = [4000, 1 << 30, 110];
        m.UpsertNode(n);
        m.UpsertPod(Pod("p1", "a", 1, 1));
        m.UpsertPod(Pod("p2", "a", 1, 1));
        Assert.Equal(2, m.Snapshot().Nodes[0].Allocated[table.PodsIndex]);
    }

    [Fact]
    public void SpotLabelsGiveClassPoolTypeAndRegion()
    {
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("n", labels: new()
        {
            [SpotLabels.ServerClass] = "gp.vs1.large-iad",
            [SpotLabels.Pool] = "3f2b6c1e-8d7a-4e1b-9c55-2b1f0a9e7d41",
            [SpotLabels.CapacityType] = "spot",
            [SpotLabels.TopologyRegion] = "IAD",
        }));
        var v = m.Snapshot().Nodes[0];
        Assert.Equal("gp.vs1.large-iad", v.ServerClass);
        Assert.Equal("us-east-iad-1", v.Region);
        Assert.Equal("spot", v.CapacityType);
        Assert.Equal("3f2b6c1e-8d7a-4e1b-9c55-2b1f0a9e7d41", v.Pool);
    }

    [Fact]
    public void RandomEventSequencesMatchARecount()
    {
        // Property: after any sequence of upserts, rebinds, phase changes and deletes, the incremental
        // tallies equal a recount from the final pod set.
        var rng = new Random(7);
        var m = new ClusterModel(Table);
        string[] nodes = ["n0", "n1", "n2", "n3"];
        foreach (var n in nodes) m.UpsertNode(Node(n));
        var live = new Dictionary<string, PodRecord>();
        for (int step = 0; step < 5000; step++)
        {
            var name = "p" + rng.Next(200);
            if (rng.Next(10) == 0) { m.DeletePod(Json.StableGuid(name)); live.Remove(name); continue; }
            var node = rng.Next(5) == 0 ? null : nodes[rng.Next(nodes.Length)];
            var phase = (PodPhase)rng.Next(1, 5);
            var pod = Pod(name, node, rng.Next(1, 2000), rng.Next(1, 1 << 20), phase,
                owner: rng.Next(4) == 0 ? OwnerKind.DaemonSet : OwnerKind.ReplicaSet, unschedulable: rng.Next(2) == 0);
            m.UpsertPod(pod);
            live[name] = pod;
        }
        var snap = m.Snapshot();
        foreach (var v in snap.Nodes)
        {
            var counted = live.Values.Where(p => p.NodeName == v.Name && p.Phase is not (PodPhase.Succeeded or PodPhase.Failed)).ToList();
            Assert.Equal(counted.Sum(p => p.Requests[0]), v.Allocated[0]);
            Assert.Equal(counted.Sum(p => p.Requests[1]), v.Allocated[1]);
            Assert.Equal(counted.Where(p => p.Owner == OwnerKind.DaemonSet).Sum(p => p.Requests[0]), v.DaemonSetOverhead[0]);
            Assert.Equal(counted.Count, v.Pods);
        }
        var pending = live.Values.Where(p => p.NodeName is null && p.Phase == PodPhase.Pending && p.Unschedulable).ToList();
        Assert.Equal(pending.Count, snap.PendingPods);
        Assert.Equal(pending.Sum(p => p.Requests[0]), snap.PendingRequests[0]);
    }
    [Fact]
    public void ManyNamespacesOnANodeKeepExactTalliesAndEveryOldViewKeepsItsOwn()
    {
        // Namespaces come and go in the middle of a node's list (its arrays are replaced, the view keeps the old ones);
        // every view must equal the live pods' sums as of its snapshot, then and after all later changes.
        var rng = new Random(11);
        var m = new ClusterModel(Table);
        m.UpsertNode(Node("a"));
        var live = new Dictionary<string, PodRecord>();
        var views = new List<(NodeView View, Dictionary<string, long[]> Expected)>();
        for (int step = 0; step < 300; step++)
        {
            if (live.Count > 0 && rng.Next(3) == 0)
            {
                var gone = live.Keys.ElementAt(rng.Next(live.Count));
                m.DeletePod(live[gone].Uid);
                live.Remove(gone);
            }
            else
            {
                var pod = Pod($"p{step}", "a", rng.Next(1, 500), rng.Next(1, 1000));
                pod.Namespace = $"ns{rng.Next(7)}";
                m.UpsertPod(pod);
                live[pod.Name] = pod;
            }
            var expected = live.Values.GroupBy(p => p.Namespace)
                .ToDictionary(g => g.Key, g => new[] { g.Sum(p => p.Requests[0]), g.Sum(p => p.Requests[1]), 0L });
            var view = View(m, "a");
            views.Add((view, expected));
            Assert.Equal(expected.Keys.Order(), view.NamespaceRequests.Keys.Order());
            foreach (var (ns, sums) in expected) Assert.Equal(sums, view.NamespaceRequests[ns]);
        }
        foreach (var (view, expected) in views)
        {
            Assert.Equal(expected.Count, view.NamespaceRequests.Count);
            foreach (var (ns, sums) in expected) Assert.Equal(sums, view.NamespaceRequests[ns]);
        }
    }

    [Fact]
    public void NodeLabelsReadLikeTheRecordsAndNodesWithTheSameKeysShareThem()
    {
        var m = new ClusterModel(Table);
        Dictionary<string, string> Labels(string pool, string host) => new() { ["pool"] = pool, ["kubernetes.io/hostname"] = host, ["zone"] = "z1" };
        var a = Node("a", labels: Labels("p1", "a"));
        m.UpsertNode(a);
        m.UpsertNode(Node("b", labels: Labels("p2", "b")));
        m.UpsertNode(Node("c", labels: new() { ["zone"] = "z1", ["pool"] = "p1" }));
        a.Labels["pool"] = "changed";   // the model keeps what it was given, not the decoder's object
        var (va, vb, vc) = (View(m, "a"), View(m, "b"), View(m, "c"));
        Assert.Equal(new KeyValuePair<string, string>[] { new("pool", "p1"), new("kubernetes.io/hostname", "a"), new("zone", "z1") }, va.Labels.ToArray());
        Assert.Equal("p2", vb.Labels["pool"]);
        Assert.True(vb.Labels.TryGetValue("kubernetes.io/hostname", out var host) && host == "b");
        Assert.False(va.Labels.ContainsKey("missing"));
        Assert.False(vc.Labels.TryGetValue("kubernetes.io/hostname", out _));
        Assert.Throws<KeyNotFoundException>(() => vc.Labels["kubernetes.io/hostname"]);
        Assert.Equal(["zone", "pool"], vc.Labels.Keys);
        Assert.Equal(2, vc.Labels.Count);
        Assert.Same(va.Labels.Keys, vb.Labels.Keys);      // one key layout for the nodes that carry the same keys
        Assert.NotSame(va.Labels.Keys, vc.Labels.Keys);
        Assert.Same(va.Annotations, vb.Annotations);      // no kept annotations: one shared empty map
        Assert.Empty(va.Annotations);
    }

    [Fact]
    public void LabelLayoutsStartAfreshPastTheirCapacityAndKeepWhatTheyHandedOut()
    {
        var layouts = new LabelLayouts(capacity: 2);
        var first = layouts.For(["a", "b"]);
        Assert.Same(first, layouts.For(["a", "b"]));
        Assert.NotSame(first, layouts.For(["b", "a"]));   // order is part of the layout
        layouts.For(["c"]);                               // the third distinct layout: the table starts afresh
        Assert.Equal(1, layouts.Count);
        Assert.Equal(["a", "b"], first.Keys);
        Assert.Equal(1, first.IndexOf("b"));
        Assert.NotSame(first, layouts.For(["a", "b"]));
    }
}
