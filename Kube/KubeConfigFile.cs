using System.Text;
using System.Text.RegularExpressions;
using k8s;
using k8s.KubeConfigModels;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Karpetrack;

/// <summary>One named cluster, context or user: the library's model of its body, the file it came
/// from, its path in that file, and its plain YAML (for the keys the library's model drops).</summary>
internal sealed record Named<T>(string Name, T Body, string File, string Field, YamlMappingNode Raw);

internal sealed record CurrentContext(string Value, string File);

/// <summary>
/// Kubeconfig files read by the library into its typed model and merged the client-go way: the first
/// file to name an entry (or to set current-context) wins. Each file is also read as a plain YAML tree,
/// so a syntax error gets its line and column, a value the library cannot read gets the path of its
/// field, and the keys the Aot model has no place for (tokenFile, exec interactiveMode, proxy-url) are
/// still there. The library's own merge is internal and resolves relative paths against the first file.
/// </summary>
internal sealed class KubeconfigFiles
{
    public CurrentContext? CurrentContext { get; private set; }
    public Dictionary<string, Named<ClusterEndpoint>> Clusters { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, Named<ContextDetails>> Contexts { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, Named<UserCredentials>> Users { get; } = new(StringComparer.Ordinal);

    public static KubeconfigFiles Load(IReadOnlyList<string> files)
    {
        var merged = new KubeconfigFiles();
        foreach (var file in files)
        {
            var text = Encoding.UTF8.GetString(KubeConnection.ReadReferencedFile(file, "(file)", file));
            var root = RawYaml.Load(file, text);
            if (root is null)
                continue; // an empty file is an empty config, as in client-go
            var model = Parse(file, text, root);
            if (model.CurrentContext is { Length: > 0 } current && merged.CurrentContext is null)
                merged.CurrentContext = new CurrentContext(current, file);
            Add(merged.Clusters, file, root, "clusters", "cluster", model.Clusters, c => (c.Name, c.ClusterEndpoint));
            Add(merged.Contexts, file, root, "contexts", "context", model.Contexts, c => (c.Name, c.ContextDetails));
            Add(merged.Users, file, root, "users", "user", model.Users, u => (u.Name, u.UserCredentials));
        }
        return merged;
    }

    private static K8SConfiguration Parse(string file, string text, YamlMappingNode root)
    {
        try
        {
            using var stream = new MemoryStream(Encoding.UTF8.GetBytes(text));
            return KubernetesClientConfiguration.LoadKubeConfig(stream) ?? new K8SConfiguration();
        }
        catch (YamlException e)
        {
            var field = RawYaml.PathAt(root, e.Start) ?? $"line {e.Start.Line}, column {e.Start.Column}";
            throw new KubeConfigException(file, field, RawYaml.Describe(e), e);
        }
    }

    private static void Add<TItem, TBody>(Dictionary<string, Named<TBody>> into, string file, YamlMappingNode root,
        string listKey, string bodyKey, List<TItem>? items, Func<TItem, (string? Name, TBody? Body)> parts)
        where TItem : class
        where TBody : class
    {
        if (items is null)
            return;
        var rawList = RawYaml.Child(root, listKey) as YamlSequenceNode;
        for (var i = 0; i < items.Count; i++)
        {
            var field = $"{listKey}[{i}]";
            var (name, body) = items[i] is { } item ? parts(item) : (null, null);
            if (string.IsNullOrEmpty(name))
                throw new KubeConfigException(file, field + ".name", "missing");
            if (body is null)
                throw new KubeConfigException(file, $"{field}.{bodyKey}", "missing");
            var raw = rawList?.Children[i] is YamlMappingNode rawItem ? RawYaml.Child(rawItem, bodyKey) as YamlMappingNode : null;
            into.TryAdd(name, new Named<TBody>(name, body, file, $"{field}.{bodyKey}", raw ?? []));
        }
    }
}

/// <summary>The checks client-go makes on a cluster and a user, turned into what the library's
/// configuration takes, each failure naming its file and field.</summary>
internal static class KubeconfigFields
{
    public static ClusterInfo Cluster(Named<ClusterEndpoint> cluster)
    {
        var (file, f, body) = (cluster.File, cluster.Field, cluster.Body);
        var dir = Path.GetDirectoryName(file)!;

        var serverText = body.Server is { Length: > 0 } s ? s : throw new KubeConfigException(file, f + ".server", "missing");
        if (!Uri.TryCreate(serverText, UriKind.Absolute, out var server)
            || (server.Scheme != Uri.UriSchemeHttps && server.Scheme != Uri.UriSchemeHttp)
            || server.Host.Length == 0)
            throw new KubeConfigException(file, f + ".server", $"\"{serverText}\" is not an absolute http or https URL");

        var caPem = DataOrFile(cluster, dir, "certificate-authority-data", body.CertificateAuthorityData,
            "certificate-authority", body.CertificateAuthority, out var caField);
        var roots = caPem is null ? null : Pem.Certificates(file, caField!, caPem);
        if (body.SkipTlsVerify && roots is not null)
            throw new KubeConfigException(file, f + ".insecure-skip-tls-verify",
                "cannot be combined with a certificate authority (client-go refuses this too)");

        Uri? proxy = null;
        if (RawYaml.String(cluster, "proxy-url") is { } proxyText)
        {
            if (!Uri.TryCreate(proxyText, UriKind.Absolute, out proxy) || proxy.Scheme is not ("http" or "https" or "socks5"))
                throw new KubeConfigException(file, f + ".proxy-url", $"\"{proxyText}\" is not an http, https or socks5 URL");
        }

        var trust = new ServerTrust(roots, body.SkipTlsVerify, body.TlsServerName is { Length: > 0 } name ? name : null);
        return new ClusterInfo(server, trust, caPem, proxy);
    }

    public static UserAuth User(Named<UserCredentials> user, KubeEnvironment env, TimeProvider clock, TimeSpan execTimeout, ClusterInfo cluster)
    {
        var (file, f, body) = (user.File, user.Field, user.Body);
        var dir = Path.GetDirectoryName(file)!;

        // The library would send these; the API server has not accepted them since Kubernetes 1.19.
        if (body.UserName is not null || body.Password is not null)
            throw new KubeConfigException(file, f + ".username",
                "basic authentication is not supported; use a token, a client certificate or an exec plugin");
        if (body.AuthProvider is not null)
            throw new KubeConfigException(file, f + ".auth-provider", "auth-provider plugins are not supported; use an exec plugin");

        FileToken? tokenFile = null;
        string? token = null;
        // tokenFile beats token: client-go prefers the file's last good value, and we always have one.
        if (RawYaml.String(user, "tokenFile") is { } tokenPath)
            tokenFile = FileToken.Open(file, f + ".tokenFile", Path.Combine(dir, tokenPath), clock);
        else if (body.Token is { Length: > 0 } t)
            token = t;

        var certPem = DataOrFile(user, dir, "client-certificate-data", body.ClientCertificateData, "client-certificate", body.ClientCertificate, out var certField);
        var keyPem = DataOrFile(user, dir, "client-key-data", body.ClientKeyData, "client-key", body.ClientKey, out var keyField);
        if (certPem is not null && keyPem is null)
            throw new KubeConfigException(file, f + ".client-key", "missing, but a client certificate is set");
        if (keyPem is not null && certPem is null)
            throw new KubeConfigException(file, f + ".client-certificate", "missing, but a client key is set");
        if (certPem is not null && keyPem is not null)
            Pem.CheckClientCertificate(file, certField!, certPem, keyField!, keyPem);

        // client-go runs the plugin only when nothing else authenticates the user.
        if (tokenFile is null && token is null && certPem is null && body.ExternalExecution is { } execConfig)
        {
            var exec = ExecPlugin.FromConfig(user, execConfig, dir, env, clock, execTimeout, cluster);
            return new UserAuth(null, null, null, exec, exec);
        }
        return new UserAuth(token, certPem, keyPem, tokenFile, null);
    }

    /// <summary>A -data field (base64) beats its path twin, which is relative to its own file.</summary>
    private static byte[]? DataOrFile<T>(Named<T> entry, string dir, string dataKey, string? data, string pathKey, string? path, out string? usedField)
    {
        if (!string.IsNullOrEmpty(data))
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
        if (!string.IsNullOrEmpty(path))
        {
            usedField = $"{entry.Field}.{pathKey}";
            return KubeConnection.ReadReferencedFile(entry.File, usedField, Path.Combine(dir, path));
        }
        usedField = null;
        return null;
    }
}

/// <summary>The plain YAML tree of a kubeconfig, for what the library's typed model cannot tell.</summary>
internal static partial class RawYaml
{
    public static YamlMappingNode? Load(string file, string text)
    {
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

    public static YamlNode? Child(YamlMappingNode map, string key) =>
        map.Children.TryGetValue(new YamlScalarNode(key), out var node) && !IsNull(node) ? node : null;

    public static string? String<T>(Named<T> entry, string key) =>
        Child(entry.Raw, key) switch
        {
            null => null,
            YamlScalarNode { Value: { } value } => value,
            _ => throw new KubeConfigException(entry.File, $"{entry.Field}.{key}", "expected a string"),
        };

    /// <summary>The dotted path (clusters[0].cluster.server) of the deepest node at <paramref name="at"/>.</summary>
    public static string? PathAt(YamlNode root, Mark at)
    {
        var path = "";
        var node = root;
        while (true)
        {
            var next = node switch
            {
                YamlMappingNode map => map.Children.Where(c => Holds(c.Value, at))
                    .Select(c => ((YamlNode?)c.Value, Join(path, (c.Key as YamlScalarNode)?.Value ?? "?"))).FirstOrDefault(),
                YamlSequenceNode list => list.Children.Select((c, i) => (c, i)).Where(x => Holds(x.c, at))
                    .Select(x => ((YamlNode?)x.c, $"{path}[{x.i}]")).FirstOrDefault(),
                _ => default,
            };
            if (next.Item1 is null)
                return path.Length == 0 ? null : path;
            (node, path) = (next.Item1, next.Item2);
        }
    }

    /// <summary>What the library's deserializer could not read, without its position (the field says where).</summary>
    public static string Describe(YamlException e)
    {
        if (e.InnerException is FormatException or InvalidCastException or OverflowException)
            return e.InnerException.Message;
        var message = AtPosition().Replace(e.Message, "");
        return message.StartsWith("Expected 'SequenceStart'", StringComparison.Ordinal) ? "expected a list"
            : message.StartsWith("Expected 'MappingStart'", StringComparison.Ordinal) ? "expected a mapping"
            : message;
    }

    private static bool Holds(YamlNode node, Mark at) => node.Start.Index <= at.Index && at.Index <= EndOf(node);

    // A mapping's or list's own End is where it starts; it really ends where its last child does.
    private static long EndOf(YamlNode node) => node switch
    {
        YamlMappingNode { Children.Count: > 0 } map => map.Children.Max(c => EndOf(c.Value)),
        YamlSequenceNode { Children.Count: > 0 } list => list.Children.Max(EndOf),
        _ => node.End.Index,
    };

    private static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: ScalarStyle.Plain or ScalarStyle.Any, Value: null or "" or "~" or "null" or "Null" or "NULL" };

    private static string Join(string parent, string key) => parent.Length == 0 ? key : $"{parent}.{key}";

    [GeneratedRegex(@"^\(Line: \d+, Col: \d+, Idx: \d+\) - \(Line: \d+, Col: \d+, Idx: \d+\): ")]
    private static partial Regex PositionPrefix();

    [GeneratedRegex(@"\s*\(at Line: \d+, Col: \d+, Idx: \d+\)\.?$")]
    private static partial Regex AtPosition();
}
