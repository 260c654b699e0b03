using System.Net;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Reflection.V1;
using Microsoft.Extensions.Logging.Abstractions;
using ServingStatus = Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack.Tests.Grpc;

/// <summary>The service in process on the demo cluster, with room for three calls at a time.</summary>
public sealed class SmallLimitsService : IAsyncLifetime
{
    private readonly CancellationTokenSource cts = new(TimeSpan.FromMinutes(5));

    public Service Service { get; private set; } = null!;
    public string Address => $"{Service.GrpcUrl.Host}:{Service.GrpcUrl.Port}";

    public static async Task<Service> StartAsync(CancellationToken ct, params string[] flags) =>
        await Service.StartAsync(KarpetrackOptions.Parse(["--demo", "--metrics-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
            "--log-level", "warn", "--recommend-interval", "1s", .. flags], _ => null), ct);

    public async Task InitializeAsync() => Service = await StartAsync(cts.Token, "--grpc-max-calls", "3");

    public async Task DisposeAsync()
    {
        await Service.DisposeAsync();
        cts.Dispose();
    }
}

/// <summary>
/// What the gRPC port does beyond the service methods (compression, deadlines, the call bound, counts,
/// reflection, shutdown), through Grpc.Net.Client, and with hand-made requests where a client would not send them.
/// </summary>
public class GrpcServerTests(SmallLimitsService fixture) : IClassFixture<SmallLimitsService>
{
    private GrpcCalls Calls => fixture.Service.Grpc!;

    [Fact]
    public async Task AGzipRequestIsReadAndAnsweredInGzipAndAnIdentityOneInIdentity()
    {
        // Grpc.Net.Client compresses a call's request with the algorithm this metadata names (and hides grpc-encoding).
        using var channel = GrpcCli.Channel(fixture.Address);
        await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest(), new Metadata { { "grpc-internal-encoding-request", "gzip" } });

        using var http = GrpcRaw.H2c();
        var payload = new HealthCheckRequest { Service = KarpetrackApi.ServiceName }.ToByteArray();
        using var gzip = await http.SendAsync(GrpcRaw.Request(fixture.Service.GrpcUrl, "/grpc.health.v1.Health/Check", GrpcRaw.Frame(1, GrpcRaw.Gzip(payload)),
            headers: [("grpc-encoding", "gzip"), ("grpc-accept-encoding", "identity,gzip")]));
        var body = await gzip.Content.ReadAsByteArrayAsync();
        Assert.Equal("gzip", gzip.Headers.GetValues("grpc-encoding").Single());
        Assert.Equal(1, body[0]);
        using (var inflated = new System.IO.Compression.GZipStream(new MemoryStream(body[5..]), System.IO.Compression.CompressionMode.Decompress))
            Assert.NotEqual(ServingStatus.Unknown, HealthCheckResponse.Parser.ParseFrom(inflated).Status);
        Assert.Equal("0", gzip.TrailingHeaders.GetValues("grpc-status").Single());

