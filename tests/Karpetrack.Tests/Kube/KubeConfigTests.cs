using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Karpetrack;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Karpetrack.Tests.Kube;

/// <summary>Certificates made once per test run: a CA, server leaves it signs, a client certificate,
/// and an unrelated CA to prove that trust is exact.</summary>
public sealed class TestPki
{
    public static TestPki Instance { get; } = new();

    private TestPki()
    {
        var start = DateTimeOffset.UtcNow.AddDays(-1);
        var end = DateTimeOffset.UtcNow.AddDays(7);
        Ca = MakeCa("CN=karpetrack test CA", start, end);
        OtherCa = MakeCa("CN=some other CA", start, end);
        IpServer = MakeLeaf("CN=apiserver", Ca, start, end, server: true, ["127.0.0.1"], ["localhost"]);
        NameServer = MakeLeaf("CN=kube.test", Ca, start, end, server: true, [], ["kube.test"]);
        Client = MakeLeaf("CN=alice, O=system:masters", Ca, start, end, server: false, [], []);
    }

    public X509Certificate2 Ca { get; }
    public X509Certificate2 OtherCa { get; }
    public X509Certificate2 IpServer { get; }
    public X509Certificate2 NameServer { get; }
    public X509Certificate2 Client { get; }

    public static string CertPem(X509Certificate2 c) => c.ExportCertificatePem();
    public static string KeyPem(X509Certificate2 c) => c.GetECDsaPrivateKey()!.ExportPkcs8PrivateKeyPem();
    public static string B64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    private static X509Certificate2 MakeCa(string subject, DateTimeOffset start, DateTimeOffset end)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        return request.CreateSelfSigned(start, end);
    }

    private static X509Certificate2 MakeLeaf(string subject, X509Certificate2 issuer, DateTimeOffset start, DateTimeOffset end,
        bool server, string[] ips, string[] names)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid(server ? "1.3.6.1.5.5.7.3.1" : "1.3.6.1.5.5.7.3.2")], false));
        if (ips.Length + names.Length > 0)
        {
            var san = new SubjectAlternativeNameBuilder();
            foreach (var ip in ips)
                san.AddIpAddress(IPAddress.Parse(ip));
            foreach (var name in names)
                san.AddDnsName(name);
            request.CertificateExtensions.Add(san.Build());
        }
        using var cert = request.Create(issuer, start, end, RandomNumberGenerator.GetBytes(8));
        return cert.CopyWithPrivateKey(key);
    }
}

/// <summary>Two loopback HTTPS servers (one certificate for 127.0.0.1, one only for kube.test) that
/// echo the Authorization header, the client certificate subject and the protocol. Tokens listed in
/// <see cref="Rejected"/> get a 401.</summary>
public sealed class EchoServers : IAsyncLifetime
{
    private readonly List<WebApplication> _apps = [];

    public Uri IpServer { get; private set; } = null!;
    public Uri NameServer { get; private set; } = null!;
    public ConcurrentDictionary<string, bool> Rejected { get; } = new();

    public async Task InitializeAsync()
    {
        IpServer = await Start(TestPki.Instance.IpServer);
        NameServer = await Start(TestPki.Instance.NameServer);
    }

    public async Task DisposeAsync()
    {
        foreach (var app in _apps)
            await app.DisposeAsync();
    }

    private async Task<Uri> Start(X509Certificate2 certificate)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrelHttpsConfiguration();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, listen => listen.UseHttps(new HttpsConnectionAdapterOptions
        {
            ServerCertificate = certificate,
            ClientCertificateMode = ClientCertificateMode.AllowCertificate,
            ClientCertificateValidation = (_, _, _) => true,
            // Like kube-apiserver, name the client CA in the CertificateRequest: clients that pick a
            // certificate by acceptable issuer must still find ours.
            OnAuthenticate = (_, ssl) => ssl.ServerCertificateContext = SslStreamCertificateContext.Create(certificate, null, offline: true,
                SslCertificateTrust.CreateForX509Collection(new X509Certificate2Collection(TestPki.Instance.Ca), sendTrustInHandshake: true)),
        })));
        var app = builder.Build();
        app.MapGet("/echo", (HttpContext context) =>
        {
            var auth = context.Request.Headers.Authorization.ToString();
            if (auth.StartsWith("Bearer ", StringComparison.Ordinal) && Rejected.ContainsKey(auth["Bearer ".Length..]))
                return Results.StatusCode(401);
            return Results.Text($"auth={auth};subject={context.Connection.ClientCertificate?.Subject};proto={context.Request.Protocol}");
        });
        await app.StartAsync();
        _apps.Add(app);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        return new Uri(new Uri(address).GetLeftPart(UriPartial.Authority).Replace("[::]", "127.0.0.1", StringComparison.Ordinal));
    }
}

