using System.Text;
using System.Text.Json;
using Karpetrack.Simulation;

namespace Karpetrack.Tests;

/// <summary>
/// Every parser that reads outside input, fed mutated real input: it may reject it, with its own
/// error, but never throw anything else (an OverflowException once ended the price loop for good).
/// Seeds are fixed, so a failure repeats.
/// </summary>
public sealed class FuzzTests
{
    private static readonly DateTimeOffset Now = new(2026, 6, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>Replaces, inserts, deletes or duplicates a few bytes; sometimes splices in a hostile token.</summary>
    internal static byte[] Mutate(byte[] seed, Random rng)
    {
        string[] tokens = ["1e2147483647", "-1e2147483648", "99999999999999999999999999999999", "10000000000GB", "\"\\ud800\"",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "null", "{}", "-0", "1e-400", "\"9Ei\"", "\"1e2147483647\""];
        var bytes = new List<byte>(seed);
        int edits = rng.Next(1, 6);
        for (int e = 0; e < edits && bytes.Count > 0; e++)
        {
            int at = rng.Next(bytes.Count);
            switch (rng.Next(5))
            {
                case 0: bytes[at] = (byte)rng.Next(256); break;
                case 1: bytes.Insert(at, (byte)"0123456789.eE-+\"{}[],:"[rng.Next(22)]); break;
                case 2: bytes.RemoveRange(at, Math.Min(rng.Next(1, 8), bytes.Count - at)); break;
                case 3: bytes.InsertRange(at, bytes.GetRange(at, Math.Min(rng.Next(1, 16), bytes.Count - at))); break;
                default:
                    // Over a whole JSON value where one starts (a digit or a quote), else at the byte.
                    bytes.InsertRange(at, Encoding.UTF8.GetBytes(tokens[rng.Next(tokens.Length)]));
                    break;
            }
        }
        return bytes.ToArray();
    }

    [Fact]
    public void QuantitiesOnlyEverFailWithAMessage()
    {
        var rng = new Random(11);
        string[] seeds = ["250m", "1.5Gi", "1e3", "0.5", "9Ei", "1e2147483647", "100Mi", "-3.01e-5", "12345678901234567890123456789012345"];
        const string alphabet = "0123456789.eE+-mkMGTPEinu ";
        for (int i = 0; i < 50_000; i++)
        {
            var s = seeds[rng.Next(seeds.Length)].ToCharArray().ToList();
            for (int e = rng.Next(1, 4); e > 0; e--)
            {
                int at = rng.Next(s.Count + 1);
                if (rng.Next(2) == 0 || at == s.Count) s.Insert(at, alphabet[rng.Next(alphabet.Length)]);
                else s.RemoveAt(at);
            }
            var text = new string(s.ToArray());
            if (Quantity.TryParse(text, out var q, out var error))
            {
                // Whatever parses stays inside int64 once scaled, as the scheduler's integers do.
                Assert.InRange(q.CeilMilli, long.MinValue + 1, long.MaxValue);
                Assert.Null(error);
            }
            else
            {
                Assert.Contains("quantity", error);
            }
        }
    }

    [Theory]
    [InlineData("1e2147483647")]
    [InlineData("1e-2147483648")]
    [InlineData("1E1001")]
    [InlineData("5e-1001")]
    public void AbsurdExponentsAreMalformed(string text)
    {
        Assert.False(Quantity.TryParse(text, out _, out var error));
        Assert.Contains("out-of-range exponent", error);
    }

    [Fact]
    public void ExponentsAtTheBoundAreCappedOrRoundedAsApimachineryDoes()
    {
        Assert.Equal(long.MaxValue, Quantity.Parse("1e1000").CeilUnits);
        Assert.Equal(0.000000001m, Quantity.Parse("1e-1000").Value);
    }

    [Fact]
    public void PriceFeedsOnlyEverFailWithAFeedError()
    {
        var rng = new Random(12);
        var seed = FeedServer.EmbeddedSnapshots()[0].Body;
        int rejected = 0;
        for (int i = 0; i < 400; i++)
        {
            var body = Mutate(seed, rng);
            try
            {
                var book = PriceFeedParser.Parse(body, Now, "fuzz");
                Assert.All(book.Classes.Values, c => Assert.InRange(c.Class.MemoryBytes, 1, PriceFeedParser.MaxMemoryBytes));
            }
            catch (PriceFeedException) { rejected++; }
        }
        Assert.InRange(rejected, 1, 399);   // the mutations both break and keep feeds
    }

    [Fact]
    public void KubernetesObjectsOnlyEverFailAsJsonOrWithADecodeError()
    {
        var rng = new Random(13);
        var nodes = SyntheticCluster.Nodes(5, seed: 13, Now);
        var pods = SyntheticCluster.Pods(nodes, 40, seed: 13, Now).Select(p => Encoding.UTF8.GetBytes(p.ToJsonString())).ToArray();
        var nodeBytes = nodes.Select(n => Encoding.UTF8.GetBytes(n.ToJsonString())).ToArray();
        var table = ResourceTable.Default;
        int errors = 0;
        for (int i = 0; i < 3_000; i++)
        {
            bool pod = i % 2 == 0;
            var seed = pod ? pods[rng.Next(pods.Length)] : nodeBytes[rng.Next(nodeBytes.Length)];
            var json = Mutate(seed, rng);
            try
            {
                string? error;
                if (pod) new PodDecoder(table).DecodeComplete(json, out error);
                else new NodeDecoder(table).DecodeComplete(json, out error);
                if (error is not null) errors++;
            }
            catch (JsonException) { errors++; }
            catch (InvalidDataException) { errors++; }   // an empty document
        }
        Assert.InRange(errors, 1, 2_999);
    }

    [Fact]
    public void SchedulingFactsOfAnyShapeParseWithoutThrowing()
    {
        // The raw slices a decoded pod keeps (valid JSON, valid UTF-8) are parsed once per shape, later,
        // inside the model: a number or an array where an object or string belongs must not throw there.
        var rng = new Random(14);
        string[] seeds =
        [
            """{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"a","operator":"In","values":["x","y"]}],"matchFields":[{"key":"metadata.name","operator":"In","values":["n1"]}]}]}},"podAntiAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":[{"topologyKey":"kubernetes.io/hostname","labelSelector":{"matchLabels":{"app":"w"},"matchExpressions":[{"key":"t","operator":"Exists"}]},"namespaces":["a"]}]}}""",
            """[{"key":"k","operator":"Equal","value":"v","effect":"NoSchedule"},{"operator":"Exists"}]""",
            """{"app":"web","tier":"front"}""",
        ];
        string[] replacements = ["7", "[]", "{}", "null", "true", "\"s\"", "[1,2]", "{\"a\":1}"];
        int parsed = 0;
        for (int i = 0; i < 3_000; i++)
        {
            var node = System.Text.Json.Nodes.JsonNode.Parse(seeds[i % seeds.Length])!;
            // Replace a few values anywhere in the tree with values of another kind.
            var all = new List<System.Text.Json.Nodes.JsonNode>();
            void Walk(System.Text.Json.Nodes.JsonNode n)
            {
                all.Add(n);
                if (n is System.Text.Json.Nodes.JsonObject o) foreach (var (_, v) in o) { if (v is not null) Walk(v); }
                else if (n is System.Text.Json.Nodes.JsonArray a) foreach (var v in a) { if (v is not null) Walk(v); }
            }
            Walk(node);
            for (int e = rng.Next(1, 4); e > 0; e--)
            {
                var target = all[rng.Next(all.Count)];
                var parent = target.Parent;
                var fresh = System.Text.Json.Nodes.JsonNode.Parse(replacements[rng.Next(replacements.Length)]);
                if (parent is System.Text.Json.Nodes.JsonObject po) po[target.GetPropertyName()] = fresh;
                else if (parent is System.Text.Json.Nodes.JsonArray pa) pa[target.GetElementIndex()] = fresh;
                else node = fresh ?? node;
                all.Clear(); Walk(node);
            }
            var bytes = Encoding.UTF8.GetBytes(node.ToJsonString());
            PodShape.ParseAffinity(bytes);
            PodShape.ParseTolerations(bytes);
            Scheduling.StringMap(bytes);
            using var doc = JsonDocument.Parse(bytes);
            LabelSelector.FromJson(doc.RootElement);
            parsed++;
        }
        Assert.Equal(3_000, parsed);
    }

    [Fact]
    public void DeeplyNestedFeedsAreRejectedNotOverflowingTheStack()
    {
        var deep = Encoding.UTF8.GetBytes("{\"regions\":" + new string('[', 100_000) + new string(']', 100_000) + "}");
        Assert.Contains("not valid JSON", Assert.Throws<PriceFeedException>(() => PriceFeedParser.Parse(deep, Now, "t")).Message);
    }
    /// <summary>
    /// The disruption annotation (karpetrack.io/disruption) is read from nodes anyone can annotate: mutated and hostile
    /// values never throw; a value refused as malformed always comes with a reason and reads as an earlier release's
    /// (the recommendation before the first ';', no step, type or saving); a value accepted keeps its saving within
    /// the bound and writes back to a value read the same.
    /// </summary>
    [Fact]
    public void DisruptionAnnotationsOfAnyShapeAreReadOrRefusedAsTheOldFormat()
    {
        var rng = new Random(15);
        string[] seeds = ["rep-0123456789ab;step=drain;op=replace;saving=0.0123", "con-000000000001;step=drain;op=consolidate;saving=-1.5",
            "del-000000000002;step=drain;op=delete-empty", "rep-0123456789ab;step=drain", "rep-0123456789ab", "rep-1;future=x;step=later"];
        string[] hostile = [";", "=", ";;", "saving=", "saving=1e2147483647", "saving=99999999999999999999999999999999", "saving=-0",
            "saving=1000000.0000001", "op=", "op=provision", "step=drain", " ", "\0", "\ud800", "==", "saving=NaN", "saving=∞"];
        const string alphabet = "abcdefgilnoprstv-=;.0123456789+e ";
        for (int i = 0; i < 50_000; i++)
        {
            var s = new StringBuilder(seeds[rng.Next(seeds.Length)]);
            for (int e = rng.Next(1, 5); e > 0; e--)
            {
                int at = rng.Next(s.Length + 1);
                switch (rng.Next(4))
                {
                    case 0: s.Insert(at, alphabet[rng.Next(alphabet.Length)]); break;
                    case 1 when at < s.Length: s.Remove(at, Math.Min(rng.Next(1, 6), s.Length - at)); break;
                    case 2: s.Insert(at, hostile[rng.Next(hostile.Length)]); break;
                    default: s.Insert(at, ";" + hostile[rng.Next(hostile.Length)]); break;
                }
            }
            var text = s.ToString();
            var oldFormat = new DisruptionRecord(text.Split(';')[0].Trim(), null);
            if (DisruptionRecord.TryParse(text, out var record, out var error))
            {
                Assert.Null(error);
                Assert.Equal(oldFormat.RecommendationId, record.RecommendationId);
                if (record.Saving is { } saving) Assert.InRange(saving, -DisruptionRecord.MaxSaving, DisruptionRecord.MaxSaving);
                Assert.True(DisruptionRecord.TryParse(record.ToString(), out var again, out _), $"{record} (from \"{text}\") does not read back");
                Assert.Equal((record.RecommendationId, record.Step, record.Type), (again.RecommendationId, again.Step, again.Type));
            }
            else
            {
                Assert.False(string.IsNullOrEmpty(error), text);
                Assert.Equal(oldFormat, record);
            }
            Assert.Equal(record, DisruptionRecord.Parse(text));
        }
    }

    [Theory]
    [InlineData("rep-1;saving=99999999999999999999999999999999")]
    [InlineData("rep-1;saving=1e2147483647")]
    [InlineData("rep-1;saving=1000000.01")]
    [InlineData("rep-1;saving=NaN")]
    [InlineData("rep-1;op=provision")]
    [InlineData("rep-1;step=drain;step=drain")]
    [InlineData("rep-1;step=drain;garbage")]
    [InlineData(";step=drain;op=replace")]
    public void HostileDisruptionAnnotationsAreRefusedAsTheOldFormat(string text)
    {
        Assert.False(DisruptionRecord.TryParse(text, out var record, out var error));
        Assert.False(string.IsNullOrEmpty(error));
        Assert.Equal(new DisruptionRecord(text.Split(';')[0], null), record);
    }
}
