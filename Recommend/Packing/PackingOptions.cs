namespace Karpetrack;

public sealed record PackingOptions
{
    /// <summary>Remaining shapes a bin's fill scans from the large end and again from the small end: bounds the work per bin.</summary>
    public int ScanLimit { get; init; } = 2000;
    /// <summary>Least-efficient bins the local search tries to empty, and (a quarter of them) to merge pairwise.</summary>
    public int LocalSearchBins { get; init; } = 256;
    /// <summary>
    /// Above this many items the local search only downsizes bins: after the balanced fill its emptying and merging
    /// moves found nothing on the bench mixes at 10k and 100k pods and took much of the time; ruin and repair does that
    /// job within a fixed budget (figures in BENCHMARKS.md, "Packer tuning").
    /// </summary>
    public int LocalSearchItems { get; init; } = 5_000;
    /// <summary>Up to this many items an exhaustive search polishes the result, bounded by <see cref="ExactNodes"/>.</summary>
    public int ExactItems { get; init; } = 30;
    /// <summary>Search nodes, not time, so the answer does not depend on the machine.</summary>
    public long ExactNodes { get; init; } = 400_000;
    /// <summary>Up to this many items karpetrack's three strategies also run and the cheapest complete result wins.</summary>
    public int PortfolioItems { get; init; } = 400;
    /// <summary>
    /// Fit tests the ruin-and-repair phase may spend, whatever the problem's size; it stops early when no round
    /// gains. 1M found what 4M found on the bench mixes in a quarter of the time; 500k lost a little (BENCHMARKS.md).
    /// </summary>
    public long ImproveWork { get; init; } = 1_000_000;
    /// <summary>Least full bins that trade with the pool in a ruin-and-repair round.</summary>
    public int ImprovePartners { get; init; } = 64;
    /// <summary>Ruin-and-repair rounds in a row without a lower cost after which the phase stops.</summary>
    public int ImproveIdleRounds { get; init; } = 24;
    /// <summary>
    /// Bins the ruin-and-repair phase works on: half the least efficient by the dual, the rest the least full. 512, not
    /// 256, since the least full joined: on the real iad prices the least efficient hold no room to trade with.
    /// </summary>
    public int ImproveBins { get; init; } = 512;
    /// <summary>Bins emptied into the pool per ruin-and-repair round.</summary>
    public int ImproveVictims { get; init; } = 3;
    /// <summary>
    /// The greedy fills each bin along the line to its full corner, cpu and memory together (on by default); off
    /// gives the previous largest-memory-first fill, kept so tests can compare the two.
    /// </summary>
    internal bool BalancedFill { get; init; } = true;
    /// <summary>
    /// Up to this many items the construction runs twice, the greedy choosing bin types once by the share of the demand
    /// a fill absorbs per dollar and once by the dual value it absorbs per dollar, and the cheaper packing wins. Neither
    /// rule wins everywhere: shares keep a degenerate dual (a dimension priced at zero) from leaving that dimension idle,
    /// the dual keeps a cheap class from being filled in one dimension while the other is what it is paid for.
    /// </summary>
    public int ChoicePortfolioItems { get; init; } = 20_000;
    /// <summary>
    /// The column greedy's choice of a bin type skips the dry-run fill of a type whose proven bound on its score cannot beat
    /// the choice so far, and the chosen type's dry run becomes the bin without a second fill (on by default; the choice
    /// and so the plan are the same either way). Off only for the tests that check exactly that.
    /// </summary>
    internal bool ChoiceBounds { get; init; } = true;
    /// <summary>The greedy chooses bin types by the dual value a fill absorbs per dollar (see <see cref="ChoicePortfolioItems"/>).</summary>
    internal bool ChoiceByDual { get; init; }
    /// <summary>
    /// The greedy scans the shapes in order (<see cref="ScanGreedy"/>) instead of searching columns. Up to
    /// <see cref="ChoicePortfolioItems"/> items with hostname anti-affinity groups this is a third construction: before the
    /// groups shared the columns of the other shapes, it was the only greedy there from about 100 groups on, and it
    /// still wins on some instances (aus-syd-1 anti-affinity at 10k pods: 7.491 $/h against 7.536 by the columns).
    /// </summary>
    internal bool ScanGreedy { get; init; }
    /// <summary>
    /// Up to this many items (and above <see cref="ExactItems"/>) the configuration LP runs by column generation, for a
    /// tighter bound and a second plan (<see cref="ColumnPlan"/>); its time is set by the budgets below, not the pods.
    /// </summary>
    public int ColumnGenerationItems { get; init; } = 2_000;
    /// <summary>
    /// Below this many items no column generation: small problems are the exhaustive search's and the portfolio's, and
    /// the recommender's per-node replacement problems (at most 110 pods each, thousands of them) must stay cheap.
    /// </summary>
    public int ColumnGenerationMinItems { get; init; } = 200;
    /// <summary>
    /// From this many placeable items on, the reported bound also tries the LP with floor cuts (<see cref="DualBound.WithFloorCuts"/>:
    /// a few more dual ascents); below, the recommender's many small per-node problems stay as cheap as before.
    /// </summary>
    public int FloorCutMinItems { get; init; } = 200;
    /// <summary>
    /// From this many placeable items on, Solve also solves the resource LP of the reported bound exactly (and the floor-cut
    /// LP; see <see cref="DualBound.WithExactLp"/>) when its plan is more than <see cref="ExactLpGoal"/> plus its dearest new
    /// bin above the ascent's bound: the ascent's demand groups (each at its least demand) lose 2-5 % of the LP's
    /// optimum where constraint classes split the demand. No plan changes, only the bound.
    /// </summary>
    public int ExactLpMinItems { get; init; } = 200;
    /// <summary>The gap (a share of the bound, plus one node) above which the exact LP runs; negative: always.</summary>
    public double ExactLpGoal { get; init; } = 0.02;
    /// <summary>Simplex pivots per exact LP (a few hundred suffice on the provisioning family; the bound is valid at any).</summary>
    public long ExactLpPivots { get; init; } = 5_000;
    /// <summary>Rows of the master LP: shapes are merged on a geometric grid until at most this many remain.</summary>
    public int ColumnGroups { get; init; } = 160;
    /// <summary>Column generation rounds (master solve, then pricing of every type).</summary>
    public int ColumnIterations { get; init; } = 40;
    /// <summary>Simplex pivots per master solve.</summary>
    public long ColumnPivots { get; init; } = 4_000;
    /// <summary>Branch-and-bound nodes per type and pricing round.</summary>
    public long ColumnPricingNodes { get; init; } = 4_000;
    /// <summary>Branch-and-bound nodes of all pricing rounds of one column generation: what bounds its time.</summary>
    public long ColumnTotalNodes { get; init; } = 150_000;
}
