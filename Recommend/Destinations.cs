namespace Karpetrack;

/// <summary>Where a node's pods would go, and what that takes of the room; <see cref="Unfit"/> names those that fit nowhere (then the rest is not a plan).</summary>
internal readonly record struct Placement(List<PodMove> Moves, List<RoomClaim> Claims, List<string>? Unfit = null);

/// <summary>
/// The open nodes of the room for one removal after another: a removal's pods are placed tentatively (largest
/// first, onto the fullest node that takes them), and only a removal that places every pod becomes a command, so
/// no two removals count on the same room (the room itself changes only when a command is applied).
/// Work per removal is the displaced pods times the nodes scanned, never a whole re-pack.
/// </summary>
internal sealed class Destinations
{
    private readonly Room room;
    private readonly int[] order;                               // room positions, fullest first: tight placements, emptier nodes stay removable
    private readonly bool[] plain;                              // by position in order: no NoSchedule/NoExecute taint, most pods need no label check
    private readonly ResourceTable table;
    private readonly Demand[] delta;                            // what the placement under way puts on each node
    private readonly byte[] tier;                               // by position in order: 0 stays (blocked, or receiving pods), 1 removable, 2 removable and better replaced
    private readonly int maxTier;
    private readonly Dictionary<string, int> position = new(StringComparer.Ordinal);
    private readonly List<int> touched = [];
    // By block of Block positions and tier: the most free cpu and memory of an open node there. Room only shrinks, so a
    // block not yet refreshed overstates: a scan skips the blocks where no node can take the pod and checks the rest
    // node by node as before (same first fit), so a pod that fits nowhere costs blocks, not nodes.
    private const int Block = 32;
    private readonly long[] blockCpu, blockMem;
    private readonly bool[] stale;
    private readonly List<int> staleBlocks = [];
    private int lastFrom = -1;
    private readonly bool blockIndex;

