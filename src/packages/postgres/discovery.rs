//! Discovery: the connection tables the queries make (from their prepared statements) and, in one
//! catalog query, every table and view with columns, types, nullability and keys.

use super::*;

pub(super) const CATALOG: &str = "
WITH keys AS (
  SELECT i.indrelid, k.attnum,
         max(CASE WHEN i.indisprimary THEN 1 WHEN i.indisunique AND i.indnkeyatts = 1 THEN 2 ELSE 0 END) AS key
  FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos)
  WHERE k.pos <= i.indnkeyatts
  GROUP BY 1, 2)
SELECT n.nspname::text, c.relname::text, c.relkind::text, a.attname::text,
       format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atttypid::oid, COALESCE(keys.key, 0)::int4
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN keys ON keys.indrelid = c.oid AND keys.attnum = a.attnum
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY n.nspname, c.relname, a.attnum";

pub(super) async fn discover(conn: &ConnectionRef) -> Result<Schema, PackageError> {
    let session = connect(conn).await?;
    let bounds = sql::QueryBounds::new(&conn.settings, SERVER_TIMEOUT_GRACE);
    let id = conn.identifier.as_str();
    let what = "reading the catalog";
    let rows = match bounds
        .read(what, session.client.query(CATALOG, &[]))
        .await?
    {
        Ok(r) => r,
        Err(e) => return Err(session.error(&e, what, None, false).await),
    };
    let mut catalog = sql::Catalog::new(false, "public");
    for r in &rows {
        let get = |i: usize| r.try_get::<_, String>(i).unwrap_or_default();
        let (nsp, rel, kind, att, fmt) = (get(0), get(1), get(2), get(3), get(4));
        let notnull: bool = r.try_get(5).unwrap_or(false);
        let oid: u32 = r.try_get(6).unwrap_or(0);
        let (value_type, multivalued) = Type::from_oid(oid)
            .map(|t| types::value_type(&t))
            .unwrap_or((crate::schema::ValueType::String, false));
        let column = SchemaColumn {
            name: att,
            value_type,
            key_type: sql::key_type_of(i64::from(r.try_get::<_, i32>(7).unwrap_or(0))),
            multivalued,
            nullable: Some(!notnull),
            source_type: Some(fmt),
        };
        catalog.add(
            &conn.settings,
            &nsp,
            &rel,
            kind == "v" || kind == "m",
            column,
        );
    }
    let mut out = Vec::new();
    for q in sql::table_queries(&conn.settings)? {
        let stmt = match bounds
            .read(&q.describe(), session.client.prepare(&statement_sql(&q)))
            .await?
        {
            Ok(s) => s,
            Err(e) => return Err(session.error(&e, &q.describe(), None, true).await),
        };
        out.push(SchemaTable {
            name: sql::table_name(id, &q),
            source: q.describe(),
            columns: stmt
                .columns()
                .iter()
                .map(|c| {
                    let (value_type, multivalued) = types::value_type(c.type_());
                    SchemaColumn {
                        name: c.name().to_string(),
                        value_type,
                        key_type: catalog.key_type(&q.source, c.name()),
                        multivalued,
                        nullable: None,
                        source_type: Some(c.type_().name().to_string()),
                    }
                })
                .collect(),
            source_table: false,
        });
    }
    out.extend(catalog.into_tables());
    Ok(Schema {
        connection: id.to_string(),
        package: INFO.id.to_string(),
        discovered_at: Utc::now(),
        tables: out,
    })
}
