//! Domain types → protobuf messages.

use super::proto as pb;
use crate::config::{Connection, SettingsState, Snapshot};
use crate::packages::{Category, ExportMode, FailureClass, PackageInfo, Section, SettingKind};
use crate::runtime::runs::{RunRecord, RunState, TableRecord};
use crate::runtime::{ReloadOutcome, Runtime};
use crate::schema::{self, KeyType, SchemaState, SchemaStatus, ValueType};
use chrono::{DateTime, Utc};

pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn category(c: Option<Category>) -> pb::Category {
    match c {
        Some(Category::Database) => pb::Category::Database,
        Some(Category::File) => pb::Category::File,
        Some(Category::Directory) => pb::Category::Directory,
        None => pb::Category::Unspecified,
    }
}

pub fn reload(o: &ReloadOutcome) -> pb::ReloadOutcome {
    pb::ReloadOutcome {
        at: Some(ts(o.at)),
        applied: o.applied,
        errors: o.errors.clone(),
        warnings: o.warnings.clone(),
        restart_required: o.restart_required.clone(),
    }
}

pub fn failure_class(c: FailureClass) -> String {
    match c {
        FailureClass::Config => "config",
        FailureClass::Source => "source",
        FailureClass::System => "system",
        FailureClass::Cancelled => "cancelled",
    }
    .into()
}

pub fn schema_status(s: &SchemaState) -> pb::SchemaStatus {
    use pb::schema_status::State;
    let state = match s.status() {
        SchemaStatus::None => State::None(pb::NoSchema {}),
        SchemaStatus::Refreshed(at) => State::RefreshedAt(ts(at)),
        SchemaStatus::Failed(f) => State::Failed(pb::SchemaFailure {
            at: Some(ts(f.at)),
            class: f.class,
            message: f.message,
        }),
    };
    pb::SchemaStatus { state: Some(state) }
}

fn value_type(v: ValueType) -> pb::ValueType {
    match v {
        ValueType::String => pb::ValueType::String,
        ValueType::Bytes => pb::ValueType::Bytes,
        ValueType::Int32 => pb::ValueType::Int32,
        ValueType::Int64 => pb::ValueType::Int64,
        ValueType::DateTime => pb::ValueType::DateTime,
        ValueType::Bool => pb::ValueType::Bool,
        ValueType::Guid => pb::ValueType::Guid,
        ValueType::Double => pb::ValueType::Double,
        ValueType::Binary => pb::ValueType::Binary,
        ValueType::Byte => pb::ValueType::Byte,
        ValueType::Int16 => pb::ValueType::Int16,
    }
}

fn key_type(k: KeyType) -> pb::KeyType {
    match k {
        KeyType::None => pb::KeyType::None,
        KeyType::Primary => pb::KeyType::Primary,
        KeyType::Unique => pb::KeyType::Unique,
    }
}

