//! gRPC: the `AgentService` the central server calls, the control-plane client that sends
//! heartbeats and reports, and a development control plane. The only module that knows protobuf:
//! it converts between domain types and the generated types at the edge.

pub mod agent;
pub mod auth;
pub mod channel;
pub mod control_plane;
pub mod convert;
pub mod credential;
pub mod dev_control_plane;
pub mod dial;
pub mod enroll;
pub mod server;

/// Types generated from `proto/connagent/v1/agent.proto`.
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("connagent.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("connagent_v1_descriptor");
}
