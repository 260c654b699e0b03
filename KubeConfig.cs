using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

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

/// <summary>A resolved way to reach one API server: its address, default namespace, TLS trust and
/// credentials. Hands out HTTP handlers that apply all of them.</summary>
public sealed class KubeConnection : IDisposable
{
    private static readonly TimeSpan DefaultExecTimeout = TimeSpan.FromSeconds(30);

    private readonly ServerTrust _trust;
    private readonly Uri? _proxy;
    private readonly BearerSource? _bearer;
    private readonly X509Certificate2? _clientCertificate;
    private readonly SslStreamCertificateContext? _clientCertificateContext;
    private readonly ExecPlugin? _exec;

    private KubeConnection(Uri server, string? ns, string source, string contextName, ServerTrust trust, Uri? proxy,
        BearerSource? bearer, ClientCertificate? clientCertificate, ExecPlugin? exec)
    {
        Server = server;
        Namespace = ns;
        Source = source;
        ContextName = contextName;
        _trust = trust;
        _proxy = proxy;
        _bearer = bearer ?? exec;
        _exec = exec;
        if (clientCertificate is not null)
        {
            _clientCertificate = clientCertificate.Leaf;
            // A context (rather than ClientCertificates) sends the intermediates from the PEM too, and
            // skips SslStream's issuer-based filtering that can silently drop the certificate.
            _clientCertificateContext = SslStreamCertificateContext.Create(
                clientCertificate.Leaf, clientCertificate.Intermediates, offline: true);
        }
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

    /// <summary>Connections are pooled per handler, so callers should make one handler and share
    /// the HttpClient built on it. Ask for HTTP/2 per request (RequestVersionOrLower) to multiplex watches.</summary>
    public HttpMessageHandler CreateHandler()
    {
        var sockets = new SocketsHttpHandler
        {
            ConnectTimeout = TimeSpan.FromSeconds(10),
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(90),
            // Bounded so connections made with a rotated exec client certificate eventually go away.
            PooledConnectionLifetime = TimeSpan.FromMinutes(10),
            EnableMultipleHttp2Connections = true,
            // Watches can be silent for minutes; pings find dead HTTP/2 connections (client-go does the same).
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(15),
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            AutomaticDecompression = DecompressionMethods.GZip,
            ConnectCallback = ReadAheadStream.ConnectAsync,
        };
        if (_proxy is not null)
        {
            sockets.Proxy = new WebProxy(_proxy);
            sockets.UseProxy = true;
        }
        if (Server.Scheme == Uri.UriSchemeHttps)
        {
            var exec = _exec;
            sockets.SslOptions = new SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = _trust.CreateCallback(Server.DnsSafeHost),
                ClientCertificateContext = _clientCertificateContext,
                // Null (a token-only plugin) means "send no certificate".
                LocalCertificateSelectionCallback = exec is null ? null : (_, _, _, _, _) => exec.CurrentCertificate!,
            };
        }
        return new KubeAuthHandler(_bearer) { InnerHandler = sockets };
    }

    public void Dispose() => _clientCertificate?.Dispose();

    private static KubeConnection FromKubeconfig(IReadOnlyList<string> files, string? contextOverride,
        KubeEnvironment env, TimeProvider clock, TimeSpan execTimeout)
    {
        var config = MergedKubeconfig.Load(files);
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

        if (!config.Contexts.TryGetValue(contextName, out var context))
            throw new KubeConfigException(contextSource, contextField, $"context \"{contextName}\" not found");

        var clusterName = Yaml.String(context, "cluster")
            ?? throw new KubeConfigException(context.File, context.Field + ".cluster", "missing");
        if (!config.Clusters.TryGetValue(clusterName, out var cluster))
            throw new KubeConfigException(context.File, context.Field + ".cluster", $"cluster \"{clusterName}\" not found");

        NamedEntry? user = null;
        var userName = Yaml.String(context, "user");
        if (userName is not null && !config.Users.TryGetValue(userName, out user))
            throw new KubeConfigException(context.File, context.Field + ".user", $"user \"{userName}\" not found");

        var ns = Yaml.String(context, "namespace");
        var server = ReadCluster(cluster, out var trust, out var caPem, out var proxy);

        BearerSource? bearer = null;
        ClientCertificate? clientCertificate = null;
        ExecPlugin? exec = null;
        if (user is not null)
            ReadUser(user, env, clock, execTimeout, new ClusterInfo(server, trust, caPem, proxy),
                out bearer, out clientCertificate, out exec);

        return new KubeConnection(server, ns, allFiles, contextName, trust, proxy, bearer, clientCertificate, exec);
    }

