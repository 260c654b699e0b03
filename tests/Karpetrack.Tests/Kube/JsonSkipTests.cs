using System.Text;
using System.Text.Json;
using Karpetrack.Simulation;

namespace Karpetrack.Tests.Kube;

/// <summary>
/// The decoders' fast skip (<see cref="JsonSkip"/>): in use on this runtime, ending every valid value exactly where the
/// reader's own skip ends, and on anything else doing what the reader does (not whole yet, or the reader's own error).
/// </summary>
public class JsonSkipTests
{
    private static readonly DateTimeOffset Now = new(2026, 6, 1, 0, 0, 0, TimeSpan.Zero);

    private static byte[][] Pods(int count, int seed)
    {
        var nodes = SyntheticCluster.Nodes(5, seed, Now);
        return SyntheticCluster.Pods(nodes, count, seed, Now).Select(p => Encoding.UTF8.GetBytes(p.ToJsonString())).ToArray();
    }

    [Fact]
    public void TheFastPathPassesItsSelfCheckOnThisRuntime() => Assert.True(JsonSkip.Enabled);

    [Fact]
    public void OnRealPodsEveryObjectAndArrayClosesWhereTheReaderSaysWithoutFallingBack()
    {
        int containers = 0;
        foreach (var json in Pods(30, seed: 3))
        {
            var r = new Utf8JsonReader(json, isFinalBlock: true, default);
            while (r.Read())
            {
                if (r.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray)) continue;
                var copy = r;
                Assert.True(copy.TrySkip());
                int close = JsonSkip.FindClose(json, (int)r.BytesConsumed, r.TokenType == JsonTokenType.StartObject, 63 - r.CurrentDepth);
                Assert.Equal(copy.TokenStartIndex, close);
                containers++;
            }
        }
        Assert.True(containers > 1_000, $"only {containers} containers seen");
    }

    /// <summary>
    /// Mutated pods (bytes changed, inserted, deleted, hostile tokens), whole and cut at a random length: at every
    /// property name, the fast skip and the reader's skip agree on the outcome - the same end, both not whole yet, or
    /// both the same error.
    /// </summary>
    [Fact]
    public void OnMutatedAndCutPodsTheFastSkipDoesWhatTheReadersSkipDoes()
    {
        var rng = new Random(17);
        var pods = Pods(40, seed: 17);
        int compared = 0, fastEnds = 0, errors = 0, incomplete = 0;
        for (int i = 0; i < 4_000; i++)
        {
            var json = i % 4 == 0 ? pods[rng.Next(pods.Length)] : FuzzTests.Mutate(pods[rng.Next(pods.Length)], rng);
            bool final = i % 3 != 0;
            if (!final) json = json[..rng.Next(json.Length + 1)];
            var walk = new Utf8JsonReader(json, final, default);
            try
            {
                while (walk.Read())
                {
                    if (walk.TokenType != JsonTokenType.PropertyName) continue;
                    var fast = walk;
                    var slow = walk;
                    bool? fastOk = null, slowOk = null;
                    string? fastError = null, slowError = null;
                    try { fastOk = JsonSkip.SkipFast(ref fast); } catch (JsonException e) { fastError = e.Message; }
                    try { slowOk = slow.TrySkip(); } catch (JsonException e) { slowError = e.Message; }
                    compared++;
                    Assert.Equal(slowError, fastError);
                    Assert.Equal(slowOk, fastOk);
                    if (slowError is not null) { errors++; continue; }
                    if (slowOk == false) { incomplete++; continue; }
                    Assert.Equal(slow.TokenType, fast.TokenType);
                    Assert.Equal(slow.BytesConsumed, fast.BytesConsumed);
                    Assert.Equal(slow.CurrentDepth, fast.CurrentDepth);
                    if (slow.TokenType is JsonTokenType.EndObject or JsonTokenType.EndArray) fastEnds++;
                }
            }
            catch (JsonException) { }   // the walk itself met the damage: next document
        }
        // Each outcome was met often enough to mean something.
        Assert.True(compared > 50_000 && fastEnds > 5_000 && errors > 100 && incomplete > 100,
            $"compared {compared}, containers skipped {fastEnds}, errors {errors}, not whole {incomplete}");
    }

    /// <summary>Malformed JSON inside a field no decoder keeps still fails the list with the reader's clear error.</summary>
    [Theory]
    [InlineData("[1 2]", "invalid after a value")]
    [InlineData("[1,]", "trailing comma")]
    [InlineData("""{"a":1,}""", "trailing comma")]
    [InlineData("""{"a" 1}""", "Expected a ':'")]
    [InlineData("""{"a":tru}""", "invalid JSON literal")]
    [InlineData("[01]", "leading zero")]
    [InlineData("[1.]", "decimal point")]
    [InlineData("[-]", "Expected a digit")]
    [InlineData("""["\x"]""", "invalid escapable character")]
    [InlineData("""["\u12G4"]""", "hex")]
    [InlineData("[\"a\tb\"]", "0x09")]
    [InlineData("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", "depth")]
    [InlineData("[{}}", "'}'")]
    public async Task MalformedSkippedValuesFailTheListWithTheReadersError(string managedFields, string expected)
    {
        var pod = """{"metadata":{"name":"a","namespace":"ns","managedFields":@MF@},"spec":{"containers":[]}}""".Replace("@MF@", managedFields);
        var body = """{"metadata":{"resourceVersion":"1"},"items":[@P@]}""".Replace("@P@", pod);
        var decoded = new List<string>();
        using var window = new StreamWindow(new MemoryStream(Encoding.UTF8.GetBytes(body)));
        var e = await Assert.ThrowsAnyAsync<JsonException>(() => new ListParser<PodRecord>(new PodDecoder(ResourceTable.Default)).ParseAsync(window, (p, _) => decoded.Add(p.Name), default));
        Assert.Contains(expected, e.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Empty(decoded);
    }

    [Fact]
    public async Task ValidSkippedValuesOfEveryKindLeaveTheDecodedFieldsIntact()
    {
        const string managedFields = """[{"s":"\"q\" \\ \/ \b\f\n\r\t \u00e9 é","n":[0,-1,2.5,-3e10,4E+2,5e-3,1.0E-0],"l":[true,false,null],"o":{},"a":[],"deep":[[[{"x":[{}]}]]]} , 7 ,"x"]""";
        var pod = """{"metadata":{"name":"a","namespace":"ns","managedFields":@MF@ ,"labels":{"app":"web"}},"spec":{"env":@MF@,"nodeName":"n1","containers":[{"name":"c","probe":@MF@,"resources":{"requests":{"cpu":"250m"}}}]}}""".Replace("@MF@", managedFields);
        var got = new PodDecoder(ResourceTable.Default).DecodeComplete(Encoding.UTF8.GetBytes(pod), out var error);
        Assert.Null(error);
        Assert.Equal(("ns", "a", "n1"), (got.Namespace, got.Name, got.NodeName));
        Assert.Equal(250, got.Requests[ResourceTable.Cpu]);
        Assert.Equal("""{"app":"web"}""", Encoding.UTF8.GetString(got.LabelsJson));
    }
}
