namespace Karpetrack;

/// <summary>Token bucket: reservations may go negative, so waiters queue in arrival order.</summary>
internal sealed class TokenBucket(double ratePerSecond, int burst, TimeProvider clock)
{
    private readonly object gate = new();
    private double tokens = burst;
    private DateTimeOffset last = clock.GetUtcNow();

    /// <summary>Takes one token and says how long to wait before using it.</summary>
    public TimeSpan Reserve()
    {
        if (ratePerSecond <= 0) return TimeSpan.Zero;
        lock (gate)
        {
            var now = clock.GetUtcNow();
            if (now > last)
            {
                tokens = Math.Min(burst, tokens + (now - last).TotalSeconds * ratePerSecond);
                last = now;
            }
            tokens -= 1;
            return tokens >= 0 ? TimeSpan.Zero : TimeSpan.FromSeconds(-tokens / ratePerSecond);
        }
    }
}
