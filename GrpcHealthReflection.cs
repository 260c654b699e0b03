using Google.Protobuf;
using Google.Protobuf.Reflection;
using Karpetrack.Grpc.Health;
using Karpetrack.Grpc.Reflection.V1;

namespace Karpetrack;

/// <summary>
/// `grpc.health.v1.Health`: "" (the whole server) and our service are SERVING once every cache has
/// synced and until shutdown begins, NOT_SERVING otherwise; any other name is unknown.
/// </summary>
public sealed class GrpcHealth(Func<bool> ready, GrpcServer server)
{
    public const string CheckPath = "/grpc.health.v1.Health/Check";
    public const string WatchPath = "/grpc.health.v1.Health/Watch";
    private static readonly string[] Known = ["", KarpetrackApi.ServiceName];

    public void Register()
    {
        server.Unary(CheckPath, HealthCheckRequest.Parser, (req, _) =>
        {
            var status = StatusOf(req.Service) ?? throw new GrpcException(GrpcStatus.NotFound, "unknown service");
            return Task.FromResult(new HealthCheckResponse { Status = status });
        });
        server.ServerStreaming(WatchPath, HealthCheckRequest.Parser, WatchAsync);
    }

    private HealthCheckResponse.Types.ServingStatus? StatusOf(string service) =>
        !Known.Contains(service) ? null
        : ready() && !server.ShuttingDown.IsCancellationRequested ? HealthCheckResponse.Types.ServingStatus.Serving
        : HealthCheckResponse.Types.ServingStatus.NotServing;

    /// <summary>The status now, then one message per change; an unknown name stays SERVICE_UNKNOWN on an open stream.</summary>
    private async Task WatchAsync(HealthCheckRequest req, GrpcCall call)
    {
        HealthCheckResponse.Types.ServingStatus? last = null;
        while (true)
        {
            var now = StatusOf(req.Service) ?? HealthCheckResponse.Types.ServingStatus.ServiceUnknown;
            if (now != last)
            {
                await call.WriteAsync(new HealthCheckResponse { Status = now });
                last = now;
            }
            // Readiness has no event of its own; a short poll is cheap and bounds the delay.
            await Task.Delay(TimeSpan.FromMilliseconds(250), call.Cancelled);
        }
    }
}

/// <summary>
/// Server reflection, v1 and v1alpha (wire-identical, so both are served with the v1 messages):
/// every file by name and by symbol with its transitive imports, the well-known types included.
/// </summary>
public sealed class GrpcReflection
{
    public const string V1Path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    public const string V1AlphaPath = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

    private readonly Dictionary<string, FileDescriptor> files = new(StringComparer.Ordinal);
    private readonly Dictionary<string, FileDescriptor> symbols = new(StringComparer.Ordinal);
    private readonly HashSet<string> messageTypes = new(StringComparer.Ordinal);
    private readonly List<string> services = [];

    public GrpcReflection(IEnumerable<FileDescriptor> roots)
    {
        foreach (var f in roots) Add(f);
        services.Sort(StringComparer.Ordinal);
    }

    public IReadOnlyList<string> Services => services;

    public static GrpcReflection ForKarpetrack() => new([
        Api.V1.KarpetrackReflection.Descriptor,
        HealthReflection.Descriptor,
        ReflectionReflection.Descriptor,
        Grpc.Reflection.V1Alpha.ReflectionReflection.Descriptor,
    ]);

    private void Add(FileDescriptor file)
    {
        if (!files.TryAdd(file.Name, file)) return;
        foreach (var d in file.Dependencies) Add(d);
        foreach (var s in file.Services)
        {
            services.Add(s.FullName);
            symbols[s.FullName] = file;
            foreach (var m in s.Methods) symbols[m.FullName] = file;
        }
        foreach (var m in file.MessageTypes) AddMessage(m, file);
        foreach (var e in file.EnumTypes) symbols[e.FullName] = file;
        foreach (var x in file.Extensions.UnorderedExtensions) symbols[x.FullName] = file;
    }

