using System.Diagnostics;
using System.Text;
using Karpetrack.Simulation;
using static Karpetrack.Tests.Simulation.SimHelpers;

namespace Karpetrack.Tests.Simulation;

/// <summary>The real kubectl (1.32, on PATH) against the fake server: discovery, Tables, watch.</summary>
public sealed class KubectlTests : IAsyncLifetime
{
    private KubeApiServer _server = null!;
    private string _dir = null!;
    private string _kubeconfig = null!;

    public async Task InitializeAsync()
    {
        _server = await StartWithClusterAsync(nodes: 3, pods: 20);
        _dir = Directory.CreateTempSubdirectory("karpetrack-kubectl-").FullName;
        _kubeconfig = _server.WriteKubeconfig(Path.Combine(_dir, "kubeconfig"));
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private string[] Args(params string[] args) => [.. args, "--kubeconfig", _kubeconfig, "--cache-dir", Path.Combine(_dir, "cache")];

    [Fact]
    public async Task GetNodes_ListsNodeNamesWithTableColumns()
    {
        if (!OnPath("kubectl")) return;
        var r = await RunAsync("kubectl", Args("get", "nodes"), TimeSpan.FromSeconds(20));
        Assert.True(r.ExitCode == 0, r.Stderr);
        var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Matches(@"^NAME\s+STATUS\s+ROLES\s+AGE\s+VERSION", lines[0]);
        foreach (var n in _server.Store.List("nodes").Items)
            Assert.Contains(lines, l => l.StartsWith(n.Name + " ", StringComparison.Ordinal) && l.Contains("Ready") && l.Contains("v1.32.4"));
    }

    [Fact]
    public async Task GetPodsAllNamespaces_ListsPodsWithNamespaces()
    {
        if (!OnPath("kubectl")) return;
        var r = await RunAsync("kubectl", Args("get", "pods", "-A"), TimeSpan.FromSeconds(20));
        Assert.True(r.ExitCode == 0, r.Stderr);
        var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Matches(@"^NAMESPACE\s+NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE", lines[0]);
        var pods = _server.Store.List("pods").Items;
        Assert.Equal(pods.Count, lines.Length - 1);
        foreach (var p in pods)
            Assert.Contains(lines, l => System.Text.RegularExpressions.Regex.IsMatch(l, $@"^{p.Namespace}\s+{p.Name}\s"));
    }

    [Fact]
    public async Task GetRawVersion()
    {
        if (!OnPath("kubectl")) return;
        var r = await RunAsync("kubectl", Args("get", "--raw", "/version"), TimeSpan.FromSeconds(20));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("\"gitVersion\": \"v1.32.4\"", r.Stdout.Replace("\":\"", "\": \""));
    }

    [Fact]
    public async Task GetPodsWatch_PrintsPodAddedAfterWatchStarted()
    {
        if (!OnPath("kubectl")) return;
        var psi = new ProcessStartInfo("kubectl") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in Args("get", "pods", "-A", "-w")) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = new StringBuilder();
        var stderr = p.StandardError.ReadToEndAsync();
        var sawHeader = new TaskCompletionSource();
        var sawNew = new TaskCompletionSource();
        var reading = Task.Run(async () =>
        {
            while (await p.StandardOutput.ReadLineAsync() is { } line)
            {
                lock (output) output.AppendLine(line);
                if (line.StartsWith("NAMESPACE", StringComparison.Ordinal)) sawHeader.TrySetResult();
                if (line.Contains("late-arrival")) sawNew.TrySetResult();
            }
        });
        try
        {
            await sawHeader.Task.WaitAsync(TimeSpan.FromSeconds(15));
            // kubectl opens its watch right after printing the list; give it a moment to connect.
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (_server.Faults.OpenWatchCount == 0 && DateTime.UtcNow < deadline) await Task.Delay(50);
            _server.Store.Upsert("pods", SimplePod("shop", "late-arrival", _server.Store.List("nodes").Items[0].Name));
            await sawNew.Task.WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (TimeoutException)
        {
            string text;
            lock (output) text = output.ToString();
            Assert.Fail($"kubectl -w did not print the new pod. stdout:\n{text}");
        }
        finally
        {
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync();
        }
        string all;
        lock (output) all = output.ToString();
        Assert.Matches(@"(?m)^shop\s+late-arrival\s", all);
    }
}