    /// <param name="tierOf">Which nodes to fill first: 0, the nodes that stay (paid for whatever the plan); 1, removable ones,
    /// which a pod would keep; 2, removable ones whose pods would cost much less on new nodes (a replacement is better than
    /// keeping them). Null: all in one tier.</param>
    /// <param name="maxTier">The last tier that may receive pods.</param>
    /// <param name="blockIndex">Skip the blocks of nodes where no node has the room (false: every node is checked; the
    /// placements are the same, the tests compare both).</param>
    public Destinations(Room room, ResourceTable table, Func<string, int>? tierOf = null, int maxTier = 2, bool blockIndex = true)
    {
        // Three tiers (0, 1, 2): the block index keeps one entry per tier and block.
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxTier, 2);
        this.blockIndex = blockIndex;
        this.maxTier = maxTier;
        this.room = room;
        this.table = table;
        order = Enumerable.Range(0, room.Count).Where(room.IsOpen)
            .OrderByDescending(i => Room.Utilization(room.View(i))).ThenBy(i => room.View(i).Name, StringComparer.Ordinal).ToArray();
        delta = new Demand[order.Length];
        plain = order.Select(i => !room.View(i).Taints.Any(PodShape.KeepsPodsOff)).ToArray();
        tier = order.Select(i => TierOf(tierOf, room.View(i).Name)).ToArray();
        for (int i = 0; i < order.Length; i++) position[room.View(order[i]).Name] = i;
        int blocks = (order.Length + Block - 1) / Block;
        blockCpu = new long[blocks * 3];
        blockMem = new long[blocks * 3];
        stale = new bool[blocks];
        for (int b = 0; b < blocks; b++) Refresh(b);
    }

    private static byte TierOf(Func<string, int>? tierOf, string node)
    {
        int t = tierOf?.Invoke(node) ?? 0;
        if (t is < 0 or > 2) throw new ArgumentOutOfRangeException(nameof(tierOf), t, $"tier of {node}: 0, 1 or 2");
        return (byte)t;
    }

    private void Refresh(int b)
    {
        for (int t = 0; t < 3; t++) (blockCpu[b * 3 + t], blockMem[b * 3 + t]) = (long.MinValue, long.MinValue);
        for (int i = b * Block, end = Math.Min(order.Length, i + Block); i < end; i++)
        {
            if (!room.IsOpen(order[i]) || tier[i] > 2) continue;
            var f = room.Free(order[i]);
            int k = b * 3 + tier[i];
            blockCpu[k] = Math.Max(blockCpu[k], f.CpuMilli);
            blockMem[k] = Math.Max(blockMem[k], f.MemoryBytes);
        }
    }

    private void MarkStale(int i)
    {
        int b = i / Block;
        if (!stale[b]) { stale[b] = true; staleBlocks.Add(b); }
    }

    /// <summary>The nodes a placement sends pods to stay from now on (they receive): later placements fill them first.</summary>
    public void Kept(Placement placement)
    {
        foreach (var c in placement.Claims)
            if (position.TryGetValue(c.Node, out var i)) { tier[i] = 0; MarkStale(i); }
    }

    /// <summary>
    /// Places the pods tentatively; the ones that fit nowhere are named in Unfit (up to <see cref="MaxNamedUnfit"/>,
    /// the others still placed until then). A pod of a shape that already failed with no larger a demand fails
    /// without a scan (room only shrinks as pods are placed): replicas of one workload cost one scan.
    /// </summary>
    public Placement TryPlace(PodFacts[] pods, string from)
    {
        if (pods.Length == 0) return new Placement([], []);
        int self = room.IndexOf(from);
        // What the last placement kept has been taken from the room since, and its node closed: tighten those blocks.
        if (lastFrom >= 0) MarkStale(lastFrom);
        lastFrom = position.GetValueOrDefault(from, -1);
        foreach (var b in staleBlocks) { Refresh(b); stale[b] = false; }
        staleBlocks.Clear();
        foreach (var i in touched) delta[i] = Demand.Zero;
        touched.Clear();
        var addedGroups = new List<(int Node, string Group)>();
        var moves = new List<PodMove>();
        var claims = new List<RoomClaim>();
        List<string>? unfit = null;
        List<(PodShape Shape, Demand Demand)>? failed = null;
        foreach (var p in pods.OrderByDescending(p => p.Requests[ResourceTable.Cpu]).ThenByDescending(p => p.Requests[ResourceTable.Memory]).ThenBy(p => p.Uid))
        {
            var demand = PodRules.DemandOf(p, table);
            if (failed is not null && FailedBefore(failed, p.Shape, demand))
            {
                (unfit ??= []).Add(PodRules.Describe(p));
                if (unfit.Count >= MaxNamedUnfit) break;
                continue;
            }
            var group = p.Shape.SelfAntiAffinityKey;
            int target = Target(p, demand, group, self, addedGroups);
            if (target < 0)
            {
                (unfit ??= []).Add(PodRules.Describe(p));
                (failed ??= []).Add((p.Shape, demand));
                if (unfit.Count >= MaxNamedUnfit) break;
                continue;
            }
            if (delta[target] == Demand.Zero) touched.Add(target);
            delta[target] = delta[target] + demand;
            if (group is not null) addedGroups.Add((order[target], group));
            var to = room.View(order[target]).Name;
            moves.Add(new PodMove(p, from, to));
            claims.Add(new RoomClaim(to, demand, group));
        }
        unfit?.Sort(StringComparer.Ordinal);
        return new Placement(moves, claims, unfit);
    }

    /// <summary>
    /// The first node in order (a position in it) that takes the pod besides what the placement already put there, tier by
    /// tier; -1 for none.
    /// </summary>
    private int Target(PodFacts p, Demand demand, string? group, int self, List<(int Node, string Group)> addedGroups)
    {
        for (byte t = 0; t <= maxTier; t++)
            if (Target(p, demand, group, self, addedGroups, t) is var i and >= 0) return i;
        return -1;
    }

    private int Target(PodFacts p, Demand demand, string? group, int self, List<(int Node, string Group)> addedGroups, byte level)
    {
        bool unconstrained = p.Shape.NodeSelector.Count == 0 && p.Shape.RequiredNodeTerms.Count == 0;
        for (int i = 0; i < order.Length; i++)
        {
            if (blockIndex && i % Block == 0 && (demand.CpuMilli > blockCpu[i / Block * 3 + level] || demand.MemoryBytes > blockMem[i / Block * 3 + level]))
            {
                i += Block - 1;
                continue;
            }
            if (tier[i] != level) continue;
            int n = order[i];
            if (n == self || !room.IsOpen(n)) continue;
            if (!demand.FitsIn(room.Free(n) - delta[i])) continue;
            if (group is not null && ((room.GroupsOn(n)?.Contains(group) ?? false) || addedGroups.Contains((n, group)))) continue;
            var view = room.View(n);
            if (!(unconstrained && plain[i]) && !p.Shape.AllowsNode(view.Labels, view.Taints)) continue;
            return i;
        }
        return -1;
    }

    /// <summary>
    /// A blocker names at most this many pods that fit nowhere: past it the node is known to stay, and
    /// placing its other pods only to name more cost the 5,000-node scan about a fifth more.
    /// </summary>
    private const int MaxNamedUnfit = 10;

    private static bool FailedBefore(List<(PodShape Shape, Demand Demand)> failed, PodShape shape, Demand demand)
    {
        foreach (var f in failed)
            if (ReferenceEquals(f.Shape, shape) && f.Demand.FitsIn(demand)) return true;
        return false;
    }
}
