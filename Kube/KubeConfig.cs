using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using k8s;
using k8s.Authentication;
using k8s.KubeConfigModels;

namespace Karpetrack;

/// <summary>A kubeconfig or in-cluster setting that cannot be used. The message is one line naming
/// the file and the field, so an operator can fix it without reading code.</summary>
public sealed class KubeConfigException : Exception
{
    internal const string InCluster = "in-cluster";

    internal KubeConfigException(string source, string field, string detail, Exception? inner = null)
        : base(Format(source, field, detail), inner)
    {
        Source = source;
        Field = field;
    }

    /// <summary>The kubeconfig file path, "in-cluster", or empty when nothing was found.</summary>
    // Exception.Source (the throwing assembly) is useless to callers; the file is what they need.
    public new string Source { get; }

    public string Field { get; }

    private static string Format(string source, string field, string detail)
    {
        var prefix = source switch
        {
            "" => "",
            InCluster => "in-cluster config: ",
            _ => $"kubeconfig {source}: ",
        };
        return OneLine(field.Length == 0 ? prefix + detail : $"{prefix}{field}: {detail}");
    }

    internal static string OneLine(string text) =>
        string.Join(' ', text.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}

/// <summary>Where configuration comes from. A value so tests can fake the process environment.</summary>
public sealed record KubeEnvironment(
    Func<string, string?> GetVariable,
    string HomeDirectory,
    string ServiceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount")
{
    public static KubeEnvironment Process { get; } = new(
        Environment.GetEnvironmentVariable,
        Environment.GetFolderPath(Environment.SpecialFolder.UserProfile));
}

/// <summary>How the user authenticates: a static token, a client certificate (PEM), or a provider
/// of ours that the library calls before each request (token files, exec plugins).</summary>
internal sealed record UserAuth(string? Token, byte[]? CertificatePem, byte[]? KeyPem, ITokenProvider? Provider, ExecPlugin? Exec)
{
    public static UserAuth None { get; } = new(null, null, null, null, null);
}

/// <summary>
/// A resolved way to reach one API server. KubernetesClient.Aot parses the kubeconfig (its typed
/// model, <see cref="KubeconfigFiles"/>) and does the HTTP, TLS handshakes, client certificates,
/// bearer tokens and typed writes (<see cref="CreateClient"/>). Kept here is only what it lacks or
/// gets wrong: the search order with an error at its end (BuildDefaultConfig reads the process
/// environment, fails on a missing KUBECONFIG entry and falls back to http://localhost:8080), errors
/// that name the file and field, the server-name check (<see cref="ServerTrust"/>), re-read token
/// files, exec plugins (<see cref="ExecPlugin"/>) and an in-cluster config tests can point elsewhere.
/// </summary>
public sealed class KubeConnection
{
    private static readonly TimeSpan DefaultExecTimeout = TimeSpan.FromSeconds(30);

    private readonly ServerTrust trust;
    private readonly Uri? proxy;
    private readonly UserAuth auth;

    private KubeConnection(Uri server, string? ns, string source, string contextName, ServerTrust trust, Uri? proxy, UserAuth auth)
    {
        Server = server;
        Namespace = ns;
        Source = source;
        ContextName = contextName;
        this.trust = trust;
        this.proxy = proxy;
        this.auth = auth;
    }

    public Uri Server { get; }
    public string? Namespace { get; }
    public string Source { get; }
    public string ContextName { get; }

    public static KubeConnection Resolve(string? kubeconfigPath, string? context, KubeEnvironment env) =>
        Resolve(kubeconfigPath, context, env, TimeProvider.System, DefaultExecTimeout);

    internal static KubeConnection Resolve(string? kubeconfigPath, string? context, KubeEnvironment env,
        TimeProvider clock, TimeSpan execTimeout)
    {
        ArgumentNullException.ThrowIfNull(env);
        var tried = new List<string> { "--kubeconfig (not given)" };
        if (!string.IsNullOrEmpty(kubeconfigPath))
        {
            var full = Path.GetFullPath(kubeconfigPath);
            // An explicit flag is a promise; falling back to another cluster would be a surprise.
            if (!File.Exists(full))
                throw new KubeConfigException(full, "--kubeconfig", "file does not exist");
            return FromKubeconfig([full], context, env, clock, execTimeout);
        }

        var list = env.GetVariable("KUBECONFIG");
        if (!string.IsNullOrWhiteSpace(list))
        {
            // client-go skips missing entries and, with KUBECONFIG set, never looks at ~/.kube/config.
            var files = list.Split(':', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(Path.GetFullPath).Distinct(StringComparer.Ordinal).Where(File.Exists).ToList();
            if (files.Count > 0)
                return FromKubeconfig(files, context, env, clock, execTimeout);
            tried.Add($"KUBECONFIG={list} (none of its files exists)");
        }
        else
        {
            var home = Path.Combine(env.HomeDirectory, ".kube", "config");
            if (File.Exists(home))
                return FromKubeconfig([home], context, env, clock, execTimeout);
            tried.Add("KUBECONFIG (not set)");
            tried.Add($"{home} (does not exist)");
        }

        var host = env.GetVariable("KUBERNETES_SERVICE_HOST");
        var port = env.GetVariable("KUBERNETES_SERVICE_PORT");
        if (!string.IsNullOrEmpty(host) && !string.IsNullOrEmpty(port))
        {
            if (!string.IsNullOrEmpty(context))
                throw new KubeConfigException(KubeConfigException.InCluster, "--context",
                    $"context \"{context}\" was asked for but no kubeconfig file was found, and in-cluster config has no contexts");
            return InCluster(host, port, env, clock);
        }
        tried.Add("in-cluster (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT not both set)");
        throw new KubeConfigException("", "", "no Kubernetes configuration found; tried " + string.Join(", ", tried));
    }

    /// <summary>
    /// The library's client for this connection: its HttpClient, handshakes and credentials, plus our
    /// connection settings. Each client has its own connection pool, so callers make one and share it.
    /// </summary>
    public Kubernetes CreateClient(TimeSpan requestTimeout, params DelegatingHandler[] handlers)
    {
        var config = new KubernetesClientConfiguration
        {
            Host = Server.AbsoluteUri,
            Namespace = Namespace,
            SkipTlsVerify = trust.Insecure,
            // Not TlsServerName: the library sends it as the Host header of its own requests only (not of
            // the raw list/watch reads), and checks no name against it; ServerTrust checks the name.
            AccessToken = auth.Token,
            TokenProvider = auth.Provider,
            ClientCertificateData = auth.CertificatePem is { } cert ? Convert.ToBase64String(cert) : null,
            ClientCertificateKeyData = auth.KeyPem is { } key ? Convert.ToBase64String(key) : null,
            UserAgent = $"karpetrack/{BuildInfo.Version}",
            HttpClientTimeout = requestTimeout,
            FirstMessageHandlerSetup = Configure,
        };
        try
        {
            return new Kubernetes(config, auth.Exec is { } exec ? [new ExecUnauthorizedHandler(exec), .. handlers] : handlers);
        }
        catch (Exception e) when (e is k8s.Exceptions.KubeConfigException or CryptographicException or FormatException or UriFormatException)
        {
            // Resolve has checked what the library checks here (URL, certificate and key), so this is a
            // library change showing; still one line naming the source rather than a stack trace.
            throw new KubeConfigException(Source, "", $"the Kubernetes client refused this configuration: {e.Message}", e);
        }
    }

    /// <summary>Runs before the library adds its own TLS settings, which it only does for
    /// insecure-skip-tls-verify, its CA list (we never give it one) and a kubeconfig client certificate.</summary>
    private void Configure(SocketsHttpHandler sockets)
    {
        sockets.ConnectTimeout = TimeSpan.FromSeconds(10);
        sockets.PooledConnectionIdleTimeout = TimeSpan.FromSeconds(90);
        // Bounded so connections made with a rotated exec client certificate eventually go away.
        sockets.PooledConnectionLifetime = TimeSpan.FromMinutes(10);
        // Watches can be silent for minutes; pings find dead HTTP/2 connections (client-go pings after 30 s,
        // the library after 3 min).
        sockets.KeepAlivePingDelay = TimeSpan.FromSeconds(30);
        sockets.KeepAlivePingTimeout = TimeSpan.FromSeconds(15);
        sockets.AutomaticDecompression = DecompressionMethods.GZip;
        // A watch backlog then costs one receive per 64 KB rather than per HTTP chunk (BENCHMARKS.md).
        sockets.ConnectCallback = ReadAheadStream.ConnectAsync;
        if (proxy is not null)
        {
            sockets.Proxy = new WebProxy(proxy);
            sockets.UseProxy = true;
        }
        if (Server.Scheme != Uri.UriSchemeHttps || trust.Insecure)
            return;
        // The library's own check trusts any certificate its CA list signed, whatever name it carries.
        sockets.SslOptions.RemoteCertificateValidationCallback = trust.CreateCallback(Server.DnsSafeHost);
        if (auth.Exec is { } exec)
        {
            // The plugin's certificate can rotate; null (a token-only plugin) means "send none".
            sockets.SslOptions.LocalCertificateSelectionCallback = (_, _, _, _, _) => exec.CurrentCertificate!;
        }
    }

    private static KubeConnection FromKubeconfig(IReadOnlyList<string> files, string? contextOverride,
        KubeEnvironment env, TimeProvider clock, TimeSpan execTimeout)
    {
        var config = KubeconfigFiles.Load(files);
        var allFiles = string.Join(":", files);

        string contextName;
        string contextSource;
        string contextField;
        if (!string.IsNullOrEmpty(contextOverride))
            (contextName, contextSource, contextField) = (contextOverride, allFiles, "--context");
        else if (config.CurrentContext is { } current)
            (contextName, contextSource, contextField) = (current.Value, current.File, "current-context");
        else
            throw new KubeConfigException(allFiles, "current-context", "not set, and no --context was given");

        // Ordinal, as client-go (the library matches names ignoring case).
        if (!config.Contexts.TryGetValue(contextName, out var context))
            throw new KubeConfigException(contextSource, contextField, $"context \"{contextName}\" not found");

        var clusterName = context.Body.Cluster is { Length: > 0 } c ? c
            : throw new KubeConfigException(context.File, context.Field + ".cluster", "missing");
        if (!config.Clusters.TryGetValue(clusterName, out var cluster))
            throw new KubeConfigException(context.File, context.Field + ".cluster", $"cluster \"{clusterName}\" not found");

        Named<UserCredentials>? user = null;
        var userName = context.Body.User is { Length: > 0 } u ? u : null;
        if (userName is not null && !config.Users.TryGetValue(userName, out user))
            throw new KubeConfigException(context.File, context.Field + ".user", $"user \"{userName}\" not found");

        var ns = context.Body.Namespace is { Length: > 0 } n ? n : null;
        var clusterInfo = KubeconfigFields.Cluster(cluster);
        var auth = user is null ? UserAuth.None : KubeconfigFields.User(user, env, clock, execTimeout, clusterInfo);
        return new KubeConnection(clusterInfo.Server, ns, allFiles, contextName, clusterInfo.Trust, clusterInfo.Proxy, auth);
    }

    internal static byte[] ReadReferencedFile(string source, string field, string path)
    {
        try
        {
            return File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KubeConfigException(source, field, $"cannot read {path}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Ours rather than the library's InClusterConfig: that one reads the process environment and a
    /// fixed directory (no test can point it elsewhere), and its token file reader throws while the
    /// kubelet rotates the token instead of keeping the last good one.
    /// </summary>
    private static KubeConnection InCluster(string host, string port, KubeEnvironment env, TimeProvider clock)
    {
        const string source = KubeConfigException.InCluster;
        var hostPart = host.Contains(':', StringComparison.Ordinal) && !host.StartsWith('[') ? $"[{host}]" : host;
        if (!Uri.TryCreate($"https://{hostPart}:{port}", UriKind.Absolute, out var server))
            throw new KubeConfigException(source, "KUBERNETES_SERVICE_HOST",
                $"\"{host}\" with port \"{port}\" does not make a valid URL");

        var dir = env.ServiceAccountDirectory;
        var tokenPath = Path.Combine(dir, "token");
        var bearer = FileToken.Open(source, tokenPath, tokenPath, clock);
        var caPath = Path.Combine(dir, "ca.crt");
        var roots = Pem.Certificates(source, caPath, ReadReferencedFile(source, caPath, caPath));

        var ns = env.GetVariable("POD_NAMESPACE");
        if (string.IsNullOrWhiteSpace(ns))
        {
            var nsPath = Path.Combine(dir, "namespace");
            ns = File.Exists(nsPath) ? Encoding.UTF8.GetString(ReadReferencedFile(source, nsPath, nsPath)).Trim() : null;
        }

        return new KubeConnection(server, string.IsNullOrEmpty(ns) ? null : ns, source, source,
            new ServerTrust(roots, Insecure: false, ServerName: null), proxy: null, UserAuth.None with { Provider = bearer });
    }
}

/// <summary>
/// How the server certificate is judged. Ours because the library's check, whenever its CA list is
/// needed (a private cluster CA, always), builds the chain and never compares the name, and it knows
/// tls-server-name only as a Host header.
/// </summary>
internal sealed record ServerTrust(X509Certificate2Collection? Roots, bool Insecure, string? ServerName)
{
    private const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";

    public RemoteCertificateValidationCallback? CreateCallback(string urlHost)
    {
        if (Insecure)
            return static (_, _, _, _) => true;
        if (Roots is null && ServerName is null)
            return null; // the platform's own check against the system store is exactly right
        var roots = Roots;
        var expectedName = ServerName ?? urlHost;
        return (_, certificate, presented, errors) =>
        {
            if (certificate is not X509Certificate2 leaf)
                return false;
            if (roots is null)
            {
                // System store, but the name to check is tls-server-name rather than the URL host.
                return (errors & ~SslPolicyErrors.RemoteCertificateNameMismatch) == SslPolicyErrors.None
                    && leaf.MatchesHostname(expectedName, allowWildcards: true, allowCommonName: false);
            }
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.AddRange(roots);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            chain.ChainPolicy.ApplicationPolicy.Add(new Oid(ServerAuthOid));
            if (presented is not null)
            {
                foreach (var element in presented.ChainElements)
                    chain.ChainPolicy.ExtraStore.Add(element.Certificate);
            }
            // Go (and so kubectl) ignores the subject CN, so we do too.
            return chain.Build(leaf) && leaf.MatchesHostname(expectedName, allowWildcards: true, allowCommonName: false);
        };
    }
}

internal sealed record ClusterInfo(Uri Server, ServerTrust Trust, byte[]? CaPem, Uri? Proxy);

/// <summary>PEM checks at start-up, so a broken certificate is a configuration error naming its field
/// rather than a CryptographicException from the library's first handshake.</summary>
internal static class Pem
{
    public static X509Certificate2Collection Certificates(string source, string field, byte[] pem)
    {
        var certificates = new X509Certificate2Collection();
        try
        {
            certificates.ImportFromPem(Encoding.UTF8.GetString(pem));
        }
        catch (CryptographicException e)
        {
            throw new KubeConfigException(source, field, $"not a valid PEM certificate: {e.Message}", e);
        }
        if (certificates.Count == 0)
            throw new KubeConfigException(source, field, "holds no PEM certificate");
        return certificates;
    }

    public static void CheckClientCertificate(string source, string certField, byte[] certPem, string keyField, byte[] keyPem)
    {
        foreach (var certificate in Certificates(source, certField, certPem))
            certificate.Dispose();
        try
        {
            using var withKey = X509Certificate2.CreateFromPem(Encoding.UTF8.GetString(certPem), Encoding.UTF8.GetString(keyPem));
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            throw new KubeConfigException(source, keyField, $"not a PEM private key matching the client certificate: {e.Message}", e);
        }
    }
}

/// <summary>
/// A token file that rotates under us (projected service-account tokens, tokenFile). Re-read at most
/// once per interval, as client-go does, keeping the last good value when a read fails. Ours: the
/// library's TokenFileAuth throws on a failed read and cannot take a test clock, and its kubeconfig
/// model has no tokenFile at all.
/// </summary>
internal sealed class FileToken : ITokenProvider
{
    internal static readonly TimeSpan RereadInterval = TimeSpan.FromMinutes(1);

    private readonly string _path;
    private readonly TimeProvider _clock;
    private readonly Lock _lock = new();
    private string _token;
    private DateTimeOffset _readAt;

    private FileToken(string path, TimeProvider clock, string token)
    {
        _path = path;
        _clock = clock;
        _token = token;
        _readAt = clock.GetUtcNow();
    }

    /// <summary>Reads the file once now so that a missing file is a configuration error at start-up.</summary>
    public static FileToken Open(string source, string field, string path, TimeProvider clock)
    {
        var token = Encoding.UTF8.GetString(KubeConnection.ReadReferencedFile(source, field, path)).Trim();
        if (token.Length == 0)
            throw new KubeConfigException(source, field, $"{path} is empty");
        return new FileToken(path, clock, token);
    }

    public Task<AuthenticationHeaderValue> GetAuthenticationHeaderAsync(CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            var now = _clock.GetUtcNow();
            if (now - _readAt >= RereadInterval)
            {
                _readAt = now;
                try
                {
                    var fresh = File.ReadAllText(_path).Trim();
                    if (fresh.Length > 0)
                        _token = fresh;
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // Keep the last good token; the kubelet may be mid-rotation.
                }
            }
            return Task.FromResult(new AuthenticationHeaderValue("Bearer", _token));
        }
    }
}

/// <summary>Tells the exec plugin about a 401 on a request made with its credential, so the next
/// request runs it again (client-go's rule). The library's token providers never hear of a 401.</summary>
internal sealed class ExecUnauthorizedHandler(ExecPlugin exec) : DelegatingHandler
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var used = request.Headers.Authorization?.Parameter;
        var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.Unauthorized)
            exec.OnUnauthorized(used);
        return response;
    }
}
