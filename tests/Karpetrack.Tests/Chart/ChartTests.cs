using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Karpetrack.Tests.Chart;

public class ChartTests
{
    // Flags the chart passes that the app does not parse yet; they land with the pricing, Spot API,
    // recommender and actuator issues. Once a name is in KarpetrackOptions.Flags it is checked like
    // any other flag, and can be deleted here.
    private static readonly string[] PlannedFlags =
    [
        "approve-token-file", "leader-elect",
        "max-disrupted-nodes", "max-disrupted-percent-per-hour",
        // Not a flag of its own: the environment fallback for Secrets written with the older key.
        "cloudspace-id",
    ];

    // Environment variables the chart sets that are not a KARPETRACK_* flag twin.
    private static readonly string[] OtherEnv = ["RACKSPACE_SPOT_REFRESH_TOKEN", "POD_NAMESPACE", "POD_NAME"];

    private const string ActuationOn = """
        replicaCount: 2
        actuation:
          mode: auto
        credentials:
          refreshToken: rt-secret
          org: acme
          cloudspace: prod
        """;

    private const string ExistingSecret = """
        credentials:
          existingSecret: spot-creds
        """;

    private static string Full(string name) => $"{ChartRenderer.ReleaseName}-{name}".TrimEnd('-');

    private static bool FlagKnown(string name) =>
        KarpetrackOptions.Flags.Any(f => f.Name == name) || PlannedFlags.Contains(name);

    [Fact]
    public void ValuesAndTestScenariosValidateAgainstTheSchema()
    {
        var schema = SchemaCheck.Load();
        Assert.Equal("http://json-schema.org/draft-07/schema#", schema.GetProperty("$schema").GetString());
        foreach (var overrides in new[] { "", ActuationOn, ExistingSecret })
            Assert.Empty(SchemaCheck.Validate(schema, ChartRenderer.Values(overrides)));
    }

    [Fact]
    public void SchemaRejectsABareOffAndUnknownKeys()
    {
        var schema = SchemaCheck.Load();
        // YAML 1.1 reads a bare off as false; the schema must say so rather than the template misbehave.
        Assert.Contains(SchemaCheck.Validate(schema, ChartRenderer.Values("actuation:\n  mode: off")), e => e.StartsWith("actuation.mode", StringComparison.Ordinal));
        Assert.Contains(SchemaCheck.Validate(schema, ChartRenderer.Values("replicas: 2")), e => e.StartsWith("replicas", StringComparison.Ordinal));
        Assert.NotEmpty(SchemaCheck.Validate(schema, ChartRenderer.Values("config:\n  logLevel: verbose")));
    }

    [Fact]
    public void SchemaRefusesCleartextSpotUrls()
    {
        var schema = SchemaCheck.Load();
        Assert.Contains(SchemaCheck.Validate(schema, ChartRenderer.Values("spot:\n  spotApiUrl: http://spot.rackspace.com")), e => e.StartsWith("spot.spotApiUrl", StringComparison.Ordinal));
        Assert.Contains(SchemaCheck.Validate(schema, ChartRenderer.Values("spot:\n  spotAuthUrl: http://login.spot.rackspace.com")), e => e.StartsWith("spot.spotAuthUrl", StringComparison.Ordinal));
        Assert.Empty(SchemaCheck.Validate(schema, ChartRenderer.Values("spot:\n  spotApiUrl: https://spot.example.com")));
    }

    [Fact]
    public void SchemaDescribesEveryValue()
    {
        var schema = SchemaCheck.Load();
        var missing = new List<string>();
        void Walk(Dictionary<string, object?> map, List<string> path)
        {
            foreach (var (k, v) in map)
            {
                var p = new List<string>(path) { k };
                if (SchemaCheck.At(schema, p) is not { } node) { missing.Add(string.Join('.', p)); continue; }
                if (v is Dictionary<string, object?> child && node.TryGetProperty("properties", out _)) Walk(child, p);
            }
        }
        Walk(ChartRenderer.DefaultValues(), []);
        Assert.Empty(missing);
    }

