#!/usr/bin/env bash
# The test command (README): checks formatting and lints, then runs every test.
# Installs what the tests need when it is missing and we are root: python3 (an independent CSV
# parser; Python grpcio as an independent gRPC client), PostgreSQL and OpenLDAP servers (the
# tests start their own, in temporary folders), systemd-analyze.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
# Real servers for the package tests: PostgreSQL and OpenLDAP, started by the tests themselves.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
[ -x /usr/sbin/slapd ] || need_apt+=(slapd)
command -v ldapsearch >/dev/null 2>&1 || need_apt+=(ldap-utils)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
[ -x /usr/bin/time ] || need_apt+=(time)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "missing: ${need_apt[*]} (install them: apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

# An independent gRPC client for tests/it/grpc_python.rs: Python grpcio in a virtual environment.
if [ ! -x target/pyvenv/bin/python ] || ! target/pyvenv/bin/python -c 'import grpc, grpc_tools, grpc_reflection' 2>/dev/null; then
  mkdir -p target
  python3 -m venv target/pyvenv
  target/pyvenv/bin/pip install --quiet --disable-pip-version-check \
    grpcio==1.85.1 grpcio-tools==1.85.1 grpcio-reflection==1.85.1
fi
export CONNAGENT_TEST_PYTHON="$PWD/target/pyvenv/bin/python"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
