//! Searches: paged searches driven page by page (every page's result code checked, no-progress
//! stopped), ranged values completed, and the tables exported row by row.

/// Active Directory's domain-scope control (LDAP_SERVER_DOMAIN_SCOPE_OID).
pub(super) const DOMAIN_SCOPE_OID: &str = "1.2.840.113556.1.4.1339";

use super::*;

pub(super) type Stream = ldap3::SearchStream<'static, String, Vec<String>>;

/// A paged search of a table (RFC 2696), one page at a time: each page is its own search
/// request with the paged-results control, PageSize, the SizeLimit and TimeLimit settings and
/// TimeOut for every answer. Referrals and intermediate messages are dropped. Every page's
/// result code is checked, and a server that makes no progress is stopped (see the module
/// documentation); SizeLimit is also enforced client-side.
pub(super) struct PagedSearch {
    pub(super) attrs: Vec<String>,
    /// The page being read; `None` once the search is complete.
    pub(super) stream: Option<Stream>,
    /// The cookie the current page was asked with (empty for the first page).
    pub(super) cookie: Vec<u8>,
    /// Pages asked for.
    pub(super) pages: u64,
    /// Entries of the current page.
    pub(super) page_entries: u64,
    /// Pages in a row without entries, and those of them that returned the cookie they had.
    pub(super) empty_pages: u32,
    pub(super) stalled_pages: u32,
    /// Entries read so far.
    pub(super) count: u64,
}

impl PagedSearch {
    pub(super) async fn open(
        session: &mut Session,
        cfg: &Config,
        table: &TableConfig,
        attrs: Vec<String>,
        cancel: &CancellationToken,
    ) -> Result<PagedSearch, PackageError> {
        let mut search = PagedSearch {
            attrs,
            stream: None,
            cookie: Vec::new(),
            pages: 0,
            page_entries: 0,
            empty_pages: 0,
            stalled_pages: 0,
            count: 0,
        };
        search.ask_page(session, cfg, table, cancel).await?;
        Ok(search)
    }

    /// Sends the search request of the next page (with the current cookie).
    pub(super) async fn ask_page(
        &mut self,
        session: &mut Session,
        cfg: &Config,
        table: &TableConfig,
        cancel: &CancellationToken,
    ) -> Result<(), PackageError> {
        let mut controls: Vec<RawControl> = vec![
            ldap3::controls::PagedResults {
                size: cfg.page_size,
                cookie: self.cookie.clone(),
            }
            .into(),
        ];
        if session.domain_scope {
            // LDAP_SERVER_DOMAIN_SCOPE_OID, not critical: servers that do not know it ignore it.
            controls.push(RawControl {
                ctype: DOMAIN_SCOPE_OID.to_string(),
                crit: false,
                val: None,
            });
        }
        session.ldap.with_controls(controls);
        session.ldap.with_search_options(
            SearchOptions::new()
                .sizelimit(cfg.size_limit)
                .timelimit(cfg.time_limit),
        );
        session.arm();
        let stream = cancellable(
            cancel,
            session.ldap.streaming_search_with(
                EntriesOnly::new(),
                &table.base_dn,
                table.scope.ldap(),
                &table.filter,
                self.attrs.clone(),
            ),
        )
        .await?
        .map_err(|e| read_failure(session, cfg, table, e, self.count))?;
        self.stream = Some(stream);
        self.pages += 1;
        self.page_entries = 0;
        Ok(())
    }

