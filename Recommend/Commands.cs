using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Karpetrack;

/// <summary>
/// What a method decided for its candidates, as a plain value the plan state applies: a command, or a blocker
/// that keeps the candidate (with why).
/// </summary>
internal abstract record Decision;

/// <summary>A command: the recommendation (none when pending pods only take existing room) and what it takes of the room on kept nodes.</summary>
internal sealed record Command(Recommendation? Recommendation, IReadOnlyList<RoomClaim> Claims) : Decision;

/// <summary>The candidate stays, for this reason.</summary>
internal sealed record Keep(string Node, Blocker Blocker) : Decision
{
    /// <summary>The node stays because new nodes for it would pass the managed capacity limits; <paramref name="refusal"/> is <see cref="PoolPolicy.CheckCreate"/>'s text.</summary>
    public static Keep AtLimit(string node, string refusal) => new(node, new Blocker(BlockerReasons.ManagedCapacityLimit, [], []) { Detail = refusal });
}

/// <summary>Several candidates stay (a group whose command was dropped), each for its reason.</summary>
internal sealed record KeepAll(IReadOnlyList<Keep> Keeps) : Decision;

/// <summary>Provisioning's command, with the pods it cannot place and the plan's provisioning cost and its lower bound.</summary>
internal sealed record Provisioned(Command Command, IReadOnlyList<(string Pod, string Reason)> Unplaceable, decimal CostPerHour, decimal LowerBoundPerHour) : Decision
{
    /// <summary>The two bounds behind <see cref="LowerBoundPerHour"/> (<see cref="PackingSolution.ResourceBound"/>, <see cref="PackingSolution.ConfigurationBound"/>).</summary>
    public decimal ResourceBoundPerHour { get; init; }
    public decimal ConfigurationBoundPerHour { get; init; }
}

/// <summary>A recommendation's hourly costs: of what it removes, of what it buys, and the lower bound of the latter.</summary>
internal readonly record struct Costs(decimal Current, decimal New, decimal LowerBound);

/// <summary>The pods a command evicts, and the smallest disruptionsAllowed among the budgets covering them (-1: none).</summary>
internal readonly record struct Disruption(int PodsEvicted, int PdbHeadroom)
{
    public static readonly Disruption None = new(0, -1);
}

/// <summary>Recommendations built one way: moves in one order, and an id that hashes their content.</summary>
internal static class Recommendations
{
    public static Recommendation Build(RecommendationType type, IReadOnlyList<string> nodes, IReadOnlyList<NewNode> newNodes, List<PodMove> moves,
        IReadOnlyList<string> pendingPods, Costs costs, Disruption disruption, List<string> reasons)
    {
        // Sorted once, here; the id hashes the same order.
        moves.Sort(PodMove.CompareByPod);
        var id = StableId(type, nodes, newNodes, pendingPods, moves);
        // Held as an exact array: the plan keeps its moves for as long as it is published.
        return new Recommendation(id, type, nodes, newNodes, moves.ToArray(), pendingPods, costs.Current, costs.New, costs.LowerBound,
            disruption.PodsEvicted, disruption.PdbHeadroom, reasons);
    }

    /// <summary>Same content, same id: type, nodes, new classes and the pods involved (moves in Build's order), hashed.</summary>
    private static string StableId(RecommendationType type, IReadOnlyList<string> nodes, IReadOnlyList<NewNode> newNodes, IReadOnlyList<string> pending, List<PodMove> moves)
    {
        // Streamed into the hash through one small buffer: the text of a plan for 100k pending pods was about 30 MB
        // of string, copy and bytes. The bytes hashed are those of the text, so ids do not change.
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new IdText(hash);
        buffer.Add(type.ToString()).Add('|');
        for (int i = 0; i < nodes.Count; i++) { if (i > 0) buffer.Add(','); buffer.Add(nodes[i]); }
        buffer.Add('|');
        foreach (var n in newNodes) buffer.Add(n.ServerClass).Add('×').Add(n.Count.ToString(CultureInfo.InvariantCulture)).Add(',');
        buffer.Add('|');
        for (int i = 0; i < pending.Count; i++) { if (i > 0) buffer.Add(','); buffer.Add(pending[i]); }
        buffer.Add('|');
        Span<char> name = stackalloc char[256];
        foreach (var m in moves)
        {
            buffer.Add(m.Namespace).Add('/');
            if (m.TryWritePod(name, out int length)) buffer.Add(name[..length]); else buffer.Add(m.Pod);
            buffer.Add(',');
        }
        buffer.Flush();
        Span<byte> digest = stackalloc byte[32];
        hash.GetHashAndReset(digest);
        return type.ToString().ToLowerInvariant()[..3] + "-" + Convert.ToHexStringLower(digest)[..12];
    }

    /// <summary>UTF-8 text into a hash in chunks.</summary>
    private sealed class IdText(IncrementalHash hash)
    {
        // One buffer per thread for every id it makes (a scan makes thousands; ids are never made one inside another).
        [ThreadStatic] private static byte[]? buffer;
        private readonly byte[] bytes = buffer ??= new byte[16 * 1024];
        private int used;

        public IdText Add(char c) => Add(new ReadOnlySpan<char>(in c));

        public IdText Add(ReadOnlySpan<char> text)
        {
            while (text.Length > 0)
            {
                // At most 3 bytes per UTF-16 unit; a surrogate pair is never split (chunks end on whole strings or 1k units).
                int take = Math.Min(text.Length, 1024);
                if (take < text.Length && char.IsHighSurrogate(text[take - 1])) take--;
                if (bytes.Length - used < take * 3) Flush();
                used += Encoding.UTF8.GetBytes(text[..take], bytes.AsSpan(used));
                text = text[take..];
            }
            return this;
        }

        public void Flush()
        {
            hash.AppendData(bytes, 0, used);
            used = 0;
        }
    }
}
