namespace Karpetrack;

/// <summary>A node a removal method may consider: no blocker of its own; the pods it would move and its price.</summary>
internal sealed record Candidate(NodeView Node, PodFacts[] Movable, decimal Price);

/// <summary>
/// One run's plan as the methods build it: what they read (the snapshot, prices, options, offers, budgets, the pods
/// of each node) and the ledgers their decisions change: the room and anti-affinity groups of the nodes that may
/// receive pods, the nodes claimed by a command and the nodes receiving pods of a claimed one, the blockers, and the
/// recommendations so far. Only <see cref="Apply"/> changes the ledgers.
/// </summary>
internal sealed class PlanState
{
    public ClusterSnapshot Snapshot { get; }
    public PriceBook Book { get; }
    public RecommenderOptions Options { get; }
    public string Region { get; }
    public List<Offer> Offers { get; }
    public Budgets Budgets { get; }
    public PodFacts[] Pending { get; }
    public Room Room { get; }
    public ResourceTable Resources => Snapshot.Resources;
    /// <summary>Pools being provisioned (their nodes have not joined).</summary>
    public IReadOnlyList<InFlightNode> InFlight { get; }
    /// <summary>The time of the snapshot, for --expire-after; null: no node expires.</summary>
    public DateTimeOffset? Now { get; }

    /// <summary>The nodes without blockers, empty ones first, then the least utilized, the dearest, by name; set by <see cref="RankCandidates"/>.</summary>
    public IReadOnlyList<Candidate> Candidates { get; private set; } = [];

    /// <summary>
    /// Each node's movable pods (<see cref="PodRules.Movable"/>): what its blockers look at (DaemonSet and mirror pods never
    /// block) and its candidate's pods, one array for both. Dropped once the candidates are ranked: the candidates hold
    /// what the run needs, and the blocked nodes' pods (a whole copy of the cluster's pods otherwise) can go.
    /// </summary>
    private Dictionary<string, PodFacts[]>? movableByNode;
    private readonly HashSet<string> claimed = new(StringComparer.Ordinal);
    private readonly HashSet<string> receivers = new(StringComparer.Ordinal);   // nodes that take pods of a claimed node stay
    private readonly Dictionary<string, List<Blocker>> blockers = new(StringComparer.Ordinal);
    private readonly List<Recommendation> recommendations = [];
    private IReadOnlyList<(string Pod, string Reason)> unplaceable = [];
    private decimal provisioningCost, provisioningBound, resourceBound, configurationBound;
    // A run over a large cluster allocates hundreds of MB: collect its young garbage as it goes
    // rather than letting the runtime's gen0 budget (sized from the L3 cache) commit it all.
    private readonly AllocationPacer pacer = new(16 << 20);

    public PlanState(ClusterSnapshot snap, PodFacts[] pods, PdbRecord[] pdbs, DaemonSetRecord[] daemonSets, PriceBook book, RecommenderOptions o,
        IReadOnlyList<InFlightNode> inFlight, DateTimeOffset? now = null)
    {
        Snapshot = snap;
        Book = book;
        Options = o;
        Region = Karpetrack.Offers.Region(snap, o);
        Offers = Karpetrack.Offers.For(snap, book, Region, o, daemonSets);
        Budgets = Budgets.Index(pdbs);
        movableByNode = PodRules.ByNode(pods, movableOnly: true);
        Pending = pods.Where(p => p.Pending).ToArray();
        Room = Room.Of(snap, pods, o, inFlight, Offers);
        InFlight = inFlight;
        Now = now;
    }

    /// <summary>
    /// The cpu and memory Karpetrack-managed pools hold now: managed nodes (by their class when priced, else their
    /// capacity) and pools still being provisioned (by their class). What --max-managed-cpu/--max-managed-memory limit.
    /// </summary>
    public ManagedCapacity Managed()
    {
        var total = ManagedCapacity.Zero;
        foreach (var n in Snapshot.Nodes)
        {
            if (!IsManaged(n)) continue;
            total += Book.Classes.TryGetValue(n.ServerClass, out var pc)
                ? ManagedCapacity.Of(pc.Class)
                : new ManagedCapacity(n.Capacity[ResourceTable.Cpu], n.Capacity[ResourceTable.Memory]);
        }
        foreach (var f in InFlight)
            if (Book.Classes.TryGetValue(f.ServerClass, out var pc)) total += ManagedCapacity.Of(pc.Class);
        return total;
    }

