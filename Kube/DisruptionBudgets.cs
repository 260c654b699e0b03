using System.Buffers.Text;
using System.Text;
using System.Text.Json;

namespace Karpetrack;

/// <summary>A PodDisruptionBudget trimmed to what the disruption rules read.</summary>
public sealed class PdbRecord : ObjectRecord
{
    public LabelSelector Selector = LabelSelector.Nothing;
    public int DisruptionsAllowed;
    public int CurrentHealthy;
    public int DesiredHealthy;
    public int ExpectedPods;
}

/// <summary>Decodes policy/v1 PodDisruptionBudgets.</summary>
public sealed class PdbDecoder() : SpecStatusDecoder<PdbRecord>("poddisruptionbudget")
{
    protected override Decode ReadField(Part part, ref Utf8JsonReader r, ReadOnlySpan<byte> data, PdbRecord pdb, ref string? error)
    {
        if (part == Part.Spec && r.ValueTextEquals("selector"u8))
        {
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType != JsonTokenType.StartObject) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
            long start = r.TokenStartIndex;
            if (!Json.Skip(ref r)) return Decode.Incomplete;
            using var doc = JsonDocument.Parse(data[(int)start..(int)r.BytesConsumed].ToArray());
            pdb.Selector = LabelSelector.FromJson(doc.RootElement);
            return Decode.Ok;
        }
        if (part == Part.Status)
        {
            int ignored = 0;
            ref int target = ref ignored;
            if (r.ValueTextEquals("disruptionsAllowed"u8)) target = ref pdb.DisruptionsAllowed;
            else if (r.ValueTextEquals("currentHealthy"u8)) target = ref pdb.CurrentHealthy;
            else if (r.ValueTextEquals("desiredHealthy"u8)) target = ref pdb.DesiredHealthy;
            else if (r.ValueTextEquals("expectedPods"u8)) target = ref pdb.ExpectedPods;
            else return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
            if (!r.Read()) return Decode.Incomplete;
            if (r.TokenType == JsonTokenType.Number && r.TryGetInt32(out var n)) target = n;
            return Decode.Ok;
        }
        return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
    }
}
