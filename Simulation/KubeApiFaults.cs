using System.Text;

namespace Karpetrack.Simulation;

/// <summary>One armed failure: the next <see cref="Remaining"/> requests whose path matches get it.</summary>
internal sealed record FailureRule(int StatusCode, TimeSpan? RetryAfter, string? PathContains)
{
    public int Remaining { get; set; }
}

/// <summary>
/// Misbehaviour on demand, for the client's resilience tests. Thread-safe: tests arm faults while
/// requests are in flight.
/// </summary>
public sealed class KubeApiFaults
{
    private readonly ObjectStore _store;
    private readonly object _lock = new();
    private readonly List<FailureRule> _rules = [];

    internal KubeApiFaults(ObjectStore store) => _store = store;

    /// <summary>Ends every open watch stream abruptly: the connection drops without a final chunk.</summary>
    public void CloseAllWatches() => _store.AbortAllWatches();

    /// <summary>
    /// The next <paramref name="count"/> requests whose path and query contain <paramref name="pathContains"/>
    /// (any request when null) answer <paramref name="statusCode"/> with a Status body.
    /// </summary>
    public void FailNext(int count, int statusCode, TimeSpan? retryAfter = null, string? pathContains = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        if (statusCode is < 400 or > 599) throw new ArgumentOutOfRangeException(nameof(statusCode));
        lock (_lock) _rules.Add(new FailureRule(statusCode, retryAfter, pathContains) { Remaining = count });
    }

    /// <summary>Forgets every failure rule not yet used up.</summary>
    public void Clear()
    {
        lock (_lock) _rules.Clear();
    }

    /// <summary>Drops all retained watch history, so resuming from any earlier resourceVersion gets 410 Expired.</summary>
    public void CompactHistory() => _store.CompactHistory();

    /// <summary>
    /// Sends <paramref name="rawJsonLine"/> as is (a newline is added when missing) to every current
    /// watcher of the resource, in order with the real events. Returns how many watchers got it.
    /// </summary>
    public int InjectWatchEvent(string resource, string rawJsonLine) => InjectWatchEvent(resource, Encoding.UTF8.GetBytes(rawJsonLine));

    /// <summary>The same with raw bytes: lets a test send what a string cannot hold, such as invalid UTF-8.</summary>
    public int InjectWatchEvent(string resource, byte[] rawJsonLine)
    {
        var line = rawJsonLine.Length > 0 && rawJsonLine[^1] == (byte)'\n' ? rawJsonLine : [.. rawJsonLine, (byte)'\n'];
        return _store.InjectRaw(resource, line);
    }

    /// <summary>
    /// An apiserver restart onto a new storage history: open watches end abruptly, history is gone
    /// and every object gets a fresh resourceVersion at or above <paramref name="newResourceVersionFloor"/>.
    /// </summary>
    public void Restart(long newResourceVersionFloor) => _store.Restart(newResourceVersionFloor);

    /// <summary>Number of watch streams currently registered with the store.</summary>
    public int OpenWatchCount => _store.WatcherCount;

    /// <summary>Number of watch streams currently registered for one resource (e.g. "pods").</summary>
    public int OpenWatchesOf(string resource) => _store.WatcherCountOf(resource);

    internal FailureRule? TakeFailure(string pathAndQuery)
    {
        lock (_lock)
        {
            for (var i = 0; i < _rules.Count; i++)
            {
                var r = _rules[i];
                if (r.PathContains is not null && !pathAndQuery.Contains(r.PathContains, StringComparison.Ordinal)) continue;
                if (--r.Remaining == 0) _rules.RemoveAt(i);
                return r;
            }
            return null;
        }
    }
}
