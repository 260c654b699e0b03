using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Karpetrack.Tests.Host;

/// <summary>--tls-cert/--tls-key put both listeners on TLS: /metrics over HTTPS, gRPC over h2 with ALPN.</summary>
public class TlsTests
{
    [Fact]
    public async Task MetricsAndGrpcServeOverTls()
    {
        var dir = Directory.CreateTempSubdirectory("karpetrack-tls-").FullName;
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=karpetrack-test", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        san.AddDnsName("localhost");
        request.CertificateExtensions.Add(san.Build());
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(1));
        File.WriteAllText(Path.Combine(dir, "tls.crt"), cert.ExportCertificatePem());
        File.WriteAllText(Path.Combine(dir, "tls.key"), key.ExportPkcs8PrivateKeyPem());

        var options = KarpetrackOptions.Parse(["--demo", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--log-level", "warn",
            "--tls-cert", Path.Combine(dir, "tls.crt"), "--tls-key", Path.Combine(dir, "tls.key")], _ => null);
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await using var service = await Service.StartAsync(options, cts.Token);
        Assert.Equal("https", service.MetricsUrl.Scheme);
        Assert.Equal("https", service.GrpcUrl.Scheme);

        // Trust exactly the test certificate.
        using var handler = new HttpClientHandler
        {
            ServerCertificateCustomValidationCallback = (_, presented, _, _) => presented is not null && presented.Thumbprint == cert.Thumbprint,
        };
        using var http = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(20) };
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline && (await http.GetAsync(new Uri(service.MetricsUrl, "/readyz"))).StatusCode != HttpStatusCode.OK) await Task.Delay(100);
        var metrics = await http.GetStringAsync(new Uri(service.MetricsUrl, "/metrics"));
        Assert.Contains("# TYPE karpetrack_node_allocated gauge", metrics);

        // grpc.health.v1.Health/Check with an empty request: 00 00000000; SERVING is field 1 = 1. Health turns
        // SERVING from its own poll of the caches, which may come a moment after /readyz: ask until it has.
        async Task<(HttpResponseMessage Response, byte[] Body)> CheckAsync()
        {
            using var call = new HttpRequestMessage(HttpMethod.Post, new Uri(service.GrpcUrl, "/grpc.health.v1.Health/Check"))
            {
                Version = HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
                Content = new ByteArrayContent([0, 0, 0, 0, 0]),
            };
            call.Content.Headers.ContentType = new("application/grpc");
            call.Headers.TryAddWithoutValidation("te", "trailers");
            var response = await http.SendAsync(call);
            return (response, await response.Content.ReadAsByteArrayAsync());
        }
        var (response, body) = await CheckAsync();
        while (DateTime.UtcNow < deadline && body.SequenceEqual(new byte[] { 0, 0, 0, 0, 2, 8, 2 }))
        {
            response.Dispose();
            await Task.Delay(100);
            (response, body) = await CheckAsync();
        }
        using (response)
        {
            Assert.Equal(new Version(2, 0), response.Version);
            Assert.Equal("0", response.TrailingHeaders.GetValues("grpc-status").Single());
            Assert.Equal([0, 0, 0, 0, 2, 8, 1], body);
        }
        Directory.Delete(dir, recursive: true);
    }
}