    /// The next entry; `Ok(None)` once the last page has ended with success.
    pub(super) async fn next(
        &mut self,
        session: &mut Session,
        cfg: &Config,
        table: &TableConfig,
        cancel: &CancellationToken,
    ) -> Result<Option<Entry>, PackageError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(None);
            };
            let count = self.count;
            let item = cancellable(cancel, stream.next())
                .await?
                .map_err(|e| read_failure(session, cfg, table, e, count))?;
            if let Some(re) = item {
                self.count += 1;
                self.page_entries += 1;
                if cfg.size_limit > 0 && self.count > cfg.size_limit.unsigned_abs() as u64 {
                    return Err(PackageError::config(format!(
                        "{}: table {} has more entries than the SizeLimit of {}; raise SizeLimit, set it to 0 for no limit, or narrow BaseDN/Filter",
                        session.server, table.name, cfg.size_limit
                    )));
                }
                return parse_entry(re.0).map(Some).map_err(|m| {
                    PackageError::source(format!(
                        "{}: table {}, entry {}: {m}",
                        session.server, table.name, self.count
                    ))
                });
            }
            // The page has ended: its result code, then its cookie.
            let Some(mut stream) = self.stream.take() else {
                return Ok(None);
            };
            let res = cancellable(cancel, stream.finish()).await?;
            if res.rc != 0 {
                return Err(search_failure(session, cfg, table, &res, self.count));
            }
            let cookie = match paged_cookie(&res) {
                Ok(Some(c)) => c,
                // A server that ignores paging answers the whole search at once.
                Ok(None) if self.pages == 1 => return Ok(None),
                Ok(None) => {
                    return Err(PackageError::source(format!(
                        "{}: table {}: page {} of the search came back without the paged-results control after {} entries; the rest of the table cannot be asked for",
                        session.server, table.name, self.pages, self.count
                    )));
                }
                Err(m) => {
                    return Err(PackageError::source(format!(
                        "{}: table {}: page {}: {m}",
                        session.server, table.name, self.pages
                    )));
                }
            };
            if cookie.is_empty() {
                return Ok(None);
            }
            self.check_progress(&cookie).map_err(|m| {
                PackageError::source(format!("{}: table {}: {m}", session.server, table.name))
            })?;
            self.cookie = cookie;
            self.ask_page(session, cfg, table, cancel).await?;
        }
    }

    /// Stops a search whose pages bring no entry back again and again.
    pub(super) fn check_progress(&mut self, cookie: &[u8]) -> Result<(), String> {
        if self.page_entries > 0 {
            self.empty_pages = 0;
            self.stalled_pages = 0;
            return Ok(());
        }
        self.empty_pages += 1;
        if cookie == self.cookie.as_slice() {
            self.stalled_pages += 1;
        } else {
            self.stalled_pages = 0;
        }
        if self.stalled_pages >= MAX_STALLED_PAGES {
            return Err(format!(
                "the server answered {} pages in a row with no entry and the same paging cookie it was sent (after {} entries): it makes no progress, so the search was stopped rather than asked again forever",
                self.stalled_pages, self.count
            ));
        }
        if self.empty_pages >= MAX_EMPTY_PAGES {
            return Err(format!(
                "the server answered {} pages in a row with no entry but a paging cookie (after {} entries); the search was stopped: narrow BaseDN/Filter",
                self.empty_pages, self.count
            ));
        }
        Ok(())
    }
}

/// The cookie of the paged-results control of a page's result: `Ok(None)` when there is no
/// such control. A malformed control is an error (ldap3's own parser would panic).
pub(super) fn paged_cookie(res: &LdapResult) -> Result<Option<Vec<u8>>, String> {
    let Some(control) = res.ctrls.iter().find(|c| c.1.ctype == PAGED_RESULTS_OID) else {
        return Ok(None);
    };
    let malformed = || "the server sent a malformed paged-results control".to_string();
    let value = control.1.val.as_deref().ok_or_else(malformed)?;
    let (_, tag) = ldap3::asn1::parse_tag(value).map_err(|_| malformed())?;
    let PL::C(parts) = tag.payload else {
        return Err(malformed());
    };
    let mut parts = parts.into_iter();
    match parts.next() {
        Some(StructureTag {
            payload: PL::P(_), ..
        }) => {}
        _ => return Err(malformed()),
    }
    match parts.next() {
        Some(StructureTag {
            payload: PL::P(cookie),
            ..
        }) => Ok(Some(cookie)),
        _ => Err(malformed()),
    }
}