    private static Uri ReadCluster(NamedEntry cluster, out ServerTrust trust, out byte[]? caPem, out Uri? proxy)
    {
        var (file, f) = (cluster.File, cluster.Field);
        var dir = Path.GetDirectoryName(cluster.File)!;

        var serverText = Yaml.String(cluster, "server")
            ?? throw new KubeConfigException(file, f + ".server", "missing");
        if (!Uri.TryCreate(serverText, UriKind.Absolute, out var server)
            || (server.Scheme != Uri.UriSchemeHttps && server.Scheme != Uri.UriSchemeHttp)
            || server.Host.Length == 0)
            throw new KubeConfigException(file, f + ".server", $"\"{serverText}\" is not an absolute http or https URL");

        caPem = ReadDataOrFile(cluster, dir, "certificate-authority-data", "certificate-authority", out var caField);
        var roots = caPem is null ? null : Pem.Certificates(file, caField!, caPem);

        var insecure = Yaml.Bool(cluster, "insecure-skip-tls-verify");
        if (insecure && roots is not null)
            throw new KubeConfigException(file, f + ".insecure-skip-tls-verify",
                "cannot be combined with a certificate authority (client-go refuses this too)");

        proxy = null;
        if (Yaml.String(cluster, "proxy-url") is { } proxyText)
        {
            if (!Uri.TryCreate(proxyText, UriKind.Absolute, out proxy)
                || proxy.Scheme is not ("http" or "https" or "socks5"))
                throw new KubeConfigException(file, f + ".proxy-url", $"\"{proxyText}\" is not an http, https or socks5 URL");
        }

        trust = new ServerTrust(roots, insecure, Yaml.String(cluster, "tls-server-name"));
        return server;
    }

    private static void ReadUser(NamedEntry user, KubeEnvironment env, TimeProvider clock, TimeSpan execTimeout,
        ClusterInfo clusterInfo, out BearerSource? bearer, out ClientCertificate? clientCertificate, out ExecPlugin? exec)
    {
        var (file, f) = (user.File, user.Field);
        var dir = Path.GetDirectoryName(user.File)!;

        if (Yaml.String(user, "username") is not null || Yaml.String(user, "password") is not null)
            throw new KubeConfigException(file, f + ".username",
                "basic authentication is not supported; use a token, a client certificate or an exec plugin");
        if (user.Body.Children.ContainsKey(new YamlScalarNode("auth-provider")))
            throw new KubeConfigException(file, f + ".auth-provider",
                "auth-provider plugins are not supported; use an exec plugin");

        bearer = null;
        // tokenFile beats token: client-go prefers the file's last good value, and we always have one.
        if (Yaml.String(user, "tokenFile") is { } tokenFile)
            bearer = FileToken.Open(file, f + ".tokenFile", Path.Combine(dir, tokenFile), clock);
        else if (Yaml.String(user, "token") is { } token)
            bearer = new StaticToken(token);

        var certPem = ReadDataOrFile(user, dir, "client-certificate-data", "client-certificate", out var certField);
        var keyPem = ReadDataOrFile(user, dir, "client-key-data", "client-key", out var keyField);
        clientCertificate = null;
        if (certPem is not null && keyPem is null)
            throw new KubeConfigException(file, f + ".client-key", "missing, but a client certificate is set");
        if (keyPem is not null && certPem is null)
            throw new KubeConfigException(file, f + ".client-certificate", "missing, but a client key is set");
        if (certPem is not null && keyPem is not null)
            clientCertificate = Pem.ClientCertificate(file, certField!, certPem, keyField!, keyPem);

        exec = null;
        // client-go runs the plugin only when nothing else authenticates the user.
        if (bearer is null && clientCertificate is null && Yaml.Map(user, "exec") is { } execNode)
            exec = ExecPlugin.FromConfig(user, execNode, dir, env, clock, execTimeout, clusterInfo);
    }

