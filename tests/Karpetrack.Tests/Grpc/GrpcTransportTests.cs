using System.Net;
using Google.Protobuf;
using Karpetrack.Grpc.Health;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging.Abstractions;
using Pb = Karpetrack.Api.V1;

namespace Karpetrack.Tests.Grpc;

public class GrpcWireTests
{
    [Theory]
    [InlineData("résumé 50%", "r%C3%A9sum%C3%A9 50%25")]
    [InlineData("a=b/c:d", "a=b/c:d")]                 // only what the spec requires: grpc-js decodes with decodeURI
    [InlineData("line\nbreak", "line%0Abreak")]
    public void GrpcMessageIsPercentEncodedExactlyAsTheSpecSays(string text, string encoded)
    {
        Assert.Equal(encoded, GrpcWire.EncodeMessage(text));
        Assert.Equal(text, GrpcWire.DecodeMessage(encoded));
    }

    [Fact]
    public void DecodingNeverFails() => Assert.Equal("%zz 100%", GrpcWire.DecodeMessage("%zz 100%"));

    [Theory]
    [InlineData("5S", 5000.0)]
    [InlineData("250m", 250.0)]
    [InlineData("1H", 3_600_000.0)]
    [InlineData("2M", 120_000.0)]
    [InlineData("1500u", 1.5)]
    [InlineData("99999999n", 99.999999)]
    public void TimeoutsParse(string header, double ms) => Assert.Equal(ms, GrpcWire.ParseTimeout(header)!.Value.TotalMilliseconds, 3);

    [Theory]
    [InlineData("")]
    [InlineData("5")]
    [InlineData("123456789S")]
    [InlineData("5s")]
    [InlineData("-5S")]
    public void MalformedTimeoutsAreRejected(string header) => Assert.Null(GrpcWire.ParseTimeout(header));

    [Fact]
    public void FormattedTimeoutsRoundTripAndFitEightDigits()
    {
        foreach (var t in new[] { TimeSpan.FromMilliseconds(1), TimeSpan.FromSeconds(30), TimeSpan.FromDays(3), TimeSpan.FromDays(5000) })
        {
            var s = GrpcWire.FormatTimeout(t);
            Assert.True(s.Length <= 9, s);
            Assert.True(GrpcWire.ParseTimeout(s) >= t, s);
        }
    }

    [Fact]
    public void ReflectionServesEveryFileBySymbolAndNameWithImports()
    {
        var r = GrpcReflection.ForKarpetrack();
        Assert.Equal(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", "karpetrack.v1.Karpetrack"], r.Services);
        var sent = new HashSet<string>();
        foreach (var symbol in new[] { "karpetrack.v1.Karpetrack.Simulate", "karpetrack.v1.RecommendationEvent.Kind", "grpc.health.v1.HealthCheckResponse", ".google.protobuf.Timestamp" })
        {
            var answer = r.Answer(new Karpetrack.Grpc.Reflection.V1.ServerReflectionRequest { FileContainingSymbol = symbol }, []);
            Assert.NotEmpty(answer.FileDescriptorResponse.FileDescriptorProto);
        }
        var first = r.Answer(new Karpetrack.Grpc.Reflection.V1.ServerReflectionRequest { FileByFilename = "karpetrack/v1/karpetrack.proto" }, sent);
        Assert.Equal(2, first.FileDescriptorResponse.FileDescriptorProto.Count);
        // Files already sent on the stream are not repeated; the asked-for file always is.
        var again = r.Answer(new Karpetrack.Grpc.Reflection.V1.ServerReflectionRequest { FileByFilename = "karpetrack/v1/karpetrack.proto" }, sent);
        Assert.Single(again.FileDescriptorResponse.FileDescriptorProto);
        var missing = r.Answer(new Karpetrack.Grpc.Reflection.V1.ServerReflectionRequest { FileByFilename = "nope.proto" }, sent);
        Assert.Equal(5, missing.ErrorResponse.ErrorCode);
    }
}

/// <summary>The transport on its own, on an in-process Kestrel h2c listener with small limits.</summary>
public sealed class GrpcServerTests : IAsyncLifetime
{
    private WebApplication app = null!;
    private GrpcServer server = null!;
    private Uri url = null!;
    private readonly HttpClient http = GrpcRaw.H2c();

