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
}
