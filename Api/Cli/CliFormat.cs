using System.Globalization;
using System.Text;
using V1 = Karpetrack.Api.V1;

namespace Karpetrack;

/// <summary>How a subcommand prints: aligned columns, more of them, or the API's own JSON.</summary>
public enum CliOutput { Table, Wide, Json }

/// <summary>
/// Human units for every CLI view: cores, GiB, $/h and $/month (the API and metrics keep base units),
/// and tables whose columns are as wide as their longest cell, so long node names never shift them.
/// </summary>
public static class CliFormat
{
    public const double HoursPerMonth = 730;
    private const double GiB = 1024.0 * 1024 * 1024;
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static CliOutput ParseOutput(string value) => value switch
    {
        "table" => CliOutput.Table,
        "wide" => CliOutput.Wide,
        "json" => CliOutput.Json,
        _ => throw new OptionsException($"--output: \"{value}\" is not json, table or wide"),
    };

    /// <summary>Dollars with the precision prices have: 0.0100 for spot prices, 182 for a month of a cluster.</summary>
    public static string Money(double d)
    {
        var a = Math.Abs(d);
        var text = a >= 100 ? a.ToString("0", Inv) : a >= 1 ? a.ToString("0.00", Inv) : a.ToString("0.0000", Inv);
        return (d < 0 ? "-$" : "$") + text;
    }

    public static string PerHour(double d) => Money(d) + "/h";
    public static string PerMonth(double d) => Money(d * HoursPerMonth) + "/month";

    /// <summary>A resource amount in its human unit: cores for cpu, GiB for memory and storage, as is for the rest.</summary>
    public static string Amount(string resource, double v) => resource switch
    {
        "cpu" => Number(v),
        "memory" or "ephemeral-storage" => Number(v / GiB),
        _ => Number(v),
    };

    public static string Unit(string resource) => resource switch
    {
        "cpu" => "cores",
        "memory" or "ephemeral-storage" => "GiB",
        _ => "",
    };

    public static string WithUnit(string resource, double v) => (Amount(resource, v) + " " + Unit(resource)).TrimEnd();

    private static string Number(double v) => Math.Abs(v) >= 100 ? v.ToString("0", Inv) : Math.Abs(v) >= 10 ? v.ToString("0.#", Inv) : v.ToString("0.##", Inv);

    public static string Percent(double ratio) => (ratio * 100).ToString(ratio < 0.1 ? "0.#" : "0", Inv) + "%";

    /// <summary>"3.85/3.9 cores (99%)", as the explanation and the report say it.</summary>
    public static string Usage(V1.ResourceUsage r) =>
        $"{Amount(r.Resource, r.Allocated)}/{Amount(r.Resource, r.Allocatable)} {Unit(r.Resource)} ({Percent(r.Utilization)})".Replace("  ", " ");

    /// <summary>A bar of <paramref name="width"/> cells, allocated against allocatable; '!' marks overcommit.</summary>
    public static string Bar(double ratio, int width = 10)
    {
        int full = (int)Math.Round(Math.Clamp(ratio, 0, 1) * width);
        return new string('█', full) + new string('░', width - full) + (ratio > 1 ? "!" : " ");
    }

    public static string TypeName(V1.RecommendationType t) => t switch
    {
        V1.RecommendationType.Provision => "provision",
        V1.RecommendationType.Replace => "replace",
        V1.RecommendationType.Consolidate => "consolidate",
        V1.RecommendationType.DeleteEmpty => "delete_empty",
        _ => "?",
    };

    /// <summary>
    /// Columns padded to their widest cell; <paramref name="right"/> marks numeric columns, aligned
    /// right. The last column is not padded (it holds free text: reasons, states).
    /// </summary>
    public static string Table(IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string>> rows, ISet<int>? right = null)
    {
        var all = new List<IReadOnlyList<string>> { headers };
        all.AddRange(rows);
        var widths = Enumerable.Range(0, headers.Count).Select(c => all.Max(r => Width(r[c]))).ToArray();
        var sb = new StringBuilder();
        foreach (var row in all)
        {
            var line = new StringBuilder();
            for (int c = 0; c < row.Count; c++)
            {
                var cell = row[c];
                var pad = new string(' ', widths[c] - Width(cell));
                bool last = c == row.Count - 1;
                if (right is not null && right.Contains(c)) line.Append(pad).Append(cell);
                else line.Append(cell).Append(last ? "" : pad);
                if (!last) line.Append("  ");
            }
            sb.Append(line.ToString().TrimEnd()).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>Terminal cells of a text: the bars' block characters are one cell each, as letters are.</summary>
    private static int Width(string s) => s.Length;
}
