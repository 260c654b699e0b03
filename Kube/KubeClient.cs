using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using k8s;
using k8s.Autorest;
using k8s.Models;

namespace Karpetrack;

/// <summary>An error answer from the Kubernetes API, with its Status when the body carried one.</summary>
public sealed class KubeApiException(int statusCode, string? reason, string message, TimeSpan? retryAfter)
    : Exception(message)
{
    public int StatusCode { get; } = statusCode;
    public string? Reason { get; } = reason;
    public TimeSpan? RetryAfter { get; } = retryAfter;

    /// <summary>410: the resourceVersion or continue token is too old (reason Expired or Gone).</summary>
    public bool IsExpired => StatusCode == 410 || Reason is "Expired" or "Gone";

    /// <summary>One message for an error answer: the request, the code and the Status's reason and message.</summary>
    internal static KubeApiException Create(int code, string? reasonPhrase, ReadOnlySpan<byte> body, TimeSpan? retryAfter, HttpMethod? method, Uri? uri)
    {
        var status = KubeStatus.TryParse(body);
        if (retryAfter is null && status?.RetryAfterSeconds is { } secs) retryAfter = TimeSpan.FromSeconds(secs);
        var message = status?.Message ?? (body.Length > 0 ? Encoding.UTF8.GetString(body[..Math.Min(body.Length, 200)]) : reasonPhrase ?? "");
        return new KubeApiException(code, status?.Reason, $"{method} {uri?.PathAndQuery}: {code} {status?.Reason} {message}".Trim(), retryAfter);
    }

    /// <summary>The library's error for a typed call, which has already read the body into a string.</summary>
    internal static KubeApiException From(HttpOperationException e)
    {
        var response = e.Response;
        TimeSpan? retryAfter = null;
        if (response?.Headers is { } headers && headers.TryGetValue("Retry-After", out var values) && values.FirstOrDefault() is { } value)
        {
            if (int.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var seconds))
                retryAfter = TimeSpan.FromSeconds(seconds);
            else if (DateTimeOffset.TryParse(value, System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AssumeUniversal, out var at))
                retryAfter = at - DateTimeOffset.UtcNow;
        }
        return Create(response is null ? 0 : (int)response.StatusCode, response?.ReasonPhrase, Encoding.UTF8.GetBytes(response?.Content ?? ""),
            retryAfter, e.Request?.Method, e.Request?.RequestUri);
    }
}

/// <summary>
/// The Kubernetes API through KubernetesClient.Aot: its typed calls for every write and single read,
/// and, for the list/watch hot path, raw GETs on the library's own HttpClient with its credentials (one
/// TLS and auth stack for both), whose bodies our streaming decoders read: much faster than the
/// library's typed deserializer (BENCHMARKS.md), and never holding a LIST body in memory.
/// </summary>
public sealed class KubeClient : IDisposable
{
    private static readonly MediaTypeWithQualityHeaderValue Json = new("application/json");

    private long lastEventNanos;

    /// <param name="handlers">Extra handlers around every request (a test's rig stamps requests with them); none in the product.</param>
    public KubeClient(KubeConnection connection, TimeSpan? requestTimeout = null, params DelegatingHandler[] handlers)
    {
        // Watches are long; the library bounds each typed call by this, and we bound each LIST page.
        RequestTimeout = requestTimeout ?? TimeSpan.FromSeconds(60);
        Api = connection.CreateClient(RequestTimeout, handlers);
        Server = connection.Server;
    }

    /// <summary>The library's client: typed operations on the same connections and credentials.</summary>
    public Kubernetes Api { get; }

    public Uri Server { get; }

    /// <summary>Bound on a LIST page or a single request (not on a watch).</summary>
    public TimeSpan RequestTimeout { get; }

