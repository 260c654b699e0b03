using System.Text;
using Microsoft.AspNetCore.Http;

namespace Karpetrack.Simulation;

/// <summary>One write request as a fake API server received it (every method but GET and HEAD).</summary>
public sealed class WriteRecord
{
    /// <summary>Arrival order, across every server the journal is attached to.</summary>
    public required long Seq { get; init; }
    public required DateTimeOffset At { get; init; }
    /// <summary>"kube" or "spot".</summary>
    public required string Api { get; init; }
    /// <summary>The <see cref="WriteJournal.CallerHeader"/> the client sent, else its User-Agent.</summary>
    public required string Caller { get; init; }
    public required string Method { get; init; }
    /// <summary>Path and query.</summary>
    public required string Path { get; init; }
    /// <summary>The request body (at most <see cref="WriteJournal.MaxBody"/> bytes of it, as UTF-8 text).</summary>
    public string Body { get; init; } = "";
    /// <summary>The status answered; 0 while in flight, or when the connection was dropped before an answer.</summary>
    public int Status { get; set; }
    /// <summary>True when a <see cref="WriteJournal.Before"/> hook dropped the request before the server handled it.</summary>
    public bool Dropped { get; set; }
    /// <summary>
    /// The client marked it with <see cref="WriteJournal.FencedHeader"/>: its caller had already been told its term was
    /// over when the request left (unmarked, a write arriving late was on the wire before that).
    /// </summary>
    public bool SentFenced { get; init; }

    public override string ToString() => $"#{Seq} {Api} {Caller} {Method} {Path} → {(Dropped ? "dropped" : Status.ToString(System.Globalization.CultureInfo.InvariantCulture))}";
}

/// <summary>What a <see cref="WriteJournal.Before"/> hook decides for a write about to be handled.</summary>
public enum JournalVerdict
{
    /// <summary>Handled as usual.</summary>
    Proceed,
    /// <summary>Never handled: the connection drops, as when the caller died before its request went out.</summary>
    Drop,
}

/// <summary>
/// Every write made over HTTP to the fake APIs it is attached to (<see cref="KubeApiServer.Journal"/>,
/// <see cref="SpotApiServer.Journal"/>), in arrival order with the time, the caller, the verb and the
/// path, for invariants that look back at who wrote what and when. Hooks run around each write:
/// <see cref="Before"/> may drop it (fault injection), <see cref="After"/> sees it handled (a test may
/// kill the caller's process right there, so that the write landed but its answer is never read).
/// Writes made through <see cref="ObjectStore"/> or the fakes' own timers are not requests and are not recorded.
/// </summary>
public sealed class WriteJournal(TimeProvider? clock = null)
{
    /// <summary>The request header naming the caller (a test gives each simulated process its own).</summary>
    public const string CallerHeader = "X-Karpetrack-Caller";
    public const int MaxBody = 64 * 1024;
    /// <summary>The request header a test's client adds once its caller's term is over (see <see cref="WriteRecord.SentFenced"/>).</summary>
    public const string FencedHeader = "X-Karpetrack-Fenced";

    private readonly TimeProvider clock = clock ?? TimeProvider.System;
    private readonly object gate = new();
    private readonly List<WriteRecord> records = [];
    private static readonly AsyncLocal<WriteRecord?> current = new();
    private long seq;

    /// <summary>Called on the request's thread before the server handles the write; not under any lock of the journal.</summary>
    public Func<WriteRecord, JournalVerdict>? Before { get; set; }

    /// <summary>Called once the server handled the write and before the answer is sent.</summary>
    public Action<WriteRecord>? After { get; set; }

    /// <summary>
    /// Awaited when a write arrives, before it is numbered (a test holds it there: a request on the wire that the server
    /// numbers only after later ones); given the caller and the path.
    /// </summary>
    public Func<string, string, Task>? Arrived { get; set; }

    /// <summary>The write the current request carries (null outside one): lets a handler of a server's change events attribute it.</summary>
    public static WriteRecord? Current => current.Value;

    public IReadOnlyList<WriteRecord> Records { get { lock (gate) return [.. records]; } }

    /// <summary>The sequence number the next write will get: writes after a moment are those with at least this number.</summary>
    public long Next { get { lock (gate) return seq + 1; } }

    public IReadOnlyList<WriteRecord> Since(long next) { lock (gate) return records.Where(r => r.Seq >= next).ToList(); }

    internal static bool IsWrite(string method) => !(HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsOptions(method));

    /// <summary>Records a write, runs the hooks around <paramref name="handle"/>, and sets its status.</summary>
    internal async Task HandleAsync(string api, HttpContext ctx, Func<HttpContext, Task> handle)
    {
        var req = ctx.Request;
        var caller = req.Headers[CallerHeader].ToString();
        if (caller.Length == 0) caller = req.Headers.UserAgent.ToString();
        string body = "";
        if (req.ContentLength is null or > 0)
        {
            req.EnableBuffering();
            var buffer = new byte[MaxBody];
            int read = 0, n;
            while (read < buffer.Length && (n = await req.Body.ReadAsync(buffer.AsMemory(read), ctx.RequestAborted).ConfigureAwait(false)) > 0) read += n;
            body = Encoding.UTF8.GetString(buffer, 0, read);
            req.Body.Position = 0;
        }
        if (Arrived is { } arrived) await arrived(caller, req.Path.Value ?? "").ConfigureAwait(false);
        WriteRecord record;
        lock (gate)
        {
            record = new WriteRecord
            {
                Seq = ++seq, At = clock.GetUtcNow(), Api = api, Caller = caller, Method = req.Method, Path = req.Path.Value + req.QueryString.Value, Body = body,
                SentFenced = req.Headers.ContainsKey(FencedHeader),
            };
            records.Add(record);
        }
        if (Before?.Invoke(record) == JournalVerdict.Drop)
        {
            record.Dropped = true;
            ctx.Abort();
            return;
        }
        current.Value = record;
        ctx.Response.OnStarting(() =>
        {
            record.Status = ctx.Response.StatusCode;
            After?.Invoke(record);
            return Task.CompletedTask;
        });
        try { await handle(ctx).ConfigureAwait(false); }
        finally { current.Value = null; }
    }
}

public sealed partial class KubeApiServer
{
    /// <summary>When set, every write request is recorded there (and its hooks run) before it is handled.</summary>
    public WriteJournal? Journal { get; set; }

    private Task HandleJournaledAsync(HttpContext ctx) =>
        Journal is { } journal && WriteJournal.IsWrite(ctx.Request.Method) ? journal.HandleAsync("kube", ctx, HandleAsync) : HandleAsync(ctx);
}

public sealed partial class SpotApiServer
{
    /// <summary>When set, every write request (the token exchange included) is recorded there (and its hooks run) before it is handled.</summary>
    public WriteJournal? Journal { get; set; }

    private Task HandleJournaled(HttpContext ctx) =>
        Journal is { } journal && WriteJournal.IsWrite(ctx.Request.Method) ? journal.HandleAsync("spot", ctx, Handle) : Handle(ctx);
}
