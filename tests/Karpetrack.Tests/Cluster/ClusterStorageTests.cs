namespace Karpetrack.Tests.Cluster;

/// <summary>The compact stores behind the cluster model: the uid table, small string maps, shared parsed parts.</summary>
public class ClusterStorageTests
{
    private static Guid G(int i) => new(i, (short)(i >> 16), 7, 1, 2, 3, 4, 5, 6, 7, 8);

    [Fact]
    public void UidTableInsertsUpdatesAndDeletesThroughSeveralResizes()
    {
        var t = new UidTable<long>();
        var reference = new Dictionary<Guid, long>();
        var rng = new Random(5);
        for (int step = 0; step < 40_000; step++)
        {
            var key = G(rng.Next(6_000));
            switch (rng.Next(4))
            {
                case 0 or 1:
                    long v = rng.NextInt64();
                    Assert.Equal(!reference.ContainsKey(key), t.Set(key, v));
                    reference[key] = v;
                    break;
                case 2:
                    Assert.Equal(reference.Remove(key, out var expected), t.Remove(key, out var got));
                    Assert.Equal(expected, got);
                    break;
                default:
                    Assert.Equal(reference.TryGetValue(key, out var e), t.TryGetValue(key, out var g));
                    Assert.Equal(e, g);
                    break;
            }
        }
        Assert.Equal(reference.Count, t.Count);
        var seen = new Dictionary<Guid, long>();
        for (int i = 0; i < t.Count; i++) seen.Add(t.KeyAt(i), t.ValueAt(i));
        Assert.Equal(reference.OrderBy(kv => kv.Key), seen.OrderBy(kv => kv.Key));
    }

    [Fact]
    public void UidTableGrowsPastManyPagesAndShrinksBackToEmpty()
    {
        var t = new UidTable<int>();
        for (int i = 0; i < 10_000; i++) Assert.True(t.Set(G(i), i));
        Assert.Equal(10_000, t.Count);
        for (int i = 0; i < 10_000; i++) Assert.True(t.TryGetValue(G(i), out var v) && v == i);
        for (int i = 0; i < 10_000; i += 2) Assert.True(t.Remove(G(i), out _));
        Assert.Equal(5_000, t.Count);
        for (int i = 0; i < 10_000; i++) Assert.Equal(i % 2 == 1, t.ContainsKey(G(i)));
        for (int i = 1; i < 10_000; i += 2) Assert.True(t.Remove(G(i), out _));
        Assert.Equal(0, t.Count);
        Assert.False(t.TryGetValue(G(1), out _));
        for (int i = 0; i < 3_000; i++) t.Set(G(i), -i);      // pages given back are allocated again
        for (int i = 0; i < 3_000; i++) Assert.True(t.TryGetValue(G(i), out var v) && v == -i);
    }

    [Fact]
    public void UidTableAcceptsTheEmptyGuidAndUpdatesInPlace()
    {
        var t = new UidTable<int>();
        Assert.True(t.Set(Guid.Empty, 1));
        Assert.False(t.Set(Guid.Empty, 2));
        Assert.True(t.TryGetValue(Guid.Empty, out var v) && v == 2);
        t.ValueAt(0) = 3;
        Assert.True(t.TryGetValue(Guid.Empty, out v) && v == 3);
        Assert.True(t.Remove(Guid.Empty, out v) && v == 3);
        Assert.Equal(0, t.Count);
    }

    [Fact]
    public void UidTableRemoveAtWalkingDownwardVisitsEveryEntryOnce()
    {
        var t = new UidTable<int>();
        for (int i = 0; i < 2_500; i++) t.Set(G(i), i);
        var visited = new List<int>();
        for (int i = t.Count - 1; i >= 0; i--)
        {
            visited.Add(t.ValueAt(i));
            if (t.ValueAt(i) % 3 != 0) t.RemoveAt(i);
        }
        Assert.Equal(Enumerable.Range(0, 2_500), visited.Order());
        Assert.Equal(Enumerable.Range(0, 2_500).Count(i => i % 3 == 0), t.Count);
        for (int i = 0; i < 2_500; i++) Assert.Equal(i % 3 == 0, t.ContainsKey(G(i)));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.RemoveAt(t.Count));
    }

    [Fact]
    public void UidTableFindsKeysThatDifferOnlyInTheirHighOrLowHalf()
    {
        var t = new UidTable<int>();
        for (int i = 0; i < 4_096; i++)
        {
            var bytes = new byte[16];
            BitConverter.GetBytes((long)i).CopyTo(bytes, i % 2 == 0 ? 0 : 8);
            t.Set(new Guid(bytes), i);
        }
        Assert.Equal(4_096, t.Count);
        for (int i = 0; i < 4_096; i++)
        {
            var bytes = new byte[16];
            BitConverter.GetBytes((long)i).CopyTo(bytes, i % 2 == 0 ? 0 : 8);
            Assert.True(t.TryGetValue(new Guid(bytes), out var v) && v == i);
        }
    }

    [Fact]
    public void StringMapKeepsJsonOrderAndTheLastValueOfARepeatedKey()
    {
        var m = Scheduling.StringMap("""{"b":"1","a":"2","b":"3","n":5}"""u8);
        Assert.Equal(["b", "a"], m.Keys);
        Assert.Equal("3", m["b"]);
        Assert.Equal(2, m.Count);
        Assert.True(m.ContainsKey("a"));
        Assert.False(m.TryGetValue("n", out _));
        Assert.Throws<KeyNotFoundException>(() => m["zz"]);
        Assert.Equal([new KeyValuePair<string, string>("b", "3"), new("a", "2")], m.ToArray());
        Assert.Same(SmallMap<string>.Empty, Scheduling.StringMap("{}"u8));
        Assert.Same(SmallMap<string>.Empty, Scheduling.StringMap([]));
    }

    [Fact]
    public void SharedPartsParseOnceAndForgetWhenTheLastHolderGoes()
    {
        var parts = new SharedParts<IReadOnlyList<Toleration>>();
        int parsed = 0;
        IReadOnlyList<Toleration> Parse(ReadOnlySpan<byte> json) { parsed++; return PodShape.ParseTolerations(json); }
        var json = """[{"key":"k","operator":"Exists"}]"""u8.ToArray();
        var a = parts.Acquire(json, Parse, out var keyA);
        var b = parts.Acquire((byte[])json.Clone(), Parse, out var keyB);
        Assert.Same(a, b);
        Assert.Same(keyA, keyB);
        Assert.NotSame(json, keyA);          // the caller's buffer is not kept
        Assert.Equal(1, parsed);
        Assert.Equal(1, parts.Count);
        parts.Release(keyA!);
        Assert.Equal(1, parts.Count);
        parts.Release(keyB!);
        Assert.Equal(0, parts.Count);
        Assert.Empty(parts.Acquire([], Parse, out var none));
        Assert.Null(none);
        Assert.ThrowsAny<System.Text.Json.JsonException>(() => parts.Acquire("[{"u8.ToArray(), Parse, out _));
        Assert.Equal(0, parts.Count);
    }
}