public sealed class KubeConfigTests(EchoServers servers) : IClassFixture<EchoServers>, IDisposable
{
    private static readonly TestPki Pki = TestPki.Instance;
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("karpetrack-kubeconfig-");
    private readonly Dictionary<string, string> _vars = new();
    private readonly ManualClock _clock = new();

    public void Dispose() => _dir.Delete(recursive: true);

    private string Dir => _dir.FullName;

    private KubeEnvironment Env => new(name => _vars.GetValueOrDefault(name), Path.Combine(Dir, "home"), Path.Combine(Dir, "sa"));

    private string Write(string relative, string text)
    {
        var path = Path.Combine(Dir, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    private string Script(string relative, string body)
    {
        var path = Write(relative, "#!/bin/sh\n" + body + "\n");
        if (!OperatingSystem.IsWindows()) // the plugins are shell scripts; these tests assume a Unix host
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    private static string Indent(IEnumerable<string> lines) =>
        string.Concat(lines.Select(l => "    " + l.Replace("\n", "\n    ", StringComparison.Ordinal) + "\n"));

    /// <summary>A one-cluster, one-user kubeconfig whose context is "test".</summary>
    private static string Config(Uri server, string[] cluster, string[] user, string ns = "ns1") => $"""
        apiVersion: v1
        kind: Config
        current-context: test
        clusters:
        - name: c
          cluster:
            server: {server}
        {Indent(cluster)}contexts:
        - name: test
          context: {"{"}cluster: c, user: u, namespace: {ns}{"}"}
        users:
        - name: u
          user:
        {(user.Length == 0 ? "    {}\n" : Indent(user))}
        """;

    private string[] CaData => [$"certificate-authority-data: {TestPki.B64(TestPki.CertPem(Pki.Ca))}"];

    private KubeConnection Resolve(string? path = null, string? context = null) =>
        KubeConnection.Resolve(path, context, Env, _clock, TimeSpan.FromSeconds(10));

    /// <summary>The product's client over the connection: the library's HttpClient, handshakes and
    /// credentials, as the reflectors read through it.</summary>
    private static KubeClient Client(KubeConnection connection) => new(connection, TimeSpan.FromSeconds(10));

    private static async Task<string> Get(KubeConnection connection, string path = "/echo")
    {
        using var client = Client(connection);
        return await Get(client, path);
    }

    private static async Task<string> Get(KubeClient client, string path = "/echo")
    {
        using var response = await client.GetAsync(path, CancellationToken.None);
        return await response.Content.ReadAsStringAsync();
    }

    private static async Task<HttpStatusCode> Status(KubeClient client)
    {
        try
        {
            using var response = await client.GetAsync("/echo", CancellationToken.None);
            return response.StatusCode;
        }
        catch (KubeApiException e)
        {
            return (HttpStatusCode)e.StatusCode;
        }
    }

    private int Runs(string counter) =>
        File.Exists(Path.Combine(Dir, counter)) ? File.ReadAllLines(Path.Combine(Dir, counter)).Length : 0;

    // ---------- resolution order ----------

    [Fact]
    public void ExplicitPath_WinsOverKubeconfigEnvAndHome()
    {
        var flag = Write("flag.yaml", Config(new Uri("https://flag.example:6443"), [], ["token: a"]));
        _vars["KUBECONFIG"] = Write("env.yaml", Config(new Uri("https://env.example"), [], ["token: a"]));
        Write("home/.kube/config", Config(new Uri("https://home.example"), [], ["token: a"]));

        var connection = Resolve(flag);

        Assert.Equal(new Uri("https://flag.example:6443"), connection.Server);
        Assert.Equal(flag, connection.Source);
        Assert.Equal("test", connection.ContextName);
        Assert.Equal("ns1", connection.Namespace);
    }

    [Fact]
    public void ExplicitPath_ThatDoesNotExist_IsAnError_NotAFallback()
    {
        Write("home/.kube/config", Config(new Uri("https://home.example"), [], []));
        var missing = Path.Combine(Dir, "nope.yaml");

        var e = Assert.Throws<KubeConfigException>(() => Resolve(missing));

        Assert.Equal(missing, e.Source);
        Assert.Contains(missing, e.Message);
        Assert.Contains("does not exist", e.Message);
    }

    [Fact]
    public async Task KubeconfigEnv_MergesFiles_FirstWins_SkipsMissing()
    {
        var first = Write("a/first.yaml", $$"""
            current-context: ctx-a
            clusters:
            - name: shared
              cluster: {server: "{{servers.IpServer}}", certificate-authority-data: {{TestPki.B64(TestPki.CertPem(Pki.Ca))}}}
            contexts:
            - name: ctx-a
              context: {cluster: shared, user: ua}
            users:
            - name: ua
              user: {token: from-first}
            """);
        var second = Write("b/second.yaml", """
            current-context: ctx-b
            clusters:
            - name: shared
              cluster: {server: "https://second.example"}
            - name: only-second
              cluster: {server: "https://only-second.example"}
            contexts:
            - name: ctx-a
              context: {cluster: only-second, user: ua}
            - name: ctx-b
              context: {cluster: only-second, user: ua, namespace: from-b}
            users:
            - name: ua
              user: {token: from-second}
            """);
        Write("home/.kube/config", Config(new Uri("https://home.example"), [], []));
        var empty = Write("empty.yaml", "");
        _vars["KUBECONFIG"] = $"{Path.Combine(Dir, "missing.yaml")}:{empty}:{first}::{second}";

        var byDefault = Resolve();
        var other = Resolve(context: "ctx-b");

        Assert.Equal(servers.IpServer, byDefault.Server);
        Assert.Equal("ctx-a", byDefault.ContextName);
        Assert.Equal($"{empty}:{first}:{second}", byDefault.Source);
        Assert.StartsWith("auth=Bearer from-first;", await Get(byDefault));
        Assert.Equal(new Uri("https://only-second.example"), other.Server);
        Assert.Equal("from-b", other.Namespace);
    }

    [Fact]
    public void HomeConfig_IsUsed_WhenNoFlagAndNoEnv()
    {
        var home = Write("home/.kube/config", Config(new Uri("https://home.example"), [], []));
        _vars["KUBERNETES_SERVICE_HOST"] = "10.0.0.1";
        _vars["KUBERNETES_SERVICE_PORT"] = "443";

        var connection = Resolve();

        Assert.Equal(new Uri("https://home.example"), connection.Server);
        Assert.Equal(home, connection.Source);
    }

    [Fact]
    public void InCluster_IsUsed_WhenNoKubeconfig_WithIpv6HostAndNamespaceFile()
    {
        WriteServiceAccount("sa-token", "from-file");
        _vars["KUBERNETES_SERVICE_HOST"] = "fd00::1";
        _vars["KUBERNETES_SERVICE_PORT"] = "6443";

        var connection = Resolve();

        Assert.Equal(new Uri("https://[fd00::1]:6443"), connection.Server);
        Assert.Equal("in-cluster", connection.Source);
        Assert.Equal("in-cluster", connection.ContextName);
        Assert.Equal("from-file", connection.Namespace);

        _vars["POD_NAMESPACE"] = "from-env";
        var withEnv = Resolve();
        Assert.Equal("from-env", withEnv.Namespace);
    }

    [Fact]
    public async Task InCluster_SendsServiceAccountToken_TrustsItsCa_AndFollowsRotation()
    {
        var tokenPath = WriteServiceAccount("sa-token-1", "kube-system");
        _vars["KUBERNETES_SERVICE_HOST"] = "127.0.0.1";
        _vars["KUBERNETES_SERVICE_PORT"] = servers.IpServer.Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var connection = Resolve();
        using var client = Client(connection);

        Assert.StartsWith("auth=Bearer sa-token-1;", await Get(client));
        File.WriteAllText(tokenPath, "sa-token-2\n");
        _clock.Now += TimeSpan.FromSeconds(30);
        Assert.StartsWith("auth=Bearer sa-token-1;", await Get(client)); // not re-read yet
        _clock.Now += TimeSpan.FromSeconds(31);
        Assert.StartsWith("auth=Bearer sa-token-2;", await Get(client));
    }

    [Fact]
    public void InCluster_WithContextFlag_IsAnError()
    {
        WriteServiceAccount("t", "ns");
        _vars["KUBERNETES_SERVICE_HOST"] = "10.0.0.1";
        _vars["KUBERNETES_SERVICE_PORT"] = "443";

        var e = Assert.Throws<KubeConfigException>(() => Resolve(context: "prod"));

        Assert.Equal("--context", e.Field);
        Assert.Contains("\"prod\"", e.Message);
    }

    [Fact]
    public void InCluster_MissingToken_IsAnError()
    {
        Directory.CreateDirectory(Path.Combine(Dir, "sa"));
        _vars["KUBERNETES_SERVICE_HOST"] = "10.0.0.1";
        _vars["KUBERNETES_SERVICE_PORT"] = "443";

        var e = Assert.Throws<KubeConfigException>(() => Resolve());

        Assert.Equal("in-cluster", e.Source);
        Assert.Equal(Path.Combine(Dir, "sa", "token"), e.Field);
    }

    [Fact]
    public void NothingFound_SaysWhatWasTried()
    {
        var e = Assert.Throws<KubeConfigException>(() => Resolve());

        Assert.Contains("no Kubernetes configuration found", e.Message);
        Assert.Contains("--kubeconfig", e.Message);
        Assert.Contains("KUBECONFIG", e.Message);
        Assert.Contains(Path.Combine(Dir, "home", ".kube", "config"), e.Message);
        Assert.Contains("in-cluster", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void ContextOverride_PicksThatContext_AndUnknownNameIsAnError()
    {
        var path = Write("config", """
            current-context: one
            clusters:
            - {name: c1, cluster: {server: "https://one.example"}}
            - {name: c2, cluster: {server: "http://two.example:8080"}}
            contexts:
            - {name: one, context: {cluster: c1}}
            - {name: two, context: {cluster: c2, namespace: ns2}}
            """);

        var two = Resolve(path, "two");
        Assert.Equal(new Uri("http://two.example:8080"), two.Server);
        Assert.Equal("two", two.ContextName);
        Assert.Equal("ns2", two.Namespace);

        var e = Assert.Throws<KubeConfigException>(() => Resolve(path, "three"));
        Assert.Equal("--context", e.Field);
        Assert.Contains("\"three\"", e.Message);
        Assert.Contains(path, e.Message);
    }

    private string WriteServiceAccount(string token, string ns)
    {
        Write("sa/ca.crt", TestPki.CertPem(Pki.Ca));
        Write("sa/namespace", ns);
        return Write("sa/token", token);
    }

    // ---------- TLS ----------

    private static async Task AssertTlsRejected(KubeConnection connection)
    {
        var e = await Assert.ThrowsAsync<HttpRequestException>(() => Get(connection));
        Assert.IsType<System.Security.Authentication.AuthenticationException>(e.InnerException);
    }

    [Fact]
    public async Task CaData_IsTrusted_AndHttp2IsNegotiated()
    {
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData, ["token: t"])));
        using var client = Client(connection);
        // The library's own requests ask for HTTP/2 this way; the CA trust and token are the same.
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(connection.Server, "/echo"))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
        };
        await client.Api.Credentials.ProcessHttpRequestAsync(request, CancellationToken.None);

        using var response = await client.Api.HttpClient.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();

        Assert.Equal("auth=Bearer t;subject=;proto=HTTP/2", body);
    }