    public async Task InitializeAsync()
    {
        server = new GrpcServer(new GrpcServerOptions { MaxConcurrentCalls = 3, MaxReceiveMessageBytes = 1024 }, NullLogger.Instance);
        server.Unary("/t.T/Echo", HealthCheckRequest.Parser, (r, _) => Task.FromResult(r));
        server.Unary("/t.T/Slow", HealthCheckRequest.Parser, async (r, call) => { await Task.Delay(TimeSpan.FromSeconds(20), call.Cancelled); return r; });
        server.ServerStreaming("/t.T/Hold", HealthCheckRequest.Parser, async (r, call) =>
        {
            await call.WriteAsync(r);
            await Task.Delay(Timeout.Infinite, call.Cancelled);
        });
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http2));
        app = builder.Build();
        app.Run(server.HandleAsync);
        await app.StartAsync();
        url = new Uri(app.Urls.First());
    }

    public async Task DisposeAsync()
    {
        await app.StopAsync();
        await app.DisposeAsync();
        http.Dispose();
    }

    private static byte[] Message(string s) => GrpcRaw.Frame(0, new HealthCheckRequest { Service = s }.ToByteArray());

    [Fact]
    public async Task GzipRequestsAreReadAndAnsweredInGzip()
    {
        var payload = new HealthCheckRequest { Service = new string('z', 500) }.ToByteArray();
        using var response = await http.SendAsync(GrpcRaw.Request(url, "/t.T/Echo", GrpcRaw.Frame(1, GrpcWire.Gzip(payload)),
            headers: [("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip")]));
        var body = await response.Content.ReadAsByteArrayAsync();
        Assert.Equal("gzip", response.Headers.GetValues("grpc-encoding").Single());
        Assert.Equal(1, body[0]);
        Assert.Equal(payload, GrpcWire.Gunzip(body[5..], 1 << 20));
        Assert.Equal("0", response.TrailingHeaders.GetValues("grpc-status").Single());
    }

    [Fact]
    public async Task IdentityClientsGetIdentityAnswersAndEveryStatusHasTrailers()
    {
        var r = await GrpcRaw.CallAsync(http, url, "/t.T/Echo", Message("hello"));
        Assert.Equal("0", r.Status);
        Assert.Equal(0, r.Body[0]);
        Assert.Equal("hello", HealthCheckRequest.Parser.ParseFrom(r.Body[5..]).Service);
        var none = await GrpcRaw.CallAsync(http, url, "/t.T/Echo", []);
        Assert.Equal("13", none.Status);
        var two = await GrpcRaw.CallAsync(http, url, "/t.T/Echo", [.. Message("a"), .. Message("b")]);
        Assert.Equal("13", two.Status);
        var big = await GrpcRaw.CallAsync(http, url, "/t.T/Echo", Message(new string('x', 2000)));
        Assert.Equal("8", big.Status);
        Assert.Empty(big.Body);   // Trailers-Only
    }

    [Fact]
    public async Task DeadlinesEndTheCallWithDeadlineExceeded()
    {
        var started = DateTime.UtcNow;
        var r = await GrpcRaw.CallAsync(http, url, "/t.T/Slow", Message("x"), headers: ("grpc-timeout", "200m"));
        Assert.Equal("4", r.Status);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(5));
        await WaitForNoOpenCalls();
    }

    [Fact]
    public async Task CallsOverTheBoundAreRefusedAndShutdownEndsStreamsWithUnavailable()
    {
        var held = new List<HttpResponseMessage>();
        for (int i = 0; i < 3; i++)
        {
            var response = await http.SendAsync(GrpcRaw.Request(url, "/t.T/Hold", Message("h")), HttpCompletionOption.ResponseHeadersRead);
            var head = new byte[5];
            await (await response.Content.ReadAsStreamAsync()).ReadExactlyAsync(head);
            held.Add(response);
        }
        Assert.Equal(3, server.OpenCalls);
        var refused = await GrpcRaw.CallAsync(http, url, "/t.T/Echo", Message("x"));
        Assert.Equal("8", refused.Status);

        server.BeginShutdown();
        foreach (var response in held)
        {
            await (await response.Content.ReadAsStreamAsync()).CopyToAsync(Stream.Null);
            Assert.Equal("14", response.TrailingHeaders.GetValues("grpc-status").Single());
            response.Dispose();
        }
        await WaitForNoOpenCalls();
        var late = await GrpcRaw.CallAsync(http, url, "/t.T/Echo", Message("x"));
        Assert.Equal("14", late.Status);
    }

    private async Task WaitForNoOpenCalls()
    {
        for (int i = 0; i < 100 && server.OpenCalls > 0; i++) await Task.Delay(50);
        Assert.Equal(0, server.OpenCalls);
    }
}

/// <summary>The Simulate acceptance examples of issue 5, on a hand-made cluster with real prices.</summary>
public class SimulateTests
{
    private static KarpetrackApi Api(Scenario s)
    {
        var status = new ReflectorStatus("nodes");
        status.MarkSynced(null, DateTimeOffset.UtcNow);
        var prices = new PriceFeed(new PriceFeedOptions(), NullLogger.Instance, initial: Scenario.Book);
        var options = new RecommenderOptions { Region = "us-east-iad-1" };
        var loop = new RecommenderLoop(s.Model, prices, [status], () => options, TimeSpan.Zero, NullLogger.Instance);
        loop.RunOnce();
        return new KarpetrackApi(s.Model, prices, loop, [status], () => options);
    }