/// Whether an LDAP error means the connection is gone (the server closed it, or it broke):
/// ldap3 then reports only that its internal channel closed.
pub(super) fn connection_lost(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::IdScrubSend { .. }
            | LdapError::MiscSend { .. }
            | LdapError::EndOfStream
            | LdapError::Io { .. }
    )
}

/// An error while starting or reading the search of a table; `count` entries of it were read.
pub(super) fn read_failure(
    session: &Session,
    cfg: &Config,
    table: &TableConfig,
    e: LdapError,
    count: u64,
) -> PackageError {
    if connection_lost(&e) {
        let detail = match &e {
            LdapError::Io { source } => format!(" ({source})"),
            _ => String::new(),
        };
        return PackageError::source(format!(
            "{}: the server closed the connection{detail} while table {} was read, after {count} entr{}; check the server's log (a restart, an idle or size limit, a dropped connection)",
            session.server,
            table.name,
            if count == 1 { "y" } else { "ies" }
        ));
    }
    match e {
        LdapError::FilterParsing => PackageError::config(format!(
            "table {}: Filter {} is not a valid LDAP filter",
            table.name, table.filter
        )),
        LdapError::LdapResult { result } => search_failure(session, cfg, table, &result, 0),
        LdapError::Timeout { .. } => PackageError::source(format!(
            "{}: no answer within {} while reading table {} ({}); raise TimeOut, or lower PageSize",
            session.server,
            cfg.timeout_text(),
            table.name,
            table.describe()
        )),
        other => PackageError::source(format!(
            "{}: reading table {} failed: {other}",
            session.server, table.name
        )),
    }
}

/// The error for a search of a table that ended with a result code other than success.
pub(super) fn search_failure(
    session: &Session,
    cfg: &Config,
    table: &TableConfig,
    res: &LdapResult,
    count: u64,
) -> PackageError {
    let server = &session.server;
    let t = &table.name;
    let diag = diagnostic(res);
    match res.rc {
        3 if cfg.time_limit > 0 => PackageError::config(format!(
            "{server}: the search for table {t} ran longer than the TimeLimit of {} seconds (result code 3, timeLimitExceeded{diag}); raise TimeLimit, or set it to 0",
            cfg.time_limit
        )),
        3 => PackageError::source(format!(
            "{server}: the server stopped the search for table {t} at its own time limit (result code 3, timeLimitExceeded{diag}); lower PageSize ({}) so that each page is quicker, or ask the directory administrator to raise the time limit for {}",
            cfg.page_size, session.login
        )),
        4 if cfg.size_limit > 0 && count >= cfg.size_limit.unsigned_abs() as u64 => {
            PackageError::config(format!(
                "{server}: table {t} has more entries than the SizeLimit of {} (result code 4, sizeLimitExceeded); raise SizeLimit, set it to 0 for no limit, or narrow BaseDN/Filter",
                cfg.size_limit
            ))
        }
        4 => {
            let page_size = cfg.page_size.unsigned_abs() as u64;
            // A limit below PageSize may be per page; at or above it, paging did not help: the
            // server caps whole searches (OpenLDAP applies its hard limit to the total of a
            // paged search, size.prtotal, to every login but the root DN).
            let advice = if count > 0 && count < page_size {
                format!(
                    "that is fewer than PageSize ({}): set PageSize to {count} or less; if the search still stops, the server caps whole searches for {}: ask the directory administrator to raise that limit (OpenLDAP olcLimits size.prtotal/size.hard, Active Directory MaxResultSetSize)",
                    cfg.page_size, session.login
                )
            } else {
                format!(
                    "paged results (PageSize {}) do not get around it: the server caps whole searches for {}; ask the directory administrator to raise that limit (OpenLDAP olcLimits size.prtotal/size.hard, Active Directory MaxResultSetSize), or use a login without it",
                    cfg.page_size, session.login
                )
            };
            let size_limit = if cfg.size_limit > 0 {
                format!("; SizeLimit ({}) is not what stopped it", cfg.size_limit)
            } else {
                String::new()
            };
            PackageError::config(format!(
                "{server}: the server stopped the search for table {t} at its own size limit after {count} entries (result code 4, sizeLimitExceeded{diag}): {advice}{size_limit}"
            ))
        }
        11 => PackageError::config(format!(
            "{server}: the search for table {t} hit an administrative limit (result code 11, adminLimitExceeded{diag}); lower PageSize ({}) or ask the directory administrator to raise the limit for {}",
            cfg.page_size, session.login
        )),
        10 => PackageError::config(format!(
            "{server}: table {t}: the server does not hold BaseDN {} and refers to {}; add that server to Servers or correct BaseDN",
            table.base_dn,
            if res.refs.is_empty() {
                "another server".to_string()
            } else {
                res.refs.join(", ")
            }
        )),
        32 => PackageError::config(format!(
            "table {t}: BaseDN {} does not exist on {server}{}",
            table.base_dn,
            if res.matched.trim().is_empty() {
                String::new()
            } else {
                format!(" (the closest existing entry is {})", res.matched.trim())
            }
        )),
        34 => PackageError::config(format!(
            "table {t}: BaseDN {} is not a valid DN{diag}",
            table.base_dn
        )),
        50 => PackageError::source(format!(
            "{server}: {} may not read table {t} ({}): insufficient access rights{diag}",
            session.login,
            table.describe()
        )),
        87 => PackageError::config(format!(
            "{server}: table {t}: the server rejected Filter {}{diag}",
            table.filter
        )),
        rc => PackageError::source(format!(
            "{server}: the search for table {t} ({}) failed with result code {rc}{diag}",
            table.describe()
        )),
    }
}

