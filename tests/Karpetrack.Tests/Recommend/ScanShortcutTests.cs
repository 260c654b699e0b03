namespace Karpetrack.Tests.Recommend;

/// <summary>
/// The shortcuts of the removal scan must not change a plan: the cover bound the replacements test before packing is
/// never above a packing of the pods, and the block index of the consolidation destinations finds the same first fit
/// as a scan of every node.
/// </summary>
public class ScanShortcutTests
{
    private static readonly string[] Classes = ["gp.vs1.medium-iad", "gp.vs1.large-iad", "gp.vs1.xlarge-iad", "ch.vs1.large-iad", "mh.vs1.medium-iad", "mh.vs1.large-iad"];
    private const string PinnedMh = ""","nodeSelector":{"karpetrack.io/category":"mh"}""";

    [Fact]
    public void CoverFloorIsNeverAbovePackingsOfThePodsAndPrunesWhatCannotSave()
    {
        var o = new RecommenderOptions { Region = "us-east-iad-1" };
        int positive = 0;
        for (int seed = 1; seed <= 60; seed++)
        {
            var rng = new Random(seed);
            var s = new Scenario();
            int pods = rng.Next(1, 9);
            for (int p = 0; p < pods; p++)
                s.Pod($"p{p}", null, $"{rng.Next(1, 40) * 100}m", $"{rng.Next(1, 24) * 256}Mi", pending: true, extraSpec: rng.Next(4) == 0 ? PinnedMh : "");
            var all = s.Model.Pods();
            var state = new PlanState(s.Model.Snapshot(), all, [], [], Scenario.Book, o, []);
            var floor = state.CoverFloor(all);
            var shapes = new ShapeIndex(state.Resources);
            var problem = shapes.Problem(all.Select((p, i) => shapes.Item(i, p)).ToList(), state.Offers, [], (_, _) => false);
            var exact = Packer.Exact(problem, TimeSpan.FromSeconds(2));
            var solved = Packer.Solve(problem);
            Assert.Empty(exact.Unplaced);
            Assert.True(floor <= exact.Cost, $"seed {seed}: cover floor {floor} above a packing at {exact.Cost}");
            Assert.True(floor <= solved.Cost, $"seed {seed}: cover floor {floor} above a packing at {solved.Cost}");
            if (floor > 0) positive++;
        }
        Assert.Equal(60, positive);

        // A node whose pods fill a floor-priced class's worth of cpu: no replacement can save 20 % of a floor-priced node.
        var full = new Scenario().Node("n", "ch.vs1.large-iad").Pod("a", "n", "3500m", "3Gi");
        var st = new PlanState(full.Model.Snapshot(), full.Model.Pods(), [], [], Scenario.Book, o, []);
        var price = Scenario.Book.NodePrice("ch.vs1.large-iad", "spot")!.Value;
        Assert.False(o.SavesEnoughToReplace(price, price - st.CoverFloor(full.Model.Pods())));
    }