    private static byte[]? ReadDataOrFile(NamedEntry entry, string dir, string dataKey, string pathKey, out string? usedField)
    {
        if (Yaml.String(entry, dataKey) is { } data)
        {
            usedField = $"{entry.Field}.{dataKey}";
            try
            {
                return Convert.FromBase64String(data);
            }
            catch (FormatException)
            {
                throw new KubeConfigException(entry.File, usedField, "not valid base64");
            }
        }
        if (Yaml.String(entry, pathKey) is { } path)
        {
            usedField = $"{entry.Field}.{pathKey}";
            return ReadReferencedFile(entry.File, usedField, Path.Combine(dir, path));
        }
        usedField = null;
        return null;
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
            new ServerTrust(roots, Insecure: false, ServerName: null), proxy: null, bearer, clientCertificate: null, exec: null);
    }
}

/// <summary>How the server certificate is judged.</summary>
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

internal sealed record ClientCertificate(X509Certificate2 Leaf, X509Certificate2Collection Intermediates);

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

    public static ClientCertificate ClientCertificate(string source, string certField, byte[] certPem, string keyField, byte[] keyPem)
    {
        var chain = Certificates(source, certField, certPem);
        X509Certificate2 withKey;
        try
        {
            withKey = X509Certificate2.CreateFromPem(Encoding.UTF8.GetString(certPem), Encoding.UTF8.GetString(keyPem));
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            throw new KubeConfigException(source, keyField, $"not a PEM private key matching the client certificate: {e.Message}", e);
        }
        var intermediates = new X509Certificate2Collection();
        for (var i = 1; i < chain.Count; i++)
            intermediates.Add(chain[i]);
        chain[0].Dispose();
        return new ClientCertificate(withKey, intermediates);
    }
}

/// <summary>Where the bearer token for each request comes from.</summary>
internal abstract class BearerSource
{
    public abstract ValueTask<string?> GetTokenAsync(CancellationToken cancellationToken);

    /// <summary>The server said 401 to a request made with <paramref name="usedToken"/>.</summary>
    public virtual void OnUnauthorized(string? usedToken)
    {
    }
}

internal sealed class StaticToken(string token) : BearerSource
{
    public override ValueTask<string?> GetTokenAsync(CancellationToken cancellationToken) => ValueTask.FromResult<string?>(token);
}

/// <summary>A token file that rotates under us (projected service-account tokens, tokenFile). Re-read at
/// most once per interval, as client-go does, keeping the last good value when a read fails.</summary>
internal sealed class FileToken : BearerSource
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

    public override ValueTask<string?> GetTokenAsync(CancellationToken cancellationToken)
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
            return ValueTask.FromResult<string?>(_token);
        }
    }
}

/// <summary>A client.authentication.k8s.io exec credential plugin, run on demand and cached until
/// its credential expires or the server rejects it.</summary>
internal sealed class ExecPlugin : BearerSource
{
    private const string V1 = "client.authentication.k8s.io/v1";
    private const string V1Beta1 = "client.authentication.k8s.io/v1beta1";
    private const int StderrLimit = 1000;

    private readonly string _source;
    private readonly string _field;
    private readonly string _apiVersion;
    private readonly string _command;
    private readonly IReadOnlyList<string> _args;
    private readonly IReadOnlyList<KeyValuePair<string, string>> _env;
    private readonly string _execInfo;
    private readonly string? _installHint;
    private readonly TimeProvider _clock;
    private readonly TimeSpan _timeout;
    // One plugin process at a time per user: plugins often do interactive-ish work (SSO, cloud CLIs).
    private readonly SemaphoreSlim _gate = new(1, 1);
    private Credential? _current;

    private sealed record Credential(string? Token, X509Certificate2? Certificate, DateTimeOffset? Expiry);

