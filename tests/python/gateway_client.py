"""A standard gRPC client (Python grpcio) driving an agent through `connagent gateway`.

It talks only to the gateway's client port: ListAgents, then every AgentService call on the
agent named in the x-connagent-agent metadata (streams, a cancelled run, a cancelled call,
gzip, a resumed download, connection management), and reflection. Prints what it saw as one
JSON object.

Usage: gateway_client.py ADDRESS AGENT TOKEN PROTO_ROOT
"""
import faulthandler
import hashlib
import importlib.resources
import json
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

address, agent, token, proto_root = sys.argv[1:5]
# A call that hangs fails the test with the stack of where it hung, not a silent timeout.
faulthandler.dump_traceback_later(120, exit=True)
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
gateway = rpc.GatewayServiceStub(channel)
stub = rpc.AgentServiceStub(channel)
md = [("x-connagent-agent", agent), ("authorization", f"Bearer {token}")]
result = {}


def code_of(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name + ": " + e.details()


agents = gateway.ListAgents(pb.ListAgentsRequest()).agents
result["agents"] = [{"id": a.identifier, "connected": a.connected, "version": a.version,
                     "packages": list(a.packages)} for a in agents]

status = stub.GetStatus(pb.GetStatusRequest(), metadata=md)
result["agent"] = status.agent_identifier
result["connections"] = [c.identifier for c in
                         stub.ListConnections(pb.ListConnectionsRequest(), metadata=md).connections]
result["get_connection"] = stub.GetConnection(
    pb.GetConnectionRequest(identifier="People"), metadata=md).summary.identifier
result["packages"] = len(stub.DescribePackages(pb.DescribePackagesRequest(), metadata=md).packages)
result["test"] = code_of(lambda: stub.TestConnection(
    pb.TestConnectionRequest(identifier="People"), metadata=md))
result["refresh"] = code_of(lambda: stub.RefreshSchema(
    pb.RefreshSchemaRequest(connection="People"), metadata=md))
result["reset"] = code_of(lambda: stub.ResetMetadata(
    pb.ResetMetadataRequest(connection="People"), metadata=md))
result["schema_tables"] = [t.name for t in stub.GetSchema(
    pb.GetSchemaRequest(connection="People"), metadata=md).schema.tables]
result["tasks"] = [t.identifier for t in
                   stub.ListExportTasks(pb.ListExportTasksRequest(), metadata=md).tasks]

# WatchEvents in the background while the export runs.
watched = []
watch = stub.WatchEvents(pb.WatchEventsRequest(), metadata=md)


def follow():
    try:
        for e in watch:
            watched.append(e.WhichOneof("event"))
    except grpc.RpcError as e:
        watched.append("ended:" + e.code().name)


follower = threading.Thread(target=follow, daemon=True)
follower.start()
time.sleep(0.3)

events = list(stub.RunExport(
    pb.RunExportRequest(connection="People", mode=pb.EXPORT_MODE_COMPLETE), metadata=md))
kinds = [e.WhichOneof("event") for e in events]
result["export_events"] = [k for k in kinds if k != "progress"]
run_id = events[0].run_id
result["get_run"] = pb.RunState.Name(stub.GetRun(pb.GetRunRequest(run_id=run_id), metadata=md).state)
result["list_runs"] = run_id in [r.id for r in stub.ListRuns(pb.ListRunsRequest(), metadata=md).runs]

chunks = list(stub.ReadConnectionTable(
    pb.ReadConnectionTableRequest(file="People.csv", chunk_size=7), metadata=md))
whole = b"".join(c.data for c in chunks)
result["table"] = whole.decode("utf-8")
result["sha256_matches"] = hashlib.sha256(whole).hexdigest() == chunks[0].sha256
# A broken download resumes at an offset; gzip on the way.
rest = list(stub.ReadConnectionTable(
    pb.ReadConnectionTableRequest(file="People.csv", offset=5), metadata=md,
    compression=grpc.Compression.Gzip))
result["resumed_matches"] = b"".join(c.data for c in rest) == whole[5:]
result["resumed_first_offset"] = rest[0].offset

# A run cancelled by CancelRun ends as CANCELLED on the stream.
slow = stub.RunExport(pb.RunExportRequest(connection="Slow", mode=pb.EXPORT_MODE_COMPLETE),
                      metadata=md)
first = next(slow)
time.sleep(0.5)
cancelled = stub.CancelRun(pb.CancelRunRequest(run_id=first.run_id), metadata=md)
last = None
for e in slow:
    last = e
result["cancel_answer"] = pb.RunState.Name(cancelled.state)
result["cancelled_final"] = last.WhichOneof("event") + ":" + pb.RunState.Name(last.failed.state)

# A call the client cancels: the stream ends with CANCELLED here; the agent goes on serving.
call = stub.WatchEvents(pb.WatchEventsRequest(), metadata=md)
call.cancel()
result["client_cancel"] = code_of(lambda: list(call))
result["after_cancel"] = stub.GetStatus(pb.GetStatusRequest(), metadata=md).agent_identifier

# Connection management.
created = stub.CreateConnection(pb.ConnectionDefinition(
    identifier="Managed1", display_name="managed", connector="HR", package="Csv",
    settings={"Path": "in/people.csv"}), metadata=md)
result["created"] = created.summary.identifier
result["create_again"] = code_of(lambda: stub.CreateConnection(pb.ConnectionDefinition(
    identifier="Managed1", connector="HR", package="Csv", settings={"Path": "in/people.csv"}),
    metadata=md))
result["create_invalid"] = code_of(lambda: stub.CreateConnection(pb.ConnectionDefinition(
    identifier="Managed2", connector="HR", package="Csv",
    settings={"Nope": "1", "ValuesToTrim": "not json"}), metadata=md))
updated = stub.UpdateConnection(pb.ConnectionDefinition(
    identifier="Managed1", display_name="managed again", connector="HR", package="Csv",
    settings={"Path": "in/people.csv", "Separator": ";"}), metadata=md)
result["updated_display"] = updated.summary.display_name
result["delete_operator"] = code_of(lambda: stub.DeleteConnection(
    pb.DeleteConnectionRequest(identifier="People"), metadata=md))


def generation():
    return stub.GetStatus(pb.GetStatusRequest(), metadata=md).configuration_generation


def reloaded_after(before):
    deadline = time.time() + 60
    while generation() == before:
        if time.time() > deadline:
            sys.exit("the configuration was not reloaded")
        time.sleep(0.1)


# The operator's configuration starts using the managed connection: deleting it is refused,
# naming the user; once the operator's file no longer uses it, it can go.
before = generation()
with open("xml-config/uses-managed.xml", "w") as f:
    f.write('<?xml version="1.0"?>\n<ConfigurationFile>\n<ExportTask Identifier="ManagedTask" '
            f'DisplayName_L1="m" Agent="{agent}" OpenIdClient="Job" Connection="Managed1"/>\n'
            '</ConfigurationFile>\n')
reloaded_after(before)
result["delete_used"] = code_of(lambda: stub.DeleteConnection(
    pb.DeleteConnectionRequest(identifier="Managed1"), metadata=md))
before = generation()
import os  # noqa: E402
os.remove("xml-config/uses-managed.xml")
reloaded_after(before)
result["deleted"] = stub.DeleteConnection(
    pb.DeleteConnectionRequest(identifier="Managed1"), metadata=md).identifier
result["after_delete"] = code_of(lambda: stub.GetConnection(
    pb.GetConnectionRequest(identifier="Managed1"), metadata=md))

# A managed connection with a secured setting, then secured options set and deleted.
ldap = stub.CreateConnection(pb.ConnectionDefinition(
    identifier="Managed3", connector="HR", package="Ldap",
    settings={"Servers": '[{"Server": "ldap://127.0.0.1:1", "AuthType": "Basic", "Login": "cn=reader"}]',
              "Tables": '[{"Table": "entries", "BaseDN": "dc=example", "Filter": "(objectClass=*)"}]'},
    secured_settings={"Password": "managed-canary-pw-1"}), metadata=md)
result["managed_password"] = [v.value for v in ldap.settings if v.name == "Password"]
setopt = stub.SetSecuredOption(pb.SetSecuredOptionRequest(
    connection="Managed3", option="Password", value="managed-canary-pw-2"), metadata=md)
result["set_option"] = setopt.is_set
# Without its password the LDAP login would bind anonymously: the configuration refuses it,
# and the deletion is undone.
result["delete_option"] = code_of(lambda: stub.DeleteSecuredOption(pb.DeleteSecuredOptionRequest(
    connection="Managed3", option="Password"), metadata=md))
result["still_set"] = [v.value for v in stub.GetConnection(
    pb.GetConnectionRequest(identifier="Managed3"), metadata=md).settings if v.name == "Password"]
result["deleted_managed3"] = stub.DeleteConnection(
    pb.DeleteConnectionRequest(identifier="Managed3"), metadata=md).identifier

# Refusals, from the agent and from the gateway.
result["without_token"] = code_of(lambda: stub.GetStatus(
    pb.GetStatusRequest(), metadata=[("x-connagent-agent", agent)]))
result["without_agent"] = code_of(lambda: stub.GetStatus(
    pb.GetStatusRequest(), metadata=[("authorization", f"Bearer {token}")]))
result["unknown_agent"] = code_of(lambda: stub.GetStatus(
    pb.GetStatusRequest(), metadata=[("x-connagent-agent", "Nobody")]))

watch.cancel()
follower.join(10)
result["watched"] = sorted(set(w for w in watched if not w.startswith("ended")))

db = ProtoReflectionDescriptorDatabase(channel)
result["reflection"] = sorted(db.get_services())

print(json.dumps(result))