    [Fact]
    public async Task CaFile_RelativeToKubeconfig_IsTrusted()
    {
        Write("cfg/pki/ca.pem", TestPki.CertPem(Pki.Ca));
        var connection = Resolve(Write("cfg/config", Config(servers.IpServer, ["certificate-authority: pki/ca.pem"], [])));

        Assert.StartsWith("auth=;", await Get(connection));
    }

    [Fact]
    public async Task WrongCa_IsRejected_EvenThoughTheRightOneIsInTheFileForm()
    {
        // The -data field wins over its path twin, so the right CA in the file must not rescue this.
        Write("ca.pem", TestPki.CertPem(Pki.Ca));
        var connection = Resolve(Write("config", Config(servers.IpServer,
            [$"certificate-authority-data: {TestPki.B64(TestPki.CertPem(Pki.OtherCa))}", "certificate-authority: ca.pem"], [])));

        await AssertTlsRejected(connection);
    }

    [Fact]
    public async Task NoCa_UsesSystemStore_WhichDoesNotKnowTheTestCa()
    {
        var connection = Resolve(Write("config", Config(servers.IpServer, [], [])));

        await AssertTlsRejected(connection);
    }

    [Fact]
    public async Task InsecureSkipTlsVerify_AcceptsAnyCertificate()
    {
        var connection = Resolve(Write("config", Config(servers.NameServer, ["insecure-skip-tls-verify: true"], ["token: x"])));

        Assert.StartsWith("auth=Bearer x;", await Get(connection));
    }

