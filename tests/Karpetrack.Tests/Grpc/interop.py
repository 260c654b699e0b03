"""Calls Karpetrack's gRPC API with Debian's python3-grpcio (run with /usr/bin/python3).

Usage: interop.py ADDRESS PROTO_ROOT PEER_PROTO_ROOT WORKDIR: our protos, then grpc's health and reflection
protos (tests/protos: the service gets them from its packages). Generates stubs with grpc_tools.protoc into WORKDIR,
runs every check and prints one JSON object: {check: value}. The C# test asserts on it.
"""
import json
import os
import subprocess
import sys

addr, proto_root, peer_root, work = sys.argv[1:5]
import grpc_tools
wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
# Generated modules named grpc.* would hide the grpc package: health and reflection get other folders
# (the proto package, and so the method paths, stay grpc.health.v1 and grpc.reflection.v1).
import shutil
src = os.path.join(work, "src")
for folder, proto in (("kt_health", "grpc/health/v1/health.proto"), ("kt_reflection", "grpc/reflection/v1/reflection.proto")):
    os.makedirs(os.path.join(src, folder), exist_ok=True)
    shutil.copy(os.path.join(peer_root, proto), os.path.join(src, folder))
subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I" + proto_root, "-I" + src, "-I" + wkt,
                       "--python_out=" + work, "--grpc_python_out=" + work,
                       "karpetrack/v1/karpetrack.proto", "kt_health/health.proto", "kt_reflection/reflection.proto"])
sys.path.insert(0, work)

import grpc
from karpetrack.v1 import karpetrack_pb2 as pb, karpetrack_pb2_grpc as pbg
from kt_health import health_pb2, health_pb2_grpc
from kt_reflection import reflection_pb2, reflection_pb2_grpc

out = {}
ch = grpc.insecure_channel(addr)
grpc.channel_ready_future(ch).result(timeout=10)
stub = pbg.KarpetrackStub(ch)


def status_of(fn):
    try:
        fn()
        return ["OK", ""]
    except grpc.RpcError as e:
        return [e.code().name, e.details()]


out["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(
    health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)
out["health_unknown"] = status_of(lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5))

s = stub.GetSummary(pb.GetSummaryRequest(), timeout=10)
out["summary_nodes"] = s.nodes
out["summary_cost"] = s.cost_per_hour
out["summary_price_book_fetched"] = s.price_book.fetched_at.seconds
out["summary_plan_ready"] = s.plan_ready
out["summary_after"] = s.cost_after_recommendations_per_hour.value if s.HasField("cost_after_recommendations_per_hour") else None
out["summary_lower_bound"] = s.cost_lower_bound_per_hour.value if s.HasField("cost_lower_bound_per_hour") else None

lst = stub.ListRecommendations(pb.ListRecommendationsRequest(), timeout=10)
out["recommendations"] = len(lst.recommendations)
out["recommendation_nodes"] = [list(r.nodes) for r in lst.recommendations]
delete_only = stub.ListRecommendations(pb.ListRecommendationsRequest(type=pb.RECOMMENDATION_TYPE_DELETE_EMPTY), timeout=10)
out["delete_empty_types"] = sorted({pb.RecommendationType.Name(r.type) for r in delete_only.recommendations})
gz = stub.ListRecommendations(pb.ListRecommendationsRequest(), timeout=10, compression=grpc.Compression.Gzip)
out["gzip_recommendations"] = len(gz.recommendations)

node = next((r.nodes[0] for r in lst.recommendations if len(r.nodes) > 0), None)
if node:
    e = stub.ExplainNode(pb.ExplainNodeRequest(node=node), timeout=10)
    out["explain_node"] = e.node
    out["explain_removable_or_replaceable"] = e.removable or e.replaceable
    sim = stub.Simulate(pb.SimulateRequest(remove_nodes=[node]), timeout=30)
    out["simulate_before"] = sim.cost_before_per_hour
    out["simulate_after"] = sim.cost_after_per_hour
out["explain_unknown"] = status_of(lambda: stub.ExplainNode(pb.ExplainNodeRequest(node="nœud 50%/x=y"), timeout=5))
out["explain_empty"] = status_of(lambda: stub.ExplainNode(pb.ExplainNodeRequest(node=""), timeout=5))
out["simulate_bad_quantity"] = status_of(lambda: stub.Simulate(
    pb.SimulateRequest(add_pods=[pb.SimulatedPod(name="p", cpu="lots")]), timeout=5))
# Dry-run takes no approvals, whoever asks: refused before the token is even looked at.
out["approve_dry_run"] = status_of(lambda: stub.ApproveRecommendation(
    pb.ApproveRecommendationRequest(id=lst.recommendations[0].id if lst.recommendations else "x"),
    metadata=[("authorization", "Bearer anything")], timeout=5))
out["unknown_method"] = status_of(lambda: ch.unary_unary("/karpetrack.v1.Karpetrack/Nope",
                                                          request_serializer=lambda m: m.SerializeToString(),
                                                          response_deserializer=pb.Summary.FromString)(pb.GetSummaryRequest(), timeout=5))

# Server stream: the initial set, a SYNCED marker, then cancel.
call = stub.WatchRecommendations(pb.WatchRecommendationsRequest(heartbeat_seconds=1), timeout=30)
kinds = []
for ev in call:
    kinds.append(pb.RecommendationEvent.Kind.Name(ev.kind))
    if ev.kind == pb.RecommendationEvent.KIND_SYNCED:
        break
call.cancel()
out["watch_kinds"] = kinds
out["watch_cancelled"] = call.code().name

# Deadline: a heartbeat every 5 s, a deadline of 1 s.
def deadline():
    for _ in stub.WatchRecommendations(pb.WatchRecommendationsRequest(heartbeat_seconds=5), timeout=1):
        pass
out["watch_deadline"] = status_of(deadline)

# Reflection: list the services, then fetch the file of our service with its imports.
refl = reflection_pb2_grpc.ServerReflectionStub(ch)
reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="karpetrack.v1.Karpetrack"),
        reflection_pb2.ServerReflectionRequest(file_by_filename="google/protobuf/timestamp.proto"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol")]
responses = list(refl.ServerReflectionInfo(iter(reqs), timeout=10))
out["reflection_services"] = [s.name for s in responses[0].list_services_response.service]
from google.protobuf import descriptor_pb2
names = []
for raw in responses[1].file_descriptor_response.file_descriptor_proto:
    fd = descriptor_pb2.FileDescriptorProto()
    fd.ParseFromString(raw)
    names.append(fd.name)
out["reflection_symbol_files"] = names
out["reflection_timestamp_files"] = len(responses[2].file_descriptor_response.file_descriptor_proto)
out["reflection_missing_code"] = responses[3].error_response.error_code
print(json.dumps(out))
