using System.IO.Compression;
using System.Net;
using System.Runtime.InteropServices;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Karpetrack;
using Karpetrack.Simulation;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Serilog;
using Serilog.Events;
using Serilog.Extensions.Logging;
using Serilog.Formatting.Compact;

// Before the host starts its threads: at most two malloc arenas, not eight per core (see NativeHeap),
// unless MALLOC_ARENA_MAX says otherwise.
if (Environment.GetEnvironmentVariable("MALLOC_ARENA_MAX") is null) NativeHeap.LimitArenas(2);
return await Service.MainAsync(args);

/// <summary>The composition root: options, wiring and the HTTP endpoints.</summary>
public sealed class Service : IAsyncDisposable
{
    private readonly WebApplication app;
    private readonly CancellationTokenSource stopping = new();
    private readonly List<Task> background = [];
    private readonly DemoCluster? demo;
    private readonly KubeClient kube;

    private Service(WebApplication app, KubeClient kube, DemoCluster? demo, ClusterModel model, ReflectorStatus[] reflectors)
    {
        this.app = app;
        this.kube = kube;
        this.demo = demo;
        Model = model;
        Reflectors = reflectors;
    }

    public ClusterModel Model { get; }
    public PriceFeed? Prices { get; private init; }
    private FeedServer? demoFeed;
    public ReflectorStatus[] Reflectors { get; }
    /// <summary>The Spot API client and its server-class loop; null without RACKSPACE_SPOT_REFRESH_TOKEN (and not --demo).</summary>
    public SpotWiring? Spot { get; private init; }
    public RecommenderLoop? Recommender { get; private init; }
    public Uri MetricsUrl { get; private set; } = new("http://127.0.0.1/");
    /// <summary>Where the gRPC API listens (HTTP/2 only).</summary>
    public Uri GrpcUrl { get; private set; } = new("http://127.0.0.1/");
    public GrpcCalls? Grpc { get; private init; }
    public KarpetrackApi? Api { get; private init; }
    public string? DemoKubeconfig => demo?.KubeconfigPath;
    /// <summary>The background loops and their health.</summary>
    public Supervisor Supervisor { get; private init; } = null!;
    /// <summary>The service's own families, which its components registered.</summary>
    public Telemetry Telemetry { get; private init; } = null!;

