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
                var slow = r;
                Assert.True(slow.TrySkip());
                int close = JsonSkip.FindClose(json, (int)r.BytesConsumed, r.TokenType == JsonTokenType.StartObject, 63 - r.CurrentDepth);
                Assert.Equal(slow.TokenStartIndex, close);
                // SkipFast itself (its own depth budget, the reader moved onto the bracket) skips it, not the fallback.
                var fast = r;
                int before = JsonSkip.FastSkips;
                Assert.True(JsonSkip.SkipFast(ref fast));
                Assert.Equal(before + 1, JsonSkip.FastSkips);
                Assert.Equal((slow.TokenType, slow.BytesConsumed, slow.CurrentDepth), (fast.TokenType, fast.BytesConsumed, fast.CurrentDepth));
                containers++;
            }
        }
        Assert.True(containers > 1_000, $"only {containers} containers seen");
    }

    /// <summary>
    /// Nesting exactly to the reader's depth limit is skipped by the fast path; one level deeper fails with the reader's
    /// own error, for the default limit and for a reader built with a smaller one.
    /// </summary>
    [Theory]
    [InlineData(0)]     // the default (64)
    [InlineData(8)]
    [InlineData(64)]
    public void NestingToTheReadersDepthLimitIsSkippedFastAndOneDeeperFailsWithTheReadersError(int maxDepth)
    {
        var options = new JsonReaderOptions { MaxDepth = maxDepth };
        byte[] Doc(int n) => Encoding.UTF8.GetBytes("{\"a\":" + new string('[', n) + new string(']', n) + ",\"b\":1}");
        Utf8JsonReader OnA(byte[] json)
        {
            var r = new Utf8JsonReader(json, isFinalBlock: true, new JsonReaderState(options));
            Assert.True(r.Read() && r.Read());
            Assert.Equal(JsonTokenType.PropertyName, r.TokenType);
            return r;
        }
        static string? ReaderError(byte[] json, JsonReaderOptions options)
        {
            var r = new Utf8JsonReader(json, isFinalBlock: true, new JsonReaderState(options));
            try { while (r.Read()) { } return null; } catch (JsonException e) { return e.Message; }
        }

        // The reader's own limit: the object is one level, so n arrays inside it reach depth n + 1.
        int limit = (maxDepth == 0 ? 64 : maxDepth) - 1;
        Assert.Null(ReaderError(Doc(limit), options));
        Assert.NotNull(ReaderError(Doc(limit + 1), options));

        var atLimit = Doc(limit);
        var fast = OnA(atLimit);
        var slow = OnA(atLimit);
        int before = JsonSkip.FastSkips;
        Assert.True(JsonSkip.SkipFast(ref fast));
        Assert.Equal(before + 1, JsonSkip.FastSkips);
        Assert.True(slow.TrySkip());
        Assert.Equal((slow.TokenType, slow.BytesConsumed, slow.CurrentDepth), (fast.TokenType, fast.BytesConsumed, fast.CurrentDepth));
        Assert.True(fast.Read() && fast.ValueTextEquals("b"u8));

        var tooDeep = Doc(limit + 1);
        var fastDeep = OnA(tooDeep);
        var slowDeep = OnA(tooDeep);
        JsonException? slowError = null, fastError = null;
        try { slowDeep.TrySkip(); } catch (JsonException e) { slowError = e; }
        before = JsonSkip.FastSkips;
        try { JsonSkip.SkipFast(ref fastDeep); } catch (JsonException e) { fastError = e; }
        Assert.NotNull(slowError);
        Assert.NotNull(fastError);
        Assert.Equal(slowError.Message, fastError.Message);
        Assert.Contains("depth", fastError.Message, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(before, JsonSkip.FastSkips);
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

    /// <summary>Through a list: managedFields nested to the reader's limit decodes the pod, one deeper fails the list with the reader's error.</summary>
    [Fact]
    public async Task AListWithSkippedValuesAtTheDepthLimitDecodesAndOneDeeperFailsWithTheReadersError()
    {
        static byte[] Body(int n)
        {
            var pod = """{"metadata":{"name":"a","namespace":"ns","managedFields":@MF@},"spec":{"containers":[]}}""".Replace("@MF@", new string('[', n) + new string(']', n));
            return Encoding.UTF8.GetBytes("""{"metadata":{"resourceVersion":"1"},"items":[@P@]}""".Replace("@P@", pod));
        }
        static string? ReaderError(byte[] json)
        {
            var r = new Utf8JsonReader(json, isFinalBlock: true, default);
            try { while (r.Read()) { } return null; } catch (JsonException e) { return e.Message; }
        }
        // managedFields' array opens at depth 5 (body, items, pod, metadata): 60 arrays reach the reader's 64.
        const int limit = 60;
        Assert.Null(ReaderError(Body(limit)));
        var readerError = ReaderError(Body(limit + 1));
        Assert.NotNull(readerError);

        var decoded = new List<string>();
        using (var window = new StreamWindow(new MemoryStream(Body(limit))))
            await new ListParser<PodRecord>(new PodDecoder(ResourceTable.Default)).ParseAsync(window, (p, _) => decoded.Add(p.Name), default);
        Assert.Equal(["a"], decoded);

        decoded.Clear();
        using var deep = new StreamWindow(new MemoryStream(Body(limit + 1)));
        var e = await Assert.ThrowsAnyAsync<JsonException>(() => new ListParser<PodRecord>(new PodDecoder(ResourceTable.Default)).ParseAsync(deep, (p, _) => decoded.Add(p.Name), default));
        Assert.Equal(readerError, e.Message);
        Assert.Empty(decoded);
    }

    /// <summary>
    /// After a fast skip the reader's line and byte-in-line position count the skipped bytes, so a later error in the
    /// same buffer names the same place as after the reader's own skip.
    /// </summary>
    [Theory]
    [InlineData("{\"a\":{\"x\":[1, \"é\", {}]},\"b\":tru}")]                          // no line feed in the skipped value
    [InlineData("{\"a\": [1,\n  2,\r\n\t{\"y\" :\n \"é\"}\n  ] ,\n \"b\":tru}")]     // line feeds inside and after it
    [InlineData("{\n\"a\":\n{\"x\":\n\n[]},\"b\":\n  nul }")]
    public void AnErrorAfterAFastSkipReportsTheReadersLineAndBytePosition(string json)
    {
        var bytes = Encoding.UTF8.GetBytes(json);
        (string message, long? line, long? position) SkipAThenFail(bool useFast)
        {
            var r = new Utf8JsonReader(bytes, isFinalBlock: true, default);
            Assert.True(r.Read() && r.Read() && r.ValueTextEquals("a"u8));
            int before = JsonSkip.FastSkips;
            Assert.True(useFast ? JsonSkip.SkipFast(ref r) : r.TrySkip());
            if (useFast) Assert.Equal(before + 1, JsonSkip.FastSkips);
            try { while (r.Read()) { } }
            catch (JsonException e) { return (e.Message, e.LineNumber, e.BytePositionInLine); }
            throw new InvalidOperationException("no error");
        }
        Assert.Equal(SkipAThenFail(useFast: false), SkipAThenFail(useFast: true));
    }

    [Fact]
    public async Task ValidSkippedValuesOfEveryKindLeaveTheDecodedFieldsIntact()
    {
        const string managedFields = """[{"s":"\"q\" \\ \/ \b\f\n\r\t \u00e9 é","n":[0,-1,2.5,-3e10,4E+2,5e-3,1.0E-0],"l":[true,false,null],"o":{},"a":[],"deep":[[[{"x":[{}]}]]]} , 7 ,"x"]""";
        var pod = """{"metadata":{"name":"a","namespace":"ns","managedFields":@MF@ ,"labels":{"app":"web"}},"spec":{"env":@MF@,"nodeName":"n1","containers":[{"name":"c","probe":@MF@,"resources":{"requests":{"cpu":"250m"}}}]}}""".Replace("@MF@", managedFields);
        int before = JsonSkip.FastSkips;
        var got = new PodDecoder(ResourceTable.Default).DecodeComplete(Encoding.UTF8.GetBytes(pod), out var error);
        Assert.Null(error);
        // managedFields, env and probe at least were skipped by the fast path, not handed to the reader's TrySkip.
        Assert.True(JsonSkip.FastSkips - before >= 3, $"{JsonSkip.FastSkips - before} fast skips");
        Assert.Equal(("ns", "a", "n1"), (got.Namespace, got.Name, got.NodeName));
        Assert.Equal(250, got.Requests[ResourceTable.Cpu]);
        Assert.Equal("""{"app":"web"}""", Encoding.UTF8.GetString(got.LabelsJson));
    }
}
