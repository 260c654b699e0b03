namespace Karpetrack;

/// <summary>The step an operation is in. Planned: decided on, nothing written yet.</summary>
public enum OperationStep { Planned, CreatePools, WaitReady, Cordon, Drain, DeletePools, Done, Failed }

/// <summary>
/// The transitions an operation may take, and nothing else: a step that is not listed here is a bug,
/// and <see cref="Require"/> throws rather than let an operation jump (say, from waiting straight to a pool delete).
/// </summary>
public static class OperationSteps
{
    private static readonly Dictionary<OperationStep, OperationStep[]> Next = new()
    {
        // A new operation buys first, or (nothing to buy) cordons at once; one reconstructed after a restart waits for its
        // pools' nodes, or goes on draining the nodes the cluster records it was draining.
        [OperationStep.Planned] = [OperationStep.CreatePools, OperationStep.Cordon, OperationStep.WaitReady, OperationStep.Drain],
        [OperationStep.CreatePools] = [OperationStep.CreatePools, OperationStep.WaitReady, OperationStep.Failed],
        // A provision ends once its nodes are Ready; a replacement goes on to the cordon.
        [OperationStep.WaitReady] = [OperationStep.WaitReady, OperationStep.Cordon, OperationStep.Done, OperationStep.Failed],
        [OperationStep.Cordon] = [OperationStep.Cordon, OperationStep.Drain, OperationStep.Failed],
        [OperationStep.Drain] = [OperationStep.Drain, OperationStep.DeletePools, OperationStep.Failed],
        // A pod that runs on the node again sends the operation back to the drain.
        [OperationStep.DeletePools] = [OperationStep.DeletePools, OperationStep.Drain, OperationStep.Done, OperationStep.Failed],
        [OperationStep.Done] = [],
        [OperationStep.Failed] = [],
    };

    public static bool IsTerminal(OperationStep s) => s is OperationStep.Done or OperationStep.Failed;

    public static bool Allowed(OperationStep from, OperationStep to) => Next[from].Contains(to);

    /// <summary>Throws when <paramref name="from"/> → <paramref name="to"/> is not an allowed transition.</summary>
    public static void Require(OperationStep from, OperationStep to)
    {
        if (!Allowed(from, to)) throw new InvalidOperationException($"an operation cannot go from {from} to {to}");
    }
}
