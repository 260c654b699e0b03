using System.Text.RegularExpressions;
using Google.Protobuf;
using Karpetrack.Simulation;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Tests.Api;

/// <summary>The terminal views, through their output: `nodes`, `recommendations`, `explain` and `report`.</summary>
public class CliTests(ApiDemoService demo) : IClassFixture<ApiDemoService>
{
    private static readonly JsonParser Parser = new(JsonParser.Settings.Default.WithIgnoreUnknownFields(false));
    private string Server => $"{demo.Service.GrpcUrl.Host}:{demo.Service.GrpcUrl.Port}";

    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = await GrpcCli.RunAsync(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    /// <summary>
    /// Every line of a table starts its left-aligned columns where the header's do, and ends its
    /// right-aligned (numeric, marked "&gt;NAME") columns where the header's end.
    /// </summary>
    private static void AssertAligned(IReadOnlyList<string> lines, params string[] columns)
    {
        var header = lines[0];
        foreach (var spec in columns)
        {
            bool right = spec.StartsWith('>');
            var column = right ? spec[1..] : spec;
            int at = header.IndexOf(column, StringComparison.Ordinal);
            Assert.True(at > 0, $"no column {column} in {header}");
            int end = at + column.Length;
            foreach (var line in lines.Skip(1))
            {
                bool ok = right
                    ? line.Length >= end && line[end - 1] != ' ' && (line.Length == end || line[end] == ' ')
                    : line.Length > at && line[at - 1] == ' ' && line[at - 2] == ' ' && line[at] != ' ';
                Assert.True(ok, $"{column} not aligned:\n{header}\n{line}");
            }
        }
    }

    [Fact]
    public async Task NodesPrintsEveryNodeInAlignedColumnsWithBarsAndHumanUnits()
    {
        var (code, text, err) = await Run("nodes", "--server", Server);
        Assert.True(code == 0, err);
        var lines = text.TrimEnd('\n').Split('\n');
        Assert.Matches(@"^\d+ nodes · \$[0-9.]+/h · \$[0-9.]+/month · idle \$[0-9.]+/h · cpu [0-9.]+% of [0-9.]+ cores · memory [0-9.]+% of [0-9.]+ GiB", lines[0]);
        var table = lines[1..];
        Assert.StartsWith("NODE ", table[0]);
        AssertAligned(table, "CLASS", "TYPE", ">$/H", "CPU (cores)", "MEMORY (GiB)", ">PODS", "STATE");
        Assert.All(table.Skip(1), l => Assert.Matches("[█░]{10}", l));
        Assert.DoesNotMatch(@"(?<![\w-])\d{7,}", text);   // no raw bytes (node names hold long numbers)
        var names = (await demo.Grpc.ListNodesAsync(new V1.ListNodesRequest())).Nodes.Select(n => n.Name).ToHashSet();
        Assert.True(table.Skip(1).Count(l => names.Contains(l.Split(' ')[0])) >= names.Count - 2);
    }

    [Fact]
    public async Task NodesSortsWidensAndSpeaksJson()
    {
        var (code, text, _) = await Run("nodes", "--server", Server, "--sort", "price");
        Assert.Equal(0, code);
        var prices = text.Split('\n').Skip(2).Where(l => l.Length > 0).Select(l => Regex.Match(l, @"\$([0-9.]+)").Groups[1].Value)
            .Select(p => double.Parse(p, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(prices.OrderByDescending(p => p), prices);

        var (_, wide, _) = await Run("nodes", "--server", Server, "-o", "wide");
        var header = wide.Split('\n')[1];
        foreach (var column in new[] { "IDLE $/H", "$/MONTH", "POOL", "REGION", "SERVERS.NGPC.RXT.IO/CLASS", "RECOMMENDATIONS" })
            Assert.Contains(column, header);

        var (jcode, json, _) = await Run("nodes", "--server", Server, "--output", "json");
        Assert.Equal(0, jcode);
        var parsed = Parser.Parse<V1.ListNodesResponse>(json);
        Assert.NotEmpty(parsed.Nodes);
        Assert.Equal(["servers.ngpc.rxt.io/class"], parsed.LabelGroups);
    }

    [Fact]
    public void LongNodeNamesWidenTheirColumnAndTheOthersStayAligned()
    {
        var r = new V1.ListNodesResponse();
        foreach (var name in new[] { "a", new string('n', 90), "node-3" })
        {
            var n = new V1.NodeSummary { Name = name, ServerClass = "gp.vs1.large-iad", CapacityType = "spot", State = "ready", Priced = true, PricePerHour = 0.01, Pods = 3 };
            n.Resources.Add(new V1.ResourceUsage { Resource = "cpu", Allocated = 1.5, Allocatable = 3.9, Utilization = 1.5 / 3.9 });
            n.Resources.Add(new V1.ResourceUsage { Resource = "memory", Allocated = 4L << 30, Allocatable = 16L << 30, Utilization = 0.25 });
            r.Nodes.Add(n);
        }
        var lines = NodesCommand.Render(r, "name", wide: false).TrimEnd('\n').Split('\n')[1..];
        AssertAligned(lines, "CLASS", ">$/H", "CPU (cores)", "MEMORY (GiB)", ">PODS", "STATE");
        Assert.Contains("1.5/3.9", lines[1]);
        Assert.Contains("4/16", lines[1]);
        Assert.Contains("████░░░░░░  38%", lines[1]);
    }

    [Fact]
    public async Task RecommendationsAndExplainSpeakDollarsCoresAndGiB()
    {
        var (code, recs, err) = await Run("recommendations", "--server", Server);
        Assert.True(code == 0, err);
        var lines = recs.TrimEnd('\n').Split('\n');
        AssertAligned(lines, "ID", "NODES", "NEW NODES", ">SAVES $/H", ">EVICTS", "WHY");
        Assert.Matches(@"\$\d+\.\d{4}", recs);
        var (_, wide, _) = await Run("recommendations", "--server", Server, "--output", "wide");
        Assert.Contains("BOUND $/H", wide.Split('\n')[0]);
        var (_, json, _) = await Run("recommendations", "--server", Server, "-o", "json");
        Assert.NotEmpty(Parser.Parse<V1.ListRecommendationsResponse>(json).Recommendations);

        var node = (await demo.Grpc.ListNodesAsync(new V1.ListNodesRequest())).Nodes.First(n => n.Priced).Name;
        var (ecode, explain, _) = await Run("explain", node, "--server", Server);
        Assert.Equal(0, ecode);
        Assert.Matches(@"cpu:\s+[█░]{10} [0-9.]+/[0-9.]+ cores \([0-9.]+%\) allocated", explain);
        Assert.Matches(@"memory:\s+[█░]{10} [0-9.]+/[0-9.]+ GiB \([0-9.]+%\) allocated", explain);
        Assert.Matches(@"price:\s+\$[0-9.]+/h \(\$[0-9.]+/month\), idle \$[0-9.]+/h", explain);
        Assert.DoesNotMatch(@"(?<![\w-])\d{7,}", explain);
        var (_, ejson, _) = await Run("explain", node, "--server", Server, "-o", "json");
        Assert.Equal(node, Parser.Parse<V1.NodeExplanation>(ejson).Node);
    }

    [Fact]
    public async Task NodesWatchRedrawsUntilCancelled()
    {
        using var output = new FrameWriter();
        using var error = new StringWriter();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        var run = GrpcCli.RunAsync(["nodes", "--server", Server, "--watch", "--interval", "100ms"], output, error, cts.Token);
        await output.Frames.WaitAsync(cts.Token);
        await output.Frames.WaitAsync(cts.Token);
        await cts.CancelAsync();
        Assert.Equal(0, await run);
        Assert.True(Regex.Matches(output.Text, "^--- ", RegexOptions.Multiline).Count >= 2, output.Text);
    }

    [Fact]
    public async Task BadUsageIsExit2AndAnUnreachableServerOneLineAndExit1()
    {
        var (code, _, err) = await Run("nodes", "--output", "yaml");
        Assert.Equal(2, code);
        Assert.StartsWith("karpetrack: --output: \"yaml\" is not json, table or wide\n", err);
        (code, _, err) = await Run("nodes", "--sort", "age");
        Assert.Equal(2, code);
        (code, _, err) = await Run("nodes", "--server", "127.0.0.1:1");
        Assert.Equal(1, code);
        Assert.Single(err.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("karpetrack: cannot reach 127.0.0.1:1: UNAVAILABLE", err);
        (code, _, err) = await Run("recommendations", "--server", "127.0.0.1:1", "-o", "wide");
        Assert.Equal(1, code);
        Assert.Single(err.TrimEnd('\n').Split('\n'));
    }

    /// <summary>Counts flushes: the watch flushes once per frame.</summary>
    private sealed class FrameWriter : TextWriter
    {
        private readonly System.Text.StringBuilder text = new();
        public SemaphoreSlim Frames { get; } = new(0);
        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;
        public string Text { get { lock (text) return text.ToString(); } }
        public override void Write(char value) { lock (text) text.Append(value); }
        public override void Write(string? value) { lock (text) text.Append(value); }
        public override void Flush() => Frames.Release();
    }
}

/// <summary>`karpetrack report` against the demo cluster in process, with and without a reachable price feed.</summary>
public class ReportTests
{
    private static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var code = await GrpcCli.RunAsync(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task AReportListsPricesPlansPrintsAndExits()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await using var cluster = await DemoCluster.StartAsync(new DemoClusterOptions { ChurnInterval = TimeSpan.FromHours(1) }, ct: cts.Token);
        await using var feed = await FeedServer.StartAsync(ct: cts.Token);
        string[] feedFlags = ["--price-feed-endpoint", feed.Endpoint.ToString(), "--price-feed-bucket", FeedServer.Bucket, "--price-feed-key", FeedServer.Key,
            "--price-feed-region", "us-east-1"];
        var (code, text, err) = await Run(["report", "--kubeconfig", cluster.KubeconfigPath, "--top", "3", .. feedFlags]);
        Assert.True(code == 0, err);
        Assert.Contains("nothing was changed", text);
        Assert.DoesNotContain("embedded snapshot", text);
        Assert.Matches(@"cost\s+\$[0-9.]+/h \(\$[0-9.]+/month\)", text);
        Assert.Contains("TOP 3 OF", text);
        Assert.Contains("NODE MAP", text);
        var snapshotNodes = cluster.Api.Store.List("nodes").Items.Select(n => n.Name).ToList();
        Assert.All(snapshotNodes, n => Assert.Contains(n, text));

        var (jcode, json, _) = await Run(["report", "--kubeconfig", cluster.KubeconfigPath, "-o", "json", .. feedFlags]);
        Assert.Equal(0, jcode);
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        Assert.Equal(snapshotNodes.Count, doc.RootElement.GetProperty("summary").GetProperty("nodes").GetInt32());
        Assert.Equal(snapshotNodes.Count, doc.RootElement.GetProperty("nodes").GetProperty("nodes").GetArrayLength());
        Assert.True(doc.RootElement.GetProperty("recommendations").GetProperty("recommendations").GetArrayLength() > 0);
    }

    [Fact]
    public async Task WithoutAPriceFeedTheReportPricesFromTheEmbeddedSnapshotAndSaysSo()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await using var cluster = await DemoCluster.StartAsync(new DemoClusterOptions { ChurnInterval = TimeSpan.FromHours(1) }, ct: cts.Token);
        var (code, text, err) = await Run("report", "--kubeconfig", cluster.KubeconfigPath, "--price-feed-endpoint", "http://127.0.0.1:1");
        Assert.True(code == 0, err);
        Assert.Matches(@"note: prices: the embedded snapshot of \d{4}-\d\d-\d\d: the price feed could not be read within 5s", text);
        Assert.Matches(@"prices\s+embedded snapshot", text);
    }

    [Fact]
    public async Task FailuresToStartOrConnectAreOneLineNeverAStackTrace()
    {
        var (code, _, err) = await Run("report", "--kubeconfig", "/no/such/kubeconfig");
        Assert.Equal(2, code);
        Assert.Equal("karpetrack: kubeconfig /no/such/kubeconfig: --kubeconfig: file does not exist", err.TrimEnd('\n'));

        (code, _, err) = await Run("report", "--demo");
        Assert.Equal(2, code);
        Assert.StartsWith("karpetrack: --demo does not apply to report", err);

        var kubeconfig = await UnreachableCluster.KubeconfigAsync("karpetrack-report-");
        (code, _, err) = await Run("report", "--kubeconfig", kubeconfig, "--timeout", "2s", "--price-feed-endpoint", "http://127.0.0.1:1");
        Assert.Equal(1, code);
        Assert.Single(err.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("karpetrack: could not list nodes", err);
        Assert.Contains("from http://127.0.0.1:1/ within 2s", err);
    }
}
