//! The integration tests, as one binary: `support` (the harnesses and the fake servers under
//! `tests/support/`) is compiled and linked once. Each module is one area, run through the real
//! binary, real servers (PostgreSQL, slapd) or the TDS responder.

#[path = "../support/mod.rs"]
mod support;

mod architecture;
mod compat;
mod csv_package;
mod daemon;
mod fuzz;
mod gateway;
mod grpc;
mod grpc_python;
mod hostile;
mod ldap;
mod ldap_paging;
mod memory;
mod postgres;
mod secrets;
mod secured;
mod sqlite_package;
mod sqlserver;
mod tds_responder;
mod validate;
