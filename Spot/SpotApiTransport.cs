using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>One request to send: path relative to the API (or, with Auth, the login) base URL.</summary>
internal sealed record SpotRequest(HttpMethod Method, string Path, byte[]? Body = null, string? ContentType = null, bool Authenticated = true, bool Auth = false);

/// <summary>
/// The Spot API's one request pipeline, which every call of <see cref="SpotApiClient"/> goes through:
/// rate limit (<see cref="TokenBucket"/>), circuit breaker (<see cref="CircuitBreaker"/>), per-request
/// timeout, retries with backoff, and the refresh-token exchange with a cached id_token (401 →
/// re-exchange once). It publishes karpetrack_spot_api_requests_total and the circuit gauge.
/// </summary>
internal sealed class SpotApiTransport : IDisposable
{
    private readonly SpotApiOptions options;
    private readonly string refreshToken;
    private readonly ILogger log;
    private readonly TimeProvider clock;
    private readonly HttpClient http;
    private readonly Random random;
    private readonly TokenBucket bucket;
    private readonly CircuitBreaker breaker;
    private readonly SemaphoreSlim tokenGate = new(1, 1);
    private readonly object countsGate = new();
    private readonly Prometheus.Counter requestsFamily;
    private readonly Dictionary<(string Method, string Code), Prometheus.Counter.Child> requests = [];
    private BearerToken? token;
    private long tokenExchanges;

    internal sealed record BearerToken(string IdToken, DateTimeOffset RefreshAt, DateTimeOffset ExpiresAt, string? OrgId);

