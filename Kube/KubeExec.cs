using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using k8s.Authentication;
using k8s.KubeConfigModels;
using YamlDotNet.RepresentationModel;

namespace Karpetrack;

/// <summary>
/// A client.authentication.k8s.io exec credential plugin, run on demand and cached until its credential
/// expires or the server rejects it. Ours rather than the library's ExecTokenProvider, which joins the
/// arguments with spaces (so "a b" arrives as two), sends KUBERNETES_EXEC_INFO with kind ExecCredentials
/// and interactive true, ignores provideClusterInfo, interactiveMode and the exit code, has one
/// process-wide timeout, runs the plugin once when the config is built and again on the first request,
/// never re-runs it after a 401, takes a client certificate only when the config is built, and puts
/// stack traces into its error messages.
/// </summary>
internal sealed class ExecPlugin : ITokenProvider
{
    private const string V1 = "client.authentication.k8s.io/v1";
    private const string V1Beta1 = "client.authentication.k8s.io/v1beta1";
    private const int StderrLimit = 1000;

    private readonly string _source;
    private readonly string _field;
    private readonly string _apiVersion;
    private readonly string _command;
    private readonly IReadOnlyList<string> _args;
    private readonly IReadOnlyList<KeyValuePair<string, string>> _env;
    private readonly string _execInfo;
    private readonly string? _installHint;
    private readonly TimeProvider _clock;
    private readonly TimeSpan _timeout;
    // One plugin process at a time per user: plugins often do interactive-ish work (SSO, cloud CLIs).
    private readonly SemaphoreSlim _gate = new(1, 1);
    private Credential? _current;

    private sealed record Credential(string? Token, X509Certificate2? Certificate, DateTimeOffset? Expiry);

    private ExecPlugin(string source, string field, string apiVersion, string command, IReadOnlyList<string> args,
        IReadOnlyList<KeyValuePair<string, string>> env, string execInfo, string? installHint, TimeProvider clock, TimeSpan timeout)
    {
        _source = source;
        _field = field;
        _apiVersion = apiVersion;
        _command = command;
        _args = args;
        _env = env;
        _execInfo = execInfo;
        _installHint = installHint;
        _clock = clock;
        _timeout = timeout;
    }

    public X509Certificate2? CurrentCertificate => Volatile.Read(ref _current)?.Certificate;

    public static ExecPlugin FromConfig(Named<UserCredentials> user, ExternalExecution exec, string dir, KubeEnvironment env,
        TimeProvider clock, TimeSpan timeout, ClusterInfo cluster)
    {
        var file = user.File;
        var f = user.Field + ".exec";

        var apiVersion = exec.ApiVersion is { Length: > 0 } v ? v : throw new KubeConfigException(file, f + ".apiVersion", "missing");
        if (apiVersion is not (V1 or V1Beta1))
            throw new KubeConfigException(file, f + ".apiVersion", $"\"{apiVersion}\" is not supported; use {V1} or {V1Beta1}");

        var args = new List<string>();
        for (var i = 0; i < (exec.Arguments?.Count ?? 0); i++)
            args.Add(exec.Arguments![i] ?? throw new KubeConfigException(file, $"{f}.args[{i}]", "expected a string"));

        var vars = new List<KeyValuePair<string, string>>();
        for (var i = 0; i < (exec.EnvironmentVariables?.Count ?? 0); i++)
        {
            var pair = exec.EnvironmentVariables![i];
            var name = pair?.GetValueOrDefault("name") is { Length: > 0 } n ? n
                : throw new KubeConfigException(file, $"{f}.env[{i}].name", "missing");
            vars.Add(new(name, pair!.GetValueOrDefault("value") ?? ""));
        }

        // The library's model has no interactiveMode, so it comes from the plain YAML.
        var rawExec = new Named<ExternalExecution>(user.Name, exec, file, f, RawYaml.Child(user.Raw, "exec") as YamlMappingNode ?? []);
        var mode = RawYaml.String(rawExec, "interactiveMode");
        if (mode is null && apiVersion == V1)
            throw new KubeConfigException(file, f + ".interactiveMode", $"required for {V1} (Never, IfAvailable or Always)");
        switch (mode ?? "IfAvailable")
        {
            case "Never":
            case "IfAvailable": // a service has no terminal, so "if available" means never
                break;
            case "Always":
                throw new KubeConfigException(file, f + ".interactiveMode",
                    "Always needs a terminal, and karpetrack never has one; use Never or IfAvailable");
            default:
                throw new KubeConfigException(file, f + ".interactiveMode", $"\"{mode}\" is not Never, IfAvailable or Always");
        }

        var installHint = exec.InstallHint is { Length: > 0 } h ? h : null;
        var hint = installHint is null ? "" : $"; install hint: {installHint}";
        var commandText = exec.Command is { Length: > 0 } c ? c : throw new KubeConfigException(file, f + ".command", "missing");
        string command;
        if (commandText.Contains('/', StringComparison.Ordinal))
        {
            command = Path.GetFullPath(Path.Combine(dir, commandText));
            if (!File.Exists(command))
                throw new KubeConfigException(file, f + ".command", $"{command} does not exist{hint}");
        }
        else
        {
            command = FindOnPath(commandText, env.GetVariable("PATH"))
                ?? throw new KubeConfigException(file, f + ".command", $"\"{commandText}\" not found in PATH{hint}");
        }

        var execInfo = ExecInfo(apiVersion, exec.ProvideClusterInfo ? cluster : null);
        return new ExecPlugin(file, f, apiVersion, command, args, vars, execInfo, installHint, clock, timeout);
    }

