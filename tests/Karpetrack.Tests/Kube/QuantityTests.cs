namespace Karpetrack.Tests.Kube;

public class QuantityTests
{
    [Theory]
    [InlineData("0", "0")]
    [InlineData("1", "1")]
    [InlineData("100m", "0.1")]
    [InlineData("250m", "0.25")]
    [InlineData("0.5", "0.5")]
    [InlineData(".5", "0.5")]
    [InlineData("1.", "1")]
    [InlineData("1.G", "1000000000")]
    [InlineData("1.5Gi", "1610612736")]
    [InlineData("128974848", "128974848")]
    [InlineData("129e6", "129000000")]
    [InlineData("129M", "129000000")]
    [InlineData("123Mi", "128974848")]
    [InlineData("1Gi", "1073741824")]
    [InlineData("1G", "1000000000")]
    [InlineData("512Ki", "524288")]
    [InlineData("1e3", "1000")]
    [InlineData("1E", "1000000000000000000")]
    [InlineData("1E6", "1000000")]
    [InlineData("1.3E+6", "1300000")]
    [InlineData("0.5e-2", "0.005")]
    [InlineData("5n", "0.000000005")]
    [InlineData("4u", "0.000004")]
    [InlineData("+1k", "1000")]
    [InlineData("-3.01", "-3.01")]
    [InlineData("100.035k", "100035")]
    [InlineData("0.9n", "0.000000001")]
    [InlineData("3.001n", "0.000000004")]
    [InlineData("0.00000012345", "0.000000124")]
    [InlineData("9Ei", "9223372036854775807")]
    [InlineData("10Ei", "9223372036854775807")]
    public void ParsesExactly(string text, string expected)
    {
        Assert.True(Quantity.TryParse(text, out var q, out var error), error);
        Assert.Equal(decimal.Parse(expected, System.Globalization.CultureInfo.InvariantCulture), q.Value);
    }

    [Theory]
    [InlineData("")]
    [InlineData(" 1")]
    [InlineData("1 ")]
    [InlineData("1K")]
    [InlineData("1KiB")]
    [InlineData("1Mb")]
    [InlineData("1i")]
    [InlineData(".5i")]
    [InlineData("0.1mi")]
    [InlineData("0.1am")]
    [InlineData("1.1.M")]
    [InlineData("1+1.0M")]
    [InlineData("-3.01e-")]
    [InlineData("aoeu")]
    [InlineData(".")]
    [InlineData("12x")]
    public void RejectsMalformed(string text)
    {
        Assert.False(Quantity.TryParse(text, out _, out var error));
        Assert.Contains("quantity", error);
    }

    [Theory]
    [InlineData("100m", 100, 1)]
    [InlineData("0.5", 500, 1)]
    [InlineData("1", 1000, 1)]
    [InlineData("1500m", 1500, 2)]
    [InlineData("0.1m", 1, 1)]
    [InlineData("64m", 64, 1)]          // memory "64m" is 0.064 bytes: Value() rounds up to 1
    [InlineData("1Gi", 1073741824000, 1073741824)]
    public void IntegerViewsRoundUpLikeTheScheduler(string text, long milli, long units)
    {
        var q = Quantity.Parse(text);
        Assert.Equal(milli, q.CeilMilli);
        Assert.Equal(units, q.CeilUnits);
    }

    /// <summary>
    /// The decoder's shortcut for plain request quantities stores exactly what the exact path stores (ceil of the value in
    /// millis for cpu, in units otherwise), over every suffix and sizes up to the int64 cap; it declines what it does not
    /// cover, and it does cover the everyday forms.
    /// </summary>
    [Fact]
    public void PlainRequestQuantitiesAreStoredAsTheExactPathStoresThem()
    {
        var table = ResourceTable.Default;
        string[] suffixes = ["", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "u", "n", "e3", "E-2", ".5", "x", "mi", "K"];
        var rng = new Random(5);
        int taken = 0;
        for (int i = 0; i < 20_000; i++)
        {
            int digits = rng.Next(1, 18);
            var number = new string(Enumerable.Range(0, digits).Select(_ => (char)('0' + rng.Next(10))).ToArray());
            if (rng.Next(4) == 0) number = number.TrimStart('0') is { Length: > 0 } t ? t : "0";
            var text = number + suffixes[rng.Next(suffixes.Length)];
            foreach (var idx in new[] { ResourceTable.Cpu, ResourceTable.Memory })
            {
                if (!Json.PlainStored(System.Text.Encoding.ASCII.GetBytes(text), table.IsMilli(idx), out long fast)) continue;
                taken++;
                Assert.True(Quantity.TryParse(text, out var q, out _), text);
                Assert.Equal(table.ToStored(idx, q), fast);
            }
        }
        Assert.True(taken > 5_000, $"the shortcut took only {taken}");
        foreach (var text in new[] { "0", "2", "250m", "1500m", "1001m", "128Mi", "64Ki", "1G", "8Gi", "3T" })
        {
            Assert.True(Json.PlainStored(System.Text.Encoding.ASCII.GetBytes(text), milli: true, out long milli), text);
            Assert.True(Json.PlainStored(System.Text.Encoding.ASCII.GetBytes(text), milli: false, out long units), text);
            Assert.Equal((Quantity.Parse(text).CeilMilli, Quantity.Parse(text).CeilUnits), (milli, units));
        }
        foreach (var text in new[] { "", "0100m", "+1", "-1", "1.5", "1e3", "1Ei", "99999999999999999", "1 m" })
            Assert.False(Json.PlainStored(System.Text.Encoding.ASCII.GetBytes(text), milli: true, out _), text);
    }
}