    private void AddMessage(MessageDescriptor m, FileDescriptor file)
    {
        symbols[m.FullName] = file;
        messageTypes.Add(m.FullName);
        foreach (var f in m.Fields.InDeclarationOrder()) symbols[f.FullName] = file;
        foreach (var o in m.Oneofs) symbols[o.FullName] = file;
        foreach (var n in m.NestedTypes) AddMessage(n, file);
        foreach (var e in m.EnumTypes) symbols[e.FullName] = file;
    }

    public void Register(GrpcServer server)
    {
        server.Duplex(V1Path, RunAsync);
        server.Duplex(V1AlphaPath, RunAsync);
    }

    private async Task RunAsync(GrpcCall call)
    {
        var sent = new HashSet<string>(StringComparer.Ordinal);
        while (await call.ReadAsync(ServerReflectionRequest.Parser) is { } request)
            await call.WriteAsync(Answer(request, sent));
    }

    /// <summary>One response per request, echoing it; files already sent on this stream are not repeated.</summary>
    public ServerReflectionResponse Answer(ServerReflectionRequest request, HashSet<string> sent)
    {
        var response = new ServerReflectionResponse { ValidHost = request.Host, OriginalRequest = request };
        switch (request.MessageRequestCase)
        {
            case ServerReflectionRequest.MessageRequestOneofCase.ListServices:
                var list = new ListServiceResponse();
                list.Service.AddRange(services.Select(s => new ServiceResponse { Name = s }));
                response.ListServicesResponse = list;
                break;
            case ServerReflectionRequest.MessageRequestOneofCase.FileByFilename:
                if (files.TryGetValue(request.FileByFilename, out var byName)) response.FileDescriptorResponse = WithImports(byName, sent);
                else response.ErrorResponse = NotFound($"file \"{request.FileByFilename}\" not found");
                break;
            case ServerReflectionRequest.MessageRequestOneofCase.FileContainingSymbol:
                var symbol = request.FileContainingSymbol.TrimStart('.');
                if (symbols.TryGetValue(symbol, out var bySymbol)) response.FileDescriptorResponse = WithImports(bySymbol, sent);
                else response.ErrorResponse = NotFound($"symbol \"{symbol}\" not found");
                break;
            case ServerReflectionRequest.MessageRequestOneofCase.FileContainingExtension:
                var ext = request.FileContainingExtension;
                response.ErrorResponse = NotFound($"no extension {ext.ExtensionNumber} of \"{ext.ContainingType}\"");
                break;
            case ServerReflectionRequest.MessageRequestOneofCase.AllExtensionNumbersOfType:
                var type = request.AllExtensionNumbersOfType.TrimStart('.');
                if (messageTypes.Contains(type)) response.AllExtensionNumbersResponse = new ExtensionNumberResponse { BaseTypeName = type };
                else response.ErrorResponse = NotFound($"type \"{type}\" not found");
                break;
            default:
                response.ErrorResponse = new ErrorResponse { ErrorCode = (int)GrpcStatus.InvalidArgument, ErrorMessage = "empty reflection request" };
                break;
        }
        return response;
    }

    private static ErrorResponse NotFound(string message) => new() { ErrorCode = (int)GrpcStatus.NotFound, ErrorMessage = message };

    /// <summary>The file first, then its transitive imports not yet sent on this stream.</summary>
    private static FileDescriptorResponse WithImports(FileDescriptor file, HashSet<string> sent)
    {
        var response = new FileDescriptorResponse();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var queue = new Queue<FileDescriptor>([file]);
        while (queue.Count > 0)
        {
            var f = queue.Dequeue();
            if (!seen.Add(f.Name)) continue;
            // The asked-for file is always answered, even when this stream sent it before.
            if (f != file && sent.Contains(f.Name)) continue;
            response.FileDescriptorProto.Add(f.SerializedData);
            sent.Add(f.Name);
            foreach (var d in f.Dependencies) queue.Enqueue(d);
        }
        return response;
    }
}