    [Fact]
    public void EveryValuesPathInTheTemplatesExists()
    {
        var values = ChartRenderer.DefaultValues();
        var schema = SchemaCheck.Load();
        var problems = new List<string>();
        foreach (var file in Directory.GetFiles(Path.Combine(ChartRenderer.ChartDir, "templates")))
        {
            foreach (Match m in Regex.Matches(File.ReadAllText(file), @"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)"))
            {
                var path = m.Groups[1].Value[1..].Split('.');
                object? node = values;
                foreach (var seg in path)
                {
                    if (node is Dictionary<string, object?> d && d.TryGetValue(seg, out var next)) { node = next; continue; }
                    problems.Add($"{Path.GetFileName(file)}: {m.Value} is not in values.yaml");
                    break;
                }
                if (SchemaCheck.At(schema, path) is null) problems.Add($"{Path.GetFileName(file)}: {m.Value} is not in values.schema.json");
            }
        }
        Assert.Empty(problems.Distinct());
    }

    [Fact]
    public void DefaultsRenderAReadOnlyExporter()
    {
        var chart = ChartRenderer.Render();
        var kinds = chart.Documents.Select(d => d.Str("kind")).Order().ToList();
        Assert.Equal(["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service", "ServiceAccount"], kinds);
        Assert.Null(chart.Find("ClusterRoleBinding", Full("karpetrack-actuation")));
        Assert.Empty(chart.OfKind("Role"));
        Assert.Empty(chart.OfKind("Secret"));
        Assert.DoesNotContain("--leader-elect", chart.Args);
        Assert.DoesNotContain(chart.Args, a => a.StartsWith("--actuation", StringComparison.Ordinal));   // off is the app default
        // No credentials: nothing reads a Secret, and the exporter still starts.
        Assert.DoesNotContain(chart.Container.List("env").Maps(), e => e.ContainsKey("valueFrom") && e.Map("valueFrom").ContainsKey("secretKeyRef"));

        var deployment = chart.OfKind("Deployment").Single();
        Assert.Equal(ChartRenderer.Namespace, deployment.Map("metadata").Str("namespace"));
        Assert.Equal(1L, deployment.Map("spec")["replicas"]);
        Assert.Equal("ghcr.io/karpetrack/karpetrack:0.1.0", chart.Container.Str("image"));
        var resources = chart.Container.Map("resources");
        Assert.Equal("100m", resources.Map("requests").Str("cpu"));
        Assert.Equal("192Mi", resources.Map("requests").Str("memory"));
        Assert.Equal("512Mi", resources.Map("limits").Str("memory"));
        Assert.False(resources.Map("limits").ContainsKey("cpu"));
        Assert.Equal("/healthz", chart.Container.Map("livenessProbe").Map("httpGet").Str("path"));
        Assert.Equal("/readyz", chart.Container.Map("readinessProbe").Map("httpGet").Str("path"));

        var service = chart.OfKind("Service").Single();
        var ports = service.Map("spec").List("ports").Maps().ToDictionary(p => p.Str("name")!, p => p["port"]);
        Assert.Equal(new Dictionary<string, object?> { ["metrics"] = 9101L, ["grpc"] = 9102L }, ports);
    }

    [Fact]
    public void DeploymentIsLockedDown()
    {
        var chart = ChartRenderer.Render();
        var pod = chart.OfKind("Deployment").Single().Map("spec").Map("template").Map("spec");
        var podSc = pod.Map("securityContext");
        Assert.Equal(true, podSc["runAsNonRoot"]);
        Assert.Equal(65532L, podSc["runAsUser"]);
        Assert.Equal(65532L, podSc["runAsGroup"]);
        Assert.Equal("RuntimeDefault", podSc.Map("seccompProfile").Str("type"));

        var sc = chart.Container.Map("securityContext");
        Assert.Equal(true, sc["runAsNonRoot"]);
        Assert.Equal(65532L, sc["runAsUser"]);
        Assert.Equal(65532L, sc["runAsGroup"]);
        Assert.Equal(true, sc["readOnlyRootFilesystem"]);
        Assert.Equal(false, sc["allowPrivilegeEscalation"]);
        Assert.Equal(["ALL"], sc.Map("capabilities").Strings("drop"));
        Assert.False(sc.Map("capabilities").ContainsKey("add"));
        Assert.Equal("RuntimeDefault", sc.Map("seccompProfile").Str("type"));

        var tmp = pod.List("volumes").Maps().Single(v => v.Str("name") == "tmp");
        Assert.True(tmp.ContainsKey("emptyDir"));
        Assert.Contains(chart.Container.List("volumeMounts").Maps(), m => m.Str("name") == "tmp" && m.Str("mountPath") == "/tmp");
    }

