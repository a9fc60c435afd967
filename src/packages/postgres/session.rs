//! Sessions: connecting within the connect timeout, what the connection's task saw when it ended
//! (the server's reason), errors classified for the person who reads them, and the session facts
//! decoding needs.

use super::*;

/// A failure, classified, with the server's own message.
pub(super) fn pg_error(
    e: &tokio_postgres::Error,
    what: &str,
    timeout: Option<i64>,
    prepare: bool,
) -> PackageError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let msg = format!("{what}: {} ({})", db.message(), code.code());
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return PackageError::source(format!(
                "{what}: the server refused the login: {}",
                db.message()
            ));
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return PackageError::config(msg);
        }
        // Class 57P: an administrator or the server's shutdown ended the session.
        if code.code().starts_with("57P") {
            return PackageError::source(format!(
                "{what}: the server ended the session: {} ({})",
                db.message(),
                code.code()
            ));
        }
        if *code == SqlState::QUERY_CANCELED {
            return PackageError::source(format!(
                "{what}: stopped after the Timeout of {} seconds",
                timeout.unwrap_or(0)
            ));
        }
        // Class 42 (syntax error or access rule violation) found while preparing: the query.
        if prepare && code.code().starts_with("42") {
            return PackageError::config(msg);
        }
        return PackageError::source(msg);
    }
    PackageError::source(format!("{what}: {e}"))
}

/// An open session: the client, and what the connection's own task saw when the connection
/// ended (a server that ends a session sends its reason, such as "terminating connection due to
/// administrator command", to the connection, not to the request that then fails).
pub(super) struct Session {
    pub(super) client: tokio_postgres::Client,
    pub(super) ended: tokio::sync::watch::Receiver<Option<Ended>>,
    pub(super) what: String,
}

/// How a connection ended.
#[derive(Debug, Clone)]
pub(super) enum Ended {
    /// The server said why (its message and SQLSTATE).
    Server(String),
    /// It broke (reset, closed without a word): the cause.
    Broken(String),
}

impl Session {
    /// A failed request, classified; when the connection is gone, with the server's reason if
    /// it sent one, else the cause of the break.
    pub(super) async fn error(
        &self,
        e: &tokio_postgres::Error,
        what: &str,
        timeout: Option<i64>,
        prepare: bool,
    ) -> PackageError {
        if e.as_db_error().is_some() || !e.is_closed() {
            return pg_error(e, what, timeout, prepare);
        }
        // The connection's task records why it ended; give it a moment to do so.
        let mut ended = self.ended.clone();
        let reason =
            tokio::time::timeout(Duration::from_millis(500), ended.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|v| v.clone()));
        PackageError::source(match reason {
            Some(Ended::Server(r)) => format!("{what}: the server ended the session: {r}"),
            Some(Ended::Broken(cause)) => format!(
                "{what}: the connection to {} broke: {cause} (the server's log tells whether it ended the session)",
                self.what
            ),
            None => format!(
                "{what}: the connection to {} was closed without a reason from the server (the server stopped, or the network cut it)",
                self.what
            ),
        })
    }
}

/// Why a connection ended, as its task saw it: the server's message and code when it sent one,
/// else the error with its causes ("connection reset by peer").
pub(super) fn end_reason(e: &tokio_postgres::Error) -> Ended {
    match e.as_db_error() {
        Some(db) => Ended::Server(format!("{} ({})", db.message(), db.code().code())),
        None => {
            let mut text = String::new();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                if !text.is_empty() {
                    text.push_str(": ");
                }
                text.push_str(&c.to_string());
                cause = c.source();
            }
            Ended::Broken(if text.is_empty() { e.to_string() } else { text })
        }
    }
}

pub(super) async fn connect(conn: &ConnectionRef) -> Result<Session, PackageError> {
    let t = target(&conn.settings).map_err(|p| PackageError::config(p.message))?;
    let what = format!("PostgreSQL {}", t.shown);
    let reach = |e: tokio_postgres::Error| {
        if e.as_db_error().is_some() {
            pg_error(&e, &what, None, false)
        } else {
            PackageError::source(format!("cannot reach {what}: {e}"))
        }
    };
    let (tx, ended) = tokio::sync::watch::channel(None);
    let watch_end = |tx: tokio::sync::watch::Sender<Option<Ended>>| {
        move |r: Result<(), tokio_postgres::Error>| {
            let reason = match r {
                Ok(()) => Ended::Broken("the server closed it".to_string()),
                Err(e) => {
                    tracing::debug!(error = %e, "PostgreSQL connection ended");
                    end_reason(&e)
                }
            };
            let _ = tx.send(Some(reason));
        }
    };
    // TCP, TLS, start-up and login as a whole within connect_timeout: a server that accepts
    // the connection and then says nothing (stopped, overloaded) is not waited for forever.
    let timed_out = || {
        PackageError::source(format!(
            "cannot reach {what}: no answer within the connect timeout of {} s (connect_timeout in ConnectionString); the server may be stopped, or the network cut",
            t.connect_timeout.as_secs()
        ))
    };
    let client = if t.ssl == SslMode::Disable {
        let (client, connection) =
            tokio::time::timeout(t.connect_timeout, t.config.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| timed_out())?
                .map_err(reach)?;
        let done = watch_end(tx);
        tokio::spawn(async move { done(connection.await) });
        client
    } else {
        let tls = tls(&conn.settings)?;
        let (client, connection) = tokio::time::timeout(t.connect_timeout, t.config.connect(tls))
            .await
            .map_err(|_| timed_out())?
            .map_err(reach)?;
        let done = watch_end(tx);
        tokio::spawn(async move { done(connection.await) });
        client
    };
    Ok(Session {
        client,
        ended,
        what,
    })
}

/// What decoding needs from the session: money's fraction digits under its `lc_monetary`, read
/// as the scale of `1::money` cast to numeric.
pub(super) async fn session_facts(
    session: &Session,
    bounds: &sql::QueryBounds,
) -> Result<types::Session, PackageError> {
    let what = "reading the session's money format";
    let row = match bounds
        .read(
            what,
            session
                .client
                .query_one("SELECT scale((1::money)::numeric)", &[]),
        )
        .await?
    {
        Ok(r) => r,
        Err(e) => return Err(session.error(&e, what, None, false).await),
    };
    let digits: i32 = row
        .try_get(0)
        .map_err(|e| PackageError::source(format!("reading the session's money format: {e}")))?;
    Ok(types::Session {
        money_digits: u32::try_from(digits).unwrap_or(2),
    })
}