    /// <summary>A node of a Karpetrack-managed pool (label karpetrack.io/managed=true).</summary>
    public static bool IsManaged(NodeView n) => n.Labels.TryGetValue(Actuator.ManagedLabel, out var m) && m == "true";

    /// <summary>A managed node past --expire-after at the time of the snapshot.</summary>
    public bool Expired(NodeView n) => Now is { } now && IsManaged(n) && Options.Pools.Expired(n.Created, now);

    /// <summary>What the new nodes of the recommendations so far add to the managed capacity.</summary>
    public ManagedCapacity Planned() => Adding(recommendations.SelectMany(r => r.NewNodes));

    /// <summary>What new nodes of these classes add to the managed capacity.</summary>
    public ManagedCapacity Adding(IEnumerable<NewNode> nodes)
    {
        var total = ManagedCapacity.Zero;
        foreach (var n in nodes) total += ManagedCapacity.Of(Book.Classes[n.ServerClass].Class, n.Count);
        return total;
    }

    public bool IsClaimed(string node) => claimed.Contains(node);
    public bool Receives(string node) => receivers.Contains(node);
    public IReadOnlyList<Blocker> BlockersOf(string node) => blockers[node];

    private readonly Dictionary<string, decimal?> floors = new(StringComparer.Ordinal);

    /// <summary>The packer's lower bound on new nodes for a node's movable pods (null: some pod fits no class), computed once per run.</summary>
    public decimal? Floor(string node, Func<decimal?> compute)
    {
        if (!floors.TryGetValue(node, out var f)) floors[node] = f = compute();
        return f;
    }

    private ShapeIndex? shapes;

    /// <summary>
    /// An empty shape index for one packing of this run's one-after-the-other small packings (each candidate's bound, each
    /// replacement): one index and item list reused instead of new dictionaries per packing; dropped with the run. Numbering
    /// is as in a new index, so the packings are the same. The problem of the packing before must be done with.
    /// </summary>
    public ShapeIndex Shapes() => (shapes ??= new ShapeIndex(Resources)).Reset();

    /// <summary>The packing of these pods onto new nodes of the offered classes only (no existing room), on <see cref="Shapes"/>.</summary>
    public PackingProblem NewNodesProblem(PodFacts[] pods)
    {
        var index = Shapes();
        return index.Problem(index.Items(pods), Offers, [], (_, _) => false);
    }

    private (double Cpu, double Mem, double Price)[]? coverClasses;

    /// <summary>
    /// A lower bound on what any packing of these pods onto new nodes costs, far cheaper than the packer's: the least a
    /// fractional mix of the offered classes (GPU ones too) holding the pods' total cpu and memory costs. Every class
    /// an item may use is among them and each bin holds at most its class's cpu and memory, so no packing costs less.
    /// 0 (no bound) when some class offers no cpu or no memory. The replacements test it before building a packing:
    /// on the 5,000-node cluster it leaves out every candidate the packer's bound did, at a thousandth of the cost.
    /// </summary>
    public decimal CoverFloor(PodFacts[] pods)
    {
        coverClasses ??= Offers.Any(o => o.Bin.Capacity.CpuMilli <= 0 || o.Bin.Capacity.MemoryBytes <= 0) ? []
            : Offers.Select(o => (Cpu: (double)o.Bin.Capacity.CpuMilli, Mem: (double)o.Bin.Capacity.MemoryBytes, Price: (double)o.Bin.PricePerHour)).ToArray();
        if (coverClasses.Length == 0) return 0;
        double cpu = 0, mem = 0;
        foreach (var p in pods) { cpu += p.Requests[ResourceTable.Cpu]; mem += p.Requests[ResourceTable.Memory]; }
        double least = SingleNodeConsolidation.CheapestFor(coverClasses, cpu, mem);
        // Rounded down by a margin well above the double's error, so that it stays a bound in decimal.
        return double.IsFinite(least) && least > 0 ? (decimal)(least * (1 - 1e-9)) : 0;
    }