pub fn schema(s: &schema::Schema) -> pb::Schema {
    pb::Schema {
        connection: s.connection.clone(),
        package: s.package.clone(),
        discovered_at: Some(ts(s.discovered_at)),
        fingerprint: schema::fingerprint(s),
        tables: s
            .tables
            .iter()
            .map(|t| pb::SchemaTable {
                name: t.name.clone(),
                source: t.source.clone(),
                source_table: t.source_table,
                columns: t
                    .columns
                    .iter()
                    .map(|c| pb::SchemaColumn {
                        name: c.name.clone(),
                        value_type: value_type(c.value_type) as i32,
                        key_type: key_type(c.key_type) as i32,
                        multivalued: c.multivalued,
                        nullable: c.nullable,
                        source_type: c.source_type.clone().unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub fn schema_state(s: &SchemaState) -> pb::SchemaState {
    pb::SchemaState {
        connection: s.connection.clone(),
        status: Some(schema_status(s)),
        schema: s.schema.as_ref().map(schema),
    }
}

pub fn settings_status(s: &SettingsState) -> pb::SettingsStatus {
    match s {
        SettingsState::Ok(_) => pb::SettingsStatus::Ok,
        SettingsState::Missing => pb::SettingsStatus::Missing,
        SettingsState::Invalid => pb::SettingsStatus::Invalid,
    }
}

pub fn connection_summary(
    rt: &Runtime,
    snapshot: &Snapshot,
    c: &Connection,
) -> pb::ConnectionSummary {
    let usage = snapshot.usage(&c.identifier);
    let times = rt.times.get(c.identifier.as_str());
    let schema_state = rt.schemas.store().load(c.identifier.as_str());
    pb::ConnectionSummary {
        identifier: c.identifier.to_string(),
        display_name: c.display_name.clone(),
        connector: c.connector.to_string(),
        package: c.package_id().to_string(),
        category: category(c.category()) as i32,
        usage_count: u32::try_from(usage.len()).unwrap_or(u32::MAX),
        usage: usage
            .into_iter()
            .map(|(kind, name)| pb::Usage {
                kind: kind.to_string(),
                name,
            })
            .collect(),
        served_here: c.served,
        served_by: if c.served {
            snapshot.agent.to_string()
        } else {
            snapshot
                .served_by(c)
                .map(ToString::to_string)
                .unwrap_or_default()
        },
        settings_status: settings_status(&c.settings) as i32,
        schema_status: Some(schema_status(&schema_state)),
        first_seen: times.as_ref().map(|t| ts(t.first_seen)),
        last_modified: times.as_ref().map(|t| ts(t.last_modified)),
    }
}

fn section(s: Section) -> pb::SettingSection {
    match s {
        Section::General => pb::SettingSection::General,
        Section::Additional => pb::SettingSection::Additional,
        Section::Advanced => pb::SettingSection::Advanced,
        Section::Relay => pb::SettingSection::Relay,
    }
}

pub fn package_spec(info: &PackageInfo) -> pb::PackageSpec {
    pb::PackageSpec {
        id: info.id.to_string(),
        aliases: info.aliases.iter().map(|a| a.to_string()).collect(),
        category: category(Some(info.category)) as i32,
        description: info.description.to_string(),
        has_incremental: info.has_incremental,
        settings: info
            .settings
            .iter()
            .map(|s| {
                let (ty, choices) = match s.kind {
                    SettingKind::Text | SettingKind::OutputEncoding => {
                        (pb::SettingType::Text, vec![])
                    }
                    SettingKind::Integer => (pb::SettingType::Integer, vec![]),
                    SettingKind::Boolean => (pb::SettingType::Boolean, vec![]),
                    SettingKind::TextList => (pb::SettingType::TextList, vec![]),
                    SettingKind::Path => (pb::SettingType::Path, vec![]),
                    SettingKind::Choice(words) => (
                        pb::SettingType::Choice,
                        words.iter().map(|w| w.to_string()).collect(),
                    ),
                    SettingKind::ConnectionString => (pb::SettingType::ConnectionString, vec![]),
                    SettingKind::Structured => (pb::SettingType::Structured, vec![]),
                };
                pb::SettingSpec {
                    name: s.name.to_string(),
                    section: section(s.section) as i32,
                    r#type: ty as i32,
                    default_value: s.default.unwrap_or_default().to_string(),
                    required: s.required,
                    secured: s.secured,
                    description: s.description.to_string(),
                    choices,
                }
            })
            .collect(),
    }
}

pub fn mode(m: ExportMode) -> pb::ExportMode {
    match m {
        ExportMode::Complete => pb::ExportMode::Complete,
        ExportMode::Incremental => pb::ExportMode::Incremental,
    }
}

pub fn table(t: &TableRecord) -> pb::PublishedTable {
    pb::PublishedTable {
        file: t.file.clone(),
        rows: t.rows,
        bytes: t.bytes,
        sha256: t.sha256.clone(),
        duration_seconds: t.duration_seconds,
    }
}

pub fn run(r: &RunRecord) -> pb::RunInfo {
    pb::RunInfo {
        id: r.id.clone(),
        connection: r.connection.clone(),
        task: r.task.clone().unwrap_or_default(),
        mode: mode(r.mode) as i32,
        state: match r.state {
            RunState::Queued => pb::RunState::Queued,
            RunState::Running => pb::RunState::Running,
            RunState::Succeeded => pb::RunState::Succeeded,
            RunState::NotRun => pb::RunState::NotRun,
            RunState::Failed => pb::RunState::Failed,
            RunState::Cancelled => pb::RunState::Cancelled,
        } as i32,
        queued_at: Some(ts(r.queued_at)),
        started_at: r.started_at.map(ts),
        finished_at: r.finished_at.map(ts),
        tables: r.tables.iter().map(table).collect(),
        failure_class: r.failure_class.map(failure_class).unwrap_or_default(),
        error: r.error.clone().unwrap_or_default(),
        reason: r.reason.clone().unwrap_or_default(),
        started_by: r.started_by.clone(),
    }
}
