using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Karpetrack.Simulation;

/// <summary>
/// JSON nodes to bytes without the reflection-based serializer, which the NativeAOT binary (that
/// embeds this simulation for --demo) does not have.
/// </summary>
internal static class JsonWire
{
    public static byte[] Utf8(JsonNode node)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var writer = new Utf8JsonWriter(buffer)) node.WriteTo(writer);
        return buffer.WrittenSpan.ToArray();
    }

    public static JsonElement Element(JsonNode node)
    {
        using var doc = JsonDocument.Parse(Utf8(node));
        return doc.RootElement.Clone();
    }
}
