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
}