/// The range of an attribute description: `Ok(None)` when it has no range option, an error when
/// its range option is malformed.
pub(super) fn range_of(desc: &str) -> Result<Option<Range>, String> {
    let ranged = desc
        .split(';')
        .skip(1)
        .any(|o| strip_prefix_ci(o, "range=").is_some());
    if !ranged {
        return Ok(None);
    }
    parse_range(desc)
        .map(Some)
        .ok_or_else(|| format!("the server sent {desc}, a malformed range"))
}

/// Reads the answer to one follow-up range request (`want`, asked from `start`) of the attribute
/// whose [`Subschema::key`] is `key`: its values and the end of its range (`None` for `*`). An
/// answer without that attribute, without a range, with a malformed range or with another start
/// is an error: publishing the values read so far would publish part of them as all of them.
pub(super) fn range_answer(
    schema: &Subschema,
    key: &str,
    want: &str,
    start: u64,
    attrs: Vec<(String, Vec<Vec<u8>>)>,
) -> Result<(Vec<Vec<u8>>, Option<u64>), String> {
    let mut found: Option<(Vec<Vec<u8>>, Option<u64>)> = None;
    for (d, v) in attrs {
        if schema.key(&d) != key {
            continue;
        }
        if found.is_some() {
            return Err(format!(
                "asked for {want}, the server answered with several ranges"
            ));
        }
        let Some(r) = range_of(&d)? else {
            return Err(format!(
                "asked for {want}, the server answered with {d}, without a range: the values cannot be known to be complete"
            ));
        };
        if r.low != start {
            return Err(format!("asked for {want}, the server answered with {d}"));
        }
        found = Some((v, r.high));
    }
    found.ok_or_else(|| {
        format!("asked for {want}, the server returned no values of it: the values read so far are incomplete")
    })
}