    public SpotApiTransport(SpotApiOptions options, string refreshToken, ILogger log, TimeProvider? clock, HttpMessageHandler? handler, Telemetry? telemetry)
    {
        if (string.IsNullOrWhiteSpace(refreshToken)) throw new ArgumentException("a refresh token is needed", nameof(refreshToken));
        if (options.MaxAttempts < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxAttempts must be at least 1");
        this.options = options;
        this.refreshToken = refreshToken.Trim();
        this.log = log;
        this.clock = clock ?? TimeProvider.System;
        random = options.RandomSeed is { } seed ? new Random(seed) : new Random();
        bucket = new TokenBucket(options.RatePerSecond, Math.Max(1, options.Burst), this.clock);
        breaker = new CircuitBreaker(Math.Max(1, options.BreakerThreshold), options.BreakerCooldown, this.clock);
        http = new HttpClient(handler ?? new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) }, disposeHandler: true)
        {
            Timeout = Timeout.InfiniteTimeSpan,   // each attempt is bounded by RequestTimeout instead
        };
        http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("karpetrack", BuildInfo.Version));
        telemetry ??= new Telemetry();
        requestsFamily = telemetry.Counter("karpetrack_spot_api_requests_total",
            "Spot API requests by HTTP method and status code (\"error\" when no response came).", "method", "code");
        var circuit = telemetry.Gauge("karpetrack_spot_api_circuit_open",
            "1 while the Spot API circuit breaker is open or half-open (requests are held back), 0 when closed.");
        telemetry.OnScrape(() => circuit.Set(CircuitOpen ? 1 : 0));
    }

    /// <summary>True while the breaker refuses calls (open, or half-open with its one trial in flight).</summary>
    public bool CircuitOpen => breaker.IsOpen;

    /// <summary>How many times the circuit has opened.</summary>
    public long CircuitOpenings => breaker.Openings;

    /// <summary>Every HTTP attempt by method and status code ("error" when no response came).</summary>
    public IReadOnlyDictionary<(string Method, string Code), long> Requests
    {
        get { lock (countsGate) return requests.ToDictionary(kv => kv.Key, kv => (long)kv.Value.Value); }
    }

    public long TokenExchanges => Interlocked.Read(ref tokenExchanges);

    public async Task<JsonDocument> SendAsync(SpotRequest request, CancellationToken ct)
    {
        bool reauthenticated = false;
        SpotApiException? last = null;
        for (int attempt = 1; ; attempt++)
        {
            string? bearer = request.Authenticated ? (await GetTokenAsync(ct).ConfigureAwait(false)).IdToken : null;
            if (!breaker.TryEnter(out var reopensIn))
            {
                // The breaker opening in the middle of our retries: the real error says more than "circuit open".
                throw last ?? new SpotApiException("circuit_open", null,
                    $"{request.Method} {request.Path}: not sent, the Spot API circuit is open after {options.BreakerThreshold} consecutive failures (next try in {reopensIn.TotalSeconds:0}s)");
            }
            Outcome outcome;
            try
            {
                outcome = await SendOnceAsync(request, bearer, ct).ConfigureAwait(false);
            }
            catch
            {
                // Cancelled by the caller or an oversized answer: says nothing about the server's health,
                // but a half-open trial must not stay "in flight" forever.
                breaker.Abandon();
                throw;
            }
            if (outcome.Status is >= 200 and < 300)
            {
                breaker.Success();
                try
                {
                    return JsonDocument.Parse(outcome.Body, new JsonDocumentOptions { MaxDepth = 64 });
                }
                catch (JsonException e)
                {
                    throw new SpotApiException("malformed", outcome.Status, $"{request.Method} {request.Path}: the answer is not JSON: {e.Message}", inner: e);
                }
            }

            var error = ToException(request, outcome);
            bool retryable = outcome.Status is null or 429 or >= 500;
            if (retryable) breaker.Failure();
            else breaker.Success();   // a 4xx is a healthy server refusing us

            if (outcome.Status == 401 && request.Authenticated && !reauthenticated)
            {
                // The id_token died early (revoked, clock skew): one fresh exchange, one more try.
                reauthenticated = true;
                log.LogInformation("Spot API answered 401 ({Message}); exchanging the refresh token again", error.ServerMessage);
                await RefreshTokenAsync(bearer, ct).ConfigureAwait(false);
                attempt--;
                continue;
            }
            if (!retryable || attempt >= options.MaxAttempts) throw error;
            TimeSpan delay;
            if (outcome.RetryAfter is { } asked)
            {
                if (asked > options.MaxRetryAfter) throw error;
                delay = asked < TimeSpan.Zero ? TimeSpan.Zero : asked;
            }
            else delay = Backoff(attempt);
            last = error;
            log.LogDebug("Spot API {Method} {Path}: {Reason}; retry {Attempt}/{Max} in {Delay}", request.Method, request.Path, error.Reason, attempt + 1, options.MaxAttempts, delay);
            await Task.Delay(delay, clock, ct).ConfigureAwait(false);
        }
    }

    private sealed record Outcome(int? Status, byte[] Body, string? ContentType, TimeSpan? RetryAfter, Exception? Transport, bool TimedOut);

    private async Task<Outcome> SendOnceAsync(SpotRequest request, string? bearer, CancellationToken ct)
    {
        var wait = bucket.Reserve();
        if (wait > TimeSpan.Zero) await Task.Delay(wait, clock, ct).ConfigureAwait(false);
        var baseUrl = request.Auth ? options.AuthUrl : options.ApiUrl;
        using var message = new HttpRequestMessage(request.Method, new Uri(baseUrl, request.Path));
        message.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
        if (bearer is not null) message.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
        if (request.Body is not null)
        {
            message.Content = new ByteArrayContent(request.Body);
            message.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(request.ContentType ?? "application/json");
        }
        // Wall-clock bound on real I/O; the TimeProvider only paces our own waits.
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(options.RequestTimeout);
        try
        {
            using var response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
            int status = (int)response.StatusCode;
            Count(request.Method.Method, status.ToString(CultureInfo.InvariantCulture));
            var body = await ReadLimitedAsync(response.Content, status is >= 200 and < 300 ? options.MaxResponseBytes : 64 * 1024, timeout.Token).ConfigureAwait(false)
                ?? throw new SpotApiException("malformed", status, $"{request.Method} {request.Path}: the answer is larger than {options.MaxResponseBytes} bytes");
            return new Outcome(status, body, response.Content.Headers.ContentType?.MediaType, RetryAfterOf(response), null, false);
        }
        catch (OperationCanceledException e) when (!ct.IsCancellationRequested)
        {
            Count(request.Method.Method, "error");
            return new Outcome(null, [], null, null, e, true);
        }
        catch (HttpRequestException e)
        {
            Count(request.Method.Method, "error");
            return new Outcome(null, [], null, null, e, false);
        }
        catch (IOException e)
        {
            Count(request.Method.Method, "error");
            return new Outcome(null, [], null, null, e, false);
        }
    }

    private TimeSpan? RetryAfterOf(HttpResponseMessage response)
    {
        if (response.Headers.RetryAfter?.Delta is { } delta) return delta;
        if (response.Headers.RetryAfter?.Date is { } date) return date - clock.GetUtcNow();
        return null;
    }

    private static async Task<byte[]?> ReadLimitedAsync(HttpContent content, int limit, CancellationToken ct)
    {
        await using var s = await content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        using var ms = new MemoryStream();
        var buf = new byte[64 * 1024];
        int n;
        while ((n = await s.ReadAsync(buf, ct).ConfigureAwait(false)) > 0)
        {
            // Error bodies are only read for their message: the start of a long one is enough.
            if (ms.Length + n > limit) return limit < 1024 * 1024 ? ms.ToArray() : null;
            ms.Write(buf, 0, n);
        }
        return ms.ToArray();
    }

    private SpotApiException ToException(SpotRequest request, Outcome o)
    {
        var what = $"{request.Method} {(request.Auth ? "/oauth/token" : request.Path)}";
        if (o.Status is not { } status)
        {
            return o.TimedOut
                ? new SpotApiException("timeout", null, $"{what}: no answer within {options.RequestTimeout.TotalSeconds:0.###}s", inner: o.Transport)
                : new SpotApiException("network", null, $"{what}: {o.Transport?.Message}", inner: o.Transport);
        }
        var serverMessage = ServerMessageOf(o.Body);
        var reason = SpotApiException.ReasonFor(status);
        // The login host answers a bad refresh token with 401 or 403: for us both mean "unauthorized".
        if (request.Auth && status is 401 or 403) reason = "unauthorized";
        return new SpotApiException(reason, status, $"{what}: {status} {serverMessage}".TrimEnd(), serverMessage, o.RetryAfter);
    }

    /// <summary>A Kubernetes Status `message`, an OAuth `error_description`, else the (short) body text.</summary>
    internal static string? ServerMessageOf(byte[] body)
    {
        if (body.Length == 0) return null;
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.ValueKind == JsonValueKind.Object)
            {
                if (SpotApiClient.Str(doc.RootElement, "message") is { } m) return m;
                if (SpotApiClient.Str(doc.RootElement, "error_description") is { } d) return d;
                if (SpotApiClient.Str(doc.RootElement, "error") is { } e) return e;
            }
        }
        catch (JsonException) { }
        var text = Encoding.UTF8.GetString(body.AsSpan(0, Math.Min(body.Length, 300))).Trim();
        return text.Length == 0 ? null : text;
    }

    private TimeSpan Backoff(int attempt)
    {
        var ceiling = Math.Min(options.BackoffMax.TotalMilliseconds, options.BackoffBase.TotalMilliseconds * Math.Pow(2, attempt - 1));
        double jitter;
        lock (random) jitter = random.NextDouble();
        // Half fixed, half random: spreads clients out without ever retrying at once.
        return TimeSpan.FromMilliseconds(ceiling / 2 + ceiling / 2 * jitter);
    }

    private void Count(string method, string code)
    {
        Prometheus.Counter.Child? counter;
        lock (countsGate)
        {
            if (!requests.TryGetValue((method, code), out counter)) requests[(method, code)] = counter = requestsFamily.WithLabels(method, code);
        }
        counter.Inc();
    }


    // ---- tokens ----------------------------------------------------------------------------

    /// <summary>The current id_token, exchanged again when due.</summary>
    public async Task<BearerToken> GetTokenAsync(CancellationToken ct)
    {
        var t = Volatile.Read(ref token);
        if (t is not null && clock.GetUtcNow() < t.RefreshAt) return t;
        return await RefreshTokenAsync(t?.IdToken, ct).ConfigureAwait(false);
    }

    /// <summary>Exchanges the refresh token unless another caller already replaced <paramref name="stale"/>.</summary>
    private async Task<BearerToken> RefreshTokenAsync(string? stale, CancellationToken ct)
    {
        await tokenGate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var current = token;
            if (current is not null && current.IdToken != stale && clock.GetUtcNow() < current.RefreshAt) return current;
            var form = new FormUrlEncodedContent([
                new("grant_type", "refresh_token"), new("client_id", options.ClientId), new("refresh_token", refreshToken),
            ]);
            var body = await form.ReadAsByteArrayAsync(ct).ConfigureAwait(false);
            Interlocked.Increment(ref tokenExchanges);
            using var doc = await SendAsync(new SpotRequest(HttpMethod.Post, "/oauth/token", body, "application/x-www-form-urlencoded", Authenticated: false, Auth: true), ct).ConfigureAwait(false);
            var fresh = ParseTokenResponse(doc.RootElement, clock.GetUtcNow(), options.TokenRefreshMargin);
            Volatile.Write(ref token, fresh);
            log.LogDebug("Spot id_token obtained, valid until {Expiry:O}", fresh.ExpiresAt);
            return fresh;
        }
        finally { tokenGate.Release(); }
    }

    private static BearerToken ParseTokenResponse(JsonElement root, DateTimeOffset now, TimeSpan margin)
    {
        // The bearer is the id_token: the opaque access_token is refused by the API gateway (§1.1).
        if (SpotApiClient.Str(root, "id_token") is not { } idToken || idToken.Split('.').Length != 3)
            throw new SpotApiException("malformed", 200, "POST /oauth/token: the answer has no id_token in JWT form");
        var claims = DecodeJwtPayload(idToken);
        DateTimeOffset? expiry = null;
        if (root.TryGetProperty("expires_in", out var ei) && ei.ValueKind == JsonValueKind.Number && ei.TryGetInt64(out var secs) && secs > 0)
            expiry = now.AddSeconds(secs);
        if (claims?.Exp is { } exp) expiry = expiry is { } e && e < exp ? e : exp;
        var expiresAt = expiry ?? now.AddHours(1);   // neither said: assume an hour, a 401 will correct us
        var lifetime = expiresAt - now;
        var early = lifetime / 2 < margin ? lifetime / 2 : margin;
        return new BearerToken(idToken, expiresAt - early, expiresAt, claims?.OrgId);
    }

    internal sealed record JwtClaims(DateTimeOffset? Exp, string? OrgId);

    /// <summary>Reads `exp` and `org_id` from a JWT payload. No signature check: the server checks it, we only plan.</summary>
    internal static JwtClaims? DecodeJwtPayload(string jwt)
    {
        var parts = jwt.Split('.');
        if (parts.Length != 3) return null;
        try
        {
            var b64 = parts[1].Replace('-', '+').Replace('_', '/');
            b64 = b64.PadRight(b64.Length + (4 - b64.Length % 4) % 4, '=');
            using var doc = JsonDocument.Parse(Convert.FromBase64String(b64));
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return null;
            DateTimeOffset? exp = root.TryGetProperty("exp", out var e) && e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out var s)
                ? DateTimeOffset.FromUnixTimeSeconds(s) : null;
            return new JwtClaims(exp, SpotApiClient.Str(root, "org_id"));
        }
        catch (Exception e) when (e is FormatException or JsonException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }

    public void Dispose()
    {
        http.Dispose();
        tokenGate.Dispose();
    }
}