    private ExecPlugin(string source, string field, string apiVersion, string command, IReadOnlyList<string> args,
        IReadOnlyList<KeyValuePair<string, string>> env, string execInfo, string? installHint, TimeProvider clock, TimeSpan timeout)
    {
        _source = source;
        _field = field;
        _apiVersion = apiVersion;
        _command = command;
        _args = args;
        _env = env;
        _execInfo = execInfo;
        _installHint = installHint;
        _clock = clock;
        _timeout = timeout;
    }

    public X509Certificate2? CurrentCertificate => Volatile.Read(ref _current)?.Certificate;

    public static ExecPlugin FromConfig(NamedEntry user, YamlMappingNode exec, string dir, KubeEnvironment env,
        TimeProvider clock, TimeSpan timeout, ClusterInfo cluster)
    {
        var file = user.File;
        var f = user.Field + ".exec";
        var node = new NamedEntry(user.Name, file, f, exec);

        var apiVersion = Yaml.String(node, "apiVersion") ?? throw new KubeConfigException(file, f + ".apiVersion", "missing");
        if (apiVersion is not (V1 or V1Beta1))
            throw new KubeConfigException(file, f + ".apiVersion", $"\"{apiVersion}\" is not supported; use {V1} or {V1Beta1}");

        var args = new List<string>();
        if (Yaml.Sequence(node, "args") is { } argNodes)
        {
            for (var i = 0; i < argNodes.Children.Count; i++)
                args.Add(argNodes.Children[i] is YamlScalarNode { Value: { } a } ? a
                    : throw new KubeConfigException(file, $"{f}.args[{i}]", "expected a string"));
        }

        var vars = new List<KeyValuePair<string, string>>();
        if (Yaml.Sequence(node, "env") is { } envNodes)
        {
            for (var i = 0; i < envNodes.Children.Count; i++)
            {
                if (envNodes.Children[i] is not YamlMappingNode pair)
                    throw new KubeConfigException(file, $"{f}.env[{i}]", "expected a {name, value} mapping");
                var entry = new NamedEntry("", file, $"{f}.env[{i}]", pair);
                var name = Yaml.String(entry, "name") ?? throw new KubeConfigException(file, $"{f}.env[{i}].name", "missing");
                vars.Add(new(name, Yaml.String(entry, "value") ?? ""));
            }
        }

        var mode = Yaml.String(node, "interactiveMode");
        if (mode is null && apiVersion == V1)
            throw new KubeConfigException(file, f + ".interactiveMode", $"required for {V1} (Never, IfAvailable or Always)");
        switch (mode ?? "IfAvailable")
        {
            case "Never":
            case "IfAvailable": // a service has no terminal, so "if available" means never
                break;
            case "Always":
                throw new KubeConfigException(file, f + ".interactiveMode",
                    "Always needs a terminal, and karpetrack never has one; use Never or IfAvailable");
            default:
                throw new KubeConfigException(file, f + ".interactiveMode", $"\"{mode}\" is not Never, IfAvailable or Always");
        }

        var installHint = Yaml.String(node, "installHint");
        var hint = installHint is null ? "" : $"; install hint: {installHint}";
        var commandText = Yaml.String(node, "command") ?? throw new KubeConfigException(file, f + ".command", "missing");
        string command;
        if (commandText.Contains('/', StringComparison.Ordinal))
        {
            command = Path.GetFullPath(Path.Combine(dir, commandText));
            if (!File.Exists(command))
                throw new KubeConfigException(file, f + ".command", $"{command} does not exist{hint}");
        }
        else
        {
            command = FindOnPath(commandText, env.GetVariable("PATH"))
                ?? throw new KubeConfigException(file, f + ".command", $"\"{commandText}\" not found in PATH{hint}");
        }

        var execInfo = ExecInfo(apiVersion, Yaml.Bool(node, "provideClusterInfo") ? cluster : null);
        return new ExecPlugin(file, f, apiVersion, command, args, vars, execInfo, installHint, clock, timeout);
    }