/// Completes ranged attributes (`member;range=0-1499`): asks for `member;range=1500-*` with a
/// base-scope search of the entry until the server answers with a range ending in `*`. Anything
/// else than the next range fails (see [`range_answer`]).
pub(super) async fn complete_ranges(
    session: &mut Session,
    cfg: &Config,
    schema: &Subschema,
    entry: &mut Entry,
    cancel: &CancellationToken,
) -> Result<(), PackageError> {
    let dn = entry.dn.clone();
    let server = session.server.clone();
    let fail = |m: String| PackageError::source(format!("{server}: {dn}: {m}"));
    for (desc, values) in entry.attrs.iter_mut() {
        let range = match range_of(desc) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(m) => return Err(fail(m)),
        };
        if range.low != 0 {
            return Err(fail(format!(
                "the server sent {desc}, a range that does not start at 0"
            )));
        }
        let key = schema.key(&range.base);
        *desc = range.base.clone();
        let mut high = range.high;
        let mut rounds = 0usize;
        while let Some(h) = high {
            rounds += 1;
            let start = h
                .checked_add(1)
                .filter(|_| rounds <= MAX_RANGE_ROUNDS)
                .ok_or_else(|| fail(format!("the ranges of {} never end", range.base)))?;
            let want = format!("{};range={start}-*", range.base);
            session.arm();
            let result = cancellable(
                cancel,
                session.ldap.search(
                    &dn,
                    ldap3::Scope::Base,
                    "(objectClass=*)",
                    vec![want.as_str()],
                ),
            )
            .await?
            .map_err(|e| {
                call_failure(&session.server, &format!("reading {want} of {dn}"), e, cfg)
            })?;
            let (entries, res) = (result.0, result.1);
            if res.rc != 0 {
                return Err(fail(format!(
                    "reading {want} failed with result code {}{}",
                    res.rc,
                    diagnostic(&res)
                )));
            }
            let mut attrs = Vec::new();
            for re in entries {
                attrs.extend(parse_entry(re.0).map_err(|m| fail(m.to_string()))?.attrs);
            }
            let (more, next) = range_answer(schema, &key, &want, start, attrs).map_err(fail)?;
            values.extend(more);
            high = next;
        }
    }
    Ok(())
}

/// The object classes (lower case) of the entries of `table`, from a paged pass that reads only
/// `objectClass`.
pub(super) async fn classes_of_entries(
    session: &mut Session,
    cfg: &Config,
    table: &TableConfig,
    schema: &Subschema,
    cancel: &CancellationToken,
) -> Result<BTreeSet<String>, PackageError> {
    let key = schema.key("objectClass");
    let mut classes = BTreeSet::new();
    let mut search =
        PagedSearch::open(session, cfg, table, vec!["objectClass".to_string()], cancel).await?;
    while let Some(entry) = search.next(session, cfg, table, cancel).await? {
        for (desc, values) in entry.attrs {
            if schema.key(&desc) != key {
                continue;
            }
            for v in values {
                let class = String::from_utf8_lossy(&v).trim().to_ascii_lowercase();
                if classes.len() >= MAX_OBJECT_CLASSES && !classes.contains(&class) {
                    return Err(PackageError::source(format!(
                        "{}: table {}: the entries carry more than {MAX_OBJECT_CLASSES} object classes; set Attributes",
                        session.server, table.name
                    )));
                }
                classes.insert(class);
            }
        }
    }
    Ok(classes)
}

/// The columns of the entries table when neither Attributes nor the mappings name them: the
/// attributes the object classes of the matched entries allow (see the module documentation).
pub(super) async fn schema_columns(
    session: &mut Session,
    cfg: &Config,
    table: &TableConfig,
    schema: &Subschema,
    cancel: &CancellationToken,
) -> Result<Vec<String>, PackageError> {
    if schema.classes.is_empty() {
        return Err(PackageError::source(format!(
            "{}: the subschema lists no object classes (is objectClasses readable by {}?); the entries table's columns come from them when Attributes is empty: set Attributes",
            session.server, session.login
        )));
    }
    let classes = classes_of_entries(session, cfg, table, schema, cancel).await?;
    Ok(schema.attributes_of_classes(classes.iter().map(String::as_str)))
}

/// The subschema, which the schema-based columns need: when it cannot be read, say what to do.
pub(super) fn subschema_needed(e: PackageError, login: &str) -> PackageError {
    PackageError {
        class: e.class,
        message: format!(
            "{}; the entries table's columns come from the subschema when Attributes is empty and no EntityTypeMapping reads the table: set Attributes, or let {login} read the subschema",
            e.message
        ),
    }
}