    [Fact]
    public void ExporterClusterRoleIsExactlyReadOnly()
    {
        var role = ChartRenderer.Render().Get("ClusterRole", Full("karpetrack"));
        Assert.Equal(
            new[] { "/nodes get,list,watch", "/pods get,list,watch", "apps/daemonsets get,list,watch", "policy/poddisruptionbudgets get,list,watch" },
            Grants(role));
    }

    [Fact]
    public void ActuationAddsItsOwnRoleAndReplicasAddLeaderElection()
    {
        var chart = ChartRenderer.Render(ActuationOn);
        var role = chart.Get("ClusterRole", Full("karpetrack-actuation"));
        Assert.Equal(
            new[] { "/events create", "/nodes patch", "/pods/eviction create", "events.k8s.io/events create" },
            Grants(role));
        var binding = chart.Get("ClusterRoleBinding", Full("karpetrack-actuation"));
        Assert.Equal(Full("karpetrack-actuation"), binding.Map("roleRef").Str("name"));
        var subject = binding.List("subjects").Maps().Single();
        Assert.Equal((Full("karpetrack"), ChartRenderer.Namespace), (subject.Str("name"), subject.Str("namespace")));
        // The read-only role is unchanged by actuation.
        Assert.Equal(4, Grants(chart.Get("ClusterRole", Full("karpetrack"))).Length);

        Assert.Contains("--leader-elect", chart.Args);
        Assert.Contains("--actuation=auto", chart.Args);
        Assert.Equal(2L, chart.OfKind("Deployment").Single().Map("spec")["replicas"]);
        var lease = chart.Get("Role", Full("karpetrack-leader-election"));
        Assert.Equal(ChartRenderer.Namespace, lease.Map("metadata").Str("namespace"));
        Assert.Equal(new[] { "coordination.k8s.io/leases create", "coordination.k8s.io/leases get,update" }, Grants(lease));
        // Reading and updating are limited to the app's own lease (creating cannot be limited by name).
        var named = lease.List("rules").Maps().Single(r => r.Strings("verbs").Contains("update"));
        Assert.Equal(["karpetrack"], named.Strings("resourceNames"));
        Assert.DoesNotContain(lease.List("rules").Maps(), r => r.Strings("verbs").Contains("update") && !r.ContainsKey("resourceNames"));
        var leaseBinding = chart.Get("RoleBinding", Full("karpetrack-leader-election"));
        Assert.Equal(ChartRenderer.Namespace, leaseBinding.Map("metadata").Str("namespace"));
        var podNs = chart.Container.List("env").Maps().Single(e => e.Str("name") == "POD_NAMESPACE");
        Assert.Equal("metadata.namespace", podNs.Map("valueFrom").Map("fieldRef").Str("fieldPath"));

        // Inline credentials become a Secret of the release.
        var secret = chart.Get("Secret", Full("karpetrack-credentials"));
        var data = secret.Map("data");
        Assert.Equal("rt-secret", Encoding.UTF8.GetString(Convert.FromBase64String(data.Str("refresh-token")!)));
        Assert.Equal("acme", Encoding.UTF8.GetString(Convert.FromBase64String(data.Str("org")!)));
        Assert.Equal("prod", Encoding.UTF8.GetString(Convert.FromBase64String(data.Str("cloudspace")!)));
        Assert.Equal(Full("karpetrack-credentials"), SecretRef(chart, "RACKSPACE_SPOT_REFRESH_TOKEN").Str("name"));
    }

    [Fact]
    public void LeaderElectionFollowsReplicasAndTheSwitch()
    {
        Assert.DoesNotContain("--leader-elect", ChartRenderer.Render("replicaCount: 1").Args);
        Assert.Contains("--leader-elect", ChartRenderer.Render("replicaCount: 3").Args);
        var forced = ChartRenderer.Render("leaderElection:\n  enabled: true");
        Assert.Contains("--leader-elect", forced.Args);
        Assert.NotNull(forced.Find("Role", Full("karpetrack-leader-election")));
        // Dry-run only logs: one replica needs no lease, and it gets no write RBAC.
        var dry = ChartRenderer.Render("actuation:\n  mode: dry-run\ncredentials:\n  existingSecret: s");
        Assert.Null(dry.Find("ClusterRole", Full("karpetrack-actuation")));
        Assert.Null(dry.Find("ClusterRoleBinding", Full("karpetrack-actuation")));
        Assert.Empty(dry.OfKind("Role"));
        Assert.DoesNotContain("--leader-elect", dry.Args);
        Assert.Equal(new[] { "/nodes get,list,watch", "/pods get,list,watch", "apps/daemonsets get,list,watch", "policy/poddisruptionbudgets get,list,watch" },
            dry.OfKind("ClusterRole").SelectMany(Grants).Order(StringComparer.Ordinal).ToArray());
    }