    public static async Task<int> MainAsync(string[] args)
    {
        // Client subcommands of the same binary talk to a running service; everything else is flags.
        if (args.Length > 0 && GrpcCli.IsCommand(args[0])) return await GrpcCli.RunAsync(args, Console.Out, Console.Error);
        KarpetrackOptions options;
        try
        {
            options = KarpetrackOptions.Parse(args, Environment.GetEnvironmentVariable);
        }
        catch (OptionsException e)
        {
            Console.Error.WriteLine($"karpetrack: {e.Message}");
            return 2;
        }
        if (options.ShowHelp) { Console.Write(KarpetrackOptions.HelpText()); return 0; }
        if (options.ShowVersion) { Console.WriteLine($"karpetrack {BuildInfo.Version}"); return 0; }

        using var cts = new CancellationTokenSource();
        // SIGTERM (Kubernetes stopping the pod) and Ctrl-C both mean: stop serving, close streams, exit 0.
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; cts.Cancel(); });
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; cts.Cancel(); });
        Service service;
        try
        {
            service = await StartAsync(options, cts.Token);
        }
        catch (Exception e) when (e is KubeConfigException or OptionsException or StartupException)
        {
            // What the user can fix (a flag, the kubeconfig, a port in use): one line, no stack trace.
            Console.Error.WriteLine($"karpetrack: {e.Message}");
            return 2;
        }
        catch (Exception e) when (!cts.IsCancellationRequested)
        {
            // One line, never a stack trace: whatever else stopped the start is named, with its message.
            Console.Error.WriteLine($"karpetrack: cannot start: {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
            return 1;
        }
        await using (service)
        {
            Console.WriteLine($"web: {service.MetricsUrl}");
            Console.WriteLine($"metrics: {new Uri(service.MetricsUrl, "/metrics")}");
            Console.WriteLine($"grpc: {service.GrpcUrl}");
            if (service.DemoKubeconfig is { } kc)
            {
                Console.WriteLine($"kubeconfig: {kc}");
                Console.WriteLine($"try: kubectl --kubeconfig {kc} get nodes");
            }
            try { await Task.Delay(Timeout.Infinite, cts.Token); }
            catch (OperationCanceledException) { }
        }
        return 0;
    }

    public static Serilog.ILogger CreateLogger(KarpetrackOptions options)
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

    /// <summary>Starts everything and returns once the HTTP listener is bound (reflectors keep syncing).</summary>
    public static async Task<Service> StartAsync(KarpetrackOptions options, CancellationToken ct, Serilog.ILogger? logger = null)
    {
        logger ??= CreateLogger(options);
        // The empty builder: Kestrel and our handlers only. The slim one also brings appsettings files
        // watched for changes, a console logger and routing, none of which this service uses.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore();
        // Serilog.Extensions.Hosting: the host's and Kestrel's loggers write through the same Serilog logger as ours.
        builder.Services.AddSerilog(logger, dispose: false);
        var metricsAddr = KarpetrackOptions.ParseListenAddress(options.MetricsAddr, "--metrics-addr");
        var grpcAddr = KarpetrackOptions.ParseListenAddress(options.GrpcAddr, "--grpc-addr");
        var certificate = options.TlsCert is { } certFile ? LoadCertificate(certFile, options.TlsKey!) : null;
        ListenOptions? metricsListener = null, grpcListener = null;
        builder.WebHost.ConfigureKestrel(k =>
        {
            // Each connection may carry this many streams; --grpc-max-calls bounds calls over all connections.
            k.Limits.Http2.MaxStreamsPerConnection = 256;
            // /metrics stays HTTP/1.1: Prometheus cannot speak h2c. A cleartext gRPC port must be Http2 only,
            // or Kestrel silently serves HTTP/1.1 there.
            metricsListener = Listen(k, metricsAddr, "--metrics-addr", HttpProtocols.Http1, certificate);
            grpcListener = Listen(k, grpcAddr, "--grpc-addr", HttpProtocols.Http2, certificate);
        });
        var loggerFactory = new SerilogLoggerFactory(logger, dispose: false);

        DemoCluster? demo = null;
        FeedServer? demoFeed = null;
        var kubeconfig = options.Kubeconfig;
        var feedOptions = options.PriceFeed;
        if (options.Demo)
        {
            demo = await DemoCluster.StartAsync(new DemoClusterOptions { Seed = options.DemoSeed, ChurnInterval = options.DemoChurnInterval },
                loggerFactory.CreateLogger("demo"), ct);
            kubeconfig = demo.KubeconfigPath;
            // The demo market starts at the oldest real snapshot and moves a week per interval.
            demoFeed = await FeedServer.StartAsync(ct: ct);
            feedOptions = feedOptions with
            {
                Endpoint = demoFeed.Endpoint.ToString(), Bucket = FeedServer.Bucket, Key = FeedServer.Key, Region = "us-east-1",
                Refresh = TimeSpan.FromTicks(Math.Min(feedOptions.Refresh.Ticks, TimeSpan.FromSeconds(10).Ticks)),
            };
        }
        var telemetry = Telemetry.ForService();
        var prices = new PriceFeed(feedOptions, loggerFactory.CreateLogger("pricing"), telemetry: telemetry);
        var spot = await SpotWiring.StartAsync(options, prices, loggerFactory, telemetry, ct, demo);

        var connection = KubeConnection.Resolve(kubeconfig, options.Demo ? null : options.Context, KubeEnvironment.Process);
        var kube = new KubeClient(connection);
        await kube.CheckCredentialsAsync(ct);
        var resources = new ResourceTable(options.Resources);
        var model = new ClusterModel(resources);
        var nodeStatus = new ReflectorStatus("nodes", telemetry);
        var podStatus = new ReflectorStatus("pods", telemetry);
        var reflectorOptions = new ReflectorOptions { PageSize = options.ListPageSize };
        var nodeReflector = new Reflector<NodeRecord>(kube, "/api/v1/nodes", options.NodeSelector, null,
            new NodeDecoder(resources), model.NodeTarget, nodeStatus, reflectorOptions, loggerFactory.CreateLogger("nodes"));
        var podReflector = new Reflector<PodRecord>(kube, "/api/v1/pods", null, "status.phase!=Succeeded,status.phase!=Failed",
            new PodDecoder(resources), model.PodTarget, podStatus, reflectorOptions, loggerFactory.CreateLogger("pods"));
        var pdbStatus = new ReflectorStatus("poddisruptionbudgets", telemetry);
        var dsStatus = new ReflectorStatus("daemonsets", telemetry);
        var pdbReflector = new Reflector<PdbRecord>(kube, "/apis/policy/v1/poddisruptionbudgets", null, null,
            new PdbDecoder(), model.Pdbs, pdbStatus, reflectorOptions, loggerFactory.CreateLogger("pdbs"));
        var dsReflector = new Reflector<DaemonSetRecord>(kube, "/apis/apps/v1/daemonsets", null, null,
            new DaemonSetDecoder(resources), model.DaemonSets, dsStatus, reflectorOptions, loggerFactory.CreateLogger("daemonsets"));
        ReflectorStatus[] statuses = [nodeStatus, podStatus, pdbStatus, dsStatus];
        RecommenderOptions RecommenderOptionsNow() => new()
        {
            // The cloudspace's region when the Spot API told us, else the region of the existing nodes.
            Region = spot?.Pricing?.Region,
            Categories = options.Categories,
            MaxPricePerHour = options.MaxPrice,
            GpuPerClass = options.GpusPerClass,
            ReplaceThresholdPercent = options.ReplaceThresholdPercent,
            ReplaceThresholdDollars = options.ReplaceThresholdDollars,
        };
        var grpc = new GrpcCalls(new GrpcServerOptions { MaxConcurrentCalls = options.GrpcMaxCalls, ReadTimeout = options.GrpcReadTimeout }, telemetry);
        var (actuator, elector) = Actuation(options, new ActuationInputs(model, prices, statuses, RecommenderOptionsNow), kube, spot, loggerFactory, telemetry);
        bool acting = actuator.Mode is ActuationMode.Approve or ActuationMode.Auto;
        var recommender = new RecommenderLoop(model, prices, statuses, RecommenderOptionsNow, options.RecommendInterval, loggerFactory.CreateLogger("recommender"),
            inFlight: acting ? actuator.InFlight : null, telemetry: telemetry);
        // The actuator hears of a new plan before any API reader converts it, so its state is in the messages.
        recommender.PlanChanged += actuator.OnPlan;
        var api = new KarpetrackApi(model, prices, recommender, statuses, RecommenderOptionsNow,
            actuationState: options.Actuation == ActuationMode.Off ? null : actuator.StateOf,
            approvals: options.Actuation == ActuationMode.Approve ? new Approvals(actuator, options.ActuationSettings.ApproveTokenFile!) : null)
        {
            LabelGroups = options.LabelGroups, ActuationMode = Actuator.ModeLabel(options.Actuation),
        };
        grpc.AddServices(builder.Services, api);
        var collector = new Collector(model, options.LabelGroups, prices, recommender, telemetry);

        var app = builder.Build();
        var service = new Service(app, kube, demo, model, statuses)
        {
            Prices = prices, demoFeed = demoFeed, Spot = spot, Recommender = recommender, Grpc = grpc, Api = api,
            Supervisor = new Supervisor(loggerFactory.CreateLogger("supervisor"), telemetry: telemetry), Telemetry = telemetry,
        };
        // Kestrel waits for open requests when it stops: end the streams first, with a status.
        app.Lifetime.ApplicationStopping.Register(grpc.BeginShutdown);
        int grpcPort = -1;
        grpc.Map(app, connection => connection.LocalPort == grpcPort);
        MapEndpoints(app, service, collector, new JsonApi(api, app.Lifetime.ApplicationStopping), WebView.Load());
        try
        {
            await app.StartAsync(ct);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException)
        {
            await service.DisposeAsync();
            throw new StartupException($"cannot listen on {options.MetricsAddr} (metrics) or {options.GrpcAddr} (gRPC): {e.Message}");
        }
        grpcPort = grpcListener!.IPEndPoint?.Port ?? grpcAddr.Port;
        service.MetricsUrl = UrlOf(metricsListener!, metricsAddr, certificate is not null);
        service.GrpcUrl = UrlOf(grpcListener, grpcAddr, certificate is not null);
        logger.Information("karpetrack {Version} serving metrics on {Url}, gRPC on {Grpc}, Kubernetes API {Server} ({Source})",
            BuildInfo.Version, service.MetricsUrl, service.GrpcUrl, connection.Server, connection.Source);

        // Every loop runs supervised: one that throws is logged, counted and restarted, never gone for good.
        var supervisor = service.Supervisor;
        var token = service.stopping.Token;
        service.background.Add(supervisor.Run("nodes", nodeReflector.RunAsync, token));
        service.background.Add(supervisor.Run("pods", podReflector.RunAsync, token));
        service.background.Add(supervisor.Run("poddisruptionbudgets", pdbReflector.RunAsync, token));
        service.background.Add(supervisor.Run("daemonsets", dsReflector.RunAsync, token));
        service.background.Add(supervisor.Run("recommender", recommender.RunAsync, token));
        service.background.Add(supervisor.Run("grpc_health", ct => grpc.ServeHealthAsync(() => api.Synced, ct), token));
        service.background.Add(supervisor.Run("price_feed", prices.RunAsync, token));
        if (spot?.Pricing is { } spotPricing) service.background.Add(supervisor.Run("spot_facts", spotPricing.RunAsync, token));
        if (elector is not null) service.background.Add(supervisor.Run("leader_election", elector.RunAsync, token));
        service.background.Add(supervisor.Run("actuator", actuator.RunAsync, token));
        if (demoFeed is not null)
            service.background.Add(supervisor.Run("demo_market", ct => AdvanceDemoMarket(demoFeed, spot?.DemoServer, options.DemoPriceInterval, logger, ct), token));
        return service;
    }

    /// <summary>What the actuator reads: the cluster model, the price book, the caches' sync state and the recommender's thresholds.</summary>
    private sealed record ActuationInputs(ClusterModel Model, PriceFeed Prices, ReflectorStatus[] Caches, Func<RecommenderOptions> Thresholds);

    /// <summary>The actuator, and the leader elector that gates it (with --leader-elect only).</summary>
    private static (Actuator, LeaderElector?) Actuation(KarpetrackOptions options, ActuationInputs inputs, KubeClient kube, SpotWiring? spot,
        ILoggerFactory loggers, Telemetry telemetry)
    {
        var settings = options.ActuationSettings;
        bool acting = settings.Mode is ActuationMode.Approve or ActuationMode.Auto;
        if (acting && spot is null)
            throw new OptionsException($"--actuation {Actuator.ModeLabel(settings.Mode)} acts through the Spot API: set {SpotWiring.RefreshTokenVariable} (and --spot-org)");
        if (acting && spot!.Cloudspace is null)
            throw new OptionsException($"--actuation {Actuator.ModeLabel(settings.Mode)} needs --cloudspace: new pools join it");
        LeaderElector? elector = null;
        if (options.LeaderElect)
        {
            // The pod name identifies the holder (the chart sets it); a suffix keeps two processes on one host apart.
            var identity = (Environment.GetEnvironmentVariable("POD_NAME") ?? Environment.MachineName) + "_" + Guid.NewGuid().ToString("N")[..8];
            elector = new LeaderElector(kube, LeaderElector.DefaultNamespace(), "karpetrack", identity, new LeaderElectionOptions(), loggers.CreateLogger("leader"));
        }
        var actuator = new Actuator(settings with { Cloudspace = spot?.Cloudspace ?? "" }, inputs.Model, inputs.Prices, inputs.Caches, loggers.CreateLogger("actuation"),
            acting ? kube : null, acting ? spot!.Client : null,
            isLeader: elector is null ? null : () => elector.IsLeader, thresholds: inputs.Thresholds, telemetry: telemetry);
        return (actuator, elector);
    }

    private static ListenOptions Listen(KestrelServerOptions k, (string Host, int Port) addr, string flag, HttpProtocols protocols, X509Certificate2? certificate)
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
    private static Uri UrlOf(ListenOptions listener, (string Host, int Port) addr, bool tls)
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

    private static X509Certificate2 LoadCertificate(string certFile, string keyFile)
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

    /// <summary>
    /// The HTTP endpoints, dispatched by path in one request delegate. Minimal-API endpoints would
    /// compile each handler through expression trees at start and keep routing and
    /// System.Linq.Expressions loaded: megabytes of resident memory for five fixed paths.
    /// </summary>
    private static void MapEndpoints(WebApplication app, Service service, Collector collector, JsonApi json, WebView web)
    {
        app.Run(ctx =>
        {
            var path = ctx.Request.Path.Value ?? "";
            if (JsonApi.Handles(path)) return json.HandleAsync(ctx);
            bool page = web.Handles(path);
            if (!page && path is not ("/metrics" or "/healthz" or "/readyz" or "/sync"))
                return Text(ctx, StatusCodes.Status404NotFound, "text/plain; charset=utf-8", "not found\n");
            if (!HttpMethods.IsGet(ctx.Request.Method))
            {
                ctx.Response.Headers.Allow = "GET";
                return Text(ctx, StatusCodes.Status405MethodNotAllowed, "text/plain; charset=utf-8", "only GET is served here\n");
            }
            return path switch
            {
                _ when page => web.ServeAsync(ctx),
                "/metrics" => Metrics(ctx, collector),
                "/healthz" => Text(ctx, StatusCodes.Status200OK, "text/plain; charset=utf-8", "ok\n"),
                "/readyz" => Ready(ctx, service),
                _ => Text(ctx, StatusCodes.Status200OK, "application/json", Sync(service)),
            };
        });
    }

    private static Task Text(HttpContext ctx, int status, string contentType, string body)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = contentType;
        return ctx.Response.WriteAsync(body, ctx.RequestAborted);
    }

    private static async Task Metrics(HttpContext ctx, Collector collector)
    {
        ctx.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        var accept = ctx.Request.Headers.AcceptEncoding.ToString();
        if (accept.Contains("gzip", StringComparison.OrdinalIgnoreCase))
        {
            ctx.Response.Headers.ContentEncoding = "gzip";
            // Buffer between the compressor and the socket: every write to the response stream is a flush.
            // 64 KB stays below the large object heap: a bigger buffer per scrape piled up there until a
            // full collection (25 MB after 100 gzip scrapes).
            await using var buffered = new BufferedStream(ctx.Response.Body, 64 * 1024);
            await using (var gzip = new GZipStream(buffered, CompressionLevel.Fastest, leaveOpen: true))
                await collector.WriteAsync(gzip, ctx.RequestAborted);
            await buffered.FlushAsync(ctx.RequestAborted);
        }
        else
        {
            await collector.WriteAsync(ctx.Response, ctx.RequestAborted);
        }
    }

    private static Task Ready(HttpContext ctx, Service service)
    {
        var notSynced = service.Reflectors.Where(r => !r.Synced).Select(r => r.Resource).ToArray();
        var failing = service.Supervisor.Health().Where(l => l.Failing).ToArray();
        if (notSynced.Length == 0 && failing.Length == 0) return Text(ctx, StatusCodes.Status200OK, "text/plain; charset=utf-8", "ok\n");
        var body = new StringBuilder();
        if (notSynced.Length > 0) body.Append($"waiting for the initial list of: {string.Join(", ", notSynced)}\n");
        foreach (var l in failing) body.Append($"background loop {l.Loop} is failing ({l.Restarts} restarts): {l.LastError}\n");
        return Text(ctx, StatusCodes.Status503ServiceUnavailable, "text/plain; charset=utf-8", body.ToString());
    }

    private static string Sync(Service service)
    {
        var now = DateTimeOffset.UtcNow;
        // JsonNode rather than the reflection-based serializer, which the NativeAOT binary lacks.
        var body = new JsonObject();
        foreach (var r in service.Reflectors)
        {
            var restarts = new JsonObject();
            foreach (var (reason, count) in r.Restarts) restarts[reason] = count;
            body[r.Resource] = new JsonObject
            {
                ["synced"] = r.Synced,
                ["last_event"] = r.LastEventAt?.ToString("O"),
                ["last_event_age_seconds"] = r.LastEventAt is { } t ? Math.Round((now - t).TotalSeconds, 3) : null,
                ["resource_version"] = r.ResourceVersion,
                ["events"] = r.Events,
                ["restarts"] = restarts,
                ["decode_errors"] = r.DecodeErrors,
            };
        }
        var loops = new JsonObject();
        foreach (var l in service.Supervisor.Health())
            loops[l.Loop] = new JsonObject { ["restarts"] = l.Restarts, ["failing"] = l.Failing, ["last_error"] = l.LastError };
        body["loops"] = loops;
        // Memory facts for diagnosing a large RSS without attaching tools.
        var gc = GC.GetGCMemoryInfo();
        var generations = new JsonArray();
        foreach (var g in gc.GenerationInfo) generations.Add((JsonNode)g.SizeAfterBytes);
        body["runtime"] = new JsonObject
        {
            ["working_set_bytes"] = Environment.WorkingSet,
            ["gc_heap_bytes"] = gc.HeapSizeBytes,
            ["gc_committed_bytes"] = gc.TotalCommittedBytes,
            ["gc_fragmented_bytes"] = gc.FragmentedBytes,
            ["gc_collections"] = new JsonArray(GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2)),
            ["gc_generation_bytes"] = generations,
            ["pods"] = service.Model.PodCount,
        };
        return body.ToJsonString(SyncJson.Options);
    }

    public async ValueTask DisposeAsync()
    {
        if (Grpc is not null) await Grpc.DrainAsync(TimeSpan.FromSeconds(5));
        await stopping.CancelAsync();
        try { await Task.WhenAll(background).WaitAsync(TimeSpan.FromSeconds(10)); }
        catch (Exception e) when (e is OperationCanceledException or TimeoutException) { }
        await app.StopAsync();
        await app.DisposeAsync();
        kube.Dispose();
        if (demo is not null) await demo.DisposeAsync();
        if (demoFeed is not null) await demoFeed.DisposeAsync();
        Prices?.Dispose();
        if (Spot is not null) await Spot.DisposeAsync();
        stopping.Dispose();
    }

    /// <summary>The demo market: the feed moves a week per interval, and the fake Spot API's market with it (pools bidding below it are pre-empted).</summary>
    private static async Task AdvanceDemoMarket(FeedServer feed, SpotApiServer? spotApi, TimeSpan interval, Serilog.ILogger logger, CancellationToken ct)
    {
        if (interval <= TimeSpan.Zero) return;
        var snapshots = FeedServer.EmbeddedSnapshots();
        try
        {
            while (true)
            {
                await Task.Delay(interval, ct);
                var name = feed.Advance();
                logger.Information("demo market moved to {Snapshot}", name);
                var body = snapshots.FirstOrDefault(x => x.Name == name).Body;
                if (spotApi is null || body is null) continue;
                var book = PriceFeedParser.Parse(body, DateTimeOffset.UtcNow, name);
                foreach (var (cls, pc) in book.Classes) spotApi.SetMarketPrice(cls, pc.Prices.Market);
            }
        }
        catch (OperationCanceledException) { }
    }



    private static class SyncJson
    {
        public static readonly JsonSerializerOptions Options = new() { WriteIndented = true };
    }
}

