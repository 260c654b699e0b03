namespace Karpetrack.Tests.Host;

public class OptionsTests
{
    private static KarpetrackOptions Parse(string[] args, Dictionary<string, string>? env = null) =>
        KarpetrackOptions.Parse(args, k => env is not null && env.TryGetValue(k, out var v) ? v : null);

    [Fact]
    public void DefaultsMatchTheIssue()
    {
        var o = Parse([]);
        Assert.Equal(":9101", o.MetricsAddr);
        Assert.Equal(["cpu", "memory"], o.Resources);
        Assert.False(o.Demo);
        Assert.Equal("json", o.LogFormat);
        Assert.Empty(o.LabelGroups);
    }

    [Fact]
    public void FlagsOverrideEnvironment()
    {
        var env = new Dictionary<string, string> { ["KARPETRACK_METRICS_ADDR"] = ":9200", ["KARPETRACK_LABEL_GROUP"] = "a,b;c", ["KARPETRACK_DEMO"] = "true" };
        var o = Parse([], env);
        Assert.Equal(":9200", o.MetricsAddr);
        Assert.True(o.Demo);
        Assert.Equal(2, o.LabelGroups.Count);
        o = Parse(["--metrics-addr", "127.0.0.1:0", "--label-group=x", "--label-group", "y,z"], env);
        Assert.Equal("127.0.0.1:0", o.MetricsAddr);
        Assert.Equal([["x"], ["y", "z"]], o.LabelGroups.Select(g => g.ToArray()));
    }