    /// <summary>Gives the runtime a chance to collect between steps of a long run.</summary>
    public void Tick() => pacer.Tick();

    /// <summary>Blockers for every node; the nodes without any become the removal candidates.</summary>
    /// <remarks>Once per run: it hands the pods of each node to the candidates and lets go of the rest.</remarks>
    public void RankCandidates()
    {
        var byNode = movableByNode ?? throw new InvalidOperationException("the candidates of this run are ranked already");
        PodFacts[] PodsOn(string node) => byNode.GetValueOrDefault(node) ?? [];
        foreach (var n in Snapshot.Nodes)
        {
            blockers[n.Name] = Blockers.Of(n, PodsOn(n.Name), Budgets, Book);
            Tick();
        }
        Candidates = Snapshot.Nodes
            .Where(n => blockers[n.Name].Count == 0)
            .Select(n => new Candidate(n, PodsOn(n.Name), Book.NodePrice(n.ServerClass, n.CapacityType)!.Value))
            .OrderBy(c => c.Movable.Length == 0 ? 0 : 1)
            .ThenBy(c => Room.Utilization(c.Node))
            .ThenByDescending(c => c.Price)
            .ThenBy(c => c.Node.Name, StringComparer.Ordinal)
            .ToList();
        movableByNode = null;
    }

    /// <summary>
    /// Carries a decision into the ledgers: a command's claims take room, its nodes are claimed (and close), and
    /// when it removes nodes, the nodes taking their pods become receivers; a kept candidate gets its blocker.
    /// </summary>
    public void Apply(Decision? decision)
    {
        switch (decision)
        {
            case Provisioned p:
                Apply(p.Command);
                unplaceable = p.Unplaceable;
                (provisioningCost, provisioningBound) = (p.CostPerHour, p.LowerBoundPerHour);
                (resourceBound, configurationBound) = (p.ResourceBoundPerHour, p.ConfigurationBoundPerHour);
                break;
            case Command c:
                foreach (var claim in c.Claims) Room.Take(claim);
                if (c.Recommendation is not { } r) break;
                recommendations.Add(r);
                foreach (var n in r.Nodes) { claimed.Add(n); Room.Close(n); }
                if (r.Nodes.Count > 0) foreach (var claim in c.Claims) receivers.Add(claim.Node);
                break;
            case Keep k:
                AddBlocker(k);
                break;
            case KeepAll all:
                foreach (var k in all.Keeps) AddBlocker(k);
                break;
        }
    }

    /// <summary>
    /// A kept candidate's blocker. A node kept at the managed capacity limit is reported so (the latest refusal), not as
    /// having no cheaper shape: a cheaper one exists, the limit is what keeps it.
    /// </summary>
    private void AddBlocker(Keep k)
    {
        var list = blockers[k.Node];
        if (k.Blocker.Reason == BlockerReasons.ManagedCapacityLimit)
            list.RemoveAll(b => b.Reason is BlockerReasons.NotCheaper or BlockerReasons.ManagedCapacityLimit);
        else if (k.Blocker.Reason == BlockerReasons.NotCheaper && list.Any(b => b.Reason == BlockerReasons.ManagedCapacityLimit))
            return;
        list.Add(k.Blocker);
    }

    /// <summary>The plan: recommendations by type, then the largest saving first; blockers of every node no command claims.</summary>
    public Plan ToPlan()
    {
        var ordered = recommendations
            .OrderBy(r => r.Type)
            .ThenByDescending(r => r.SavingsPerHour)
            .ThenBy(r => r.Id, StringComparer.Ordinal)
            .ToList();
        var kept = blockers.Where(kv => !claimed.Contains(kv.Key))
            .ToDictionary(kv => kv.Key, kv => (IReadOnlyList<Blocker>)kv.Value, StringComparer.Ordinal);
        return new Plan(ordered, kept, unplaceable, provisioningCost, provisioningBound, Region)
        {
            ProvisioningResourceBoundPerHour = resourceBound,
            ProvisioningConfigurationBoundPerHour = configurationBound,
        };
    }
}