/// <summary>
/// The Spot API part of the composition root: a client only when a refresh token is given (or in
/// --demo, against the embedded fake Spot API), and the loop merging server-class facts into prices.
/// </summary>
public sealed class SpotWiring : IAsyncDisposable
{
    public const string RefreshTokenVariable = "RACKSPACE_SPOT_REFRESH_TOKEN";

    private SpotWiring(SpotApiClient client, SpotPricing pricing, SpotApiServer? demoServer, string? cloudspace)
    {
        Cloudspace = cloudspace;
        Client = client;
        Pricing = pricing;
        DemoServer = demoServer;
    }

    public SpotApiClient Client { get; }
    public SpotPricing Pricing { get; }
    public SpotApiServer? DemoServer { get; }
    /// <summary>The cloudspace priced for and acted in (--cloudspace; "demo" in --demo).</summary>
    public string? Cloudspace { get; }

    public static async Task<SpotWiring?> StartAsync(KarpetrackOptions options, PriceFeed prices, ILoggerFactory loggers, Telemetry telemetry, CancellationToken ct,
        DemoCluster? demo = null)
    {
        var refreshToken = Environment.GetEnvironmentVariable(RefreshTokenVariable);
        var apiOptions = options.SpotApi with { ApiUrl = options.SpotApiUrl, AuthUrl = options.SpotAuthUrl, Org = options.SpotOrg };
        var cloudspace = options.Cloudspace;
        SpotApiServer? demoServer = null;
        if (options.Demo)
        {
            // The demo's nodes live in us-east-iad-1: so does the fake API's "demo" cloudspace.
            // Its pools' nodes join the demo cluster (and leave it), its market starts where the demo feed does,
            // and it knows the pools of the demo's Karpetrack-managed nodes.
            demoServer = await SpotApiServer.StartAsync(new SpotApiServerOptions
            {
                Snapshot = FeedServer.EmbeddedSnapshots()[0].Body,
                NodeJoined = demo is null ? null : n => demo.JoinNode(n.NodeName, n.ServerClass, n.Labels, n.Taints),
                NodeLeft = demo is null ? null : name => demo.RemoveNode(name),
            }, ct);
            foreach (var m in demo?.ManagedNodes ?? []) demoServer.AdoptPool(m.Pool, m.ServerClass, 0.27m, m.CustomLabels, [m.Node]);
            apiOptions = apiOptions with { ApiUrl = demoServer.BaseAddress, AuthUrl = demoServer.BaseAddress, Org = demoServer.OrgNamespace };
            refreshToken = SpotApiServer.DemoRefreshToken;
            cloudspace = "demo";
        }
        if (string.IsNullOrWhiteSpace(refreshToken)) return null;
        var client = new SpotApiClient(apiOptions, refreshToken, loggers.CreateLogger("spot-api"), telemetry: telemetry);
        var pricing = new SpotPricing(client, prices, loggers.CreateLogger("spot-pricing"), cloudspace);
        return new SpotWiring(client, pricing, demoServer, cloudspace);
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        if (DemoServer is not null) await DemoServer.DisposeAsync();
    }
}
