"""An independent gRPC client (Python grpcio) for connagent's AgentService.

Compiles proto/connagent/v1/agent.proto with grpc_tools, calls the agent, lists its services
through server reflection, and prints what it saw as one JSON object.

Usage: grpc_client.py ADDRESS TOKEN PROTO_ROOT
"""
import hashlib
import importlib.resources
import json
import sys
import tempfile

import grpc
from grpc_tools import protoc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

address, token, proto_root = sys.argv[1:4]
out = tempfile.mkdtemp()
include = str(importlib.resources.files("grpc_tools") / "_proto")
rc = protoc.main([
    "protoc", f"-I{proto_root}", f"-I{include}",
    f"--python_out={out}", f"--grpc_python_out={out}",
    "connagent/v1/agent.proto",
])
if rc != 0:
    sys.exit(f"protoc failed with {rc}")
sys.path.insert(0, out)
from connagent.v1 import agent_pb2 as pb  # noqa: E402
from connagent.v1 import agent_pb2_grpc as rpc  # noqa: E402

channel = grpc.insecure_channel(address)
stub = rpc.AgentServiceStub(channel)
md = [("authorization", f"Bearer {token}")]
result = {}

status = stub.GetStatus(pb.GetStatusRequest(), metadata=md)
result["agent"] = status.agent_identifier
result["generation"] = status.configuration_generation

listed = stub.ListConnections(pb.ListConnectionsRequest(), metadata=md)
result["connections"] = [c.identifier for c in listed.connections]

events = list(stub.RunExport(
    pb.RunExportRequest(connection="People", mode=pb.EXPORT_MODE_COMPLETE), metadata=md))
result["events"] = [e.WhichOneof("event") for e in events if e.WhichOneof("event") != "progress"]
result["final_state"] = pb.RunState.Name(events[-1].finished.state)

chunks = list(stub.ReadConnectionTable(pb.ReadConnectionTableRequest(file="People.csv"), metadata=md))
data = b"".join(c.data for c in chunks)
result["table"] = data.decode("utf-8")
result["sha256_matches"] = hashlib.sha256(data).hexdigest() == chunks[0].sha256
result["size_matches"] = len(data) == chunks[0].size

try:
    stub.GetStatus(pb.GetStatusRequest())
    result["without_token"] = "OK"
except grpc.RpcError as e:
    result["without_token"] = e.code().name

try:
    stub.GetConnection(pb.GetConnectionRequest(identifier="nope"), metadata=md)
    result["unknown_connection"] = "OK"
except grpc.RpcError as e:
    result["unknown_connection"] = e.code().name

db = ProtoReflectionDescriptorDatabase(channel)
result["services"] = sorted(db.get_services())
print(json.dumps(result))