    [Theory]
    [InlineData("auto")]
    [InlineData("approve")]
    public void AnActorAlwaysElectsALeaderAndIsNeverRunTwiceDuringAnUpgrade(string mode)
    {
        foreach (var replicas in new[] { 1, 2, 3 })
        {
            var chart = ChartRenderer.Render($"""
                replicaCount: {replicas}
                actuation:
                  mode: {mode}
                  approveTokenSecret:
                    name: approve
                credentials:
                  existingSecret: s
                """);
            Assert.Contains("--leader-elect", chart.Args);
            Assert.NotNull(chart.Find("Role", Full("karpetrack-leader-election")));
            Assert.NotNull(chart.Find("RoleBinding", Full("karpetrack-leader-election")));
            // A rolling update would start the new pod before the old one has stopped acting.
            var spec = chart.OfKind("Deployment").Single().Map("spec");
            Assert.Equal("Recreate", spec.Map("strategy").Str("type"));
            Assert.False(spec.Map("strategy").ContainsKey("rollingUpdate"));
        }
        // Not acting: the default rolling update keeps the exporter available through an upgrade.
        foreach (var values in new[] { "", "actuation:\n  mode: dry-run\ncredentials:\n  existingSecret: s" })
            Assert.False(ChartRenderer.Render(values).OfKind("Deployment").Single().Map("spec").ContainsKey("strategy"));
    }

    [Fact]
    public void PoolPolicyValuesBecomeFlagsThatParse()
    {
        Assert.DoesNotContain(ChartRenderer.Render().Args, a => a.StartsWith("--pool-", StringComparison.Ordinal) || a.StartsWith("--max-managed", StringComparison.Ordinal));
        var chart = ChartRenderer.Render("""
            pools:
              maxManagedCpu: "64"
              maxManagedMemory: 256Gi
              consolidateAfter: 30m
              consolidateAfterEmpty: 5m
              expireAfter: 168h
              labels: team=web
              taints: dedicated=batch:NoSchedule
            """);
        foreach (var a in new[] { "--max-managed-cpu=64", "--max-managed-memory=256Gi", "--consolidate-after=30m", "--consolidate-after-empty=5m",
                     "--expire-after=168h", "--pool-labels=team=web", "--pool-taints=dedicated=batch:NoSchedule" })
            Assert.Contains(a, chart.Args);
        var pools = KarpetrackOptions.Parse([.. chart.Args.Where(a => a.StartsWith("--max-managed", StringComparison.Ordinal) || a.StartsWith("--pool-", StringComparison.Ordinal)
            || a.StartsWith("--consolidate", StringComparison.Ordinal) || a.StartsWith("--expire", StringComparison.Ordinal))], _ => null).Pools;
        Assert.Equal(64_000, pools.MaxManagedMilliCpu);
        Assert.Equal([new Taint("dedicated", "batch", "NoSchedule")], pools.Taints);
        Assert.Empty(SchemaCheck.Validate(SchemaCheck.Load(), ChartRenderer.Values("pools:\n  maxManagedCpu: \"64\"")));
    }

