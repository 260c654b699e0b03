using System.Buffers.Text;
using System.Text;
using System.Text.Json;

namespace Karpetrack;

/// <summary>A DaemonSet: which nodes its pods land on and what they request, from its pod template.</summary>
public sealed class DaemonSetRecord : ObjectRecord
{
    public PodRecord Template = new();
}

/// <summary>Decodes apps/v1 DaemonSets; the pod template goes through the pod decoder.</summary>
public sealed class DaemonSetDecoder(ResourceTable table) : SpecStatusDecoder<DaemonSetRecord>("daemonset")
{
    private readonly PodDecoder pods = new(table);

    protected override Decode ReadField(Part part, ref Utf8JsonReader r, ReadOnlySpan<byte> data, DaemonSetRecord ds, ref string? error)
    {
        if (part != Part.Spec || !r.ValueTextEquals("template"u8)) return Json.Skip(ref r) ? Decode.Ok : Decode.Incomplete;
        if (!r.Read()) return Decode.Incomplete;
        if (pods.TryDecode(ref r, data, out var template, ref error) == Decode.Incomplete) return Decode.Incomplete;
        ds.Template = template;
        return Decode.Ok;
    }
}
