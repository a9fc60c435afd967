//! Builds the demo database `demo/hr.db` from `demo/hr.sql` (run from the repository root).
//! Usage: cargo run --example make-demo-db [-- SQL_FILE DB_FILE]

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let sql_file = args.next().unwrap_or_else(|| "demo/hr.sql".into());
    let db_file = args.next().unwrap_or_else(|| "demo/hr.db".into());
    let sql = match std::fs::read_to_string(&sql_file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot read {sql_file}: {e} (run from the repository root)");
            return ExitCode::FAILURE;
        }
    };
    // Build next to the target, then rename: a half-built database never sits under the name.
    let partial = format!("{db_file}.partial");
    let _ = std::fs::remove_file(&partial);
    let result = rusqlite::Connection::open(&partial)
        .and_then(|db| db.execute_batch(&sql))
        .map_err(|e| e.to_string())
        .and_then(|()| std::fs::rename(&partial, &db_file).map_err(|e| e.to_string()));
    match result {
        Ok(()) => {
            println!("built {db_file} from {sql_file}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            eprintln!("error: cannot build {db_file} from {sql_file}: {e}");
            ExitCode::FAILURE
        }
    }
}
