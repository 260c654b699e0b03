using System.Diagnostics;
using Xunit.Abstractions;

namespace Karpetrack.Tests.Chart;

/// <summary>The Dockerfile's publish step, run for real: the published app must start and know its flags.</summary>
[Trait("Category", "Publish")]
public class PublishTests(ITestOutputHelper output)
{
    private static (int Code, string Out) Run(string file, IEnumerable<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = RepoRoot.Path, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        // Keep the publish from leaving MSBuild nodes behind in a shared, 2-core box.
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout)) { p.Kill(entireProcessTree: true); throw new Xunit.Sdk.XunitException($"{file} {string.Join(' ', args)} timed out"); }
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    [Fact]
    public void PublishedAppStartsAndListsEveryFlag()
    {
        var dir = Path.Combine(Path.GetTempPath(), "karpetrack-publish-" + Guid.NewGuid().ToString("N"));
        try
        {
            var sw = Stopwatch.StartNew();
            var publish = Run("dotnet", ["publish", "Karpetrack.csproj", "-c", "Release", "-o", dir, "-nologo", "-nodeReuse:false"], TimeSpan.FromMinutes(5));
            Assert.True(publish.Code == 0, publish.Out);
            var size = new DirectoryInfo(dir).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);
            output.WriteLine($"publish took {sw.Elapsed.TotalSeconds:F1} s, {size / 1024.0 / 1024.0:F1} MiB");

            var dll = Path.Combine(dir, "karpetrack.dll");
            Assert.True(File.Exists(dll));
            var version = Run("dotnet", [dll, "--version"], TimeSpan.FromSeconds(60));
            Assert.Equal(0, version.Code);
            Assert.Equal($"karpetrack {BuildInfo.Version}", version.Out.Trim());

            var help = Run("dotnet", [dll, "--help"], TimeSpan.FromSeconds(60));
            Assert.Equal(0, help.Code);
            foreach (var flag in KarpetrackOptions.Flags)
                Assert.Contains($"--{flag.Name}", help.Out);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
