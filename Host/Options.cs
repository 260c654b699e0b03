using System.Globalization;
using System.Text;

namespace Karpetrack;

/// <summary>A bad flag, environment variable or value: printed as one line, exit code 2.</summary>
public sealed class OptionsException(string message) : Exception(message);

/// <summary>A start that failed for a reason outside the flags and the kubeconfig, e.g. a port already in use.</summary>
public sealed class StartupException(string message) : Exception(message);

/// <summary>One command-line flag and its `KARPETRACK_*` environment twin.</summary>
public sealed record Flag(string Name, string Default, string Help, bool IsSwitch = false, bool Repeatable = false, string? DemoDefault = null)
{
    public string EnvVar => "KARPETRACK_" + Name.ToUpperInvariant().Replace('-', '_');
}

/// <summary>Everything the service is configured with; parsed once at start.</summary>
public sealed record KarpetrackOptions
{
    public string? Kubeconfig { get; init; }
    public string? Context { get; init; }
    public bool Demo { get; init; }
    public string MetricsAddr { get; init; } = ":9101";
    public string GrpcAddr { get; init; } = ":9102";
    public int GrpcMaxCalls { get; init; } = 1000;
    public TimeSpan GrpcReadTimeout { get; init; } = TimeSpan.FromSeconds(30);
    public string? TlsCert { get; init; }
    public string? TlsKey { get; init; }
    public IReadOnlyList<string> Resources { get; init; } = ["cpu", "memory"];
    public string? NodeSelector { get; init; }
    public IReadOnlyList<IReadOnlyList<string>> LabelGroups { get; init; } = [];
    public string LogLevel { get; init; } = "info";
    public string LogFormat { get; init; } = "json";
    public int ListPageSize { get; init; } = 500;
    public int DemoSeed { get; init; } = 42;
    public TimeSpan DemoChurnInterval { get; init; } = TimeSpan.FromSeconds(5);
    public TimeSpan DemoPriceInterval { get; init; } = TimeSpan.FromSeconds(30);
    public PriceFeedOptions PriceFeed { get; init; } = new();
    public string? SpotOrg { get; init; }
    public string? Cloudspace { get; init; }
    public Uri SpotApiUrl { get; init; } = new("https://spot.rackspace.com");
    public Uri SpotAuthUrl { get; init; } = new("https://login.spot.rackspace.com");
    /// <summary>Rate limit, retries, timeout and circuit breaker of the Spot API client (the URLs and org are filled in at start).</summary>
    public SpotApiOptions SpotApi { get; init; } = new();
    public TimeSpan RecommendInterval { get; init; } = TimeSpan.FromSeconds(30);
    public decimal ReplaceThresholdPercent { get; init; } = 20;
    public decimal ReplaceThresholdDollars { get; init; } = 0.005m;
    public IReadOnlyList<string> Categories { get; init; } = [];
    public decimal? MaxPrice { get; init; }
    /// <summary>GPUs per node of each GPU server class (the price feed does not say); unlisted GPU classes count one.</summary>
    public IReadOnlyDictionary<string, int> GpusPerClass { get; init; } = new Dictionary<string, int>();
    public ActuationMode Actuation { get; init; } = ActuationMode.Off;
    /// <summary>Everything the actuator is told (its Mode is <see cref="Actuation"/>; the cloudspace is filled in at start).</summary>
    public ActuationOptions ActuationSettings { get; init; } = new();
    public bool LeaderElect { get; init; }
    /// <summary>Limits, stabilisation, expiry, labels and taints of Karpetrack-managed pools (Actuation/PoolPolicy.cs).</summary>
    public PoolPolicy Pools { get; init; } = PoolPolicy.None;
    public bool ShowHelp { get; init; }
    public bool ShowVersion { get; init; }

