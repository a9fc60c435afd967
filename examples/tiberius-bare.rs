//! The benchmark's reference for SQL Server: a bare tiberius loop that runs one query and reads
//! every row, touching each cell, then discards it. What connagent adds on top of this (canonical
//! texts, CSV writing, the atomic publish) is the overhead BENCHMARKS.md records.
//!
//! Usage: tiberius-bare --port N --query SQL [--host H] [--user U] [--password P] [--database D]
//! Prints the number of rows read.

use std::process::ExitCode;
use tiberius::{AuthMethod, Client, ColumnData, Config, EncryptionLevel, QueryItem};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;
use tokio_util::compat::TokioAsyncWriteCompatExt;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

async fn run(args: &[String]) -> Result<u64, String> {
    let port: u16 = arg(args, "--port")
        .and_then(|p| p.parse().ok())
        .ok_or("--port N is required")?;
    let query = arg(args, "--query").ok_or("--query SQL is required")?;
    let host = arg(args, "--host").unwrap_or_else(|| "127.0.0.1".into());
    let mut config = Config::new();
    config.host(&host);
    config.port(port);
    config.database(arg(args, "--database").unwrap_or_else(|| "bench".into()));
    config.authentication(AuthMethod::sql_server(
        arg(args, "--user").unwrap_or_else(|| "bench".into()),
        arg(args, "--password").unwrap_or_else(|| "bench-pass".into()),
    ));
    config.encryption(EncryptionLevel::Off);
    // The responder's certificate is its own; the agent side of the benchmark trusts it the same way.
    config.trust_cert();
    // Both rustls back ends are linked: pick one, as the agent does.
    connagent::install_crypto_provider();
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut client = Client::connect(config, tcp.compat_write())
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = client
        .simple_query(query)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows = 0u64;
    let mut touched = 0usize;
    while let Some(item) = stream.next().await {
        if let QueryItem::Row(row) = item.map_err(|e| e.to_string())? {
            rows += 1;
            for (_, cell) in row.cells() {
                touched += match cell {
                    ColumnData::String(Some(s)) => s.len(),
                    ColumnData::Binary(Some(b)) => b.len(),
                    _ => 1,
                };
            }
        }
    }
    std::hint::black_box(touched);
    Ok(rows)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tiberius-bare: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&args)) {
        Ok(rows) => {
            println!("{rows}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tiberius-bare: {e}");
            ExitCode::FAILURE
        }
    }
}