    private static string? FindOnPath(string name, string? path)
    {
        foreach (var dir in (path ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
                return candidate;
        }
        return null;
    }

    private static string ExecInfo(string apiVersion, ClusterInfo? cluster)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("apiVersion", apiVersion);
            json.WriteString("kind", "ExecCredential");
            json.WriteStartObject("spec");
            if (cluster is not null)
            {
                json.WriteStartObject("cluster");
                json.WriteString("server", cluster.Server.OriginalString);
                if (cluster.Trust.ServerName is { } name)
                    json.WriteString("tls-server-name", name);
                if (cluster.Trust.Insecure)
                    json.WriteBoolean("insecure-skip-tls-verify", true);
                if (cluster.CaPem is { } ca)
                    json.WriteBase64String("certificate-authority-data", ca);
                if (cluster.Proxy is { } proxy)
                    json.WriteString("proxy-url", proxy.OriginalString);
                json.WriteEndObject();
            }
            json.WriteBoolean("interactive", false);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    public override async ValueTask<string?> GetTokenAsync(CancellationToken cancellationToken)
    {
        var current = Volatile.Read(ref _current);
        if (IsFresh(current))
            return current.Token;
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // Another request may have refreshed while we waited.
            current = _current;
            if (!IsFresh(current))
            {
                current = await RunAsync(cancellationToken).ConfigureAwait(false);
                Volatile.Write(ref _current, current);
            }
            return current.Token;
        }
        finally
        {
            _gate.Release();
        }
    }

    public override void OnUnauthorized(string? usedToken)
    {
        // Only forget the credential that was rejected: a burst of 401s must cause one re-run, not many.
        var current = Volatile.Read(ref _current);
        if (current is not null && current.Token == usedToken)
            Interlocked.CompareExchange(ref _current, null, current);
    }

    private bool IsFresh([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] Credential? credential) =>
        credential is not null && (credential.Expiry is not { } expiry || _clock.GetUtcNow() < expiry);

    private async Task<Credential> RunAsync(CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(_command)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in _args)
            start.ArgumentList.Add(arg);
        foreach (var (name, value) in _env)
            start.Environment[name] = value;
        start.Environment["KUBERNETES_EXEC_INFO"] = _execInfo;

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException("no process was started");
        }
        catch (Exception e) when (e is Win32Exception or InvalidOperationException)
        {
            throw Failure($"exec plugin {_command} could not be started: {e.Message}", stderr: "", hint: true);
        }

        using (process)
        {
            process.StandardInput.Close(); // never interactive
            var stdoutTask = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
            var stderrTask = process.StandardError.ReadToEndAsync(CancellationToken.None);
            using var timeout = new CancellationTokenSource(_timeout);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, cancellationToken);
            try
            {
                await process.WaitForExitAsync(linked.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                try
                {
                    process.Kill(entireProcessTree: true);
                }
                catch (InvalidOperationException)
                {
                    // It exited on its own in the meantime.
                }
                cancellationToken.ThrowIfCancellationRequested();
                throw Failure($"exec plugin {_command} timed out after {_timeout.TotalSeconds:0.#} s", await Drain(stderrTask).ConfigureAwait(false), hint: true);
            }
            var stdout = await stdoutTask.ConfigureAwait(false);
            var stderr = await stderrTask.ConfigureAwait(false);
            if (process.ExitCode != 0)
                throw Failure($"exec plugin {_command} failed with exit code {process.ExitCode}", stderr, hint: true);
            return Parse(stdout, stderr);
        }
    }

    private static async Task<string> Drain(Task<string> stderr)
    {
        try
        {
            return await stderr.WaitAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return "";
        }
    }

    private Credential Parse(string stdout, string stderr)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(stdout);
        }
        catch (JsonException e)
        {
            throw Failure($"exec plugin {_command} wrote invalid JSON to stdout: {e.Message}", stderr, hint: true);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw Failure($"exec plugin {_command} wrote JSON that is not an ExecCredential object", stderr);
            var apiVersion = root.TryGetProperty("apiVersion", out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : "";
            if (apiVersion != _apiVersion)
                throw Failure($"exec plugin is configured to use API version {_apiVersion}, plugin returned version {apiVersion}", stderr);
            if (!root.TryGetProperty("status", out var status) || status.ValueKind != JsonValueKind.Object)
                throw Failure("exec plugin didn't return a status field", stderr);

            var token = StringOf(status, "token");
            var certPem = StringOf(status, "clientCertificateData");
            var keyPem = StringOf(status, "clientKeyData");
            if (token is null && certPem is null && keyPem is null)
                throw Failure("exec plugin didn't return a token or cert/key pair", stderr);
            if ((certPem is null) != (keyPem is null))
                throw Failure("exec plugin returned only certificate or key, not both", stderr);

            DateTimeOffset? expiry = null;
            if (StringOf(status, "expirationTimestamp") is { } expiryText)
            {
                if (!DateTimeOffset.TryParse(expiryText, CultureInfo.InvariantCulture,
                        DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var parsed))
                    throw Failure($"exec plugin returned an invalid status.expirationTimestamp \"{expiryText}\"", stderr);
                expiry = parsed;
            }

            X509Certificate2? certificate = null;
            if (certPem is not null && keyPem is not null)
            {
                try
                {
                    certificate = X509Certificate2.CreateFromPem(certPem, keyPem);
                }
                catch (Exception e) when (e is CryptographicException or ArgumentException)
                {
                    throw Failure($"exec plugin returned an unusable client certificate or key: {e.Message}", stderr);
                }
            }
            return new Credential(token, certificate, expiry);
        }
    }

    private static string? StringOf(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String && value.GetString() is { Length: > 0 } s
            ? s : null;

    /// <summary>The install hint is only offered when the plugin itself failed, where reinstalling may help.</summary>
    private KubeConfigException Failure(string what, string stderr, bool hint = false)
    {
        var text = new StringBuilder(what);
        stderr = KubeConfigException.OneLine(stderr);
        if (stderr.Length > 0)
            text.Append("; stderr: ").Append(stderr.Length > StderrLimit ? stderr[..StderrLimit] + "…" : stderr);
        if (hint && _installHint is not null)
            text.Append("; install hint: ").Append(_installHint);
        return new KubeConfigException(_source, _field, text.ToString());
    }
}

