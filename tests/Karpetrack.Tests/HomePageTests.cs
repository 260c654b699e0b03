namespace Karpetrack.Tests;

public class HomePageTests
{
    [Fact]
    public async Task EverythingTheHomePageShowsIsHtmlEscaped()
    {
        var options = KarpetrackOptions.Parse(["--demo", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-level", "warn",
            "--label-group", "<script>alert(1)</script>"], _ => null);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await using var service = await Service.StartAsync(options, cts.Token);
        using var http = new HttpClient();
        var page = await http.GetStringAsync(new Uri(service.MetricsUrl, "/"));
        Assert.DoesNotContain("<script>", page);
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", page);
        Assert.Contains("<a href=\"/metrics\">", page);
    }

    [Fact]
    public async Task EachEndpointAnswersGetWithItsContentTypeAndNothingElseIsServed()
    {
        var options = KarpetrackOptions.Parse(["--demo", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-level", "warn"], _ => null);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await using var service = await Service.StartAsync(options, cts.Token);
        using var http = new HttpClient { BaseAddress = service.MetricsUrl };

        foreach (var (path, type) in new[] { ("/", "text/html"), ("/healthz", "text/plain"), ("/sync", "application/json"), ("/metrics", "text/plain") })
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
