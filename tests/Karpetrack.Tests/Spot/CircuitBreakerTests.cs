namespace Karpetrack.Tests.Spot;

/// <summary>The Spot client's circuit breaker on a hand-moved clock: closed, open, half-open with one trial.</summary>
public sealed class CircuitBreakerTests
{
    private static readonly TimeSpan Cooldown = TimeSpan.FromSeconds(30);

    private static (CircuitBreaker, ManualClock) Open()
    {
        var clock = new ManualClock();
        var breaker = new CircuitBreaker(threshold: 3, Cooldown, clock);
        for (int i = 0; i < 3; i++) breaker.Failure();
        return (breaker, clock);
    }

    [Fact]
    public void ItOpensOnlyAfterTheThresholdOfConsecutiveFailures()
    {
        var breaker = new CircuitBreaker(threshold: 3, Cooldown, new ManualClock());
        breaker.Failure();
        breaker.Failure();
        Assert.False(breaker.IsOpen);
        Assert.True(breaker.TryEnter(out _));

        breaker.Success();                  // a success resets the count
        breaker.Failure();
        breaker.Failure();
        Assert.False(breaker.IsOpen);
        breaker.Failure();
        Assert.True(breaker.IsOpen);
        Assert.Equal(1, breaker.Openings);
    }

    [Fact]
    public void WhileOpenCallsAreRefusedWithTheTimeLeftInTheCooldown()
    {
        var (breaker, clock) = Open();
        Assert.False(breaker.TryEnter(out var left));
        Assert.Equal(Cooldown, left);
        clock.Advance(TimeSpan.FromSeconds(20));
        Assert.False(breaker.TryEnter(out left));
        Assert.Equal(TimeSpan.FromSeconds(10), left);
    }

    [Fact]
    public void AfterTheCooldownExactlyOneTrialGoesThroughAndItsSuccessCloses()
    {
        var (breaker, clock) = Open();
        clock.Advance(Cooldown);

        Assert.True(breaker.TryEnter(out _));          // the trial
        Assert.False(breaker.TryEnter(out var left));  // everyone else waits for it
        Assert.Equal(TimeSpan.Zero, left);
        Assert.True(breaker.IsOpen);

        breaker.Success();
        Assert.False(breaker.IsOpen);
        Assert.True(breaker.TryEnter(out _));
        Assert.True(breaker.TryEnter(out _));
        Assert.Equal(1, breaker.Openings);
    }

    [Fact]
    public void AFailedTrialReopensForAWholeCooldownWithoutCountingANewOpening()
    {
        var (breaker, clock) = Open();
        clock.Advance(Cooldown);
        Assert.True(breaker.TryEnter(out _));
        clock.Advance(TimeSpan.FromSeconds(5));
        breaker.Failure();

        Assert.True(breaker.IsOpen);
        Assert.False(breaker.TryEnter(out var left));
        Assert.Equal(Cooldown, left);                  // from the trial's failure, not the first opening
        Assert.Equal(1, breaker.Openings);
        clock.Advance(Cooldown);
        Assert.True(breaker.TryEnter(out _));
    }

    [Fact]
    public void AnAbandonedTrialLetsTheNextCallerTry()
    {
        var (breaker, clock) = Open();
        clock.Advance(Cooldown);
        Assert.True(breaker.TryEnter(out _));
        breaker.Abandon();                              // cancelled: neither success nor failure
        Assert.True(breaker.IsOpen);
        Assert.True(breaker.TryEnter(out _));
        Assert.False(breaker.TryEnter(out _));
    }

    [Fact]
    public void ReopeningAfterCloseCountsASecondOpening()
    {
        var (breaker, clock) = Open();
        clock.Advance(Cooldown);
        Assert.True(breaker.TryEnter(out _));
        breaker.Success();
        for (int i = 0; i < 3; i++) breaker.Failure();
        Assert.True(breaker.IsOpen);
        Assert.Equal(2, breaker.Openings);
    }
}