    /// <summary>Sends a GET and returns the response once its headers are in; throws <see cref="KubeApiException"/> on errors.</summary>
    public async Task<HttpResponseMessage> GetAsync(string pathAndQuery, CancellationToken ct)
    {
        // Relative to the server URL, so a server behind a path prefix (a proxy) works.
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(Api.BaseUri, pathAndQuery.TrimStart('/')));
        request.Headers.Accept.Add(Json);
        if (Api.Credentials is { } credentials)
            await credentials.ProcessHttpRequestAsync(request, ct).ConfigureAwait(false);
        var response = await Api.HttpClient.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
        if (response.IsSuccessStatusCode) return response;
        using (response) throw await ToException(response, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Gets the credential once (runs the exec plugin, reads the token file), so that one that cannot
    /// be had is a configuration error at start-up (<see cref="KubeConfigException"/>) rather than a
    /// reflector failing later. The credential is cached as any request's would be.
    /// </summary>
    public async Task CheckCredentialsAsync(CancellationToken ct)
    {
        using var probe = new HttpRequestMessage(HttpMethod.Get, Api.BaseUri);
        if (Api.Credentials is { } credentials)
            await credentials.ProcessHttpRequestAsync(probe, ct).ConfigureAwait(false);
    }

    /// <summary>An RFC 7386 merge patch of a node (cordon, labels, annotations).</summary>
    public Task<V1Node> PatchNodeAsync(string name, JsonObject mergePatch, CancellationToken ct) =>
        CallAsync($"PATCH node {name}", t => Api.CoreV1.PatchNodeAsync(
            new V1Patch(mergePatch.ToJsonString(), V1Patch.PatchType.MergePatch), name, cancellationToken: t), ct);

    /// <summary>The nodes a label selector matches, read now (one LIST, not the reflector's filtered cache).</summary>
    public async Task<IReadOnlyList<V1Node>> ListNodesAsync(string labelSelector, CancellationToken ct) =>
        (await CallAsync($"LIST nodes {labelSelector}", t => Api.CoreV1.ListNodeAsync(labelSelector: labelSelector, cancellationToken: t), ct).ConfigureAwait(false)).Items?.ToList() ?? [];

    /// <summary>One pod; null when it does not exist.</summary>
    public Task<V1Pod?> ReadPodAsync(string ns, string name, CancellationToken ct) =>
        OrNullAsync(CallAsync($"GET pod {ns}/{name}", t => Api.CoreV1.ReadNamespacedPodAsync(name, ns, cancellationToken: t), ct));

    /// <summary>
    /// Asks the eviction subresource to remove a pod, which honours its PodDisruptionBudgets. With
    /// <paramref name="uid"/>, only that pod: a new pod that took its name is left alone (409). The
    /// answers a drain has to tell apart come back as values; only transport failures and the request
    /// timeout throw.
    /// </summary>
    public async Task<EvictionOutcome> EvictPodAsync(string ns, string name, string? uid, long? gracePeriodSeconds, CancellationToken ct)
    {
        var eviction = new V1Eviction
        {
            ApiVersion = "policy/v1",
            Kind = "Eviction",
            Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = ns },
            DeleteOptions = new V1DeleteOptions
            {
                GracePeriodSeconds = gracePeriodSeconds,
                Preconditions = uid is null ? null : new V1Preconditions { Uid = uid },
            },
        };
        try
        {
            await CallAsync($"evict pod {ns}/{name}", t => Api.CoreV1.CreateNamespacedPodEvictionAsync(eviction, name, ns, cancellationToken: t), ct)
                .ConfigureAwait(false);
            return new EvictionOutcome(EvictionResult.Evicted, $"evicted {ns}/{name}", null);
        }
        catch (KubeApiException e)
        {
            return e.StatusCode switch
            {
                // 409: the UID precondition failed, so the pod we meant is gone and another has its name.
                404 or 409 => new EvictionOutcome(EvictionResult.Gone, e.Message, null),
                429 => new EvictionOutcome(EvictionResult.Blocked, e.Message, e.RetryAfter),
                _ => new EvictionOutcome(EvictionResult.Failed, e.Message, e.RetryAfter),
            };
        }
    }

    /// <summary>Records a core/v1 Event, as client-go's event recorder writes one the first time.</summary>
    public Task CreateEventAsync(KubeEventRecord e, CancellationToken ct)
    {
        var now = DateTimeOffset.UtcNow;
        // Like the recorder's "%v.%x" of the UnixNano time, kept strictly increasing so that two
        // events in one tick never collide.
        long nanos = (now.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) * 100, last;
        do
        {
            last = Interlocked.Read(ref lastEventNanos);
            if (nanos <= last) nanos = last + 1;
        }
        while (Interlocked.CompareExchange(ref lastEventNanos, nanos, last) != last);

        // metav1.Time has whole seconds.
        var stamp = new DateTime(now.UtcTicks - now.UtcTicks % TimeSpan.TicksPerSecond, DateTimeKind.Utc);
        var ev = new Corev1Event
        {
            ApiVersion = "v1",
            Kind = "Event",
            Metadata = new V1ObjectMeta { Name = $"{e.InvolvedName}.{nanos:x16}", NamespaceProperty = e.Namespace },
            InvolvedObject = new V1ObjectReference
            {
                Kind = e.InvolvedKind, Name = e.InvolvedName, NamespaceProperty = e.InvolvedNamespace, ApiVersion = e.InvolvedApiVersion,
            },
            Reason = e.Reason,
            Message = e.Message,
            Type = e.Type,
            Count = 1,
            FirstTimestamp = stamp,
            LastTimestamp = stamp,
            Source = new V1EventSource { Component = e.Component },
            ReportingComponent = e.Component,
            ReportingInstance = "",
        };
        return CallAsync($"POST event {e.Namespace}/{e.InvolvedName}", t => Api.CoreV1.CreateNamespacedEventAsync(ev, e.Namespace, cancellationToken: t), ct);
    }

