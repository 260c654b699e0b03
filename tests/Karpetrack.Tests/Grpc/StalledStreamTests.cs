using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Reflection.V1;
using Xunit.Abstractions;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Tests.Grpc;

/// <summary>
/// The real binary under the GC heap limit a 512Mi container gives .NET (DOTNET_GCHeapHardLimitPercent
/// 0x4B, 75 %: 384 MiB), with the default --grpc-read-timeout, so that the bound tested is the one shipped.
/// </summary>
public sealed class HeapLimitedProcess : IAsyncLifetime
{
    public const long HeapLimitBytes = 384L << 20;

    public DemoProcess Demo { get; } = new(["--demo-churn-interval", "1h", "--recommend-interval", "2s"],
        new Dictionary<string, string> { ["DOTNET_GCHeapHardLimit"] = "0x" + HeapLimitBytes.ToString("X") });

    public Task InitializeAsync() => Demo.InitializeAsync();

    public Task DisposeAsync() => Demo.DisposeAsync();
}

/// <summary>
/// Issue 14's outside finding: 200 streams that each send a 5-byte prefix declaring a 4 MiB message and
/// then nothing pinned ~393 MB. Now each costs what Kestrel buffered (five bytes), and the read deadline
/// ends it; a sender that trickles bytes is cut off the same way. Other calls are served meanwhile.
/// </summary>
public class StalledStreamTests(HeapLimitedProcess fixture, ITestOutputHelper log) : IClassFixture<HeapLimitedProcess>
{
    private const int Streams = 200;
    private const int Declared = 4 * 1024 * 1024 - 1;   // the largest message the limit lets through the prefix check
    private const long RssBoundKb = 64 * 1024;
    private static readonly TimeSpan FunctionalBound = TimeSpan.FromSeconds(90);
    private DemoProcess Demo => fixture.Demo;

