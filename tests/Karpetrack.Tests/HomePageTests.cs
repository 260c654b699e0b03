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
}
