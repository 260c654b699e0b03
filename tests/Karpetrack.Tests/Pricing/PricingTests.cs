using System.Text;

namespace Karpetrack.Tests.Pricing;

public class PriceFeedParserTests
{
    internal static readonly string SnapshotDir = Path.Combine(RepoRoot.Path, "data", "percentiles");

    public static TheoryData<string> Snapshots()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(Path.Combine(RepoRoot.Path, "data", "percentiles"), "*.json").Order()) data.Add(Path.GetFileName(f));
        return data;
    }

    [Theory]
    [MemberData(nameof(Snapshots))]
    public void ParsesEveryRealSnapshot(string file)
    {
        var book = PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(SnapshotDir, file)), DateTimeOffset.UtcNow, file);
        Assert.Equal(101, book.Classes.Count);
        Assert.Equal(8, book.Classes.Values.Select(c => c.Class.Region).Distinct().Count());
        Assert.All(book.Classes.Values, c =>
        {
            Assert.True(c.Prices.Market > 0);
            Assert.True(c.Class.Cpu > 0);
            Assert.True(c.Class.MemoryBytes > 0);
            Assert.Contains(c.Class.Category, new[] { "gp", "ch", "mh", "gpu", "bm" });
            Assert.Equal(SpotLabels.RegionOfClass(c.Class.Name), c.Class.Region);
        });
    }

    [Fact]
    public void ReadsTheFieldsExactly()
    {
        var book = PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(SnapshotDir, "percentiles-2026-08-17.json")), DateTimeOffset.UtcNow, "t");
        var medium = book.Classes["gp.vs1.medium-ord"];
        Assert.Equal(3_750_000_000, medium.Class.MemoryBytes);          // "3.75GB": decimal GB, not truncated to 3
        Assert.Equal(2m, medium.Class.Cpu);
        Assert.Equal(0.001m, medium.Prices.Market);
        Assert.Equal(0.006m, medium.Prices.P20);
        Assert.Equal("General Purpose", medium.Class.CategoryName);
        Assert.Equal("us-central-ord-1", medium.Class.Region);
        Assert.Equal("v1", medium.Class.Generation);
        // Float noise in the feed (0.026000000000000002) becomes the price it means.
        Assert.All(book.Classes.Values, c => Assert.Equal(Math.Round(c.Prices.P80!.Value, 6), c.Prices.P80));
        Assert.Equal("bm", book.Classes["io.bm2-lon"].Class.Category);
        Assert.Equal("gpu", book.Classes["gpu.vs2.xlargeplusplus-sjc"].Class.Category);
    }

    [Fact]
    public void SpotNodesCostTheMinimumBidWhenItExceedsTheMarket()
    {
        var book = PriceFeedParser.Parse(File.ReadAllBytes(Path.Combine(SnapshotDir, "percentiles-2026-08-17.json")), DateTimeOffset.UtcNow, "t");
        Assert.Equal(0.001m, book.NodePrice("gp.vs1.medium-ord", "spot"));
        Assert.Null(book.NodePrice("gp.vs1.medium-ord", "ondemand"));          // the feed has no on-demand price
        Assert.Null(book.NodePrice("no.such.class-ord", "spot"));              // unknown: unpriced, never free
        var withApi = book.WithSpotApi(new Dictionary<string, SpotClassFacts>
        {
            ["gp.vs1.medium-ord"] = new(0.01m, 0.019m, 100_000_000_000, "available", null, null),
        }, DateTimeOffset.UtcNow);
        Assert.Equal(0.01m, withApi.NodePrice("gp.vs1.medium-ord", "spot"));
        Assert.Equal(0.019m, withApi.NodePrice("gp.vs1.medium-ord", "ondemand"));
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("{", "not valid JSON")]
    [InlineData("[]", "no \"regions\"")]
    [InlineData("""{"regions":{}}""", "no server classes")]
    [InlineData("""{"regions":{"r":{"serverclasses":{"a-iad":{"market_price":"0.01","cpu":"2","memory":"4GB","display_name":"x","category":"General Purpose"}}}}}""", null)]
    [InlineData("""{"regions":{"r":{"serverclasses":{"a-iad":{"cpu":"2","memory":"4GB","display_name":"x","category":"General Purpose"}}}}}""", "market_price: missing")]
    [InlineData("""{"regions":{"r":{"serverclasses":{"a-iad":{"market_price":"-0.01","cpu":"2","memory":"4GB","display_name":"x","category":"General Purpose"}}}}}""", "negative price")]
    [InlineData("""{"regions":{"r":{"serverclasses":{"a-iad":{"market_price":"cheap","cpu":"2","memory":"4GB","display_name":"x","category":"General Purpose"}}}}}""", "is not a price")]
    [InlineData("""{"regions":{"r":{"serverclasses":{"a-iad":{"market_price":"0.01","cpu":"two","memory":"4GB","display_name":"x","category":"General Purpose"}}}}}""", "cpu")]
    [InlineData("""{"regions":{"r":{"serverclasses":{"a-iad":{"market_price":"0.01","cpu":"2","memory":"4GiB","display_name":"x","category":"General Purpose"}}}}}""", "memory")]
    [InlineData("""{"regions":{"r":{"serverclasses":{"a-iad":{"market_price":"0.01","cpu":"2","memory":"4GB","display_name":"x","category":"Quantum"}}}}}""", "unknown category")]
    [InlineData("""{"regions":{"r":{"serverclasses":{"a-iad":{"market_price":"0.01","20_percentile":"NaN","cpu":"2","memory":"4GB","display_name":"x","category":"gp"}}}}}""", "20_percentile")]
    [InlineData("""{"regions":{"r":{"serverclasses":{"a-iad":{"market_price":"0.01","cpu":"2","memory":"10000000000GB","display_name":"x","category":"gp"}}}}}""", "memory")]
    [InlineData("""{"regions":{"r":{"serverclasses":{"a-iad":{"market_price":"0.01","cpu":"2","memory":"65TB","display_name":"x","category":"gp"}}}}}""", "implausible size")]
    [InlineData("""{"regions":{"r":{"serverclasses":{"a-iad":{"market_price":"0.01","cpu":"100000","memory":"4GB","display_name":"x","category":"gp"}}}}}""", "implausible CPU")]
    public void MalformedFeedsAreRejectedWhole(string json, string? expected)
    {
        if (expected is null)
        {
            Assert.Single(PriceFeedParser.Parse(Encoding.UTF8.GetBytes(json), DateTimeOffset.UtcNow, "t").Classes);
            return;
        }
        var e = Assert.Throws<PriceFeedException>(() => PriceFeedParser.Parse(Encoding.UTF8.GetBytes(json), DateTimeOffset.UtcNow, "t"));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void OversizedBodiesAreRejectedUnparsed()
    {
        var big = new byte[PriceFeedParser.MaxBytes + 1];
        Assert.Contains("limit", Assert.Throws<PriceFeedException>(() => PriceFeedParser.Parse(big, DateTimeOffset.UtcNow, "t")).Message);
    }

    [Fact]
    public void TheEmbeddedSnapshotIsTheNewestAndMarkedEmbedded()
    {
        var book = PriceFeedParser.Embedded();
        Assert.True(book.Embedded);
        Assert.Contains("2026-08-17", book.Source);
        Assert.Equal(101, book.Classes.Count);
    }

    [Theory]
    [InlineData("3.75GB", 3_750_000_000)]
    [InlineData("7.5GB", 7_500_000_000)]
    [InlineData("60GB", 60_000_000_000)]
    [InlineData("512MB", 512_000_000)]
    public void GigabytesAreDecimal(string text, long bytes) => Assert.Equal(bytes, PriceFeedParser.ParseGigabytes(text));
}
