using System.Runtime.InteropServices;
using Karpetrack;
using Karpetrack.Simulation;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Serilog;
using Serilog.Extensions.Logging;

// Before the host starts its threads: at most two malloc arenas, not eight per core (see NativeHeap),
// unless MALLOC_ARENA_MAX says otherwise.
if (Environment.GetEnvironmentVariable("MALLOC_ARENA_MAX") is null) NativeHeap.LimitArenas(2);
return await Service.MainAsync(args);

/// <summary>The composition root: options, construction, start and stop. The HTTP endpoints are in Api/HttpEndpoints.cs, the demo wiring in Simulation/DemoWiring.cs.</summary>
public sealed class Service : IAsyncDisposable
{
    private readonly WebApplication app;
    private readonly CancellationTokenSource stopping = new();
    private readonly List<Task> background = [];
    private readonly DemoWiring? demo;
    private readonly KubeClient kube;

    private Service(WebApplication app, KubeClient kube, DemoWiring? demo, ClusterModel model, ReflectorStatus[] reflectors)
    {
        this.app = app;
        this.kube = kube;
        this.demo = demo;
        Model = model;
        Reflectors = reflectors;
    }

    public ClusterModel Model { get; }
    public PriceFeed? Prices { get; private init; }
    public ReflectorStatus[] Reflectors { get; }
    /// <summary>The Spot API client and its server-class loop; null without RACKSPACE_SPOT_REFRESH_TOKEN (and not --demo).</summary>
    public SpotWiring? Spot { get; private init; }
    public RecommenderLoop? Recommender { get; private init; }
    public Uri MetricsUrl { get; private set; } = new("http://127.0.0.1/");
    /// <summary>Where the gRPC API listens (HTTP/2 only).</summary>
    public Uri GrpcUrl { get; private set; } = new("http://127.0.0.1/");
    public GrpcCalls? Grpc { get; private init; }
    public KarpetrackApi? Api { get; private init; }
    public string? DemoKubeconfig => demo?.Cluster.KubeconfigPath;
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

    /// <summary>Starts everything and returns once the HTTP listener is bound (reflectors keep syncing).</summary>
    public static async Task<Service> StartAsync(KarpetrackOptions options, CancellationToken ct, Serilog.ILogger? logger = null)
    {
        logger ??= Logging.Create(options);
        // The empty builder: Kestrel and our handlers only. The slim one also brings appsettings files
        // watched for changes, a console logger and routing, none of which this service uses.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore();
        // Serilog.Extensions.Hosting: the host's and Kestrel's loggers write through the same Serilog logger as ours.
        builder.Services.AddSerilog(logger, dispose: false);
        var metricsAddr = KarpetrackOptions.ParseListenAddress(options.MetricsAddr, "--metrics-addr");
        var grpcAddr = KarpetrackOptions.ParseListenAddress(options.GrpcAddr, "--grpc-addr");
        var certificate = options.TlsCert is { } certFile ? Listeners.LoadCertificate(certFile, options.TlsKey!) : null;
        ListenOptions? metricsListener = null, grpcListener = null;
        builder.WebHost.ConfigureKestrel(k =>
        {
            // Each connection may carry this many streams; --grpc-max-calls bounds calls over all connections.
            k.Limits.Http2.MaxStreamsPerConnection = 256;
            // /metrics stays HTTP/1.1: Prometheus cannot speak h2c. A cleartext gRPC port must be Http2 only,
            // or Kestrel silently serves HTTP/1.1 there.
            metricsListener = Listeners.Listen(k, metricsAddr, "--metrics-addr", HttpProtocols.Http1, certificate);
            grpcListener = Listeners.Listen(k, grpcAddr, "--grpc-addr", HttpProtocols.Http2, certificate);
        });
        var loggerFactory = new SerilogLoggerFactory(logger, dispose: false);

        var demo = options.Demo ? await DemoWiring.StartAsync(options, loggerFactory, ct) : null;
        var kubeconfig = demo?.Cluster.KubeconfigPath ?? options.Kubeconfig;
        var feedOptions = demo?.FeedOptions(options.PriceFeed) ?? options.PriceFeed;
        var telemetry = Telemetry.ForService();
        var prices = new PriceFeed(feedOptions, loggerFactory.CreateLogger("pricing"), telemetry: telemetry);
        var spot = SpotWiring.Create(options, prices, loggerFactory, telemetry, demo);

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
            Pools = options.Pools,
        };
        var grpc = new GrpcCalls(new GrpcServerOptions { MaxConcurrentCalls = options.GrpcMaxCalls, ReadTimeout = options.GrpcReadTimeout }, telemetry);
        var (actuator, elector) = ActuationWiring.Create(options, new ActuationWiring.ActuationInputs(model, prices, statuses, RecommenderOptionsNow), kube, spot, loggerFactory, telemetry);
        bool acting = actuator.Mode is ActuationMode.Approve or ActuationMode.Auto;
        var recommender = new RecommenderLoop(new(model, prices, statuses) { InFlight = acting ? actuator.InFlight : null },
            new(RecommenderOptionsNow, options.RecommendInterval), loggerFactory.CreateLogger("recommender"), telemetry: telemetry);
        // The actuator hears of a new plan before any API reader converts it, so its state is in the messages.
        recommender.PlanChanged += actuator.OnPlan;
        var api = new KarpetrackApi(model, prices, recommender, statuses, RecommenderOptionsNow,
            actuationState: options.Actuation == ActuationMode.Off ? null : actuator.StateOf,
            approvals: options.Actuation == ActuationMode.Approve ? new Approvals(actuator, options.ActuationSettings.ApproveTokenFile!) : null)
        {
            LabelGroups = options.LabelGroups, ActuationMode = Actuator.ModeLabel(options.Actuation), Actuator = options.Actuation == ActuationMode.Off ? null : actuator,
        };
        grpc.AddServices(builder.Services, api);
        var collector = new Collector(model, options.LabelGroups, prices, recommender, telemetry);

        var app = builder.Build();
        var service = new Service(app, kube, demo, model, statuses)
        {
            Prices = prices, Spot = spot, Recommender = recommender, Grpc = grpc, Api = api,
            Supervisor = new Supervisor(loggerFactory.CreateLogger("supervisor"), telemetry: telemetry), Telemetry = telemetry,
        };
        // Kestrel waits for open requests when it stops: end the streams first, with a status.
        app.Lifetime.ApplicationStopping.Register(grpc.BeginShutdown);
        int grpcPort = -1;
        grpc.Map(app, connection => connection.LocalPort == grpcPort);
        new HttpEndpoints(collector, new JsonApi(api, app.Lifetime.ApplicationStopping), WebView.Load(), statuses, service.Supervisor, model).Map(app);
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
        service.MetricsUrl = Listeners.UrlOf(metricsListener!, metricsAddr, certificate is not null);
        service.GrpcUrl = Listeners.UrlOf(grpcListener, grpcAddr, certificate is not null);
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
        if (demo is not null)
            service.background.Add(supervisor.Run("demo_market", ct => demo.AdvanceMarketAsync(options.DemoPriceInterval, logger, ct), token));
        return service;
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
        Prices?.Dispose();
        Spot?.Dispose();
        stopping.Dispose();
    }





}