    [Fact]
    public void TlsValuesServeBothPortsOverTlsFromTheSecret()
    {
        var plain = ChartRenderer.Render();
        Assert.DoesNotContain(plain.Args, a => a.StartsWith("--tls-", StringComparison.Ordinal));
        Assert.False(plain.Container.Map("readinessProbe").Map("httpGet").ContainsKey("scheme"));

        var chart = ChartRenderer.Render("""
            tls:
              secretName: karpetrack-tls
              scrapeTlsConfig:
                serverName: karpetrack.karpetrack.svc
            serviceMonitor:
              enabled: true
            podMonitor:
              enabled: true
            """);
        Assert.Contains("--tls-cert=/etc/karpetrack/tls/tls.crt", chart.Args);
        Assert.Contains("--tls-key=/etc/karpetrack/tls/tls.key", chart.Args);
        var pod = chart.OfKind("Deployment").Single().Map("spec").Map("template").Map("spec");
        var volume = pod.List("volumes").Maps().Single(v => v.Str("name") == "tls").Map("secret");
        Assert.Equal("karpetrack-tls", volume.Str("secretName"));
        Assert.Equal(["tls.crt", "tls.key"], volume.List("items").Maps().Select(i => i.Str("key")!).ToList());
        var mount = chart.Container.List("volumeMounts").Maps().Single(m => m.Str("name") == "tls");
        Assert.Equal(("/etc/karpetrack/tls", (object?)true), (mount.Str("mountPath"), mount["readOnly"]));
        foreach (var probe in new[] { "livenessProbe", "readinessProbe" })
            Assert.Equal("HTTPS", chart.Container.Map(probe).Map("httpGet").Str("scheme"));
        var sm = chart.OfKind("ServiceMonitor").Single().Map("spec").List("endpoints").Maps().Single();
        var pm = chart.OfKind("PodMonitor").Single().Map("spec").List("podMetricsEndpoints").Maps().Single();
        foreach (var endpoint in new[] { sm, pm })
        {
            Assert.Equal("https", endpoint.Str("scheme"));
            Assert.Equal("karpetrack.karpetrack.svc", endpoint.Map("tlsConfig").Str("serverName"));
        }
        Assert.Empty(SchemaCheck.Validate(SchemaCheck.Load(), ChartRenderer.Values("tls:\n  secretName: karpetrack-tls")));
    }

    [Fact]
    public void ExistingSecretIsReadWithTheOlderCloudspaceKeyAsFallback()
    {
        var chart = ChartRenderer.Render(ExistingSecret);
        Assert.Empty(chart.OfKind("Secret"));
        var token = SecretRef(chart, "RACKSPACE_SPOT_REFRESH_TOKEN");
        Assert.Equal(("spot-creds", "refresh-token"), (token.Str("name"), token.Str("key")));
        Assert.False(token.ContainsKey("optional"));
        Assert.Equal("org", SecretRef(chart, "KARPETRACK_SPOT_ORG").Str("key"));
        var cloudspace = SecretRef(chart, "KARPETRACK_CLOUDSPACE");
        var cloudspaceId = SecretRef(chart, "KARPETRACK_CLOUDSPACE_ID");
        Assert.Equal(("cloudspace", true), (cloudspace.Str("key"), cloudspace["optional"]));
        Assert.Equal(("cloudspace-id", true), (cloudspaceId.Str("key"), cloudspaceId["optional"]));
        // The refresh token never appears as a flag.
        Assert.DoesNotContain(chart.Args, a => a.Contains("token", StringComparison.OrdinalIgnoreCase) && !a.StartsWith("--approve-token-file", StringComparison.Ordinal));
    }

    [Fact]
    public void ActuationWithoutCredentialsOrApproveWithoutTokenFails()
    {
        var e = Assert.Throws<TemplateException>(() => ChartRenderer.Render("actuation:\n  mode: auto"));
        Assert.Contains("credentials", e.Message);
        e = Assert.Throws<TemplateException>(() => ChartRenderer.Render(ExistingSecret + "\nactuation:\n  mode: approve"));
        Assert.Contains("approveTokenSecret", e.Message);

        var chart = ChartRenderer.Render(ExistingSecret + "\nactuation:\n  mode: approve\n  approveTokenSecret:\n    name: approvals");
        Assert.Contains("--approve-token-file=/etc/karpetrack/approve/token", chart.Args);
        var volume = chart.OfKind("Deployment").Single().Map("spec").Map("template").Map("spec").List("volumes").Maps().Single(v => v.Str("name") == "approve-token");
        Assert.Equal("approvals", volume.Map("secret").Str("secretName"));
        Assert.Contains(chart.Container.List("volumeMounts").Maps(), m => m.Str("mountPath") == "/etc/karpetrack/approve" && Equals(m["readOnly"], true));
    }

