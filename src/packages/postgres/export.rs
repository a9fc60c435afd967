//! Exports: every table of one export in one read-only transaction, each streamed with a binary
//! `COPY (query) TO STDOUT` and decoded into the canonical texts ([`super::types`]).

use super::*;

/// Any value, as raw bytes: decoding is done by `types`.
pub(super) struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

pub(super) fn statement_sql(q: &TableQuery) -> String {
    q.sql(sql::quote_ansi)
        .trim()
        .trim_end_matches(';')
        .trim_end()
        .to_string()
}

/// Every table of an export in one read-only transaction, each query within its bounds.
pub(super) async fn export_queries(
    conn: &ConnectionRef,
    queries: &[TableQuery],
    timeout: Option<i64>,
    bounds: &sql::QueryBounds,
    sink: RowSink,
) -> Result<ExportOutcome, PackageError> {
    let session = connect(conn).await?;
    let client = &session.client;
    let iso = match conn
        .settings
        .text("IsolationLevel")
        .unwrap_or("RepeatableRead")
    {
        // PostgreSQL treats it as READ COMMITTED (it has no dirty reads).
        "ReadUncommitted" => "READ UNCOMMITTED",
        "ReadCommitted" => "READ COMMITTED",
        "Serializable" => "SERIALIZABLE",
        _ => "REPEATABLE READ",
    };
    // One read-only transaction: every table of this export sees the same snapshot.
    let what = "starting the export transaction";
    if let Err(e) = bounds
        .read(
            what,
            client.batch_execute(&format!("BEGIN ISOLATION LEVEL {iso} READ ONLY")),
        )
        .await?
    {
        return Err(session.error(&e, what, None, false).await);
    }
    if let Some(t) = timeout {
        let what = "setting the Timeout";
        let set = format!("SET LOCAL statement_timeout = {}", t.saturating_mul(1000));
        if let Err(e) = bounds.read(what, client.batch_execute(&set)).await? {
            return Err(session.error(&e, what, None, false).await);
        }
    }
    let facts = session_facts(&session, bounds).await?;
    for q in queries {
        let what = q.describe();
        bounds
            .whole(
                &what,
                export_query(&session, conn, q, &what, timeout, bounds, facts, &sink),
            )
            .await?;
    }
    let _ = bounds.read("COMMIT", client.batch_execute("COMMIT")).await;
    Ok(ExportOutcome::Exported)
}

/// One table: its statement prepared (for the column names and types), then its rows streamed
/// with a binary COPY, each wait for the server within ReadTimeout.
#[allow(clippy::too_many_arguments)]
pub(super) async fn export_query(
    session: &Session,
    conn: &ConnectionRef,
    q: &TableQuery,
    what: &str,
    timeout: Option<i64>,
    bounds: &sql::QueryBounds,
    facts: types::Session,
    sink: &RowSink,
) -> Result<(), PackageError> {
    let client = &session.client;
    let sql_text = statement_sql(q);
    let stmt = match bounds.read(what, client.prepare(&sql_text)).await? {
        Ok(s) => s,
        Err(e) => return Err(session.error(&e, what, timeout, true).await),
    };
    let names: Vec<String> = stmt
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
    let mut writer = sink.table(q.name.as_deref(), names.clone())?;
    let copy_sql = format!("COPY (\n{sql_text}\n) TO STDOUT (FORMAT binary)");
    let copy = match bounds.read(what, client.copy_out(&copy_sql)).await? {
        Ok(c) => c,
        Err(e) => return Err(session.error(&e, what, timeout, false).await),
    };
    let mut rows = Box::pin(tokio_postgres::binary_copy::BinaryCopyOutStream::new(
        copy, &types,
    ));
    let mut n = 0u64;
    while let Some(row) = bounds.read(what, rows.next()).await? {
        if conn.cancel.is_cancelled() {
            return Err(PackageError::cancelled());
        }
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let mut err = session.error(&e, what, timeout, false).await;
                if n > 0 {
                    err.message = format!("{} (after {n} rows)", err.message);
                }
                return Err(err);
            }
        };
        n += 1;
        let mut values = Vec::with_capacity(types.len());
        for (i, ty) in types.iter().enumerate() {
            let raw: Raw = row
                .try_get(i)
                .map_err(|e| PackageError::source(format!("{what}: row {n}: {e}")))?;
            let v: Value = types::decode(ty, raw.0, facts).map_err(|e| {
                PackageError::config(format!(
                    "{what}: column {}: {e}",
                    names.get(i).map_or("?", String::as_str)
                ))
            })?;
            values.push(v);
        }
        writer.push(values).await?;
    }
    writer.finish().await?;
    Ok(())
}
