using Serilog;
using Serilog.Events;
using Serilog.Formatting.Compact;

namespace Karpetrack;

/// <summary>The service's Serilog logger: level and format from the options, the host's noise filtered out.</summary>
public static class Logging
{
    public static Serilog.ILogger Create(KarpetrackOptions options)
    {
        var level = options.LogLevel switch
        {
            "trace" => LogEventLevel.Verbose,
            "debug" => LogEventLevel.Debug,
            "warn" or "warning" => LogEventLevel.Warning,
            "error" => LogEventLevel.Error,
            _ => LogEventLevel.Information,
        };
        var config = new LoggerConfiguration()
            .MinimumLevel.Is(level)
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            // Grpc.AspNetCore logs every failed or cancelled call at Information; the calls are counted in /metrics.
            .MinimumLevel.Override("Grpc", LogEventLevel.Warning)
            // A malformed request message is the client's error, counted as UNKNOWN in /metrics; Grpc.AspNetCore
            // logs each one as an error with a stack trace, which any client could fill the log with.
            .Filter.ByExcluding(e => e.Exception is InvalidDataException or Google.Protobuf.InvalidProtocolBufferException
                && SourceIs(e, "Grpc.AspNetCore.Server.ServerCallHandler"))
            // The host's report of a failure to start (a port in use), with the whole stack trace: MainAsync
            // reports the same failure as one line on stderr.
            .Filter.ByExcluding(e => SourceIs(e, "Microsoft.Extensions.Hosting.Internal.Host")
                && e.Properties.TryGetValue("EventId", out var id) && id is StructureValue s
                && s.Properties.Any(p => p is { Name: "Name", Value: ScalarValue { Value: "HostedServiceStartupFaulted" } }))
            .Enrich.FromLogContext();
        // Compact JSON (CLEF) with the message rendered: one small object per line that log pipelines
        // read as Serilog's standard shape, and that a person reading `kubectl logs` can still follow.
        config = options.LogFormat == "text"
            ? config.WriteTo.Console(outputTemplate: "{Timestamp:HH:mm:ss} {Level:u3} {Message:lj}{NewLine}{Exception}")
            : config.WriteTo.Console(new RenderedCompactJsonFormatter());
        return config.CreateLogger();

        static bool SourceIs(LogEvent e, string source) =>
            e.Properties.TryGetValue("SourceContext", out var value) && value is ScalarValue { Value: string s } && s == source;
    }
}
