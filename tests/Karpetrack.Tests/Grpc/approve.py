"""ApproveRecommendation with Debian's python3-grpcio (run with /usr/bin/python3).

Usage: approve.py ADDRESS PROTO_ROOT WORKDIR TOKEN ADVISORY_ID UNAPPROVED_ID ACTIONABLE_ID
Generates stubs with grpc_tools.protoc into WORKDIR and prints one JSON object {check: [code, details]}.
Only ACTIONABLE_ID is sent with the right token; UNAPPROVED_ID gets the calls that must not approve
it, so the C# test can check that it stays waiting.
"""
import json
import os
import subprocess
import sys

addr, proto_root, work, token, advisory, unapproved, actionable = sys.argv[1:8]
import grpc_tools
wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I" + proto_root, "-I" + wkt,
                       "--python_out=" + work, "--grpc_python_out=" + work, "karpetrack/v1/karpetrack.proto"])
sys.path.insert(0, work)

import grpc
from karpetrack.v1 import karpetrack_pb2 as pb, karpetrack_pb2_grpc as pbg

ch = grpc.insecure_channel(addr)
grpc.channel_ready_future(ch).result(timeout=10)
stub = pbg.KarpetrackStub(ch)


def approve(rid, metadata):
    try:
        r = stub.ApproveRecommendation(pb.ApproveRecommendationRequest(id=rid), metadata=metadata, timeout=10)
        return ["OK", r.id, r.actuation_state]
    except grpc.RpcError as e:
        return [e.code().name, e.details()]


bearer = [("authorization", "Bearer " + token)]
out = {
    "no_metadata": approve(unapproved, None),
    "wrong_token": approve(unapproved, [("authorization", "Bearer " + token + "x")]),
    "wrong_scheme": approve(unapproved, [("authorization", "Basic " + token)]),
    "unknown_id": approve("del-000000000000", bearer),
    "advisory": approve(advisory, bearer),
    "approved": approve(actionable, bearer),
}
print(json.dumps(out))