        // Compressed only for a client that compresses itself: the others get identity.
        var identity = await GrpcRaw.CallAsync(http, fixture.Service.GrpcUrl, "/grpc.health.v1.Health/Check", GrpcRaw.Frame(0, payload),
            headers: ("grpc-accept-encoding", "identity,gzip"));
        Assert.Equal(("0", (byte)0), (identity.Status, identity.Body[0]));
    }

    [Theory]
    [InlineData("/grpc.health.v1.Health/Watch", "200m", "4")]        // the server ends a stream at its deadline
    [InlineData("/grpc.health.v1.Health/Check", "99999999H", "0")]   // past the ~49.7 days a timer takes: capped, not thrown
    [InlineData("/grpc.health.v1.Health/Check", "soon", "0")]        // malformed: Grpc.AspNetCore ignores it (the old transport said INTERNAL)
    public async Task GrpcTimeoutIsEnforcedAndNeverBreaksACall(string path, string timeout, string status)
    {
        using var http = GrpcRaw.H2c();
        var reply = await GrpcRaw.CallAsync(http, fixture.Service.GrpcUrl, path, GrpcRaw.Frame(0, new HealthCheckRequest().ToByteArray()),
            headers: ("grpc-timeout", timeout));
        Assert.Equal(status, reply.Status);
    }

    [Fact]
    public async Task CallsOverTheBoundAreRefusedWithResourceExhaustedAndCounted()
    {
        using var channel = GrpcCli.Channel(fixture.Address);
        var health = new Health.HealthClient(channel);
        var held = new List<AsyncServerStreamingCall<HealthCheckResponse>>();
        for (int i = 0; i < 3; i++)
        {
            var watch = health.Watch(new HealthCheckRequest());
            Assert.True(await watch.ResponseStream.MoveNext(CancellationToken.None));
            held.Add(watch);
        }
        Assert.Equal(3, Calls.OpenCalls);
        var refused = await Assert.ThrowsAsync<RpcException>(async () => await health.CheckAsync(new HealthCheckRequest()));
        Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
        Assert.Equal("more than 3 calls in progress", refused.Status.Detail);
        Assert.True(Calls.Calls[("/grpc.health.v1.Health/Check", StatusCode.ResourceExhausted)] >= 1);

        foreach (var watch in held) watch.Dispose();   // cancels the stream
        await WaitForNoOpenCalls(Calls);
        Assert.True(Calls.Calls[("/grpc.health.v1.Health/Watch", StatusCode.Cancelled)] >= 3);
        await health.CheckAsync(new HealthCheckRequest());
    }

    [Fact]
    public async Task PathsNotServedAreCountedAsUnknownAndTheMetricsPortServesNoGrpc()
    {
        using var http = GrpcRaw.H2c();
        var url = fixture.Service.GrpcUrl;
        var empty = GrpcRaw.Frame(0, []);
        Assert.Equal("12", (await GrpcRaw.CallAsync(http, url, "/nope.v1.Nope/Call", empty)).Status);
        Assert.Equal("12", (await GrpcRaw.CallAsync(http, url, "/grpc.health.v1.Health/Nope", empty)).Status);
        using (var get = await http.SendAsync(new HttpRequestMessage(HttpMethod.Get, new Uri(url, "/metrics")) { Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact }))
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, get.StatusCode);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, (await GrpcRaw.CallAsync(http, url, "/grpc.health.v1.Health/Check", empty, "application/json")).Http);
        Assert.True(Calls.Calls[("unknown", StatusCode.Unimplemented)] >= 2);
        Assert.True(Calls.Calls[("unknown", StatusCode.Internal)] >= 1);
        Assert.True(Calls.Calls[("/grpc.health.v1.Health/Check", StatusCode.Internal)] >= 1);

        // The HTTP/1.1 port knows nothing of gRPC paths.
        using var plain = new HttpClient();
        using var post = new HttpRequestMessage(HttpMethod.Post, new Uri(fixture.Service.MetricsUrl, "/grpc.health.v1.Health/Check")) { Content = new ByteArrayContent(empty) };
        post.Content.Headers.ContentType = new("application/grpc");
        Assert.Equal(HttpStatusCode.NotFound, (await plain.SendAsync(post)).StatusCode);
    }

    [Fact]
    public async Task ReflectionListsEveryServiceAndServesFilesWithTheirImports()
    {
        using var channel = GrpcCli.Channel(fixture.Address);
        using var call = new ServerReflection.ServerReflectionClient(channel).ServerReflectionInfo();
        async Task<ServerReflectionResponse> Ask(ServerReflectionRequest request)
        {
            await call.RequestStream.WriteAsync(request);
            Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
            return call.ResponseStream.Current;
        }
        var list = await Ask(new ServerReflectionRequest { ListServices = "" });
        Assert.Equal(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", "karpetrack.v1.Karpetrack"],
            list.ListServicesResponse.Service.Select(s => s.Name).Order(StringComparer.Ordinal));
        static string[] Names(ServerReflectionResponse r) =>
            r.FileDescriptorResponse.FileDescriptorProto.Select(b => Google.Protobuf.Reflection.FileDescriptorProto.Parser.ParseFrom(b).Name).ToArray();
        Assert.Equal(["karpetrack/v1/karpetrack.proto", "google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"], Names(await Ask(new ServerReflectionRequest { FileContainingSymbol = "karpetrack.v1.Karpetrack.Simulate" })));
        var healthFile = (await Ask(new ServerReflectionRequest { FileContainingSymbol = "grpc.health.v1.HealthCheckResponse" })).FileDescriptorResponse.FileDescriptorProto[0];
        Assert.Equal("grpc.health.v1", Google.Protobuf.Reflection.FileDescriptorProto.Parser.ParseFrom(healthFile).Package);
        Assert.Equal(5, (await Ask(new ServerReflectionRequest { FileByFilename = "nope.proto" })).ErrorResponse.ErrorCode);
        await call.RequestStream.CompleteAsync();
        Assert.False(await call.ResponseStream.MoveNext(CancellationToken.None));
    }

    [Fact]
    public async Task StatusMessagesArriveAsTheyWereWhateverTheyHoldAndTheCliShowsThemOnOneLine()
    {
        using var channel = GrpcCli.Channel(fixture.Address);
        var api = new V1.Karpetrack.KarpetrackClient(channel);
        await WaitForPlan(api);
        var e = await Assert.ThrowsAsync<RpcException>(async () => await api.ExplainNodeAsync(new V1.ExplainNodeRequest { Node = "nœud 50%/x=y\n" }));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
        Assert.Equal("node \"nœud 50%/x=y\n\" not found", e.Status.Detail);

        var (output, error) = (new StringWriter(), new StringWriter());
        Assert.Equal(1, await GrpcCli.RunAsync(["explain", "nœud 50%/x=y\n", "--server", fixture.Address], output, error));
        Assert.Equal("karpetrack: NOT_FOUND: node \"nœud 50%/x=y \" not found\n", error.ToString());
        Assert.Empty(output.ToString());
        var (_, unreachable) = (new StringWriter(), new StringWriter());
        Assert.Equal(1, await GrpcCli.RunAsync(["recommendations", "--server", "127.0.0.1:1"], output, unreachable));
        Assert.StartsWith("karpetrack: cannot reach 127.0.0.1:1: UNAVAILABLE: ", unreachable.ToString());
        Assert.Single(unreachable.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        var badServer = new StringWriter();
        Assert.Equal(2, await GrpcCli.RunAsync(["recommendations", "--server", "ftp://x"], output, badServer));
        Assert.StartsWith("karpetrack: --server: \"ftp://x\" is not", badServer.ToString());
    }

    [Fact]
    public async Task ShutdownTurnsHealthNotServingEndsEveryStreamWithUnavailableAndRefusesNewCalls()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await using var service = await SmallLimitsService.StartAsync(cts.Token);
        using var channel = GrpcCli.Channel($"{service.GrpcUrl.Host}:{service.GrpcUrl.Port}");
        var health = new Health.HealthClient(channel);
        using var watch = health.Watch(new HealthCheckRequest());
        Assert.True(await watch.ResponseStream.MoveNext(CancellationToken.None));
        while (watch.ResponseStream.Current.Status != ServingStatus.Serving) Assert.True(await watch.ResponseStream.MoveNext(CancellationToken.None));
        using var reflection = new ServerReflection.ServerReflectionClient(channel).ServerReflectionInfo();
        await reflection.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = "" });
        Assert.True(await reflection.ResponseStream.MoveNext(CancellationToken.None));   // and now quiet, waiting for the next request

        service.Grpc!.BeginShutdown();
        Assert.True(await watch.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(ServingStatus.NotServing, watch.ResponseStream.Current.Status);
        var ended = await Assert.ThrowsAsync<RpcException>(() => watch.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal((StatusCode.Unavailable, "server shutting down"), (ended.StatusCode, ended.Status.Detail));
        var quiet = await Assert.ThrowsAsync<RpcException>(() => reflection.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(StatusCode.Unavailable, quiet.StatusCode);
        var late = await Assert.ThrowsAsync<RpcException>(async () => await health.CheckAsync(new HealthCheckRequest()));
        Assert.Equal(StatusCode.Unavailable, late.StatusCode);
        await WaitForNoOpenCalls(service.Grpc);
    }

    internal static async Task WaitForNoOpenCalls(GrpcCalls calls)
    {
        for (int i = 0; i < 200 && calls.OpenCalls > 0; i++) await Task.Delay(50);
        Assert.Equal(0, calls.OpenCalls);
    }

    /// <summary>Readiness means synced caches; the first plan follows within a recommender tick.</summary>
    internal static async Task WaitForPlan(V1.Karpetrack.KarpetrackClient api)
    {
        for (int i = 0; ; i++)
        {
            try
            {
                await api.ListRecommendationsAsync(new V1.ListRecommendationsRequest());
                return;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unavailable && i < 300) { await Task.Delay(100); }
        }
    }
}
