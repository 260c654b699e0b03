using System.Globalization;
using System.Text;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack;

/// <summary>
/// `karpetrack report`: try Karpetrack on a cluster without installing anything in it. Connects with a
/// kubeconfig, lists (read-only) until the caches have synced, prices, plans once, prints the summary,
/// the top recommendations and the node map, and exits. Nothing is served and nothing is changed.
/// </summary>
public static class ReportCommand
{
    /// <summary>How long the price feed may take before the embedded snapshot prices the report (no internet).</summary>
    public static readonly TimeSpan PriceFeedWait = TimeSpan.FromSeconds(5);

    public static string Usage =>
        """
        Usage: karpetrack report [--kubeconfig FILE] [--context NAME] [--timeout 2m] [--top 10] [--sort KEY] [--output table|wide|json] [service flags]
        Read-only: lists nodes, pods, budgets and DaemonSets, prices them, plans once and exits; nothing is served.
        Service flags that apply: --resources, --node-selector, --label-group, --categories, --max-price, --gpus-per-class,
        --replace-threshold-percent, --replace-threshold-dollars, --cloudspace, --price-feed-*, --list-page-size.

        """;

    private sealed record Args(KarpetrackOptions Options, TimeSpan Timeout, int Top, string Sort, CliOutput Output);

    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, CancellationToken ct = default)
    {
        Args a;
        KubeConnection connection;
        try
        {
            a = Parse(args);
            connection = KubeConnection.Resolve(a.Options.Kubeconfig, a.Options.Context, KubeEnvironment.Process);
        }
        catch (Exception e) when (e is OptionsException or KubeConfigException)
        {
            error.WriteLine($"karpetrack: {e.Message}");
            if (e is OptionsException) error.Write(Usage);
            return 2;
        }
        try
        {
            return await ReportAsync(a, connection, output, error, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            error.WriteLine("karpetrack: report cancelled");
            return 130;
        }
    }

    private static Args Parse(string[] args)
    {
        var rest = new List<string>();
        var timeout = TimeSpan.FromMinutes(2);
        int top = 10;
        string sort = "price";
        var output = CliOutput.Table;
        for (int i = 1; i < args.Length; i++)
        {
            var arg = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new OptionsException($"{arg} needs a value");
            switch (arg)
            {
                case "--output" or "-o": output = CliFormat.ParseOutput(Value()); break;
                case "--json": output = CliOutput.Json; break;
                case "--timeout": timeout = KarpetrackOptions.ParseDuration(Value(), "--timeout"); break;
                case "--sort":
                    sort = Value();
                    if (!NodesCommand.SortKeys.Contains(sort)) throw new OptionsException($"--sort: \"{sort}\" is not one of {string.Join(", ", NodesCommand.SortKeys)}");
                    break;
                case "--top":
                    var t = Value();
                    if (!int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out top)) throw new OptionsException($"--top: \"{t}\" is not a count");
                    break;
                case "--demo" or "--actuation" or "--leader-elect":
                    throw new OptionsException($"{arg} does not apply to report, which only reads a cluster (run the service for that)");
                case "--help" or "-h": throw new OptionsException("usage");
                default: rest.Add(arg); break;
            }
        }
        // The service's own flags and environment twins, so that a report prices and plans as the service would.
        var options = KarpetrackOptions.Parse([.. rest], Environment.GetEnvironmentVariable);
        return new Args(options, timeout, top, sort, output);
    }

    private static async Task<int> ReportAsync(Args a, KubeConnection connection, TextWriter output, TextWriter error, CancellationToken ct)
    {
        var o = a.Options;
        var logs = NullLoggerFactory.Instance;
        var resources = new ResourceTable(o.Resources);
        var model = new ClusterModel(resources);
        using var kube = new KubeClient(connection);
        var reflectorOptions = new ReflectorOptions { PageSize = o.ListPageSize };
        ReflectorStatus nodes = new("nodes"), pods = new("pods"), pdbs = new("poddisruptionbudgets"), daemonSets = new("daemonsets");
        ReflectorStatus[] statuses = [nodes, pods, pdbs, daemonSets];
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        // The same watches as the service (Program.cs), read-only; they stop once the report is printed.
        Task[] watches =
        [
            new Reflector<NodeRecord>(kube, "/api/v1/nodes", o.NodeSelector, null, new NodeDecoder(resources), model.NodeTarget, nodes,
                reflectorOptions, logs.CreateLogger("nodes")).RunAsync(stop.Token),
            new Reflector<PodRecord>(kube, "/api/v1/pods", null, "status.phase!=Succeeded,status.phase!=Failed", new PodDecoder(resources), model.PodTarget, pods,
                reflectorOptions, logs.CreateLogger("pods")).RunAsync(stop.Token),
            new Reflector<PdbRecord>(kube, "/apis/policy/v1/poddisruptionbudgets", null, null, new PdbDecoder(), model.Pdbs, pdbs,
                reflectorOptions, logs.CreateLogger("pdbs")).RunAsync(stop.Token),
            new Reflector<DaemonSetRecord>(kube, "/apis/apps/v1/daemonsets", null, null, new DaemonSetDecoder(resources), model.DaemonSets, daemonSets,
                reflectorOptions, logs.CreateLogger("daemonsets")).RunAsync(stop.Token),
        ];
        using var prices = new PriceFeed(o.PriceFeed, logs.CreateLogger("pricing"));
        var priced = ReadPricesAsync(prices, stop.Token);
        try
        {
            var deadline = DateTime.UtcNow + a.Timeout;
            // The reflectors have no sync event; a short poll ends as soon as they have all listed.
            while (statuses.Any(s => !s.Synced))
            {
                if (DateTime.UtcNow > deadline)
                {
                    var waiting = statuses.Where(s => !s.Synced).Select(s => s.Restarts.Count == 0 ? s.Resource
                        : $"{s.Resource} ({string.Join(", ", s.Restarts.Select(r => $"{r.Key} x{r.Value}"))})");
                    error.WriteLine($"karpetrack: could not list {string.Join(", ", waiting)} from {connection.Server} within {a.Timeout.TotalSeconds:0}s");
                    return 1;
                }
                await Task.Delay(100, ct);
            }
            var fromFeed = await priced;
            RecommenderOptions Recommending() => new()
            {
                Categories = o.Categories, MaxPricePerHour = o.MaxPrice, GpuPerClass = o.GpusPerClass,
                ReplaceThresholdPercent = o.ReplaceThresholdPercent, ReplaceThresholdDollars = o.ReplaceThresholdDollars,
            };
            var loop = new RecommenderLoop(new(model, prices, statuses), new(Recommending, TimeSpan.Zero), logs.CreateLogger("recommender"));
            loop.RunOnce();
            var api = new KarpetrackApi(model, prices, loop, statuses, Recommending) { LabelGroups = o.LabelGroups, ActuationMode = "off" };
            var summary = api.GetSummary();
            var recs = api.ListRecommendations(new V1.ListRecommendationsRequest());
            var map = api.ListNodes(new V1.ListNodesRequest());
            var notes = new List<string> { $"read-only report of {connection.Server} ({connection.Source}); nothing was changed" };
            if (!fromFeed)
                notes.Add($"prices: the embedded snapshot of {prices.Current.FetchedAt:yyyy-MM-dd}: the price feed could not be read within {PriceFeedWait.TotalSeconds:0}s");
            output.Write(a.Output == CliOutput.Json ? Json(summary, recs, map, notes) : Text(summary, recs, map, notes, a));
            return 0;
        }
        catch (RpcException e)
        {
            // The API's own refusals (e.g. a cache that fell out of sync) say what is missing.
            error.WriteLine($"karpetrack: {e.Status.Detail}");
            return 1;
        }
        finally
        {
            await stop.CancelAsync();
            try { await Task.WhenAll(watches).WaitAsync(TimeSpan.FromSeconds(5), CancellationToken.None); }
            catch (Exception e) when (e is OperationCanceledException or TimeoutException) { }
        }
    }

    /// <summary>True when the feed was read; false when the embedded snapshot stays the price book.</summary>
    private static async Task<bool> ReadPricesAsync(PriceFeed prices, CancellationToken ct)
    {
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct);
        wait.CancelAfter(PriceFeedWait);
        try { await prices.RefreshAsync(wait.Token); }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested) { }
        return !prices.Current.Embedded;
    }

    private static string Json(V1.Summary summary, V1.ListRecommendationsResponse recs, V1.ListNodesResponse map, List<string> notes)
    {
        var f = new JsonFormatter(JsonFormatter.Settings.Default.WithFormatDefaultValues(true));
        var sb = new StringBuilder();
        sb.Append("{\"summary\": ").Append(f.Format(summary))
          .Append(", \"recommendations\": ").Append(f.Format(recs))
          .Append(", \"nodes\": ").Append(f.Format(map))
          .Append(", \"notes\": [");
        // Google.Protobuf formats a string value as JSON too: a StringValue gives it quoted and escaped.
        sb.Append(string.Join(", ", notes.Select(n => f.Format(new Google.Protobuf.WellKnownTypes.StringValue { Value = n }))));
        sb.Append("]}\n");
        return sb.ToString();
    }

    private static string Text(V1.Summary s, V1.ListRecommendationsResponse recs, V1.ListNodesResponse map, List<string> notes, Args a)
    {
        var sb = new StringBuilder();
        foreach (var n in notes) sb.Append("note: ").Append(n).Append('\n');
        sb.Append('\n');
        var saving = s.PotentialSavingsPerHour;
        var rows = new List<IReadOnlyList<string>>
        {
            new[] { "cost", $"{CliFormat.PerHour(s.CostPerHour)} ({CliFormat.PerMonth(s.CostPerHour)})" },
            new[] { "idle cost", $"{CliFormat.PerHour(s.IdleCostPerHour)} ({(s.CostPerHour > 0 ? CliFormat.Percent(s.IdleCostPerHour / s.CostPerHour) : "0%")} of the bill)" },
            new[] { "could save", !s.PlanReady ? "not computed yet (the first plan waits for the price book)"
                : $"{CliFormat.PerHour(saving)} ({CliFormat.PerMonth(saving)}) with {s.Recommendations} recommendations" },
            new[] { "nodes", $"{s.Nodes} ({s.ReadyNodes} ready{(s.UnpricedNodes > 0 ? $", {s.UnpricedNodes} unpriced" : "")}), {s.Pods} pods" },
            new[] { "pending pods", s.PendingPods == 0 ? "none" : $"{s.PendingPods}, new nodes for them {CliFormat.PerHour(s.ProvisioningCostPerHour)}" },
        };
        if (s.CostAfterRecommendationsPerHour is { } after)
            rows.Insert(2, new[] { "after recommendations", $"{CliFormat.PerHour(after)} ({CliFormat.PerMonth(after)})" });
        if (s.CostLowerBoundPerHour is { } bound)
            rows.Insert(s.CostAfterRecommendationsPerHour is null ? 2 : 3, new[] { "cheapest possible", $"{CliFormat.PerHour(bound)} ({CliFormat.PerMonth(bound)})"
                + (bound > 0 && s.CostPerHour > bound ? $", today {CliFormat.Percent((s.CostPerHour - bound) / bound)} above" : "")
                + (s.CostLowerBoundExcludedPods is > 0 ? $", {s.CostLowerBoundExcludedPods} pods fit no allowed class and are left out" : "") });
        rows.AddRange(s.Resources.Select(r => (IReadOnlyList<string>)new[] { r.Resource, CliFormat.Bar(r.Utilization) + CliFormat.Usage(r) }));
        rows.Add(new[] { "prices", $"{(s.PriceBook.Embedded ? "embedded snapshot" : s.PriceBook.Source)}, {s.PriceBook.Classes} classes{(s.Region.Length > 0 ? $", region {s.Region}" : "")}" });
        sb.Append(CliFormat.Table(["SUMMARY", ""], rows)).Append('\n');
        var top = recs.Recommendations.OrderByDescending(r => r.SavingsPerHour).Take(a.Top).ToList();
        sb.Append(recs.Recommendations.Count > top.Count ? $"TOP {top.Count} OF {recs.Recommendations.Count} RECOMMENDATIONS\n" : "RECOMMENDATIONS\n");
        sb.Append(GrpcCli.FormatTable(top, a.Output == CliOutput.Wide)).Append('\n');
        sb.Append("NODE MAP\n").Append(NodesCommand.Render(map, a.Sort, a.Output == CliOutput.Wide));
        return sb.ToString();
    }
}
