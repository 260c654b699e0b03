using System.Buffers.Binary;
using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;

namespace Karpetrack.Tests.Grpc;

/// <summary>Hand-made gRPC requests, including broken ones, and what came back.</summary>
internal static class GrpcRaw
{
    public sealed record Reply(HttpStatusCode Http, string? Status, string? Message, byte[] Body);

    public static HttpClient H2c() => new(new SocketsHttpHandler { EnableMultipleHttp2Connections = true }) { Timeout = TimeSpan.FromSeconds(30) };

    public static byte[] Frame(byte flag, byte[] payload, uint? length = null)
    {
        var b = new byte[5 + payload.Length];
        b[0] = flag;
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(1), length ?? (uint)payload.Length);
        payload.CopyTo(b, 5);
        return b;
    }

    public static byte[] Gzip(byte[] data)
    {
        using var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true)) gz.Write(data);
        return ms.ToArray();
    }

    public static HttpRequestMessage Request(Uri server, string path, byte[] body, string contentType = "application/grpc", params (string, string)[] headers)
    {
        var m = new HttpRequestMessage(HttpMethod.Post, new Uri(server, path.TrimStart('/')))
        {
            Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact, Content = new ByteArrayContent(body),
        };
        m.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        m.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        foreach (var (k, v) in headers) m.Headers.TryAddWithoutValidation(k, v);
        return m;
    }

    public static async Task<Reply> CallAsync(HttpClient http, Uri server, string path, byte[] body, string contentType = "application/grpc", params (string, string)[] headers)
    {
        using var response = await http.SendAsync(Request(server, path, body, contentType, headers));
        var bytes = await response.Content.ReadAsByteArrayAsync();
        string? Get(string name) =>
            response.TrailingHeaders.TryGetValues(name, out var t) ? t.First()
            : response.Headers.TryGetValues(name, out var h) ? h.First() : null;
        return new Reply(response.StatusCode, Get("grpc-status"), Get("grpc-message"), bytes);
    }
}