    [Fact]
    public async Task StalledAndTricklingStreamsCostLittleMemoryAndEndWithinNinetySecondsWhileOtherCallsAreServed()
    {
        using var channel = GrpcCli.Channel(Demo.GrpcAddress);
        await GrpcServerTests.WaitForPlan(new V1.Karpetrack.KarpetrackClient(channel));
        await OtherCallsAreServed(channel);
        long before = RssKb(Demo.Pid);

        // Their own connections: Kestrel may end a whole connection, and the calls above must not share it.
        using var http = new HttpClient(new SocketsHttpHandler { EnableMultipleHttp2Connections = true }) { Timeout = Timeout.InfiniteTimeSpan };
        using var release = new CancellationTokenSource();
        var clock = Stopwatch.StartNew();
        var stalled = Enumerable.Range(0, Streams)
            .Select(i => CallAsync(http, i % 2 == 0 ? "/karpetrack.v1.Karpetrack/ExplainNode" : "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                new SlowContent(Declared, trickle: null, release.Token)))
            .ToList();
        // One unary and one streaming call that send a byte every 100 ms: never stalled, never done in time.
        var trickles = new[] { "/karpetrack.v1.Karpetrack/ExplainNode", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" }
            .Select(path => (Content: new SlowContent(100_000, trickle: TimeSpan.FromMilliseconds(100), release.Token), Path: path))
            .Select(t => (t.Content, Call: CallAsync(http, t.Path, t.Content)))
            .ToList();

        try
        {
            await WaitForOpenCalls(open => open >= Streams + trickles.Count);
            long during = RssKb(Demo.Pid);
            log.WriteLine($"VmRSS {before / 1024} MB before, {during / 1024} MB with {Streams} stalled and {trickles.Count} trickling streams open ({clock.Elapsed.TotalSeconds:0.0} s)");
            Assert.True(during - before <= RssBoundKb, $"VmRSS grew by {(during - before) / 1024} MB (before {before / 1024} MB, during {during / 1024} MB)");
            await OtherCallsAreServed(channel);

            var statuses = await Task.WhenAll(stalled).WaitAsync(FunctionalBound);
            log.WriteLine($"all {Streams} stalled streams ended after {clock.Elapsed.TotalSeconds:0.0} s");
            Assert.All(statuses, s => Assert.Equal(("4", true), (s.Status, s.Message.Contains("--grpc-read-timeout", StringComparison.Ordinal))));
            foreach (var (content, call) in trickles)
            {
                var (status, _) = await call.WaitAsync(FunctionalBound);
                Assert.Equal("4", status);
                // Cut off while it was still sending, not because it ran out of bytes.
                Assert.InRange(content.Sent, 6, 100_000 + 4);
            }
            log.WriteLine($"trickling streams cut off after sending {string.Join(", ", trickles.Select(t => t.Content.Sent))} bytes");
        }
        finally
        {
            await release.CancelAsync();
        }

        await WaitForOpenCalls(open => open == 0);
        await OtherCallsAreServed(channel);
        Assert.False(Demo.Exited);
        Assert.DoesNotContain("OutOfMemoryException", Demo.Output + Demo.Errors);
        log.WriteLine($"VmRSS {RssKb(Demo.Pid) / 1024} MB after");
    }

    private static async Task OtherCallsAreServed(global::Grpc.Net.Client.GrpcChannel channel)
    {
        var health = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddSeconds(20));
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
        var summary = await new V1.Karpetrack.KarpetrackClient(channel).GetSummaryAsync(new V1.GetSummaryRequest(), deadline: DateTime.UtcNow.AddSeconds(20));
        Assert.True(summary.Nodes > 0);
        using var reflection = new ServerReflection.ServerReflectionClient(channel).ServerReflectionInfo(deadline: DateTime.UtcNow.AddSeconds(20));
        await reflection.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = "" });
        Assert.True(await reflection.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Contains(reflection.ResponseStream.Current.ListServicesResponse.Service, s => s.Name == KarpetrackApi.ServiceName);
        await reflection.RequestStream.CompleteAsync();
    }

    /// <summary>The call's status and message, from the headers (Trailers-Only) or the trailers.</summary>
    private async Task<(string Status, string Message)> CallAsync(HttpClient http, string path, HttpContent content)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(Demo.GrpcUrl, path.TrimStart('/')))
        {
            Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact, Content = content,
        };
        request.Content!.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        await response.Content.CopyToAsync(Stream.Null);
        string Get(string name) =>
            response.TrailingHeaders.TryGetValues(name, out var t) ? t.First()
            : response.Headers.TryGetValues(name, out var h) ? h.First() : "";
        return (Get("grpc-status"), Uri.UnescapeDataString(Get("grpc-message")));
    }

    private async Task WaitForOpenCalls(Func<double, bool> done)
    {
        double open = -1;
        for (var until = DateTime.UtcNow + FunctionalBound; DateTime.UtcNow < until; await Task.Delay(100))
        {
            open = DemoProcess.Sample(await Demo.MetricsAsync(), "karpetrack_grpc_open_calls");
            if (done(open)) return;
        }
        Assert.Fail($"karpetrack_grpc_open_calls stayed at {open}");
    }

    private static long RssKb(int pid)
    {
        var line = File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
        return long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>A request body: the prefix of a message of the declared length, then nothing, or one byte per <c>trickle</c>.</summary>
    private sealed class SlowContent(int declared, TimeSpan? trickle, CancellationToken release) : HttpContent
    {
        private int sent;

        public int Sent => Volatile.Read(ref sent);

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(release, cancellationToken);
            var prefix = new byte[5];
            BinaryPrimitives.WriteUInt32BigEndian(prefix.AsSpan(1), (uint)declared);
            try
            {
                await stream.WriteAsync(prefix, stop.Token);
                await stream.FlushAsync(stop.Token);
                Interlocked.Add(ref sent, prefix.Length);
                if (trickle is not { } every)
                {
                    await Task.Delay(Timeout.Infinite, stop.Token);
                    return;
                }
                for (int i = 0; i < declared; i++)
                {
                    await Task.Delay(every, stop.Token);
                    await stream.WriteAsync(new byte[] { 0x0a }, stop.Token);
                    await stream.FlushAsync(stop.Token);
                    Interlocked.Increment(ref sent);
                }
            }
            // The server ended the call (its stream is reset), or the test is over.
            catch (Exception e) when (e is OperationCanceledException or IOException or HttpRequestException) { }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}
