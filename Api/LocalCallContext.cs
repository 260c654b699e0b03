using Grpc.Core;

namespace Karpetrack;

/// <summary>
/// The call context a service method sees when it is called without the gRPC server: from the JSON API
/// (an HTTP request's headers and cancellation) or directly. Only what the methods read is real; the rest
/// is the neutral value (no trailers written, no auth context, no propagation).
/// </summary>
internal sealed class LocalCallContext(string method, string host, string peer, Metadata headers, DateTime deadline, CancellationToken token)
    : ServerCallContext
{
    protected override string MethodCore => method;
    protected override string HostCore => host;
    protected override string PeerCore => peer;
    protected override DateTime DeadlineCore => deadline;
    protected override Metadata RequestHeadersCore => headers;
    protected override CancellationToken CancellationTokenCore => token;
    protected override Metadata ResponseTrailersCore { get; } = [];
    protected override Status StatusCore { get; set; }
    protected override WriteOptions? WriteOptionsCore { get; set; }
    protected override AuthContext AuthContextCore => new(null, []);
    protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => throw new NotSupportedException();
    protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;
}