    [Fact]
    public void DestinationsWithTheBlockIndexPlaceEveryPodWhereAScanOfEveryNodeDoes()
    {
        var o = new RecommenderOptions { Region = "us-east-iad-1" };
        int placed = 0, unfit = 0;
        for (int seed = 1; seed <= 6; seed++)
        {
            var rng = new Random(seed);
            var s = new Scenario();
            int nodes = rng.Next(90, 160);
            for (int n = 0; n < nodes; n++)
            {
                var cls = Classes[rng.Next(Classes.Length)];
                s.Node("n" + n, cls, labels: rng.Next(5) == 0 ? new() { ["zone"] = "b" } : null);
                var c = Scenario.Book.Classes[cls].Class;
                long room = (long)(c.Cpu * 1000) - 100, used = 0;
                for (int p = 0, count = rng.Next(0, 6); p < count; p++)
                {
                    // Some pods take exactly what a node has left, so a block whose largest room equals the demand must still be searched.
                    long cpu = rng.Next(3) == 0 ? Math.Max(100, room - used) : rng.Next(1, 12) * 100;
                    if (used + cpu > room) break;
                    used += cpu;
                    s.Pod($"n{n}-{p}", "n" + n, $"{cpu}m", $"{rng.Next(1, 8) * 256}Mi", extraSpec: rng.Next(8) == 0 ? ""","nodeSelector":{"zone":"b"}""" : "");
                }
            }
            var pods = s.Model.Pods();
            var state = new PlanState(s.Model.Snapshot(), pods, [], [], Scenario.Book, o, []);
            // From the node's number, not a string hash (randomized per process): a failing seed replays.
            int Tier(string name) => int.Parse(name.AsSpan(1), System.Globalization.CultureInfo.InvariantCulture) % 3;
            var fast = new Destinations(state.Room, state.Resources, Tier, maxTier: 1 + seed % 2);
            var slow = new Destinations(state.Room, state.Resources, Tier, maxTier: 1 + seed % 2, blockIndex: false);
            var byNode = PodRules.ByNode(pods);
            foreach (var name in Enumerable.Range(0, nodes).Select(n => "n" + n).OrderBy(_ => rng.Next()).Take(nodes * 2 / 3))
            {
                var movable = PodRules.Movable(byNode.GetValueOrDefault(name) ?? []);
                var a = fast.TryPlace(movable, name);
                var b = slow.TryPlace(movable, name);
                Assert.Equal(Describe(b), Describe(a));
                if (a.Unfit is not null || movable.Length == 0) { unfit += a.Unfit is null ? 0 : 1; continue; }
                placed++;
                fast.Kept(a);
                slow.Kept(b);
                foreach (var claim in a.Claims) state.Room.Take(claim);
                state.Room.Close(name);
            }
        }
        Assert.True(placed > 50 && unfit > 20, $"{placed} placed, {unfit} unfit: the instances should exercise both outcomes");
    }

    [Fact]
    public void AllowsNodeAgreesWithWhyNotOnEveryShapeAndNode()
    {
        string[] specs =
        [
            "",
            ""","nodeSelector":{"zone":"b"}""",
            ""","nodeSelector":{"zone":"b","disk":"ssd"}""",
            ""","affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"disk","operator":"In","values":["ssd"]}]},{"matchExpressions":[{"key":"zone","operator":"NotIn","values":["a","b"]}]}]}}}""",
            ""","tolerations":[{"key":"dedicated","operator":"Equal","value":"db","effect":"NoSchedule"}]""",
            ""","tolerations":[{"operator":"Exists"}],"nodeSelector":{"zone":"a"}""",
        ];
        var s = new Scenario();
        for (int i = 0; i < specs.Length; i++) s.Pod("p" + i, null, "100m", "64Mi", pending: true, extraSpec: specs[i]);
        var shapes = s.Model.Pods().Select(p => p.Shape).ToList();
        Dictionary<string, string>[] labels = [[], new() { ["zone"] = "a" }, new() { ["zone"] = "b" }, new() { ["zone"] = "b", ["disk"] = "ssd" }, new() { ["zone"] = "c" }];
        Taint[][] taints = [[], [new Taint("dedicated", "db", "NoSchedule")], [new Taint("dedicated", "db", "PreferNoSchedule")], [new Taint("other", null, "NoExecute")],
            [new Taint("dedicated", "db", "NoSchedule"), new Taint("other", "x", "NoSchedule")]];
        int allowed = 0, refused = 0;
        foreach (var shape in shapes)
            foreach (var l in labels)
                foreach (var t in taints)
                {
                    bool allows = shape.AllowsNode(l, t);
                    Assert.Equal(shape.WhyNot(l, t) is null, allows);
                    if (allows) allowed++; else refused++;
                }
        Assert.True(allowed > 10 && refused > 10, $"{allowed} allowed, {refused} refused");
    }

    private static string Describe(Placement p) =>
        string.Join(";", p.Moves.Select(m => $"{m.Pod}->{m.To}")) + "|" + string.Join(",", p.Unfit ?? []);
}
