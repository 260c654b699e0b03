using System.Text.Json.Nodes;
using Karpetrack.Tests.Simulation;

namespace Karpetrack.Tests.Api;

/// <summary>
/// The web view in a real browser: Debian's chromium driven by npm puppeteer-core (tests/web/view.js)
/// against the service on the demo cluster, which changes something every second.
/// </summary>
public class BrowserTests
{
    [Fact]
    public async Task ThePageShowsTheDemoLiveOpensExplanationsAndNeedsNoMouse()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        await using var service = await Service.StartAsync(KarpetrackOptions.Parse(["--demo", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
            "--log-level", "warn", "--recommend-interval", "1s", "--demo-churn-interval", "1s", "--label-group", "servers.ngpc.rxt.io/class"], _ => null), cts.Token);
        // The page shows "waiting" (with 503s the browser logs as errors) until the caches sync and the first plan exists.
        using (var http = new HttpClient { BaseAddress = service.MetricsUrl })
            while ((await http.GetAsync("v1/recommendations", cts.Token)).StatusCode != System.Net.HttpStatusCode.OK) await Task.Delay(100, cts.Token);
        var artefacts = Path.Combine(RepoRoot.Path, ".tmp", "web");
        Directory.CreateDirectory(artefacts);
        var screenshot = Path.Combine(artefacts, "demo.png");
        File.Delete(screenshot);

        var run = await SimHelpers.RunAsync("node", [Path.Combine(RepoRoot.Path, "tests", "web", "view.js"), "check", service.MetricsUrl.ToString(), screenshot],
            TimeSpan.FromMinutes(3));
        Assert.True(run.ExitCode == 0, $"view.js exited {run.ExitCode}: {run.Stderr}\n{run.Stdout}");
        var o = JsonNode.Parse(run.Stdout.Trim().Split('\n')[^1])!;

        Assert.Empty(o["errors"]!.AsArray());
        var shown = o["nodes"]!.AsArray().Select(n => (string)n!).ToList();
        var names = service.Model.Snapshot().Nodes.Select(n => n.Name).ToHashSet();
        Assert.True(shown.Count >= 8, $"only {shown.Count} node rows");
        Assert.True(shown.Count(names.Contains) >= shown.Count - 2, "the rows are not the demo's nodes");   // the demo adds and removes a node now and then
        Assert.NotEmpty(o["recommendations"]!.AsArray());
        Assert.StartsWith("live", (string?)o["status"]);
        Assert.Contains("Cost", (string?)o["tiles"]);
        Assert.Contains("/mo", (string?)o["tiles"]);

        // Clicks open the explanations, with the node's class and binpacking and the recommendation's reasons.
        Assert.Contains($"Node {shown[0]}", (string?)o["nodeDialog"]);
        Assert.Contains("cores", (string?)o["nodeDialog"]);
        Assert.Contains("GiB", (string?)o["nodeDialog"]);
        Assert.Contains("Why", (string?)o["recDialog"]);
        // Keyboard alone: Home, ArrowDown, Enter explain the second row.
        Assert.Equal(shown[1], (string?)o["keyboardSelected"]);
        Assert.Equal($"Node {shown[1]}", (string?)o["keyboardDialog"]);

        var prices = o["sortedByPrice"]!.AsArray().Select(p => double.Parse((string)p!, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(prices.OrderByDescending(p => p), prices);
        Assert.Equal([(string)o["filteredClass"]!], o["filteredClasses"]!.AsArray().Select(c => (string)c!));

        // WCAG AA for text: 4.5:1 against the background it sits on, everywhere on the page.
        Assert.True((int)o["contrast"]!["checked"]! > 50);
        Assert.True((double)o["contrast"]!["worst"]!["ratio"]! >= 4.5, o["contrast"]!.ToJsonString());

        Assert.True((bool)o["changed"]!);
        Assert.Equal(1, (int)o["navigations"]!);   // live without a reload
        Assert.True(new FileInfo(screenshot).Length > 10_000, "no screenshot written");
    }

    /// <summary>With --actuation auto on the demo: the page lists the operations that ended, as GetSummary does, and the refusals.</summary>
    [Fact]
    public async Task WithActuationOnThePageShowsRecentActionsAndRefusals()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        await using var service = await Service.StartAsync(KarpetrackOptions.Parse(["--demo", "--actuation", "auto", "--metrics-addr", "127.0.0.1:0",
            "--grpc-addr", "127.0.0.1:0", "--log-level", "warn", "--recommend-interval", "1s"], _ => null), cts.Token);
        JsonNode? summary = null;
        using (var http = new HttpClient { BaseAddress = service.MetricsUrl })
            while (summary?["recentActions"] is not JsonArray { Count: > 0 })
            {
                await Task.Delay(200, cts.Token);
                var r = await http.GetAsync("v1/summary", cts.Token);
                if (r.IsSuccessStatusCode) summary = JsonNode.Parse(await r.Content.ReadAsStringAsync(cts.Token));
            }
        var ended = summary["recentActions"]!.AsArray().Select(a => (string)a!["recommendationId"]!).ToList();

        var run = await SimHelpers.RunAsync("node", [Path.Combine(RepoRoot.Path, "tests", "web", "view.js"), "actuation", service.MetricsUrl.ToString()],
            TimeSpan.FromMinutes(2));
        Assert.True(run.ExitCode == 0, $"view.js exited {run.ExitCode}: {run.Stderr}\n{run.Stdout}");
        var o = JsonNode.Parse(run.Stdout.Trim().Split('\n')[^1])!;
        Assert.Empty(o["errors"]!.AsArray());
        Assert.Equal("Mode: auto.", (string?)o["mode"]);
        var shown = o["recent"]!.AsArray().Select(x => (string)x!).ToList();
        Assert.Contains(ended[0], shown);   // the newest the API listed a moment ago is among the page's newest 20
        Assert.Contains("Recent actions", (string?)o["section"]);
        Assert.Matches("^(No refusals so far\\.|Refused so far: .+\\.)$", (string?)o["refusals"]);
    }
}
