namespace Karpetrack.Tests.Api;

/// <summary>`karpetrack approve` sends a bearer token: over h2c to another machine it says so on stderr first.</summary>
public class ApproveCleartextTests
{
    [Theory]
    [InlineData("10.1.2.3:9102", true)]
    [InlineData("http://karpetrack.karpetrack.svc:9102", true)]
    [InlineData("https://karpetrack.example.com:9102", false)]
    [InlineData("127.0.0.1:9102", false)]
    [InlineData("http://localhost:9102", false)]
    public async Task ApproveWarnsBeforeSendingItsTokenInCleartext(string server, bool warns)
    {
        var tokenFile = Path.GetTempFileName();
        await File.WriteAllTextAsync(tokenFile, "s3cret");
        try
        {
            using var output = new StringWriter();
            using var error = new StringWriter();
            using var cancelled = new CancellationTokenSource();
            cancelled.Cancel();   // the warning is written before the call; the call itself goes nowhere
            await GrpcCli.RunAsync(["approve", "del-000000000000", "--server", server, "--token-file", tokenFile], output, error, cancelled.Token);
            var lines = error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            if (warns)
            {
                var warning = Assert.Single(lines, l => l.Contains("cleartext", StringComparison.Ordinal));
                Assert.StartsWith("karpetrack: warning:", warning);
                Assert.DoesNotContain("s3cret", warning);
            }
            else Assert.DoesNotContain(lines, l => l.Contains("cleartext", StringComparison.Ordinal));
        }
        finally { File.Delete(tokenFile); }
    }
}
