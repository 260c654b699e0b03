namespace Karpetrack.Tests.Api;

public class HomePageTests
{
    [Fact]
    public async Task TheWebViewIsStaticAndLabelGroupsReachItOnlyAsJson()
    {
        // The page is the same embedded file for every configuration: nothing the cluster or a flag says is
        // written into HTML on the server (the script sets text, never markup), so there is nothing to escape there.
        var options = KarpetrackOptions.Parse(["--demo", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-level", "warn",
            "--label-group", "<script>alert(1)</script>"], _ => null);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await using var service = await Service.StartAsync(options, cts.Token);
        using var http = new HttpClient();
        var page = await http.GetStringAsync(new Uri(service.MetricsUrl, "/"));
        Assert.DoesNotContain("alert(1)", page);
        Assert.Contains("<a href=\"metrics\">", page);
        using (var stream = typeof(WebView).Assembly.GetManifestResourceStream("web.index.html")!)
            Assert.Equal(await new StreamReader(stream).ReadToEndAsync(), page);
        var script = await http.GetStringAsync(new Uri(service.MetricsUrl, "/ui/app.js"));
        Assert.DoesNotContain("innerHTML", script);
        Assert.DoesNotContain("insertAdjacentHTML", script);
        Assert.DoesNotContain("document.write", script);
        for (int i = 0; ; i++)
        {
            using var nodes = await http.GetAsync(new Uri(service.MetricsUrl, "/v1/nodes"));
            if (nodes.StatusCode == System.Net.HttpStatusCode.ServiceUnavailable && i < 300) { await Task.Delay(100); continue; }
            var body = await nodes.Content.ReadAsStringAsync();
            Assert.DoesNotContain("<script>", body);   // JSON escapes it too (\u003c), in case anything ever pastes it into HTML
            using var doc = System.Text.Json.JsonDocument.Parse(body);
            Assert.Equal("<script>alert(1)</script>", doc.RootElement.GetProperty("labelGroups")[0].GetString());
            break;
        }
    }

    [Fact]
    public async Task EachEndpointAnswersGetWithItsContentTypeAndNothingElseIsServed()
    {
        var options = KarpetrackOptions.Parse(["--demo", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-level", "warn"], _ => null);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await using var service = await Service.StartAsync(options, cts.Token);
        using var http = new HttpClient { BaseAddress = service.MetricsUrl };

        foreach (var (path, type) in new[] { ("/", "text/html"), ("/ui/app.js", "text/javascript"), ("/healthz", "text/plain"), ("/sync", "application/json"), ("/metrics", "text/plain") })
        {
            using var response = await http.GetAsync(path);
            Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(type, response.Content.Headers.ContentType!.MediaType);
        }
        using (var sync = await http.GetAsync("/sync"))
            Assert.True(System.Text.Json.JsonDocument.Parse(await sync.Content.ReadAsStringAsync()).RootElement.TryGetProperty("pods", out _));
        Assert.Equal("ok\n", await http.GetStringAsync("/healthz"));

        using var missing = await http.GetAsync("/nope");
        Assert.Equal(System.Net.HttpStatusCode.NotFound, missing.StatusCode);
        using var post = await http.PostAsync("/metrics", new StringContent(""));
        Assert.Equal(System.Net.HttpStatusCode.MethodNotAllowed, post.StatusCode);
        Assert.Equal(["GET"], post.Content.Headers.Allow);
    }

    [Fact]
    public async Task AFailingBackgroundLoopTakesReadinessAwayAndIsNamed()
    {
        var options = KarpetrackOptions.Parse(["--demo", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-level", "error"], _ => null);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await using var service = await Service.StartAsync(options, cts.Token);
        using var http = new HttpClient { BaseAddress = service.MetricsUrl };
        async Task<System.Net.HttpStatusCode> Ready() { using var r = await http.GetAsync("/readyz"); return r.StatusCode; }
        while (await Ready() != System.Net.HttpStatusCode.OK) await Task.Delay(50, cts.Token);

        var crashed = new TaskCompletionSource();
        _ = service.Supervisor.Run("probe", _ => { crashed.TrySetResult(); throw new OverflowException("too large"); }, cts.Token);
        await crashed.Task.WaitAsync(cts.Token);
        while (service.Supervisor.Health().All(l => l.Restarts == 0)) await Task.Delay(20, cts.Token);

        using var ready = await http.GetAsync("/readyz");
        Assert.Equal(System.Net.HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        Assert.Contains("background loop probe is failing", await ready.Content.ReadAsStringAsync());
        using var sync = System.Text.Json.JsonDocument.Parse(await http.GetStringAsync("/sync"));
        var probe = sync.RootElement.GetProperty("loops").GetProperty("probe");
        Assert.True(probe.GetProperty("failing").GetBoolean());
        Assert.Contains("OverflowException: too large", probe.GetProperty("last_error").GetString());
        Assert.False(sync.RootElement.GetProperty("loops").GetProperty("pods").GetProperty("failing").GetBoolean());
    }
}
