using Google.Protobuf.Collections;
using Google.Protobuf.WellKnownTypes;

namespace Karpetrack.Api.V1;

/// <summary>
/// What a node's row in the node map (<see cref="NodeSummary"/>, ListNodes) and its explanation
/// (<see cref="NodeExplanation"/>, ExplainNode) both say about it: its class and place, state, pods, age,
/// price and idle cost, and resources. <see cref="NodeMap.Describe"/> fills them in one place.
/// </summary>
public interface INodeFacts
{
    string ServerClass { get; set; }
    string Pool { get; set; }
    string CapacityType { get; set; }
    string Region { get; set; }
    string State { get; set; }
    int Pods { get; set; }
    Timestamp Created { get; set; }
    bool Priced { get; set; }
    double PricePerHour { get; set; }
    double IdleCostPerHour { get; set; }
    RepeatedField<ResourceUsage> Resources { get; }
}

public sealed partial class NodeSummary : INodeFacts;

public sealed partial class NodeExplanation : INodeFacts;