pub(super) async fn export_entries(
    session: &mut Session,
    cfg: &Config,
    schema: &Subschema,
    table: &TableConfig,
    columns: &Columns,
    sink: &RowSink,
    cancel: &CancellationToken,
) -> Result<u64, PackageError> {
    let mut header = vec!["dn".to_string(), "parentdn".to_string()];
    header.extend(columns.list.iter().map(|c| c.name.clone()));
    let mut writer = sink.table(Some(ENTRIES), header)?;
    // With explicit Attributes, ask for exactly those (as written: `;binary` matters). The
    // schema-based columns ask for "*": the user attributes the entries hold, never constructed
    // attributes that some servers refuse in a subtree search.
    let attrs = if cfg.attributes.is_empty() {
        vec!["*".to_string()]
    } else {
        columns.list.iter().map(|c| c.request.clone()).collect()
    };
    let mut search = PagedSearch::open(session, cfg, table, attrs, cancel).await?;
    while let Some(mut entry) = search.next(session, cfg, table, cancel).await? {
        complete_ranges(session, cfg, schema, &mut entry, cancel).await?;
        let row = columns.row(entry, schema).map_err(|m| {
            PackageError::config(format!("{}: table {}, {m}", session.server, table.name))
        })?;
        writer.push(row).await?;
    }
    writer.finish().await?;
    Ok(search.count)
}

pub(super) async fn export_link(
    session: &mut Session,
    cfg: &Config,
    schema: &Subschema,
    table: &TableConfig,
    sink: &RowSink,
    cancel: &CancellationToken,
) -> Result<u64, PackageError> {
    let mut writer = sink.table(
        Some(table.name.as_str()),
        vec!["dn".to_string(), table.name.clone()],
    )?;
    let key = schema.key(&table.name);
    let binary = schema.is_binary(&table.name);
    let mut search =
        PagedSearch::open(session, cfg, table, vec![table.name.clone()], cancel).await?;
    let mut rows = 0u64;
    while let Some(mut entry) = search.next(session, cfg, table, cancel).await? {
        complete_ranges(session, cfg, schema, &mut entry, cancel).await?;
        let Entry { dn, attrs } = entry;
        for (desc, values) in attrs {
            if schema.key(&desc) != key {
                continue;
            }
            for v in values {
                let value = value_of(v, binary).map_err(|NotText| {
                    PackageError::source(format!(
                        "{}: table {t}, entry {dn}: a value of {t} is not UTF-8 text, and {t} is exported as text ({}); a link table holds text (DNs), or binary values when the subschema gives the attribute a binary syntax",
                        session.server,
                        schema.text_reason(&table.name),
                        t = table.name,
                    ))
                })?;
                writer.push(vec![Value::Text(dn.clone()), value]).await?;
                rows += 1;
            }
        }
    }
    writer.finish().await?;
    Ok(rows)
}

/// Checks a table's BaseDN, Filter and Scope with a search that returns at most one entry and
/// no attributes.
pub(super) async fn probe_table(
    session: &mut Session,
    cfg: &Config,
    table: &TableConfig,
    cancel: &CancellationToken,
) -> Result<String, PackageError> {
    session
        .ldap
        .with_search_options(SearchOptions::new().sizelimit(1).timelimit(cfg.time_limit));
    session.arm();
    let result = cancellable(
        cancel,
        session.ldap.search(
            &table.base_dn,
            table.scope.ldap(),
            &table.filter,
            vec!["1.1"],
        ),
    )
    .await?
    .map_err(|e| read_failure(session, cfg, table, e, 0))?;
    let (entries, res) = (result.0, result.1);
    match res.rc {
        // 4: more than the one entry asked for.
        0 | 4 => Ok(format!(
            "table {}: BaseDN {} exists on {}; Scope {}, Filter {} {}",
            table.name,
            table.base_dn,
            session.server,
            table.scope.name(),
            table.filter,
            if entries.is_empty() {
                "matches no entry (the table will be empty)"
            } else {
                "matches entries"
            }
        )),
        _ => Err(search_failure(session, cfg, table, &res, 0)),
    }
}
