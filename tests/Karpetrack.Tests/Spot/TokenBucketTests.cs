namespace Karpetrack.Tests.Spot;

/// <summary>The Spot client's rate limiter on a hand-moved clock: burst, refill, queueing, the cap.</summary>
public sealed class TokenBucketTests
{
    [Fact]
    public void TheBurstGoesThroughAtOnceThenEachCallWaitsOneIntervalMoreThanTheLast()
    {
        var clock = new ManualClock();
        var bucket = new TokenBucket(ratePerSecond: 2, burst: 3, clock);

        for (int i = 0; i < 3; i++) Assert.Equal(TimeSpan.Zero, bucket.Reserve());
        // Reservations go negative: waiters queue in arrival order, half a second apart at 2/s.
        Assert.Equal(TimeSpan.FromSeconds(0.5), bucket.Reserve());
        Assert.Equal(TimeSpan.FromSeconds(1.0), bucket.Reserve());
        Assert.Equal(TimeSpan.FromSeconds(1.5), bucket.Reserve());
    }

    [Fact]
    public void TokensComeBackWithTimeAtTheRate()
    {
        var clock = new ManualClock();
        var bucket = new TokenBucket(ratePerSecond: 4, burst: 1, clock);
        Assert.Equal(TimeSpan.Zero, bucket.Reserve());
        Assert.Equal(TimeSpan.FromSeconds(0.25), bucket.Reserve());   // owes one token

        clock.Advance(TimeSpan.FromSeconds(0.5));                      // two tokens back: the debt and one more
        Assert.Equal(TimeSpan.Zero, bucket.Reserve());
        Assert.Equal(TimeSpan.FromSeconds(0.25), bucket.Reserve());
    }

    [Fact]
    public void AnIdleBucketRefillsOnlyUpToItsBurst()
    {
        var clock = new ManualClock();
        var bucket = new TokenBucket(ratePerSecond: 10, burst: 2, clock);
        clock.Advance(TimeSpan.FromHours(1));

        Assert.Equal(TimeSpan.Zero, bucket.Reserve());
        Assert.Equal(TimeSpan.Zero, bucket.Reserve());
        Assert.Equal(TimeSpan.FromSeconds(0.1), bucket.Reserve());
    }

    [Fact]
    public void AClockGoingBackwardsNeitherAddsNorRemovesTokens()
    {
        var clock = new ManualClock();
        var bucket = new TokenBucket(ratePerSecond: 1, burst: 1, clock);
        Assert.Equal(TimeSpan.Zero, bucket.Reserve());
        clock.Advance(TimeSpan.FromSeconds(-10));
        Assert.Equal(TimeSpan.FromSeconds(1), bucket.Reserve());
        clock.Advance(TimeSpan.FromSeconds(10));                       // back where it was: nothing earned meanwhile
        Assert.Equal(TimeSpan.FromSeconds(2), bucket.Reserve());
    }

    [Fact]
    public void ARateOfZeroMeansNoLimit()
    {
        var bucket = new TokenBucket(ratePerSecond: 0, burst: 1, new ManualClock());
        for (int i = 0; i < 100; i++) Assert.Equal(TimeSpan.Zero, bucket.Reserve());
    }
}
