using System.Globalization;
using Google.Protobuf;
using Grpc.Core;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack;

/// <summary>
/// `karpetrack nodes`: the node map in a terminal, from the gRPC API's ListNodes: one line per node with
/// bars of allocated against allocatable per resource, price and state; `--watch` redraws it.
/// </summary>
public static class NodesCommand
{
    public static readonly string[] SortKeys = ["name", "class", "price", "idle", "util", "cpu", "memory", "pods"];

    public static string Usage =>
        """
        Usage: karpetrack nodes [--server host:port] [--watch] [--interval 2s] [--sort name|class|price|idle|util|cpu|memory|pods] [--output table|wide|json]
        Numeric sorts put the largest first; util is the node's most allocated resource.

        """;

    private sealed record Args(string Server, bool Watch, TimeSpan Interval, string Sort, CliOutput Output);

    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken ct = default)
    {
        Args a;
        try { a = Parse(args); }
        catch (OptionsException e)
        {
            error.WriteLine($"karpetrack: {e.Message}");
            error.Write(Usage);
            return 2;
        }
        using var channel = GrpcCli.Channel(a.Server);
        var client = new V1.Karpetrack.KarpetrackClient(channel);
        // Clear the screen between frames only on a terminal: piped, frames follow each other.
        bool terminal = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected;
        try
        {
            while (true)
            {
                var nodes = await client.ListNodesAsync(new V1.ListNodesRequest(), deadline: DateTime.UtcNow.AddSeconds(30), cancellationToken: ct);
                if (a.Output == CliOutput.Json)
                {
                    // One object per line (the formatter writes no line breaks): with --watch, one frame per line.
                    output.Write(JsonFormatter.Default.Format(nodes) + "\n");
                }
                else
                {
                    if (a.Watch && terminal) output.Write("\u001b[H\u001b[2J");
                    else if (a.Watch) output.Write($"--- {DateTime.Now:HH:mm:ss}\n");
                    output.Write(Render(nodes, a.Sort, a.Output == CliOutput.Wide));
                }
                output.Flush();
                if (!a.Watch) return 0;
                await Task.Delay(a.Interval, ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return 0;
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
        {
            return 0;
        }
        catch (RpcException e)
        {
            error.WriteLine(GrpcCli.ErrorLine(e, a.Server));
            return 1;
        }
    }

    private static Args Parse(string[] args)
    {
        string? server = null;
        bool watch = false;
        var interval = TimeSpan.FromSeconds(2);
        string sort = "name";
        var output = CliOutput.Table;
        for (int i = 1; i < args.Length; i++)
        {
            var arg = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new OptionsException($"{arg} needs a value");
            switch (arg)
            {
                case "--server": server = Value(); break;
                case "--watch" or "-w": watch = true; break;
                case "--interval":
                    var text = Value();
                    interval = KarpetrackOptions.ParseDuration(text, "--interval");
                    if (interval < TimeSpan.FromMilliseconds(100)) throw new OptionsException($"--interval: \"{text}\" is shorter than 100ms");
                    break;
                case "--sort":
                    sort = Value();
                    if (!SortKeys.Contains(sort)) throw new OptionsException($"--sort: \"{sort}\" is not one of {string.Join(", ", SortKeys)}");
                    break;
                case "--output" or "-o": output = CliFormat.ParseOutput(Value()); break;
                case "--json": output = CliOutput.Json; break;
                case "--help" or "-h": throw new OptionsException("usage");
                default: throw new OptionsException($"unexpected argument \"{arg}\"");
            }
        }
        return new Args(GrpcCli.ServerOrDefault(server), watch, interval, sort, output);
    }

    private static double MaxUtil(V1.NodeSummary n) => n.Resources.Count == 0 ? 0 : n.Resources.Max(r => r.Utilization);

    private static double Util(V1.NodeSummary n, string resource) => n.Resources.FirstOrDefault(r => r.Resource == resource)?.Utilization ?? 0;

    public static IEnumerable<V1.NodeSummary> Sorted(IEnumerable<V1.NodeSummary> nodes, string sort) => sort switch
    {
        "class" => nodes.OrderBy(n => n.ServerClass, StringComparer.Ordinal).ThenBy(n => n.Name, StringComparer.Ordinal),
        "price" => nodes.OrderByDescending(n => n.PricePerHour).ThenBy(n => n.Name, StringComparer.Ordinal),
        "idle" => nodes.OrderByDescending(n => n.IdleCostPerHour).ThenBy(n => n.Name, StringComparer.Ordinal),
        "util" => nodes.OrderByDescending(MaxUtil).ThenBy(n => n.Name, StringComparer.Ordinal),
        "cpu" or "memory" => nodes.OrderByDescending(n => Util(n, sort)).ThenBy(n => n.Name, StringComparer.Ordinal),
        "pods" => nodes.OrderByDescending(n => n.Pods).ThenBy(n => n.Name, StringComparer.Ordinal),
        _ => nodes.OrderBy(n => n.Name, StringComparer.Ordinal),
    };

    /// <summary>State words: the node's state, then managed, recommended and blocked (with the first blocker).</summary>
    public static string State(V1.NodeSummary n)
    {
        var words = new List<string> { n.State == "not_ready" ? "NotReady" : n.State };
        if (n.Managed) words.Add("managed");
        if (n.RecommendationIds.Count > 0) words.Add("recommended");
        var blockers = n.Blockers.Where(b => b is not (BlockerReasons.NotCheaper or BlockerReasons.ReceivesPods)).ToList();
        if (blockers.Count > 0) words.Add("blocked:" + string.Join("+", blockers));
        return string.Join(",", words);
    }

    /// <summary>The header line and the map, sorted; wide adds pool, region, idle cost, month, blockers and labels.</summary>
    public static string Render(V1.ListNodesResponse r, string sort, bool wide)
    {
        var resources = r.Nodes.FirstOrDefault()?.Resources.Select(x => x.Resource).ToList() ?? [];
        var priced = r.Nodes.Where(n => n.Priced).ToList();
        double cost = priced.Sum(n => n.PricePerHour), idle = priced.Sum(n => n.IdleCostPerHour);
        var totals = resources.Select(res =>
        {
            double allocated = r.Nodes.Sum(n => n.Resources.First(x => x.Resource == res).Allocated);
            double allocatable = r.Nodes.Sum(n => n.Resources.First(x => x.Resource == res).Allocatable);
            return $"{res} {CliFormat.Percent(allocatable > 0 ? allocated / allocatable : 0)} of {CliFormat.WithUnit(res, allocatable)}";
        });
        var head = $"{r.Nodes.Count} nodes · {CliFormat.PerHour(cost)} · {CliFormat.PerMonth(cost)} · idle {CliFormat.PerHour(idle)} · {string.Join(" · ", totals)}"
            + (priced.Count < r.Nodes.Count ? $" · {r.Nodes.Count - priced.Count} unpriced" : "") + "\n";
        var groups = r.LabelGroups.ToList();
        var headers = new List<string> { "NODE", "CLASS", "TYPE", "$/H" };
        if (wide) headers.AddRange(["IDLE $/H", "$/MONTH", "POOL", "REGION"]);
        headers.AddRange(resources.Select(x => $"{x.ToUpperInvariant()} ({(CliFormat.Unit(x) is { Length: > 0 } u ? u : "count")})"));
        headers.Add("PODS");
        if (wide) headers.AddRange(groups.Select(g => g.ToUpperInvariant()));
        if (wide) headers.Add("RECOMMENDATIONS");
        headers.Add("STATE");
        var right = new HashSet<int> { 3 };
        if (wide) { right.Add(4); right.Add(5); }
        right.Add(headers.IndexOf("PODS"));
        var rows = Sorted(r.Nodes, sort).Select(n =>
        {
            var row = new List<string> { n.Name, n.ServerClass.Length > 0 ? n.ServerClass : "-", n.CapacityType.Length > 0 ? n.CapacityType : "-",
                n.Priced ? CliFormat.Money(n.PricePerHour) : "unpriced" };
            if (wide) row.AddRange([n.Priced ? CliFormat.Money(n.IdleCostPerHour) : "-", n.Priced ? CliFormat.Money(n.PricePerHour * CliFormat.HoursPerMonth) : "-",
                n.Pool.Length > 0 ? n.Pool : "-", n.Region.Length > 0 ? n.Region : "-"]);
            foreach (var x in n.Resources)
                row.Add($"{CliFormat.Bar(x.Utilization)}{CliFormat.Percent(x.Utilization),4} {CliFormat.Amount(x.Resource, x.Allocated)}/{CliFormat.Amount(x.Resource, x.Allocatable)}");
            row.Add(n.Pods.ToString(CultureInfo.InvariantCulture));
            if (wide) row.AddRange(groups.Select(g => string.Join(",", g.Split(',').Select(k => n.Labels.TryGetValue(k, out var v) ? v : ""))));
            if (wide) row.Add(n.RecommendationIds.Count > 0 ? string.Join(",", n.RecommendationIds) : "-");
            row.Add(State(n));
            return (IReadOnlyList<string>)row;
        });
        return head + CliFormat.Table(headers, rows.ToList(), right);
    }
}
