using System.Diagnostics;
using Karpetrack;
using Microsoft.Extensions.Logging.Abstractions;

namespace Karpetrack.Bench;

/// <summary>
/// `Karpetrack.Bench probe KUBECONFIG`: one paged LIST of pods through the product's client, for profiling. With `--raw`:
/// the exporter table's baseline instead (<see cref="SyncBench.RawListAsync"/>, a byte-counting HttpClient), so that a
/// time to ready measured by hand can be set against the table's own baseline, taken right before it.
/// </summary>
internal static class ListProbe
{
    public static async Task RunAsync(string kubeconfig, bool model)
    {
        if (Environment.GetCommandLineArgs().Contains("--raw"))
        {
            var server = File.ReadLines(kubeconfig).Select(l => l.Trim()).First(l => l.StartsWith("server:", StringComparison.Ordinal))["server:".Length..].Trim();
            var (seconds, bytes) = await SyncBench.RawListAsync(server);
            Console.WriteLine($"raw list (the table's baseline): {seconds:F2} s for {bytes / 1e6:F0} MB");
            return;
        }
        var conn = KubeConnection.Resolve(kubeconfig, null, KubeEnvironment.Process);
        using var client = new KubeClient(conn);
        var cm = new ClusterModel(ResourceTable.Default);
        var target = new Target(cm, model);
        var status = new ReflectorStatus("pods");
        var reflector = new Reflector<PodRecord>(client, "/api/v1/pods", null, null, new PodDecoder(ResourceTable.Default), target, status, new ReflectorOptions(), NullLogger.Instance);
        using var cts = new CancellationTokenSource();
        var sw = Stopwatch.StartNew();
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var run = reflector.RunAsync(cts.Token);
        while (!status.Synced) await Task.Delay(10);
        var cpu = Process.GetCurrentProcess().TotalProcessorTime - cpu0;
        Console.WriteLine($"list: {sw.Elapsed.TotalSeconds:F2} s wall, {cpu.TotalSeconds:F2} s CPU, {target.Count} pods, allocated {GC.GetTotalAllocatedBytes() / 1e6:F0} MB, GC pauses {GC.GetTotalPauseDuration().TotalSeconds:F2} s, gen0 {GC.CollectionCount(0)} gen1 {GC.CollectionCount(1)} gen2 {GC.CollectionCount(2)}, heap {GC.GetTotalMemory(false) / 1e6:F0} MB, RSS {Environment.WorkingSet / 1e6:F0} MB");
        cts.Cancel();
        try { await run; } catch (OperationCanceledException) { }
    }

    private sealed class Target(ClusterModel m, bool apply) : IReflectorTarget<PodRecord>
    {
        public int Count;
        public void BeginRelist() { if (apply) m.BeginPodRelist(); }
        public void Upsert(PodRecord item) { Count++; if (apply) m.UpsertPod(item); }
        public void Delete(PodRecord item) { }
        public int EndRelist() => apply ? m.EndPodRelist() : 0;
    }
}
