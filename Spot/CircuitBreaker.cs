namespace Karpetrack;

/// <summary>
/// Closed → (threshold consecutive failures) → open → (cool-down) → half-open, where one trial
/// request goes through: success closes, failure re-opens for another cool-down.
/// </summary>
internal sealed class CircuitBreaker(int threshold, TimeSpan cooldown, TimeProvider clock)
{
    private enum State { Closed, Open, HalfOpen }

    private readonly object gate = new();
    private State state;
    private int failures;
    private DateTimeOffset openedAt;
    private bool trialInFlight;
    private long openings;

    public bool IsOpen { get { lock (gate) return state != State.Closed; } }

    public long Openings { get { lock (gate) return openings; } }

    public bool TryEnter(out TimeSpan reopensIn)
    {
        lock (gate)
        {
            reopensIn = TimeSpan.Zero;
            if (state == State.Closed) return true;
            var now = clock.GetUtcNow();
            if (state == State.Open && now - openedAt >= cooldown)
            {
                state = State.HalfOpen;
                trialInFlight = false;
            }
            if (state == State.HalfOpen && !trialInFlight)
            {
                trialInFlight = true;
                return true;
            }
            reopensIn = state == State.Open ? cooldown - (now - openedAt) : TimeSpan.Zero;
            return false;
        }
    }

    public void Success()
    {
        lock (gate)
        {
            failures = 0;
            state = State.Closed;
            trialInFlight = false;
        }
    }

    public void Abandon()
    {
        lock (gate) trialInFlight = false;
    }

    public void Failure()
    {
        lock (gate)
        {
            failures++;
            if (state == State.HalfOpen || (state == State.Closed && failures >= threshold))
            {
                if (state == State.Closed) openings++;
                state = State.Open;
                openedAt = clock.GetUtcNow();
                trialInFlight = false;
            }
        }
    }
}