    /// <summary>The flag table: the single source for parsing, --help and the README's table.</summary>
    public static readonly Flag[] Flags =
    [
        new("kubeconfig", "", "Path to a kubeconfig file (else $KUBECONFIG, ~/.kube/config, then in-cluster)."),
        new("context", "", "Kubeconfig context to use instead of current-context."),
        new("demo", "false", "Run against the embedded demo cluster (simulated Spot nodes and workload).", IsSwitch: true),
        new("metrics-addr", ":9101", "host:port for /metrics and the other HTTP endpoints (HTTP/1.1)."),
        new("grpc-addr", ":9102", "host:port of the gRPC API (HTTP/2 only: h2c, or h2 with --tls-cert)."),
        new("grpc-max-calls", "1000", "gRPC calls in progress at once (streams included); more are refused with RESOURCE_EXHAUSTED."),
        new("grpc-read-timeout", "30s", "How long a gRPC request message may take to arrive whole, from its first byte (unary and server-streaming calls: the whole request); a stalled or trickling sender's call ends with DEADLINE_EXCEEDED."),
        new("tls-cert", "", "PEM certificate file: serve both listeners over TLS (needs --tls-key)."),
        new("tls-key", "", "PEM private key file of --tls-cert."),
        new("resources", "cpu,memory", "Comma-separated resource names to export (e.g. cpu,memory,nvidia.com/gpu,ephemeral-storage,pods)."),
        new("node-selector", "", "Label selector limiting the nodes watched, as kubectl -l takes it (e.g. servers.ngpc.rxt.io/type=spot)."),
        new("label-group", "", "Comma-separated node label keys forming one group for the group_* metrics; repeatable.", Repeatable: true),
        new("log-level", "info", "Minimum log level: trace, debug, info, warn, error."),
        new("log-format", "json", "Log format: json or text."),
        new("list-page-size", "500", "Objects per LIST page (limit/continue)."),
        new("demo-seed", "42", "Seed of the demo cluster's workload (same seed, same changes)."),
        new("demo-churn-interval", "5s", "How often the demo workload changes something."),
        new("demo-price-interval", "30s", "How often the demo price feed moves to its next real snapshot."),
        new("price-feed-bucket", "ngpc-prod-public-data", "S3 bucket of the public Spot price feed."),
        new("price-feed-key", "percentiles.json", "Object key of the price feed."),
        new("price-feed-region", "us-east-2", "Region of the price feed bucket."),
        new("price-feed-endpoint", "", "Any S3-compatible endpoint URL (path-style) instead of AWS, e.g. http://127.0.0.1:9000."),
        new("price-refresh", "5m", "How often the price feed is read (conditional GET)."),
        new("spot-org", "", "Spot organization id as the console shows it (org_…) or its namespace (org-…); with RACKSPACE_SPOT_REFRESH_TOKEN enables the Spot API."),
        new("cloudspace", "", "Cloudspace name: its region limits what is priced and recommended."),
        new("spot-api-url", "https://spot.rackspace.com", "Spot API base URL: https (plain http only on loopback, since the tokens travel with every request)."),
        new("spot-auth-url", "https://login.spot.rackspace.com", "Spot login (OAuth) base URL: https (plain http only on loopback, since the refresh token is sent there)."),
        new("spot-api-rate", "5", "Spot API requests per second at most (token bucket)."),
        new("spot-api-burst", "10", "Spot API requests allowed in a burst above the rate."),
        new("spot-api-timeout", "30s", "Timeout of one Spot API request."),
        new("spot-api-attempts", "4", "Attempts per Spot API request on 5xx, 429 and timeouts (with backoff and jitter, honouring Retry-After)."),
        new("spot-api-breaker-threshold", "5", "Consecutive 5xx/429 answers that open the Spot API circuit breaker."),
        new("spot-api-breaker-cooldown", "30s", "How long the open circuit holds requests back before one is let through (half-open)."),
        new("recommend-interval", "30s", "How often the recommender computes a new plan (also after a burst of pending pods settles); 0 turns it off."),
        new("replace-threshold-percent", "20", "A replacement is recommended only when it saves at least this share of the node's price."),
        new("replace-threshold-dollars", "0.005", "…and at least this many dollars per hour. Pure removals only need a positive saving."),
        new("categories", "", "Server-class categories new nodes may have: comma-separated gp, ch, mh, gpu (default: all but bare metal)."),
        new("max-price", "", "Highest hourly price of a class the recommender may buy."),
        new("gpus-per-class", "", "GPUs per node of GPU server classes, e.g. gpu.vs2.xlargeplusplus-sjc=2 (comma-separated class=count; the price feed does not say; unlisted GPU classes count one)."),
        new("actuation", "off", "off; dry-run (log and count every action, change nothing); approve (act on recommendations approved over gRPC); auto (act on every recommendation that passes the safety checks). Acting needs Spot API credentials."),
        new("approve-token-file", "", "File holding the bearer token that ApproveRecommendation calls must present (needed with --actuation approve); read at each call."),
        new("leader-elect", "false", "Only the holder of a coordination.k8s.io Lease (in $POD_NAMESPACE, else default) acts; every replica serves metrics and gRPC.", IsSwitch: true),
        new("max-disrupted-nodes", "1", "Nodes being cordoned, drained or removed at the same time, at most."),
        new("max-disrupted-percent-per-hour", "10", "Share of the cluster's nodes disrupted per hour, at most (at least one node); 50 in --demo, whose market moves a week per 30s.", DemoDefault: "50"),
        new("scale-up-cooldown", "2m", "No node is disrupted this soon after a scale-up, nor a node younger than this; 30s in --demo.", DemoDefault: "30s"),
        new("provisioning-timeout", "60m", "A new pool whose node is not Ready by then is deleted and the failure reported (Spot nodes take 8-45 min)."),
        new("drain-timeout", "15m", "A drain not finished by then is rolled back (the node uncordoned) and reported."),
        new("max-grace-period", "5m", "Cap on a pod's terminationGracePeriodSeconds when it is evicted; at least 1s (0 would force-delete pods and is refused)."),
        new("max-plan-age", "10m", "A plan older than this is not acted on."),
        new("maintenance-window", "", "Daily UTC window in which disruptive actions may start, e.g. 01:00-05:00 (default: any time)."),
        new("bid-percentile", "p50", "Feed percentile a bid must reach: p20, p50, p80 or market (bid = max(market, minimum bid, percentile) x margin, on the ladder, at most --max-price)."),
        new("bid-margin", "1.05", "Factor applied to the bid target."),
        new("max-managed-cpu", "", "Total cpu (cores) that Karpetrack-managed pools may hold, pools still being provisioned included; no pool is recommended or created beyond it, and the plan says why (default: no limit)."),
        new("max-managed-memory", "", "Total memory that Karpetrack-managed pools may hold, as a quantity (e.g. 512Gi); as --max-managed-cpu (default: no limit)."),
        new("consolidate-after", "0", "A node must be removable continuously for this long before a consolidation or replacement of it is acted on; until then the recommendation says 'waiting for consolidate-after' (the seed used 30m)."),
        new("consolidate-after-empty", "0", "The same for an empty node (delete-empty; the seed used 5m)."),
        new("expire-after", "", "Managed nodes older than this are replaced (recommendation reason 'expired'); default: never."),
        new("pool-labels", "", "Custom labels of new pools, comma-separated key=value (their nodes carry them; karpetrack.io/ keys are Karpetrack's own)."),
        new("pool-taints", "", "Custom taints of new pools, comma-separated key=value:Effect or key:Effect (NoSchedule, PreferNoSchedule, NoExecute); only pods that tolerate them are planned onto new nodes."),
        new("help", "false", "Print this help and exit.", IsSwitch: true),
        new("version", "false", "Print the version and exit.", IsSwitch: true),
    ];