    [Theory]
    [InlineData("0")]
    [InlineData("500ms")]
    public void AForceDeletingGracePeriodIsRefusedAtStart(string value)
    {
        var e = Assert.Throws<OptionsException>(() => Parse(["--max-grace-period", value]));
        Assert.StartsWith("--max-grace-period:", e.Message);
        Assert.Contains("force-delete", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(TimeSpan.FromSeconds(1), Parse(["--max-grace-period", "1s"]).ActuationSettings.MaxGracePeriod);
        Assert.Equal(TimeSpan.FromMinutes(5), Parse([]).ActuationSettings.MaxGracePeriod);
    }

    [Theory]
    [InlineData("--spot-api-url", "http://spot.rackspace.com")]
    [InlineData("--spot-auth-url", "http://login.spot.rackspace.com")]
    [InlineData("--spot-api-url", "http://10.0.0.5:8080/")]
    [InlineData("--spot-auth-url", "HTTP://login.example.com")]
    public void PlainHttpSpotUrlsAreRefusedOffLoopback(string flag, string url)
    {
        var e = Assert.Throws<OptionsException>(() => Parse([flag, url]));
        Assert.StartsWith(flag + ":", e.Message);
        Assert.Contains("cleartext", e.Message);
        // The environment twin is checked the same way.
        var env = new Dictionary<string, string> { [flag == "--spot-api-url" ? "KARPETRACK_SPOT_API_URL" : "KARPETRACK_SPOT_AUTH_URL"] = url };
        Assert.Throws<OptionsException>(() => Parse([], env));
    }

    [Theory]
    [InlineData("https://spot.example.com")]
    [InlineData("http://127.0.0.1:8080/")]
    [InlineData("http://localhost:5000")]
    [InlineData("http://[::1]:5000/")]
    public void HttpsAnywhereAndHttpOnLoopbackAreAccepted(string url)
    {
        var o = Parse(["--spot-api-url", url, "--spot-auth-url", url]);
        Assert.Equal(new Uri(url), o.SpotApiUrl);
        Assert.Equal(new Uri(url), o.SpotAuthUrl);
    }

    [Fact]
    public void ASpotClientBuiltWithoutTheFlagsRefusesCleartextToo()
    {
        var log = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
        Assert.Throws<ArgumentException>(() => new SpotApiClient(new SpotApiOptions { ApiUrl = new("http://spot.example.com") }, "rt", log));
        Assert.Throws<ArgumentException>(() => new SpotApiClient(new SpotApiOptions { AuthUrl = new("http://login.example.com") }, "rt", log));
        using var ok = new SpotApiClient(new SpotApiOptions { ApiUrl = new("http://127.0.0.1:1/"), AuthUrl = new("http://127.0.0.1:1/") }, "rt", log);
    }

    [Fact]
    public void PoolPolicyFlagsParseAndDefaultToNothing()
    {
        var d = Parse([]).Pools;
        Assert.Null(d.MaxManagedMilliCpu);
        Assert.Null(d.MaxManagedMemoryBytes);
        Assert.Equal(TimeSpan.Zero, d.ConsolidateAfter);
        Assert.Null(d.ExpireAfter);
        Assert.Empty(d.Labels);
        Assert.Empty(d.Taints);

        var p = Parse(["--max-managed-cpu", "64.5", "--max-managed-memory", "256Gi", "--consolidate-after", "30m", "--consolidate-after-empty", "5m",
            "--expire-after", "168h", "--pool-labels", "team=web, tier=batch", "--pool-taints", "dedicated=batch:NoSchedule,gpu:NoExecute"]).Pools;
        Assert.Equal(64_500, p.MaxManagedMilliCpu);
        Assert.Equal(256L << 30, p.MaxManagedMemoryBytes);
        Assert.Equal((TimeSpan.FromMinutes(30), TimeSpan.FromMinutes(5), (TimeSpan?)TimeSpan.FromDays(7)), (p.ConsolidateAfter, p.ConsolidateAfterEmpty, p.ExpireAfter));
        Assert.Equal(new Dictionary<string, string> { ["team"] = "web", ["tier"] = "batch" }, p.Labels);
        Assert.Equal([new Taint("dedicated", "batch", "NoSchedule"), new Taint("gpu", null, "NoExecute")], p.Taints);
    }

    [Theory]
    [InlineData("--max-managed-cpu", "lots", "--max-managed-cpu")]
    [InlineData("--max-managed-memory", "-1Gi", "positive quantity")]
    [InlineData("--expire-after", "0", "longer than 0")]
    [InlineData("--pool-labels", "team", "is not key=value")]
    [InlineData("--pool-labels", "karpetrack.io/managed=false", "Karpetrack's own label")]
    [InlineData("--pool-labels", "a=1,a=2", "given twice")]
    [InlineData("--pool-taints", "dedicated=batch", "Effect")]
    [InlineData("--pool-taints", "dedicated=batch:Sometimes", "Effect")]
    public void BadPoolPolicyFlagsAreOneClearError(string flag, string value, string expected)
    {
        var e = Assert.Throws<OptionsException>(() => Parse([flag, value]));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void DuplicateLabelGroupsAreKeptOnce() =>
        Assert.Single(Parse(["--label-group", "a,b", "--label-group", "a, b"]).LabelGroups);

    [Theory]
    [InlineData("", "")]
    [InlineData("gpu.vs2.xlargeplusplus-sjc=2", "gpu.vs2.xlargeplusplus-sjc=2")]
    [InlineData(" a=1 , b.c-d_e=64 ,", "a=1;b.c-d_e=64")]
    public void GpusPerClassAreClassCountPairs(string text, string expected)
    {
        var o = Parse(["--gpus-per-class", text]);
        Assert.Equal(expected, string.Join(";", o.GpusPerClass.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}")));
        var env = Parse([], new Dictionary<string, string> { ["KARPETRACK_GPUS_PER_CLASS"] = text });
        Assert.Equal(o.GpusPerClass, env.GpusPerClass);
    }

    [Theory]
    [InlineData("gpu.vs2.xlargeplusplus-sjc", "is not class=count")]
    [InlineData("=2", "is not a server class name")]
    [InlineData("gpu x=2", "is not a server class name")]
    [InlineData("a=two", "not a whole number between 1 and 64")]
    [InlineData("a=0", "not a whole number between 1 and 64")]
    [InlineData("a=65", "not a whole number between 1 and 64")]
    [InlineData("a=1.5", "not a whole number between 1 and 64")]
    [InlineData("a=", "not a whole number between 1 and 64")]
    [InlineData("a=1,a=2", "a is given twice")]
    public void MalformedGpusPerClassIsOneClearError(string text, string expected)
    {
        var e = Assert.Throws<OptionsException>(() => Parse(["--gpus-per-class", text]));
        Assert.StartsWith("--gpus-per-class", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData("30s", 30_000)]
    [InlineData("5m", 300_000)]
    [InlineData("1h", 3_600_000)]
    [InlineData("1h30m", 5_400_000)]
    [InlineData("500ms", 500)]
    [InlineData("0", 0)]
    public void DurationsAreWrittenLikeGo(string text, double ms) =>
        Assert.Equal(ms, KarpetrackOptions.ParseDuration(text, "--x").TotalMilliseconds);

    [Theory]
    [InlineData(new[] { "--nope" }, "unknown flag --nope")]
    [InlineData(new[] { "--metrics-addr" }, "needs a value")]
    [InlineData(new[] { "--metrics-addr", "9101" }, "not host:port")]
    [InlineData(new[] { "--log-format", "xml" }, "not json or text")]
    [InlineData(new[] { "--node-selector", "a in (b" }, "--node-selector")]
    [InlineData(new[] { "--demo-churn-interval", "5" }, "needs a unit")]
    [InlineData(new[] { "--resources", "cpu,mem ory" }, "not a valid resource name")]
    [InlineData(new[] { "stray" }, "unexpected argument")]
    public void BadInputIsOneClearError(string[] args, string expected) =>
        Assert.Contains(expected, Assert.Throws<OptionsException>(() => Parse(args)).Message);
}

public class LabelSelectorTests
{
    private static readonly Dictionary<string, string> Labels = new() { ["app"] = "web", ["tier"] = "a", ["servers.ngpc.rxt.io/type"] = "spot", ["gen"] = "3" };

    [Theory]
    [InlineData("", true)]
    [InlineData("app=web", true)]
    [InlineData("app==web", true)]
    [InlineData("app!=web", false)]
    [InlineData("app=web,tier in (a,b)", true)]
    [InlineData("tier notin (a)", false)]
    [InlineData("missing notin (a)", true)]
    [InlineData("app", true)]
    [InlineData("!app", false)]
    [InlineData("!canary", true)]
    [InlineData("servers.ngpc.rxt.io/type=spot", true)]
    [InlineData("servers.ngpc.rxt.io/type = ondemand", false)]
    [InlineData("gen > 2", true)]
    [InlineData("gen < 2", false)]
    [InlineData("missing > 0", false)]
    public void Matches(string selector, bool expected) => Assert.Equal(expected, LabelSelector.Parse(selector).Matches(Labels));

    [Theory]
    [InlineData("a in (b")]
    [InlineData("=b")]
    [InlineData("a=b c")]
    [InlineData("a in b")]
    [InlineData("a=-bad-")]
    [InlineData("gen > two")]
    public void RejectsMalformed(string selector) => Assert.NotNull(LabelSelector.Validate(selector));
}