    [Fact]
    public async Task TlsServerName_IsTheNameChecked()
    {
        // The server's certificate names only kube.test, and we connect to 127.0.0.1.
        var without = Resolve(Write("a", Config(servers.NameServer, CaData, [])));
        await AssertTlsRejected(without);

        var with = Resolve(Write("b", Config(servers.NameServer, [.. CaData, "tls-server-name: kube.test"], [])));
        Assert.StartsWith("auth=;", await Get(with));

        var wrongName = Resolve(Write("c", Config(servers.IpServer, [.. CaData, "tls-server-name: kube.test"], [])));
        await AssertTlsRejected(wrongName);
    }

    // ---------- users ----------

    [Fact]
    public async Task Token_IsSentAsBearer()
    {
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData, ["token: abc.def"])));

        Assert.StartsWith("auth=Bearer abc.def;", await Get(connection));
    }

    [Fact]
    public async Task TokenFile_IsReReadAfterAMinute_AndLastGoodValueSurvivesAMissingFile()
    {
        var tokenPath = Write("secrets/token", "first\n");
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData, ["tokenFile: secrets/token", "token: ignored"])));
        using var client = Client(connection);

        Assert.StartsWith("auth=Bearer first;", await Get(client));
        File.WriteAllText(tokenPath, "second");
        Assert.StartsWith("auth=Bearer first;", await Get(client));
        _clock.Now += TimeSpan.FromMinutes(1);
        Assert.StartsWith("auth=Bearer second;", await Get(client));
        File.Delete(tokenPath);
        _clock.Now += TimeSpan.FromMinutes(5);
        Assert.StartsWith("auth=Bearer second;", await Get(client));
    }

    [Fact]
    public async Task ClientCertificate_DataForm_IsPresented()
    {
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData,
        [
            $"client-certificate-data: {TestPki.B64(TestPki.CertPem(Pki.Client))}",
            $"client-key-data: {TestPki.B64(TestPki.KeyPem(Pki.Client))}",
        ])));

        Assert.Equal("auth=;subject=CN=alice, O=system:masters;proto=HTTP/1.1", await Get(connection));
    }

    [Fact]
    public async Task ClientCertificate_FileForm_IsPresented_AlongsideAToken()
    {
        Write("certs/client.crt", TestPki.CertPem(Pki.Client));
        Write("certs/client.key", TestPki.KeyPem(Pki.Client));
        Script("plugin.sh", $"echo run >> '{Dir}/count'; exit 1");
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData,
        [
            "client-certificate: certs/client.crt",
            "client-key: certs/client.key",
            "token: both",
            "exec: {apiVersion: client.authentication.k8s.io/v1, command: ./plugin.sh, interactiveMode: Never}",
        ])));

        Assert.Equal("auth=Bearer both;subject=CN=alice, O=system:masters;proto=HTTP/1.1", await Get(connection));
        Assert.Equal(0, Runs("count")); // exec is not run when a token or certificate is present
    }

    // ---------- exec plugins ----------

    private static string Credential(string apiVersion, string status) =>
        $$"""{"apiVersion":"{{apiVersion}}","kind":"ExecCredential","status":{{status}}}""";

    /// <summary>A plugin that counts its runs and returns token "{prefix}-{run number}".</summary>
    private void CountingPlugin(string prefix, string apiVersion = "client.authentication.k8s.io/v1", string extraStatus = "")
    {
        var tail = extraStatus + "}}";
        Script("plugin.sh", $$$"""
            echo run >> "$(dirname "$0")/count"
            n=$(wc -l < "$(dirname "$0")/count" | tr -d ' ')
            printf '{"apiVersion":"{{{apiVersion}}}","kind":"ExecCredential","status":{"token":"{{{prefix}}}-%s"{{{tail}}}' "$n"
            """);
    }

    private static string[] ExecUser(string apiVersion = "client.authentication.k8s.io/v1", string command = "./plugin.sh", params string[] more) =>
        ["exec:", $"  apiVersion: {apiVersion}", $"  command: {command}", .. more.Select(m => "  " + m)];

    [Theory]
    [InlineData("client.authentication.k8s.io/v1", "interactiveMode: Never")]
    [InlineData("client.authentication.k8s.io/v1beta1", "interactiveMode: IfAvailable")]
    [InlineData("client.authentication.k8s.io/v1beta1", "provideClusterInfo: false")]
    public async Task Exec_TokenIsUsed_ForBothApiVersions(string apiVersion, string extra)
    {
        CountingPlugin("tok", apiVersion);
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData, ExecUser(apiVersion, more: extra))));

        Assert.StartsWith("auth=Bearer tok-1;", await Get(connection));
        Assert.StartsWith("auth=Bearer tok-1;", await Get(connection)); // no expiry: reused, also across handlers
        Assert.Equal(1, Runs("count"));
    }

    [Fact]
    public async Task Exec_ArgsEnvAndExecInfo_ArePassed_AndBareCommandIsFoundOnPath()
    {
        Directory.CreateDirectory(Path.Combine(Dir, "bin"));
        Script("bin/my-plugin", $$$"""
            printf '%s\n' "$@" > '{{{Dir}}}/args'
            printf '%s' "$GREETING" > '{{{Dir}}}/env'
            printf '%s' "$KUBERNETES_EXEC_INFO" > '{{{Dir}}}/info'
            printf '{"apiVersion":"client.authentication.k8s.io/v1","status":{"token":"t"}}'
            """);
        _vars["PATH"] = "/nonexistent:" + Path.Combine(Dir, "bin");
        var connection = Resolve(Write("config", Config(servers.IpServer, [.. CaData, "tls-server-name: 127.0.0.1"], ExecUser(command: "my-plugin", more:
        [
            "args: [get-token, --cluster, \"a b\"]",
            "env: [{name: GREETING, value: hello there}]",
            "interactiveMode: Never",
            "provideClusterInfo: true",
        ]))));

        Assert.StartsWith("auth=Bearer t;", await Get(connection));

        Assert.Equal(["get-token", "--cluster", "a b"], File.ReadAllLines(Path.Combine(Dir, "args")));
        Assert.Equal("hello there", File.ReadAllText(Path.Combine(Dir, "env")));
        using var info = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir, "info")));
        var root = info.RootElement;
        Assert.Equal("client.authentication.k8s.io/v1", root.GetProperty("apiVersion").GetString());
        Assert.Equal("ExecCredential", root.GetProperty("kind").GetString());
        Assert.False(root.GetProperty("spec").GetProperty("interactive").GetBoolean());
        var cluster = root.GetProperty("spec").GetProperty("cluster");
        Assert.Equal(servers.IpServer.ToString(), cluster.GetProperty("server").GetString());
        Assert.Equal("127.0.0.1", cluster.GetProperty("tls-server-name").GetString());
        Assert.Equal(TestPki.CertPem(Pki.Ca), Encoding.UTF8.GetString(cluster.GetProperty("certificate-authority-data").GetBytesFromBase64()));
    }

    [Fact]
    public async Task Exec_ExecInfo_HasNoClusterWithoutProvideClusterInfo()
    {
        Script("plugin.sh", $$$"""
            printf '%s' "$KUBERNETES_EXEC_INFO" > '{{{Dir}}}/info'
            printf '{"apiVersion":"client.authentication.k8s.io/v1beta1","status":{"token":"t"}}'
            """);
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData, ExecUser("client.authentication.k8s.io/v1beta1"))));

        await Get(connection);

        Assert.Equal("""{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{"interactive":false}}""",
            File.ReadAllText(Path.Combine(Dir, "info")));
    }

    [Fact]
    public async Task Exec_TokenIsCachedUntilExpirationTimestamp()
    {
        var expiry = _clock.Now.AddMinutes(10).ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);
        CountingPlugin("exp", extraStatus: $",\"expirationTimestamp\":\"{expiry}\"");
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData, ExecUser(more: "interactiveMode: Never"))));
        using var client = Client(connection);

        Assert.StartsWith("auth=Bearer exp-1;", await Get(client));
        _clock.Now += TimeSpan.FromMinutes(9);
        Assert.StartsWith("auth=Bearer exp-1;", await Get(client));
        Assert.Equal(1, Runs("count"));
        _clock.Now += TimeSpan.FromMinutes(2);
        Assert.StartsWith("auth=Bearer exp-2;", await Get(client));
        Assert.Equal(2, Runs("count"));
    }

    [Fact]
    public async Task Exec_401_ReRunsThePluginOnce_ForTheNextRequest()
    {
        CountingPlugin("rej");
        servers.Rejected["rej-1"] = true;
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData, ExecUser(more: "interactiveMode: Never"))));
        using var client = Client(connection);

        Assert.Equal(HttpStatusCode.Unauthorized, await Status(client)); // not retried
        Assert.Equal(1, Runs("count"));
        Assert.Equal(HttpStatusCode.OK, await Status(client));
        Assert.Equal(HttpStatusCode.OK, await Status(client));
        Assert.Equal(2, Runs("count"));
    }

    [Fact]
    public async Task Exec_ConcurrentRequests_RunOnePluginProcess()
    {
        Script("plugin.sh", $$$"""
            echo run >> '{{{Dir}}}/count'
            sleep 0.3
            printf '{"apiVersion":"client.authentication.k8s.io/v1","status":{"token":"slow"}}'
            """);
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData, ExecUser(more: "interactiveMode: Never"))));
        using var client = Client(connection);

        var bodies = await Task.WhenAll(Enumerable.Range(0, 5).Select(_ => Get(client)));

        Assert.All(bodies, b => Assert.StartsWith("auth=Bearer slow;", b));
        Assert.Equal(1, Runs("count"));
    }

    [Fact]
    public async Task Exec_ClientCertificate_IsPresented()
    {
        var credential = JsonSerializer.Serialize(new
        {
            apiVersion = "client.authentication.k8s.io/v1",
            kind = "ExecCredential",
            status = new { clientCertificateData = TestPki.CertPem(Pki.Client), clientKeyData = TestPki.KeyPem(Pki.Client) },
        });
        Write("cred.json", credential);
        Script("plugin.sh", $"cat '{Dir}/cred.json'");
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData, ExecUser(more: "interactiveMode: Never"))));

        Assert.Equal("auth=;subject=CN=alice, O=system:masters;proto=HTTP/1.1", await Get(connection));
    }

    public static TheoryData<string, string, string> BrokenPlugins => new()
    {
        { "missing status", """printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential"}'""", "exec plugin didn't return a status field" },
        { "empty status", """printf '{"apiVersion":"client.authentication.k8s.io/v1","status":{}}'""", "exec plugin didn't return a token or cert/key pair" },
        { "only cert", """printf '{"apiVersion":"client.authentication.k8s.io/v1","status":{"clientCertificateData":"x"}}'""", "exec plugin returned only certificate or key, not both" },
        { "wrong kind of json", "echo '[1]'", "not an ExecCredential object" },
        { "wrong apiVersion", """printf '{"apiVersion":"client.authentication.k8s.io/v1beta1","status":{"token":"t"}}'""",
            "exec plugin is configured to use API version client.authentication.k8s.io/v1, plugin returned version client.authentication.k8s.io/v1beta1" },
        { "bad json", "echo 'not json'; echo 'warning: cached creds gone' >&2",
            "wrote invalid JSON to stdout: 'not json ' is an invalid JSON literal. Expected the literal 'null'. LineNumber: 0 | BytePositionInLine: 1.; stderr: warning: cached creds gone; install hint: brew install kube-login" },
        { "non-zero exit", "echo 'error: you must be logged in to the server' >&2; echo 'second line' >&2; exit 3",
            "failed with exit code 3; stderr: error: you must be logged in to the server second line; install hint: brew install kube-login" },
    };

    [Theory]
    [MemberData(nameof(BrokenPlugins))]
    public async Task Exec_Failures_AreClearErrors(string name, string body, string expected)
    {
        var script = $"{name.Replace(' ', '-')}.sh";
        Script(script, body);
        var config = Write("config", Config(servers.IpServer, CaData,
            ExecUser(command: "./" + script, more: ["interactiveMode: Never", "installHint: brew install kube-login"])));
        var connection = Resolve(config);

        var e = await Assert.ThrowsAsync<KubeConfigException>(() => Get(connection));

        Assert.Contains(expected, e.Message);
        Assert.Contains(config, e.Message);
        Assert.Equal("users[0].user.exec", e.Field);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public async Task Exec_LongStderr_IsTruncated()
    {
        Script("plugin.sh", "i=0; while [ $i -lt 200 ]; do echo 'this plugin is very chatty about its failure' >&2; i=$((i+1)); done; exit 1");
        var connection = Resolve(Write("config", Config(servers.IpServer, CaData, ExecUser(more: "interactiveMode: Never"))));

        var e = await Assert.ThrowsAsync<KubeConfigException>(() => Get(connection));

        Assert.Contains("exit code 1; stderr: this plugin is very chatty", e.Message);
        Assert.InRange(e.Message.Length, 1000, 1300);
    }

    [Fact]
    public async Task Exec_Timeout_KillsThePlugin()
    {
        Script("plugin.sh", "echo 'waiting for browser' >&2; sleep 30");
        var connection = KubeConnection.Resolve(Write("config", Config(servers.IpServer, CaData, ExecUser(more: "interactiveMode: Never"))),
            null, Env, _clock, TimeSpan.FromMilliseconds(300));

        var e = await Assert.ThrowsAsync<KubeConfigException>(() => Get(connection));

        Assert.Contains("timed out", e.Message);
        Assert.Contains("waiting for browser", e.Message);
    }

    // ---------- broken kubeconfigs ----------

    public static TheoryData<string, string, string> BrokenConfigs()
    {
        var ca = TestPki.B64(TestPki.CertPem(TestPki.Instance.Ca));
        var cert = TestPki.B64(TestPki.CertPem(TestPki.Instance.Client));
        var otherKey = TestPki.B64(TestPki.KeyPem(TestPki.Instance.OtherCa));
        const string head = "current-context: t\ncontexts:\n- {name: t, context: {cluster: c, user: u}}\n";
        const string headNoUser = "current-context: t\ncontexts:\n- {name: t, context: {cluster: c}}\n";
        const string okCluster = "clusters:\n- {name: c, cluster: {server: \"https://k.example\"}}\n";
        return new()
        {
            { "syntax", "current-context: t\nclusters:\n  - name: [c\n", "line 4" },
            { "no current-context", okCluster, "current-context" },
            { "missing cluster", "current-context: t\ncontexts:\n- {name: t, context: {cluster: nope}}\n", "contexts[0].context.cluster" },
            { "missing user", head + okCluster, "contexts[0].context.user" },
            { "context without cluster", "current-context: t\ncontexts:\n- {name: t, context: {user: u}}\n", "contexts[0].context.cluster" },
            { "bad server", headNoUser + "clusters:\n- {name: z, cluster: {server: \"https://z\"}}\n- {name: c, cluster: {server: \"k.example:6443\"}}\n", "clusters[1].cluster.server" },
            { "ftp server", headNoUser + "clusters:\n- {name: c, cluster: {server: \"ftp://k.example\"}}\n", "clusters[0].cluster.server" },
            { "no server", headNoUser + "clusters:\n- {name: c, cluster: {}}\n", "clusters[0].cluster.server" },
            { "ca not base64", headNoUser + "clusters:\n- {name: c, cluster: {server: \"https://k\", certificate-authority-data: \"%%%\"}}\n", "clusters[0].cluster.certificate-authority-data" },
            { "ca not pem", headNoUser + $"clusters:\n- {{name: c, cluster: {{server: \"https://k\", certificate-authority-data: {TestPki.B64("hello")}}}}}\n", "clusters[0].cluster.certificate-authority-data" },
            { "ca file missing", headNoUser + "clusters:\n- {name: c, cluster: {server: \"https://k\", certificate-authority: nope.crt}}\n", "clusters[0].cluster.certificate-authority" },
            { "ca and insecure", headNoUser + $"clusters:\n- {{name: c, cluster: {{server: \"https://k\", certificate-authority-data: {ca}, insecure-skip-tls-verify: true}}}}\n", "clusters[0].cluster.insecure-skip-tls-verify" },
            { "bool", headNoUser + "clusters:\n- {name: c, cluster: {server: \"https://k\", insecure-skip-tls-verify: maybe}}\n", "clusters[0].cluster.insecure-skip-tls-verify" },
            { "clusters not a list", head + "clusters: {c: 1}\n", "clusters" },
            { "cluster without name", head + "clusters:\n- {cluster: {server: \"https://k\"}}\n", "clusters[0].name" },
            { "key not base64", head + okCluster + $"users:\n- {{name: u, user: {{client-certificate-data: {cert}, client-key-data: \"!!\"}}}}\n", "users[0].user.client-key-data" },
            { "key does not match", head + okCluster + $"users:\n- {{name: u, user: {{client-certificate-data: {cert}, client-key-data: {otherKey}}}}}\n", "users[0].user.client-key-data" },
            { "cert without key", head + okCluster + $"users:\n- {{name: u, user: {{client-certificate-data: {cert}}}}}\n", "users[0].user.client-key" },
            { "cert not pem", head + okCluster + $"users:\n- {{name: u, user: {{client-certificate-data: {TestPki.B64("junk")}, client-key-data: {otherKey}}}}}\n", "users[0].user.client-certificate-data" },
            { "token file missing", head + okCluster + "users:\n- {name: u, user: {tokenFile: /nonexistent/token}}\n", "users[0].user.tokenFile" },
            { "basic auth", head + okCluster + "users:\n- {name: u, user: {username: admin, password: secret}}\n", "users[0].user.username" },
            { "exec v1 no interactiveMode", head + okCluster + "users:\n- {name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: sh}}}\n", "users[0].user.exec.interactiveMode" },
            { "exec Always", head + okCluster + "users:\n- {name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: sh, interactiveMode: Always}}}\n", "users[0].user.exec.interactiveMode" },
            { "exec v1alpha1", head + okCluster + "users:\n- {name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1alpha1, command: sh}}}\n", "users[0].user.exec.apiVersion" },
            { "exec not on PATH", head + okCluster + "users:\n- {name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: no-such-plugin-xyz, installHint: get it}}}\n", "users[0].user.exec.command" },
            { "exec relative missing", head + okCluster + "users:\n- {name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: ./bin/nope}}}\n", "users[0].user.exec.command" },
        };
    }

    [Theory]
    [MemberData(nameof(BrokenConfigs))]
    public void BrokenKubeconfig_GivesOneLineNamingFileAndField(string name, string yaml, string field)
    {
        var path = Write($"broken-{name.Replace(' ', '-')}.yaml", yaml);
        _vars["PATH"] = "/usr/bin:/bin";

        var e = Assert.Throws<KubeConfigException>(() => Resolve(path));

        Assert.Equal(path, e.Source);
        Assert.Contains(path, e.Message);
        Assert.StartsWith(field, e.Field);
        Assert.Contains($": {field}", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