    [Fact]
    public void ArgsAndEnvironmentNameOnlyFlagsThatExistOrArePlanned()
    {
        var scenarios = new[]
        {
            "", ActuationOn, ExistingSecret,
            "config:\n  nodeSelector: servers.ngpc.rxt.io/type=spot\n  labelGroups:\n    - [servers.ngpc.rxt.io/class]\n    - [topology.kubernetes.io/region, nodepool.ngpc.rxt.io/name]\npricing:\n  priceFeedEndpoint: http://minio:9000",
        };
        foreach (var overrides in scenarios)
        {
            var chart = ChartRenderer.Render(overrides);
            foreach (var arg in chart.Args)
            {
                Assert.StartsWith("--", arg);
                var name = arg[2..].Split('=')[0];
                Assert.True(FlagKnown(name), $"--{name} is neither in KarpetrackOptions.Flags nor planned");
                var flag = KarpetrackOptions.Flags.FirstOrDefault(f => f.Name == name);
                if (flag is not null && flag.IsSwitch) Assert.DoesNotContain('=', arg);
            }
            // Flags the chart owns appear once (only --label-group repeats).
            Assert.Empty(chart.Args.GroupBy(a => a.Split('=')[0]).Where(g => g.Count() > 1 && g.Key != "--label-group").Select(g => g.Key));
            foreach (var e in chart.Container.List("env").Maps().Select(e => e.Str("name")!))
            {
                if (OtherEnv.Contains(e)) continue;
                Assert.StartsWith("KARPETRACK_", e);
                Assert.True(FlagKnown(e["KARPETRACK_".Length..].ToLowerInvariant().Replace('_', '-')), $"{e} is not the twin of a known or planned flag");
            }
        }
        var custom = ChartRenderer.Render(scenarios[3]);
        Assert.Contains("--node-selector=servers.ngpc.rxt.io/type=spot", custom.Args);
        Assert.Contains("--label-group=topology.kubernetes.io/region,nodepool.ngpc.rxt.io/name", custom.Args);
        Assert.Contains("--price-feed-endpoint=http://minio:9000", custom.Args);
    }

    [Fact]
    public void DefaultArgsParseWithTheFlagsThatExistToday()
    {
        // A default install must start: every arg it passes is a flag the app has today (the app
        // exits on unknown flags), and they parse exactly as they would in the pod.
        var args = ChartRenderer.Render().Args;
        Assert.All(args, a => Assert.Contains(KarpetrackOptions.Flags, f => f.Name == a[2..].Split('=')[0]));
        var o = KarpetrackOptions.Parse(args, _ => null);
        Assert.Equal(":9101", o.MetricsAddr);
        Assert.Equal(["cpu", "memory"], o.Resources);
        Assert.Equal(500, o.ListPageSize);
    }

    [Fact]
    public void AutoModeArgsParseAsTheActuatorReadsThem()
    {
        var args = ChartRenderer.Render("""
            actuation:
              mode: "auto"
              maxDisruptedNodes: 2
              maxDisruptedPercentPerHour: 20
            credentials:
              refreshToken: "t"
            """).Args;
        Assert.All(args, a => Assert.Contains(KarpetrackOptions.Flags, f => f.Name == a[2..].Split('=')[0]));
        var o = KarpetrackOptions.Parse(args, _ => null);
        Assert.Equal(ActuationMode.Auto, o.ActuationSettings.Mode);
        Assert.Equal(2, o.ActuationSettings.MaxDisruptedNodes);
        Assert.Equal(20, o.ActuationSettings.MaxDisruptedPercentPerHour);
    }

    [Fact]
    public void OptionalResourcesRender()
    {
        var chart = ChartRenderer.Render("""
            serviceMonitor:
              enabled: true
              additionalLabels:
                release: prom
            podMonitor:
              enabled: true
            prometheusRule:
              enabled: true
            networkPolicy:
              enabled: true
            podDisruptionBudget:
              enabled: true
            """);
        var sm = chart.OfKind("ServiceMonitor").Single();
        Assert.Equal("prom", sm.Map("metadata").Map("labels").Str("release"));
        var endpoint = sm.Map("spec").List("endpoints").Maps().Single();
        Assert.Equal(("metrics", "30s", "10s"), (endpoint.Str("port"), endpoint.Str("interval"), endpoint.Str("scrapeTimeout")));
        Assert.Single(chart.OfKind("PodMonitor"));
        Assert.Single(chart.OfKind("PrometheusRule"));
        Assert.Equal(1L, chart.OfKind("PodDisruptionBudget").Single().Map("spec")["maxUnavailable"]);

        var np = chart.OfKind("NetworkPolicy").Single().Map("spec");
        var ingress = np.List("ingress").Maps().Single();
        Assert.Equal([9101L, 9102L], ingress.List("ports").Maps().Select(p => p["port"]));
        Assert.Equal("monitoring", ingress.List("from").Maps().Single().Map("namespaceSelector").Map("matchLabels").Str("kubernetes.io/metadata.name"));
        var egressPorts = np.List("egress").Maps().SelectMany(e => e.List("ports").Maps().Select(p => $"{p["port"]}/{p["protocol"]}")).ToList();
        Assert.Equal(["443/TCP", "6443/TCP", "53/UDP", "53/TCP", "443/TCP"], egressPorts);
    }