    private static string? FindOnPath(string name, string? path)
    {
        foreach (var dir in (path ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
                return candidate;
        }
        return null;
    }

    private static string ExecInfo(string apiVersion, ClusterInfo? cluster)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("apiVersion", apiVersion);
            json.WriteString("kind", "ExecCredential");
            json.WriteStartObject("spec");
            if (cluster is not null)
            {
                json.WriteStartObject("cluster");
                json.WriteString("server", cluster.Server.OriginalString);
                if (cluster.Trust.ServerName is { } name)
                    json.WriteString("tls-server-name", name);
                if (cluster.Trust.Insecure)
                    json.WriteBoolean("insecure-skip-tls-verify", true);
                if (cluster.CaPem is { } ca)
                    json.WriteBase64String("certificate-authority-data", ca);
                if (cluster.Proxy is { } proxy)
                    json.WriteString("proxy-url", proxy.OriginalString);
                json.WriteEndObject();
            }
            json.WriteBoolean("interactive", false);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>Null (no Authorization header) when the plugin gave only a client certificate.</summary>
    public async Task<AuthenticationHeaderValue> GetAuthenticationHeaderAsync(CancellationToken cancellationToken) =>
        await GetTokenAsync(cancellationToken).ConfigureAwait(false) is { } token ? new AuthenticationHeaderValue("Bearer", token) : null!;

    private async ValueTask<string?> GetTokenAsync(CancellationToken cancellationToken)
    {
        var current = Volatile.Read(ref _current);
        if (IsFresh(current))
            return current.Token;
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // Another request may have refreshed while we waited.
            current = _current;
            if (!IsFresh(current))
            {
                current = await RunAsync(cancellationToken).ConfigureAwait(false);
                Volatile.Write(ref _current, current);
            }
            return current.Token;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>The server said 401 to a request made with <paramref name="usedToken"/>.</summary>
    public void OnUnauthorized(string? usedToken)
    {
        // Only forget the credential that was rejected: a burst of 401s must cause one re-run, not many.
        var current = Volatile.Read(ref _current);
        if (current is not null && current.Token == usedToken)
            Interlocked.CompareExchange(ref _current, null, current);
    }

    private bool IsFresh([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] Credential? credential) =>
        credential is not null && (credential.Expiry is not { } expiry || _clock.GetUtcNow() < expiry);

    private async Task<Credential> RunAsync(CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(_command)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in _args)
            start.ArgumentList.Add(arg);
        foreach (var (name, value) in _env)
            start.Environment[name] = value;
        start.Environment["KUBERNETES_EXEC_INFO"] = _execInfo;

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException("no process was started");
        }
        catch (Exception e) when (e is Win32Exception or InvalidOperationException)
        {
            throw Failure($"exec plugin {_command} could not be started: {e.Message}", stderr: "", hint: true);
        }

        using (process)
        {
            process.StandardInput.Close(); // never interactive
            var stdoutTask = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
            var stderrTask = process.StandardError.ReadToEndAsync(CancellationToken.None);
            using var timeout = new CancellationTokenSource(_timeout);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, cancellationToken);
            try
            {
                await process.WaitForExitAsync(linked.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                try
                {
                    process.Kill(entireProcessTree: true);
                }
                catch (InvalidOperationException)
                {
                    // It exited on its own in the meantime.
                }
                cancellationToken.ThrowIfCancellationRequested();
                throw Failure($"exec plugin {_command} timed out after {_timeout.TotalSeconds:0.#} s", await Drain(stderrTask).ConfigureAwait(false), hint: true);
            }
            var stdout = await stdoutTask.ConfigureAwait(false);
            var stderr = await stderrTask.ConfigureAwait(false);
            if (process.ExitCode != 0)
                throw Failure($"exec plugin {_command} failed with exit code {process.ExitCode}", stderr, hint: true);
            return Parse(stdout, stderr);
        }
    }