    /// <summary>A Lease; null when it does not exist.</summary>
    public Task<V1Lease?> ReadLeaseAsync(string ns, string name, CancellationToken ct) =>
        OrNullAsync(CallAsync($"GET lease {ns}/{name}", t => Api.CoordinationV1.ReadNamespacedLeaseAsync(name, ns, cancellationToken: t), ct));

    /// <summary>Creates a Lease; 409 AlreadyExists when another replica was first.</summary>
    public Task<V1Lease> CreateLeaseAsync(V1Lease lease, CancellationToken ct) =>
        CallAsync($"POST lease {lease.Metadata.NamespaceProperty}/{lease.Metadata.Name}",
            t => Api.CoordinationV1.CreateNamespacedLeaseAsync(lease, lease.Metadata.NamespaceProperty, cancellationToken: t), ct);

    /// <summary>PUT; the server refuses with 409 when metadata.resourceVersion is not the current one.</summary>
    public Task<V1Lease> ReplaceLeaseAsync(V1Lease lease, CancellationToken ct) =>
        CallAsync($"PUT lease {lease.Metadata.NamespaceProperty}/{lease.Metadata.Name}",
            t => Api.CoordinationV1.ReplaceNamespacedLeaseAsync(lease, lease.Metadata.Name, lease.Metadata.NamespaceProperty, cancellationToken: t), ct);

    /// <summary>The library's errors as ours; its per-call timeout (HttpClientTimeout) as a TimeoutException.</summary>
    private async Task<T> CallAsync<T>(string what, Func<CancellationToken, Task<T>> call, CancellationToken ct)
    {
        try
        {
            return await call(ct).ConfigureAwait(false);
        }
        catch (HttpOperationException e)
        {
            throw KubeApiException.From(e);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"{what}: no answer within {RequestTimeout.TotalSeconds:0.###}s");
        }
    }

    private static async Task<T?> OrNullAsync<T>(Task<T> read) where T : class
    {
        try
        {
            return await read.ConfigureAwait(false);
        }
        catch (KubeApiException e) when (e.StatusCode == 404)
        {
            return null;
        }
    }

    public static async Task<KubeApiException> ToException(HttpResponseMessage response, CancellationToken ct)
    {
        byte[] body;
        try
        {
            // Error bodies are small Status objects; read at most 64 KiB of whatever came.
            await using var s = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
            var buf = new byte[64 * 1024];
            int n = 0, read;
            while (n < buf.Length && (read = await s.ReadAsync(buf.AsMemory(n), ct).ConfigureAwait(false)) > 0) n += read;
            body = buf[..n];
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
            body = [];
        }
        TimeSpan? retryAfter = null;
        if (response.Headers.RetryAfter?.Delta is { } delta) retryAfter = delta;
        else if (response.Headers.RetryAfter?.Date is { } date) retryAfter = date - DateTimeOffset.UtcNow;
        var request = response.RequestMessage;
        return KubeApiException.Create((int)response.StatusCode, response.ReasonPhrase, body, retryAfter, request?.Method, request?.RequestUri);
    }

    public void Dispose() => Api.Dispose();
}

/// <summary>How an eviction request ended. Gone = the pod no longer exists; Blocked = a disruption budget said no (429).</summary>
public enum EvictionResult { Evicted, Gone, Blocked, Failed }

public sealed record EvictionOutcome(EvictionResult Result, string Message, TimeSpan? RetryAfter);

/// <summary>A core/v1 Event to record about an object. Type is Normal or Warning.</summary>
public sealed record KubeEventRecord(string Namespace, string InvolvedKind, string InvolvedName, string? InvolvedNamespace,
    string Reason, string Message, string Type, string Component = "karpetrack", string InvolvedApiVersion = "v1");