    [Fact]
    public void DashboardConfigMapCarriesTheDashboard()
    {
        var chart = ChartRenderer.Render();
        var cm = chart.Get("ConfigMap", Full("karpetrack-dashboard"));
        Assert.Equal("1", cm.Map("metadata").Map("labels").Str("grafana_dashboard"));
        var json = cm.Map("data").Str("karpetrack.json")!;
        Assert.Equal(File.ReadAllText(Path.Combine(ChartRenderer.ChartDir, "dashboards", "karpetrack.json")).TrimEnd('\n'), json);
        Assert.Equal("karpetrack", JsonDocument.Parse(json).RootElement.GetProperty("uid").GetString());
        Assert.Empty(ChartRenderer.Render("dashboard:\n  enabled: false").OfKind("ConfigMap"));
    }

    [Fact]
    public void ChartDeclaresVersionsTheIssueAsksFor()
    {
        var chart = (Dictionary<string, object?>)Yaml.Parse(File.ReadAllText(Path.Combine(ChartRenderer.ChartDir, "Chart.yaml")))!;
        Assert.Equal("v2", chart.Str("apiVersion"));
        Assert.Equal(">=1.29.0-0", chart.Str("kubeVersion"));
        Assert.Equal("0.1.0", chart.Str("appVersion"));
        // The image tag defaults to appVersion, so it must follow the app's own version.
        Assert.Equal(BuildInfo.Version, chart.Str("appVersion"));
    }

    [Fact]
    public void RendererFollowsGoTemplateRules()
    {
        var t = new GoTemplate();
        t.Add("h", """{{- define "x" -}}[{{ . }}]{{- end -}}""");
        t.Add("t", """
            a {{- " b" }} {{ include "x" .n | quote }}
            {{- range $i, $v := .l }}{{ if $i }},{{ end }}{{ $v }}{{ end }}
            {{ with .m }}{{ .k | default "d" }}{{ else }}none{{ end }}
            {{ if eq .s "x" }}1{{ else if gt (int .n) 1 }}2{{ else }}3{{ end }} {{ printf "%s-%v" "p" 1.5 | trunc 4 | trimSuffix "-" }}
            {{ `{{ $value }}` }} {{ toYaml .m | nindent 2 }}
            """);
        var data = new Dictionary<string, object?>
        {
            ["n"] = 2L, ["s"] = "y", ["l"] = new List<object?> { "p", "q" },
            ["m"] = new Dictionary<string, object?> { ["k"] = "", ["z"] = new List<object?> { 1L, "on" } },
        };
        Assert.Equal("a b \"[2]\"p,q\nd\n2 p-1.\n{{ $value }} \n  k: \"\"\n  z:\n  - 1\n  - \"on\"", t.Render("t", data));
        Assert.Throws<TemplateException>(() => t.Render("t", new Dictionary<string, object?>()));
    }

    private static Dictionary<string, object?> SecretRef(RenderedChart chart, string env) =>
        chart.Container.List("env").Maps().Single(e => e.Str("name") == env).Map("valueFrom").Map("secretKeyRef");

    // "group/resource verb,verb", one per rule and resource, sorted; the core group is "".
    private static string[] Grants(Dictionary<string, object?> role) =>
        role.List("rules").Maps()
            .SelectMany(r => r.Strings("apiGroups").SelectMany(g => r.Strings("resources").Select(res => $"{g}/{res} {string.Join(',', r.Strings("verbs"))}")))
            .Order(StringComparer.Ordinal).ToArray();
}