/// <summary>Adds the bearer token to each request; a 401 makes the source forget that credential so
/// that the next request fetches a new one. The failed request itself is returned as is.</summary>
internal sealed class KubeAuthHandler(BearerSource? bearer) : DelegatingHandler
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (bearer is null || request.Headers.Authorization is not null)
            return await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        var token = await bearer.GetTokenAsync(cancellationToken).ConfigureAwait(false);
        if (token is not null)
            request.Headers.Authorization = new("Bearer", token);
        var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.Unauthorized)
            bearer.OnUnauthorized(token);
        return response;
    }

    // The synchronous path would skip the credential refresh; nothing here needs it.
    protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken) =>
        throw new NotSupportedException("Kubernetes requests must use SendAsync");
}

/// <summary>One named cluster, context or user: which file it came from and its path in that file.</summary>
internal sealed record NamedEntry(string Name, string File, string Field, YamlMappingNode Body);

internal sealed record CurrentContext(string Value, string File);

/// <summary>Several kubeconfig files merged the client-go way: the first file to name an entry
/// (or to set current-context) wins.</summary>
internal sealed class MergedKubeconfig
{
    public CurrentContext? CurrentContext { get; private set; }
    public Dictionary<string, NamedEntry> Clusters { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, NamedEntry> Contexts { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, NamedEntry> Users { get; } = new(StringComparer.Ordinal);

    public static MergedKubeconfig Load(IReadOnlyList<string> files)
    {
        var merged = new MergedKubeconfig();
        foreach (var file in files)
        {
            var root = Yaml.LoadFile(file);
            if (root is null)
                continue; // an empty file is an empty config, as in client-go
            var top = new NamedEntry("", file, "", root);
            if (Yaml.String(top, "current-context") is { } current && merged.CurrentContext is null)
                merged.CurrentContext = new CurrentContext(current, file);
            merged.AddEntries(top, "clusters", "cluster", merged.Clusters);
            merged.AddEntries(top, "contexts", "context", merged.Contexts);
            merged.AddEntries(top, "users", "user", merged.Users);
        }
        return merged;
    }

    private void AddEntries(NamedEntry top, string listKey, string bodyKey, Dictionary<string, NamedEntry> into)
    {
        if (Yaml.Sequence(top, listKey) is not { } list)
            return;
        for (var i = 0; i < list.Children.Count; i++)
        {
            var field = $"{listKey}[{i}]";
            if (list.Children[i] is not YamlMappingNode item)
                throw new KubeConfigException(top.File, field, "expected a mapping with name and " + bodyKey);
            var itemEntry = new NamedEntry("", top.File, field, item);
            var name = Yaml.String(itemEntry, "name") ?? throw new KubeConfigException(top.File, field + ".name", "missing");
            var body = Yaml.Map(itemEntry, bodyKey) ?? throw new KubeConfigException(top.File, $"{field}.{bodyKey}", "missing");
            into.TryAdd(name, new NamedEntry(name, top.File, $"{field}.{bodyKey}", body));
        }
    }
}

/// <summary>Typed reads from the YAML tree that fail with the field's path.</summary>
internal static partial class Yaml
{
    public static YamlMappingNode? LoadFile(string file)
    {
        string text;
        try
        {
            text = File.ReadAllText(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KubeConfigException(file, "(file)", $"cannot read: {e.Message}", e);
        }
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            var detail = PositionPrefix().Replace(e.InnerException is YamlException inner ? inner.Message : e.Message, "");
            throw new KubeConfigException(file, $"line {e.Start.Line}, column {e.Start.Column}", $"invalid YAML: {detail}", e);
        }
        catch (ArgumentException e) // a repeated key in one mapping
        {
            throw new KubeConfigException(file, "(yaml)", $"invalid YAML: {e.Message}", e);
        }
        if (stream.Documents.Count == 0 || IsNull(stream.Documents[0].RootNode))
            return null;
        return stream.Documents[0].RootNode as YamlMappingNode
            ?? throw new KubeConfigException(file, "(root)", "expected a mapping (apiVersion, kind, clusters, contexts, users)");
    }

    public static string? String(NamedEntry entry, string key)
    {
        var node = Get(entry, key);
        if (node is null || IsNull(node))
            return null;
        return node is YamlScalarNode { Value: { } value }
            ? value
            : throw new KubeConfigException(entry.File, Join(entry.Field, key), "expected a string");
    }

    public static bool Bool(NamedEntry entry, string key) =>
        String(entry, key)?.ToLowerInvariant() switch
        {
            null or "false" or "no" or "off" => false,
            "true" or "yes" or "on" => true,
            var other => throw new KubeConfigException(entry.File, Join(entry.Field, key), $"\"{other}\" is not true or false"),
        };

    public static YamlMappingNode? Map(NamedEntry entry, string key)
    {
        var node = Get(entry, key);
        if (node is null || IsNull(node))
            return null;
        return node as YamlMappingNode ?? throw new KubeConfigException(entry.File, Join(entry.Field, key), "expected a mapping");
    }

    public static YamlSequenceNode? Sequence(NamedEntry entry, string key)
    {
        var node = Get(entry, key);
        if (node is null || IsNull(node))
            return null;
        return node as YamlSequenceNode ?? throw new KubeConfigException(entry.File, Join(entry.Field, key), "expected a list");
    }

    private static YamlNode? Get(NamedEntry entry, string key) =>
        entry.Body.Children.TryGetValue(new YamlScalarNode(key), out var node) ? node : null;

    private static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: ScalarStyle.Plain or ScalarStyle.Any, Value: null or "" or "~" or "null" or "Null" or "NULL" };

    private static string Join(string parent, string key) => parent.Length == 0 ? key : $"{parent}.{key}";

    [GeneratedRegex(@"^\(Line: \d+, Col: \d+, Idx: \d+\) - \(Line: \d+, Col: \d+, Idx: \d+\): ")]
    private static partial Regex PositionPrefix();
}
