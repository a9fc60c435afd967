//! Reading an element's attributes: required ones, booleans, display names, and a warning for
//! each attribute the element does not have. The attribute lists of every element read.

use super::*;

/// The attributes every element may carry for display names in up to 16 languages.
pub(super) fn is_display_name(attr: &str) -> bool {
    attr.strip_prefix("DisplayName_L")
        .and_then(|n| n.parse::<u8>().ok())
        .is_some_and(|n| (1..=16).contains(&n))
}

pub(super) const AGENT_ATTRS: &[&str] = &["Identifier", "State", "URI"];
pub(super) const CONNECTOR_ATTRS: &[&str] = &[
    "Identifier",
    "Agent",
    "IsDeactivated",
    "CompleteJob",
    "IncrementalJob",
    "MaximumDeletedLines",
    "MaximumInsertedLines",
    "MaximumUpdatedLines",
    "MaxPercentageDeletedLines",
    "MaxPercentageInsertedLines",
    "MaxPercentageUpdatedLines",
    "MaximumLinkDeletedLines",
    "MaximumLinkInsertedLines",
    "MaxLinkPercentageDeletedLines",
    "MaxLinkPercentageInsertedLines",
];
pub(super) const CONNECTION_ATTRS: &[&str] = &[
    "Identifier",
    "Connector",
    "Package",
    "DeactivationExportFulfill",
];
pub(super) const TRANSFORMATION_ATTRS: &[&str] = &[
    "Type",
    "Table",
    "Column",
    "InputColumn",
    "InputColumn2",
    "InputColumn3",
    "InputColumn4",
    "InputColumn5",
    "ConcatSeparator",
    "RemoveEmpty",
    "RemoveDuplicates",
    "SortValues",
    "AddedDays",
    "MinYear",
    "MaxYear",
    "DatePattern",
    "WhereOperator",
    "WhereValue",
];
pub(super) const MAPPING_THRESHOLDS: &[&str] = &[
    "MaximumDeletedLines",
    "MaximumInsertedLines",
    "MaximumUpdatedLines",
    "MaxPercentageDeletedLines",
    "MaxPercentageInsertedLines",
    "MaxPercentageUpdatedLines",
];
pub(super) const ETM_ATTRS: &[&str] = &["Identifier", "Connector", "ConnectionTable", "C0"];
pub(super) const PROPERTY_ATTRS: &[&str] = &[
    "Identifier",
    "ConnectionColumn",
    "IsPrimaryKey",
    "IsUniqueKey",
    "Format",
];
pub(super) const EAM_ATTRS: &[&str] = &[
    "Identifier",
    "Connector",
    "ConnectionTable",
    "Column1",
    "Column2",
    "EntityPropertyMapping1",
    "EntityPropertyMapping2",
    "C0",
];
pub(super) const EXPORT_TASK_ATTRS: &[&str] = &[
    "Identifier",
    "Agent",
    "OpenIdClient",
    "Connection",
    "ContinueOnError",
    "IgnoreCookieFile",
    "InitMode",
];
pub(super) const JOB_ATTRS: &[&str] = &[
    "Identifier",
    "Agent",
    "CronTabExpression",
    "CronTimeZone",
    "IsIncremental",
    "IsInitializationJob",
    "IsConnectorJob",
    "UserStartDenied",
    "LogLevel",
];
pub(super) const STEP_ATTRS: &[&str] = &["Identifier", "Task", "Level"];

/// Reads one element's attributes, recording problems as it goes.
pub(super) struct Attrs<'a> {
    pub(super) el: &'a RawElement,
    known: &'static [&'static str],
    extra: &'static [&'static str],
}

impl<'a> Attrs<'a> {
    pub(super) fn new(el: &'a RawElement, known: &'static [&'static str]) -> Self {
        Attrs {
            el,
            known,
            extra: &[],
        }
    }

    pub(super) fn with(mut self, extra: &'static [&'static str]) -> Self {
        self.extra = extra;
        self
    }

    pub(super) fn get(&self, name: &str) -> Option<&'a str> {
        self.el.attr(name).map(|a| a.value.trim())
    }

    pub(super) fn origin_of(&self, name: &str) -> Option<Origin> {
        Some(Origin::File(
            self.el
                .attr(name)
                .map(|a| a.loc.clone())
                .unwrap_or_else(|| self.el.loc.clone()),
        ))
    }

    pub(super) fn required(&self, name: &str, what: &str, d: &mut Diagnostics) -> Option<&'a str> {
        match self.get(name).filter(|v| !v.is_empty()) {
            Some(v) => Some(v),
            None => {
                d.push(
                    Diagnostic::error(
                        self.el.origin(),
                        format!("<{}> has no {name} attribute", self.el.name),
                    )
                    .hint(format!("add {name}=\"...\" ({what})")),
                );
                None
            }
        }
    }

    pub(super) fn boolean(&self, name: &str, default: bool, d: &mut Diagnostics) -> bool {
        match self.get(name) {
            None => default,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => {
                d.push(
                    Diagnostic::error(
                        self.origin_of(name),
                        format!("{name}=\"{v}\" is not a boolean"),
                    )
                    .hint(format!("write {name}=\"true\" or {name}=\"false\"")),
                );
                default
            }
        }
    }

    pub(super) fn display_name(&self, fallback: &str) -> String {
        self.get("DisplayName_L1").unwrap_or(fallback).to_string()
    }

    /// Warns about attributes this element does not have.
    pub(super) fn finish(self, d: &mut Diagnostics) {
        for a in &self.el.attrs {
            if a.namespaced {
                continue;
            }
            if !self.known.contains(&a.name.as_str())
                && !self.extra.contains(&a.name.as_str())
                && !is_display_name(&a.name)
            {
                let mut known: Vec<&str> = self.known.iter().chain(self.extra).copied().collect();
                known.push("DisplayName_L1");
                d.push(
                    Diagnostic::warning(
                        Some(Origin::File(a.loc.clone())),
                        format!(
                            "<{}> has no attribute {}; it is ignored",
                            self.el.name, a.name
                        ),
                    )
                    .hint(format!(
                        "check the spelling; known attributes: {}",
                        known.join(", ")
                    )),
                );
            }
        }
    }
}
