namespace Karpetrack;

/// <summary>A bin while packing: a new bin of a type, or an existing node's free capacity.</summary>
internal sealed class Bin(int type, int existing)
{
    public int Type = type;                 // new-bin type index, or -1
    public readonly int Existing = existing; // existing bin index, or -1
    public readonly long[] Used = new long[PackingInstance.D];
    public readonly List<int> Items = [];
    public List<int>? Groups;               // anti-affinity groups inside
    public double Worth;                    // dual value of the items inside
    public bool Removed;
    public bool Tried;                      // emptied by a ruin-and-repair round since the cost last fell
}