    [Fact]
    public void RemovingANodeWhosePodsFitElsewherePlacesThemAllAndSavesItsPrice()
    {
        var s = new Scenario().Node("a", "gp.vs1.large-iad").Node("b", "gp.vs1.2xlarge-iad")
            .Pod("p1", "a", "500m", "1Gi").Pod("p2", "a", "500m", "1Gi").Pod("q", "b", "1", "1Gi");
        var r = Api(s).Simulate(new Pb.SimulateRequest { RemoveNodes = { "a" } });
        Assert.Empty(r.Unplaceable);
        Assert.Equal(2, r.Placements.Count);
        Assert.All(r.Placements, p => { Assert.Equal("b", p.Node); Assert.Equal("a", p.From); Assert.False(p.NewNode); });
        var price = (double)Scenario.Book.NodePrice("gp.vs1.large-iad", "spot")!.Value;
        Assert.Equal(r.CostBeforePerHour - price, r.CostAfterPerHour, 9);
        Assert.Empty(r.NewNodes);
    }

    [Fact]
    public void APodLargerThanEveryClassIsUnplaceableWithTheReason()
    {
        var s = new Scenario().Node("a", "gp.vs1.large-iad");
        var r = Api(s).Simulate(new Pb.SimulateRequest { AddPods = { new Pb.SimulatedPod { Name = "huge", Cpu = "512", Memory = "4Ti" } } });
        var u = Assert.Single(r.Unplaceable);
        Assert.Equal("default/huge", u.Pod);
        Assert.False(string.IsNullOrWhiteSpace(u.Reason));
        Assert.Equal(r.CostBeforePerHour, r.CostAfterPerHour);
    }

    [Fact]
    public void ReplacingANodeByATooSmallClassSaysWhichPodsNoLongerFit()
    {
        var s = new Scenario().Node("x", "gp.vs1.2xlarge-iad").Pod("big1", "x", "3", "4Gi").Pod("small", "x", "100m", "128Mi");
        var r = Api(s).Simulate(new Pb.SimulateRequest { ReplaceNodes = { new Pb.NodeReplacement { Node = "x", ServerClass = "gp.vs1.medium-iad" } } });
        var missing = Assert.Single(r.NoLongerFit);
        Assert.Equal("shop/big1", missing.Pod);
        Assert.Contains("gp.vs1.medium-iad", missing.Reason);
        Assert.Contains(r.Placements, p => p.Pod == "shop/small" && p.Node == "x→gp.vs1.medium-iad");
    }

    [Theory]
    [InlineData(true)]    // the replacement keeps spread-0, so spread-1 may not join it: a new node
    [InlineData(false)]   // without the anti-affinity spread-1 takes the replacement's room
    public void PodsKeptOnAReplacementKeepTheirAntiAffinity(bool antiAffine)
    {
        string extra = antiAffine ? RecommenderTests.AntiSpread : "";
        var s = new Scenario()
            .Node("x", "gp.vs1.2xlarge-iad").Pod("spread-0", "x", "500m", "512Mi", labels: RecommenderTests.Spread, extraSpec: extra)
            .Node("y", "gp.vs1.large-iad").Pod("spread-1", "y", "500m", "512Mi", labels: RecommenderTests.Spread, extraSpec: extra);
        var r = Api(s).Simulate(new Pb.SimulateRequest
        {
            RemoveNodes = { "y" },
            ReplaceNodes = { new Pb.NodeReplacement { Node = "x", ServerClass = "gp.vs1.2xlarge-iad" } },
        });
        Assert.Contains(r.Placements, p => p.Pod == "shop/spread-0" && p.Node == "x→gp.vs1.2xlarge-iad");
        var moved = Assert.Single(r.Placements, p => p.Pod == "shop/spread-1");
        Assert.Equal(antiAffine, moved.NewNode);
        Assert.Equal(!antiAffine, moved.Node == "x→gp.vs1.2xlarge-iad");
    }

    [Fact]
    public void BadWhatIfsAreInvalidArgumentsOrNotFound()
    {
        var api = Api(new Scenario().Node("a", "gp.vs1.large-iad"));
        Assert.Equal(GrpcStatus.NotFound, Assert.Throws<GrpcException>(() => api.Simulate(new Pb.SimulateRequest { RemoveNodes = { "ghost" } })).Status);
        Assert.Equal(GrpcStatus.InvalidArgument, Assert.Throws<GrpcException>(() => api.Simulate(new Pb.SimulateRequest
        { ReplaceNodes = { new Pb.NodeReplacement { Node = "a", ServerClass = "no.such-class" } } })).Status);
        Assert.Equal(GrpcStatus.InvalidArgument, Assert.Throws<GrpcException>(() => api.Simulate(new Pb.SimulateRequest { Categories = { "quantum" } })).Status);
        Assert.Equal(GrpcStatus.NotFound, Assert.Throws<GrpcException>(() => api.ExplainNode(new Pb.ExplainNodeRequest { Node = "ghost" })).Status);
    }
}
