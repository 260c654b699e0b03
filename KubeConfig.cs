// TEMPORARY stand-in until the kubeconfig branch lands.
namespace Karpetrack;

public sealed class KubeConfigException(string source, string field, string message) : Exception(message)
{
    public new string Source { get; } = source;
    public string Field { get; } = field;
}

public sealed record KubeEnvironment(Func<string, string?> GetVariable, string HomeDirectory, string ServiceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount")
{
    public static KubeEnvironment Process { get; } = new(Environment.GetEnvironmentVariable, Environment.GetFolderPath(Environment.SpecialFolder.UserProfile));
}

public sealed class KubeConnection : IDisposable
{
    private KubeConnection(Uri server) { Server = server; }
    public static KubeConnection Resolve(string? kubeconfigPath, string? context, KubeEnvironment env)
    {
        var text = File.ReadAllText(kubeconfigPath!);
        var line = text.Split('\n').First(l => l.TrimStart().StartsWith("server:"));
        return new KubeConnection(new Uri(line.Split("server:")[1].Trim().Trim('"')));
    }
    public Uri Server { get; }
    public string? Namespace => null;
    public string Source => "stub";
    public string ContextName => "stub";
    public HttpMessageHandler CreateHandler() => new SocketsHttpHandler();
    public void Dispose() { }
}
