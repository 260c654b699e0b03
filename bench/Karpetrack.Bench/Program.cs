using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Karpetrack;
using Karpetrack.Bench;
using Karpetrack.Simulation;

// `make bench`: measures the goals of BENCHMARKS.md on this machine and rewrites that file's tables.
// Arguments: scenario names to run (default: all), `--nodes N`, `--pods N`. Modes that only print:
// `serve`, `probe KUBECONFIG`, `list-throughput` (the embedded API server's LIST over loopback).
var scenarios = args.Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToHashSet(StringComparer.Ordinal);
int Arg(string name, int fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
}
int nodes = Arg("--nodes", 5_000);
int pods = Arg("--pods", 150_000);
bool Want(string s) => scenarios.Count == 0 || scenarios.Contains(s);

if (args.Length > 0 && args[0] == "serve")
{
    await ServeMode.RunAsync(Arg("--nodes", 5_000), Arg("--pods", 150_000));
    return;
}

if (args.Length > 1 && args[0] == "plans")
{
    await PlanDump.RunAsync(args[1], nodes, pods);
    return;
}

if (args.Length > 0 && args[0] == "family-profile")
{
    FamilyProfile.Run(args);
    return;
}

if (args.Length > 0 && args[0] == "scan-profile")
{
    ScanProfile.Run(args, nodes, pods);
    return;
}

if (args.Length > 0 && args[0] == "cache")
{
    CacheProbe.Run(args, nodes, pods);
    return;
}

if (args.Length > 0 && args[0] == "family-cg")
{
    FamilyProfile.RunOffline(args);
    return;
}

if (args.Length > 0 && args[0] == "list-throughput")
{
    await ListThroughput.RunAsync(nodes, pods);
    return;
}

if (args.Length > 0 && args[0] == "decode")
{
    ExporterBench.RunDecode(SyntheticData.Build(nodes, pods));
    return;
}

if (args.Length > 1 && args[0] == "probe")
{
    await ListProbe.RunAsync(args[1], model: args.Contains("--model"));
    return;
}

var report = new Report(Path.Combine(Report.RepoRoot(), "BENCHMARKS.md"));
Console.WriteLine($"karpetrack benchmarks: {nodes} nodes, {pods} pods; {Environment.ProcessorCount} cores, .NET {Environment.Version}");

if (Want("recommender")) RecommenderBench.RunProvisioning(report);
if (Want("consolidation")) ConsolidationBench.RunUnderused(report);
SyntheticData? data = Want("exporter") || Want("recommender") || Want("consolidation") ? SyntheticData.Build(nodes, pods) : null;
if (Want("exporter")) ExporterBench.Run(data!, report);
if (Want("recommender")) RecommenderBench.RunScan(data!, report);
if (Want("consolidation")) ConsolidationBench.RunBig(data!, report);
data = null;
GC.Collect();
if (Want("sync")) await SyncBench.RunAsync(nodes, pods, report);
if (Want("packing")) PackingBench.Run(report);
if (Want("family")) FamilyBench.Run(report, args);
if (Want("grpc")) await GrpcBench.RunAsync(report);
report.Save();
Console.WriteLine($"wrote {report.Path}");