    private static async Task<string> Drain(Task<string> stderr)
    {
        try
        {
            return await stderr.WaitAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return "";
        }
    }

    private Credential Parse(string stdout, string stderr)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(stdout);
        }
        catch (JsonException e)
        {
            throw Failure($"exec plugin {_command} wrote invalid JSON to stdout: {e.Message}", stderr, hint: true);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw Failure($"exec plugin {_command} wrote JSON that is not an ExecCredential object", stderr);
            var apiVersion = root.TryGetProperty("apiVersion", out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : "";
            if (apiVersion != _apiVersion)
                throw Failure($"exec plugin is configured to use API version {_apiVersion}, plugin returned version {apiVersion}", stderr);
            if (!root.TryGetProperty("status", out var status) || status.ValueKind != JsonValueKind.Object)
                throw Failure("exec plugin didn't return a status field", stderr);

            var token = StringOf(status, "token");
            var certPem = StringOf(status, "clientCertificateData");
            var keyPem = StringOf(status, "clientKeyData");
            if (token is null && certPem is null && keyPem is null)
                throw Failure("exec plugin didn't return a token or cert/key pair", stderr);
            if ((certPem is null) != (keyPem is null))
                throw Failure("exec plugin returned only certificate or key, not both", stderr);

            DateTimeOffset? expiry = null;
            if (StringOf(status, "expirationTimestamp") is { } expiryText)
            {
                if (!DateTimeOffset.TryParse(expiryText, CultureInfo.InvariantCulture,
                        DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var parsed))
                    throw Failure($"exec plugin returned an invalid status.expirationTimestamp \"{expiryText}\"", stderr);
                expiry = parsed;
            }

            X509Certificate2? certificate = null;
            if (certPem is not null && keyPem is not null)
            {
                try
                {
                    certificate = X509Certificate2.CreateFromPem(certPem, keyPem);
                }
                catch (Exception e) when (e is CryptographicException or ArgumentException)
                {
                    throw Failure($"exec plugin returned an unusable client certificate or key: {e.Message}", stderr);
                }
            }
            return new Credential(token, certificate, expiry);
        }
    }

    private static string? StringOf(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String && value.GetString() is { Length: > 0 } s
            ? s : null;

    /// <summary>The install hint is only offered when the plugin itself failed, where reinstalling may help.</summary>
    private KubeConfigException Failure(string what, string stderr, bool hint = false)
    {
        var text = new StringBuilder(what);
        stderr = KubeConfigException.OneLine(stderr);
        if (stderr.Length > 0)
            text.Append("; stderr: ").Append(stderr.Length > StderrLimit ? stderr[..StderrLimit] + "…" : stderr);
        if (hint && _installHint is not null)
            text.Append("; install hint: ").Append(_installHint);
        return new KubeConfigException(_source, _field, text.ToString());
    }
}

