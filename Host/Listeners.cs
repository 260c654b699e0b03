using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Karpetrack;

/// <summary>The two Kestrel listeners (metrics over HTTP/1.1, gRPC over HTTP/2), their URLs and the TLS certificate.</summary>
internal static class Listeners
{
    public static ListenOptions Listen(KestrelServerOptions k, (string Host, int Port) addr, string flag, HttpProtocols protocols, X509Certificate2? certificate)
    {
        ListenOptions? bound = null;
        void Configure(ListenOptions o)
        {
            o.Protocols = protocols;
            if (certificate is not null) o.UseHttps(certificate);
            bound = o;
        }
        var (host, port) = addr;
        if (host is "" or "0.0.0.0" or "*") k.ListenAnyIP(port, Configure);
        else if (host == "localhost") k.ListenLocalhost(port, Configure);
        else if (IPAddress.TryParse(host, out var ip)) k.Listen(ip, port, Configure);
        else throw new OptionsException($"{flag}: \"{host}\" is not an IP address (or localhost)");
        return bound!;
    }

    /// <summary>A URL a local client can use: the bound port (port 0 picks one), loopback for the wildcard addresses.</summary>
    public static Uri UrlOf(ListenOptions listener, (string Host, int Port) addr, bool tls)
    {
        var scheme = tls ? "https" : "http";
        int port = listener.IPEndPoint?.Port ?? addr.Port;
        var host = addr.Host switch
        {
            "" or "0.0.0.0" or "*" or "::" => "127.0.0.1",
            "localhost" => "localhost",
            var h when IPAddress.TryParse(h, out var ip) && ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 => $"[{h}]",
            var h => h,
        };
        return new Uri($"{scheme}://{host}:{port}/");
    }

    public static X509Certificate2 LoadCertificate(string certFile, string keyFile)
    {
        try
        {
            return X509Certificate2.CreateFromPemFile(certFile, keyFile);
        }
        catch (Exception e) when (e is System.Security.Cryptography.CryptographicException or ArgumentException or IOException)
        {
            throw new OptionsException($"--tls-cert/--tls-key: cannot load {certFile} with {keyFile}: {e.Message}");
        }
    }
}