    public static KarpetrackOptions Parse(IReadOnlyList<string> args, Func<string, string?> getEnv)
    {
        var values = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var flag in Flags)
        {
            var env = getEnv(flag.EnvVar);
            if (string.IsNullOrEmpty(env)) continue;
            values[flag.Name] = flag.Repeatable ? env.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList() : [env];
        }
        var fromArgs = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal))
                throw new OptionsException($"unexpected argument \"{arg}\" (flags start with --; see --help)");
            var body = arg[2..];
            string? inline = null;
            int eq = body.IndexOf('=');
            if (eq >= 0) { inline = body[(eq + 1)..]; body = body[..eq]; }
            var flag = Flags.FirstOrDefault(f => f.Name == body)
                ?? throw new OptionsException($"unknown flag --{body} (see --help)");
            string value;
            if (flag.IsSwitch) value = inline ?? "true";
            else if (inline is not null) value = inline;
            else if (i + 1 < args.Count) value = args[++i];
            else throw new OptionsException($"flag --{flag.Name} needs a value");
            // Flags override the environment; a repeatable flag given on the command line replaces the env list.
            if (fromArgs.Add(flag.Name) || !flag.Repeatable) values[flag.Name] = [value];
            else values[flag.Name].Add(value);
        }

        string? Get(string name) => values.TryGetValue(name, out var v) ? v[^1] : null;
        // The demo compresses time (a week of prices per 30 s), so a few timings default shorter there.
        bool demo = ParseBool(Get("demo") ?? "false", "--demo");
        string GetOr(string name) => Get(name) ?? Flags.First(f => f.Name == name) switch { { DemoDefault: { } d } when demo => d, var f => f.Default };

        var resources = GetOr("resources").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (resources.Length == 0) throw new OptionsException("--resources: at least one resource name is needed");
        foreach (var r in resources)
            if (!IsResourceName(r)) throw new OptionsException($"--resources: \"{r}\" is not a valid resource name");

        var groups = new List<IReadOnlyList<string>>();
        var seenGroups = new HashSet<string>(StringComparer.Ordinal);
        foreach (var g in values.GetValueOrDefault("label-group") ?? [])
        {
            var keys = g.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (keys.Length == 0) throw new OptionsException($"--label-group: \"{g}\" names no label key");
            // The same group twice would emit duplicate series and fail every scrape: keep one.
            if (seenGroups.Add(string.Join(',', keys))) groups.Add(keys);
        }

        var nodeSelector = Get("node-selector");
        if (!string.IsNullOrWhiteSpace(nodeSelector))
        {
            var error = LabelSelector.Validate(nodeSelector);
            if (error is not null) throw new OptionsException($"--node-selector: {error}");
        }

        var level = GetOr("log-level").ToLowerInvariant();
        if (level is not ("trace" or "debug" or "info" or "warn" or "warning" or "error"))
            throw new OptionsException($"--log-level: \"{level}\" is not one of trace, debug, info, warn, error");
        var format = GetOr("log-format").ToLowerInvariant();
        if (format is not ("json" or "text")) throw new OptionsException($"--log-format: \"{format}\" is not json or text");

        var addr = GetOr("metrics-addr");
        ParseListenAddress(addr, "--metrics-addr");
        var grpcAddr = GetOr("grpc-addr");
        ParseListenAddress(grpcAddr, "--grpc-addr");
        var tlsCert = NullIfEmpty(Get("tls-cert"));
        var tlsKey = NullIfEmpty(Get("tls-key"));
        if ((tlsCert is null) != (tlsKey is null)) throw new OptionsException("--tls-cert and --tls-key go together");
        foreach (var (file, flag) in new[] { (tlsCert, "--tls-cert"), (tlsKey, "--tls-key") })
            if (file is not null && !File.Exists(file)) throw new OptionsException($"{flag}: file \"{file}\" not found");

        var mode = Actuator.ParseMode(GetOr("actuation"));
        var tokenFile = NullIfEmpty(Get("approve-token-file"));
        if (mode == ActuationMode.Approve && tokenFile is null)
            throw new OptionsException("--actuation approve needs --approve-token-file: approvals must present that token");
        if (tokenFile is not null && !File.Exists(tokenFile)) throw new OptionsException($"--approve-token-file: file \"{tokenFile}\" not found");

        return new KarpetrackOptions
        {
            Kubeconfig = NullIfEmpty(Get("kubeconfig")),
            Context = NullIfEmpty(Get("context")),
            Demo = ParseBool(GetOr("demo"), "--demo"),
            MetricsAddr = addr,
            GrpcAddr = grpcAddr,
            GrpcMaxCalls = ParseInt(GetOr("grpc-max-calls"), "--grpc-max-calls", 1, 1_000_000),
            GrpcReadTimeout = Positive(ParseDuration(GetOr("grpc-read-timeout"), "--grpc-read-timeout"), "--grpc-read-timeout"),
            TlsCert = tlsCert,
            TlsKey = tlsKey,
            Resources = resources,
            NodeSelector = NullIfEmpty(nodeSelector),
            LabelGroups = groups,
            LogLevel = level,
            LogFormat = format,
            ListPageSize = ParseInt(GetOr("list-page-size"), "--list-page-size", 1, 100_000),
            DemoSeed = ParseInt(GetOr("demo-seed"), "--demo-seed", int.MinValue, int.MaxValue),
            DemoChurnInterval = ParseDuration(GetOr("demo-churn-interval"), "--demo-churn-interval"),
            DemoPriceInterval = ParseDuration(GetOr("demo-price-interval"), "--demo-price-interval"),
            PriceFeed = new PriceFeedOptions
            {
                Bucket = NonEmpty(GetOr("price-feed-bucket"), "--price-feed-bucket"),
                Key = NonEmpty(GetOr("price-feed-key"), "--price-feed-key"),
                Region = NonEmpty(GetOr("price-feed-region"), "--price-feed-region"),
                Endpoint = NullIfEmpty(Get("price-feed-endpoint")) is { } ep ? AbsoluteUrl(ep, "--price-feed-endpoint").ToString() : null,
                Refresh = Positive(ParseDuration(GetOr("price-refresh"), "--price-refresh"), "--price-refresh"),
            },
            SpotOrg = NullIfEmpty(Get("spot-org")),
            // The chart's older secret key `cloudspace-id` arrives as KARPETRACK_CLOUDSPACE_ID.
            Cloudspace = NullIfEmpty(Get("cloudspace")) ?? NullIfEmpty(getEnv("KARPETRACK_CLOUDSPACE_ID")),
            SpotApiUrl = SpotUrl(GetOr("spot-api-url"), "--spot-api-url"),
            SpotAuthUrl = SpotUrl(GetOr("spot-auth-url"), "--spot-auth-url"),
            SpotApi = new SpotApiOptions
            {
                RatePerSecond = (double)ParseDecimal(GetOr("spot-api-rate"), "--spot-api-rate", 0.01m, 1000),
                Burst = ParseInt(GetOr("spot-api-burst"), "--spot-api-burst", 1, 10_000),
                RequestTimeout = Positive(ParseDuration(GetOr("spot-api-timeout"), "--spot-api-timeout"), "--spot-api-timeout"),
                MaxAttempts = ParseInt(GetOr("spot-api-attempts"), "--spot-api-attempts", 1, 100),
                BreakerThreshold = ParseInt(GetOr("spot-api-breaker-threshold"), "--spot-api-breaker-threshold", 1, 10_000),
                BreakerCooldown = Positive(ParseDuration(GetOr("spot-api-breaker-cooldown"), "--spot-api-breaker-cooldown"), "--spot-api-breaker-cooldown"),
            },
            RecommendInterval = ParseDuration(GetOr("recommend-interval"), "--recommend-interval"),
            ReplaceThresholdPercent = ParseDecimal(GetOr("replace-threshold-percent"), "--replace-threshold-percent", 0, 100),
            ReplaceThresholdDollars = ParseDecimal(GetOr("replace-threshold-dollars"), "--replace-threshold-dollars", 0, 1000),
            Categories = ParseCategories(GetOr("categories")),
            MaxPrice = NullIfEmpty(Get("max-price")) is { } mp ? ParseDecimal(mp, "--max-price", 0, 1000) : null,
            GpusPerClass = ParseGpusPerClass(GetOr("gpus-per-class")),
            Actuation = mode,
            ActuationSettings = new ActuationOptions
            {
                Mode = mode,
                ApproveTokenFile = tokenFile,
                MaxDisruptedNodes = ParseInt(GetOr("max-disrupted-nodes"), "--max-disrupted-nodes", 1, 1000),
                MaxDisruptedPercentPerHour = ParseDecimal(GetOr("max-disrupted-percent-per-hour"), "--max-disrupted-percent-per-hour", 0, 100),
                ScaleUpCooldown = ParseDuration(GetOr("scale-up-cooldown"), "--scale-up-cooldown"),
                ProvisioningTimeout = Positive(ParseDuration(GetOr("provisioning-timeout"), "--provisioning-timeout"), "--provisioning-timeout"),
                DrainTimeout = Positive(ParseDuration(GetOr("drain-timeout"), "--drain-timeout"), "--drain-timeout"),
                MaxGracePeriod = GracePeriod(GetOr("max-grace-period")),
                MaxPlanAge = Positive(ParseDuration(GetOr("max-plan-age"), "--max-plan-age"), "--max-plan-age"),
                Window = NullIfEmpty(Get("maintenance-window")) is { } mw ? MaintenanceWindow.Parse(mw, "--maintenance-window") : null,
                Bids = new BidPolicy
                {
                    Percentile = ParseBidPercentile(GetOr("bid-percentile")),
                    Margin = ParseDecimal(GetOr("bid-margin"), "--bid-margin", 1, 10),
                    Cap = NullIfEmpty(Get("max-price")) is { } cap ? ParseDecimal(cap, "--max-price", 0, 1000) : null,
                },
            },
            LeaderElect = ParseBool(GetOr("leader-elect"), "--leader-elect"),
            Pools = new PoolPolicy
            {
                MaxManagedMilliCpu = NullIfEmpty(Get("max-managed-cpu")) is { } mc ? (long)(ParseDecimal(mc, "--max-managed-cpu", 0, 1_000_000) * 1000) : null,
                MaxManagedMemoryBytes = NullIfEmpty(Get("max-managed-memory")) is { } mm ? ParseBytes(mm, "--max-managed-memory") : null,
                ConsolidateAfter = ParseDuration(GetOr("consolidate-after"), "--consolidate-after"),
                ConsolidateAfterEmpty = ParseDuration(GetOr("consolidate-after-empty"), "--consolidate-after-empty"),
                ExpireAfter = NullIfEmpty(Get("expire-after")) is { } ea ? Positive(ParseDuration(ea, "--expire-after"), "--expire-after") : null,
                Labels = ParsePoolLabels(GetOr("pool-labels")),
                Taints = ParsePoolTaints(GetOr("pool-taints")),
            },
            ShowHelp = ParseBool(GetOr("help"), "--help"),
            ShowVersion = ParseBool(GetOr("version"), "--version"),
        };
    }

    private static string? NullIfEmpty(string? s) => string.IsNullOrWhiteSpace(s) ? null : s;

    private static decimal ParseDecimal(string s, string flag, decimal min, decimal max)
    {
        if (!decimal.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var v) || v < min || v > max)
            throw new OptionsException($"{flag}: \"{s}\" is not a number between {min} and {max}");
        return v;
    }

    private static string ParseBidPercentile(string s) => s.ToLowerInvariant() is var p && p is "p20" or "p50" or "p80" or "market"
        ? p
        : throw new OptionsException($"--bid-percentile: \"{s}\" is not one of p20, p50, p80, market");

    private static IReadOnlyList<string> ParseCategories(string s)
    {
        var codes = new List<string>();
        foreach (var part in s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var code = Karpetrack.Categories.CodeOf(part) ?? throw new OptionsException($"--categories: \"{part}\" is not one of gp, ch, mh, gpu");
            if (code == "bm") throw new OptionsException("--categories: bare metal classes cannot be bid on");
            codes.Add(code);
        }
        return codes;
    }

    /// <summary>`class=count,...`: each class once, a whole count of 1 to 64 GPUs.</summary>
    private static IReadOnlyDictionary<string, int> ParseGpusPerClass(string s)
    {
        const string flag = "--gpus-per-class";
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var part in s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = part.IndexOf('=');
            if (eq < 0) throw new OptionsException($"{flag}: \"{part}\" is not class=count (e.g. gpu.vs2.xlargeplusplus-sjc=2)");
            var name = part[..eq].Trim();
            if (name.Length == 0 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_'))
                throw new OptionsException($"{flag}: \"{name}\" is not a server class name");
            if (!counts.TryAdd(name, ParseInt(part[(eq + 1)..].Trim(), $"{flag} {name}", 1, 64)))
                throw new OptionsException($"{flag}: {name} is given twice");
        }
        return counts;
    }

    private static string NonEmpty(string s, string flag) =>
        string.IsNullOrWhiteSpace(s) ? throw new OptionsException($"{flag}: must not be empty") : s;

    private static TimeSpan Positive(TimeSpan t, string flag) =>
        t <= TimeSpan.Zero ? throw new OptionsException($"{flag}: must be longer than 0") : t;

    private static Uri AbsoluteUrl(string s, string flag) =>
        Uri.TryCreate(s, UriKind.Absolute, out var u) && (u.Scheme == "http" || u.Scheme == "https")
            ? u
            : throw new OptionsException($"{flag}: \"{s}\" is not an absolute http(s) URL");

    /// <summary>A Spot URL the tokens may travel to: https, or http on loopback only (<see cref="SpotUrls"/>).</summary>
    private static Uri SpotUrl(string s, string flag)
    {
        var url = AbsoluteUrl(s, flag);
        return SpotUrls.Problem(url) is { } problem ? throw new OptionsException($"{flag}: \"{s}\" {problem}") : url;
    }

    /// <summary>A grace period of 0 asks the kubelet to kill at once (a force delete): refused, at least 1s.</summary>
    private static TimeSpan GracePeriod(string s)
    {
        var t = ParseDuration(s, "--max-grace-period");
        return t < TimeSpan.FromSeconds(1)
            ? throw new OptionsException($"--max-grace-period: \"{s}\" would force-delete evicted pods without a graceful stop; give at least 1s")
            : t;
    }

    private static long ParseBytes(string s, string flag)
    {
        if (!Quantity.TryParse(s.Trim(), out var q, out var error) || q.Value <= 0 || q.Value > long.MaxValue)
            throw new OptionsException($"{flag}: \"{s}\" is not a positive quantity such as 512Gi ({error ?? "out of range"})");
        return (long)decimal.Ceiling(q.Value);
    }

    private static bool IsLabelPart(string s, int max) =>
        s.Length <= max && s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '/');

    /// <summary>What --pool-labels and --pool-taints accept as a key (a prefix/ allowed) and as a value (none).</summary>
    private static bool IsLabelKey(string s) => s.Length > 0 && IsLabelPart(s, 253);

    private static bool IsLabelValue(string s) => IsLabelPart(s, 63) && !s.Contains('/');

    /// <summary>`key=value,...`: Kubernetes-like keys and values, each key once, none of Karpetrack's own.</summary>
    private static IReadOnlyDictionary<string, string> ParsePoolLabels(string s)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var part in s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = part.IndexOf('=');
            var (key, value) = eq < 0 ? (part, "") : (part[..eq].Trim(), part[(eq + 1)..].Trim());
            if (eq < 0 || !IsLabelKey(key) || !IsLabelValue(value))
                throw new OptionsException($"--pool-labels: \"{part}\" is not key=value");
            if (key.StartsWith("karpetrack.io/", StringComparison.Ordinal))
                throw new OptionsException($"--pool-labels: {key} is Karpetrack's own label");
            if (!labels.TryAdd(key, value)) throw new OptionsException($"--pool-labels: {key} is given twice");
        }
        return labels;
    }

    /// <summary>`key=value:Effect` or `key:Effect`, comma-separated.</summary>
    private static IReadOnlyList<Taint> ParsePoolTaints(string s)
    {
        var taints = new List<Taint>();
        foreach (var part in s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int colon = part.LastIndexOf(':');
            var effect = colon < 0 ? "" : part[(colon + 1)..].Trim();
            if (effect is not ("NoSchedule" or "PreferNoSchedule" or "NoExecute"))
                throw new OptionsException($"--pool-taints: \"{part}\" is not key=value:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute");
            var kv = part[..colon];
            int eq = kv.IndexOf('=');
            var (key, value) = eq < 0 ? (kv.Trim(), (string?)null) : (kv[..eq].Trim(), kv[(eq + 1)..].Trim());
            if (!IsLabelKey(key) || (value is not null && !IsLabelValue(value)))
                throw new OptionsException($"--pool-taints: \"{part}\" is not key=value:Effect");
            if (taints.Any(t => t.Key == key && t.Effect == effect)) throw new OptionsException($"--pool-taints: {key}:{effect} is given twice");
            taints.Add(new Taint(key, value, effect));
        }
        return taints;
    }

    private static bool IsResourceName(string s) =>
        s.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '/' or '_');

    public static bool ParseBool(string s, string flag) => s.ToLowerInvariant() switch
    {
        "true" or "1" or "yes" => true,
        "false" or "0" or "no" or "" => false,
        _ => throw new OptionsException($"{flag}: \"{s}\" is not true or false"),
    };

    public static int ParseInt(string s, string flag, int min, int max)
    {
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) || v < min || v > max)
            throw new OptionsException($"{flag}: \"{s}\" is not a whole number between {min} and {max}");
        return v;
    }

    /// <summary>Go-style durations: `500ms`, `30s`, `5m`, `1h`, `1h30m`, `0`.</summary>
    public static TimeSpan ParseDuration(string s, string flag)
    {
        var text = s.Trim();
        if (text == "0") return TimeSpan.Zero;
        if (text.Length == 0) throw new OptionsException($"{flag}: empty duration (write e.g. 30s, 5m, 1h)");
        double totalMs = 0;
        int i = 0;
        while (i < text.Length)
        {
            int start = i;
            while (i < text.Length && (char.IsAsciiDigit(text[i]) || text[i] == '.')) i++;
            if (start == i) throw new OptionsException($"{flag}: \"{s}\" is not a duration (write e.g. 30s, 5m, 1h)");
            if (!double.TryParse(text.AsSpan(start, i - start), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number))
                throw new OptionsException($"{flag}: \"{s}\" is not a duration");
            int unitStart = i;
            while (i < text.Length && char.IsAsciiLetter(text[i])) i++;
            double factor = text[unitStart..i] switch
            {
                "ms" => 1, "s" => 1000, "m" => 60_000, "h" => 3_600_000,
                "" => throw new OptionsException($"{flag}: \"{s}\" needs a unit (ms, s, m, h)"),
                var u => throw new OptionsException($"{flag}: unknown unit \"{u}\" in \"{s}\" (use ms, s, m, h)"),
            };
            totalMs += number * factor;
        }
        return TimeSpan.FromMilliseconds(totalMs);
    }

    /// <summary>`:9101`, `0.0.0.0:9101`, `127.0.0.1:0`, `[::1]:9101`, `localhost:9101`.</summary>
    public static (string Host, int Port) ParseListenAddress(string addr, string flag)
    {
        int colon = addr.LastIndexOf(':');
        if (colon < 0) throw new OptionsException($"{flag}: \"{addr}\" is not host:port (e.g. :9101)");
        var host = addr[..colon].Trim('[', ']');
        if (!int.TryParse(addr[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port > 65535)
            throw new OptionsException($"{flag}: \"{addr}\" has no valid port");
        return (host, port);
    }

    public static string HelpText()
    {
        var sb = new StringBuilder();
        sb.AppendLine("karpetrack: binpacking and cost exporter for Kubernetes on Rackspace Spot.");
        sb.AppendLine();
        sb.AppendLine("Usage: karpetrack [flags]");
        sb.AppendLine();
        foreach (var f in Flags)
        {
            var name = f.IsSwitch ? $"--{f.Name}" : $"--{f.Name} VALUE";
            sb.Append("  ").Append(name.PadRight(30)).Append(f.Help);
            if (!f.IsSwitch && f.Default.Length > 0) sb.Append($" (default {f.Default})");
            sb.Append($" [${f.EnvVar}]");
            sb.AppendLine();
        }
        return sb.ToString();
    }
}
