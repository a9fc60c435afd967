//! Reading the XML configuration files into raw elements that remember where they are.
//!
//! This layer knows XML, not meaning: it parses every `*.xml` file under a folder (recursively, in
//! path order), refuses DTDs (so no entity can expand), checks the root element, and returns each
//! child of the root with its attributes and positions. `validate` gives them meaning.

use super::diag::{Diagnostic, Diagnostics, Location, Origin};
use std::path::{Path, PathBuf};

/// The root element every configuration file must have (in any namespace or none).
pub const ROOT_ELEMENT: &str = "ConfigurationFile";

/// How deep elements may be nested in a configuration file. The agent's own elements are at most
/// three deep (`ConfigurationFile/Connection/Transformation`); other products' elements a few
/// more. Deeper files are refused at the first element past the limit, before anything walks the
/// tree (a walk of 50,000 levels would overflow a thread's stack).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone)]
pub struct RawAttr {
    pub name: String,
    /// In a namespace (`xsi:...`, `xmlns:...`): never an attribute of ours.
    pub namespaced: bool,
    pub value: String,
    pub loc: Location,
}

#[derive(Debug, Clone)]
pub struct RawElement {
    pub name: String,
    pub loc: Location,
    pub attrs: Vec<RawAttr>,
    pub children: Vec<RawElement>,
}

impl RawElement {
    pub fn attr(&self, name: &str) -> Option<&RawAttr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    pub fn origin(&self) -> Option<Origin> {
        Some(Origin::File(self.loc.clone()))
    }
}

/// Lists the `*.xml` files under `root`, recursively, sorted by path.
pub fn find_xml_files(root: &Path, diags: &mut Diagnostics) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    // Folders already read, by real path: a symbolic-link loop is read once.
    let mut seen = std::collections::HashSet::new();
    while let Some(dir) = stack.pop() {
        if !seen.insert(dir.canonicalize().unwrap_or_else(|_| dir.clone())) {
            continue;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                diags.push(
                    Diagnostic::error(
                        Some(Origin::File(Location::file_only(&dir))),
                        format!("cannot read the XML configuration folder: {e}"),
                    )
                    .hint("set XmlConfigurationPath in the settings file to the folder that holds the XML configuration"),
                );
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // Follow symbolic links: configuration is often mounted that way.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            // (A *.xml that is not a regular file, a FIFO say, is listed: reading it refuses it
            // with its path, without blocking.)
            if meta.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("xml"))
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Reads one XML file: a regular file of at most [`crate::fsutil::limits::XML_FILE`] bytes.
pub fn read_xml(path: &Path) -> Result<Vec<u8>, crate::fsutil::ReadError> {
    crate::fsutil::read_limited(
        path,
        crate::fsutil::limits::XML_FILE,
        "an XML configuration file",
    )
}

/// Parses one file. Problems go to `diags`; a file that cannot be parsed yields no elements.
pub fn parse_file(
    path: &Path,
    hasher: &mut super::inputs::InputsHasher,
    diags: &mut Diagnostics,
) -> Vec<RawElement> {
    let read = read_xml(path);
    hasher.file(path, &read);
    let bytes = match read {
        Ok(b) => b,
        Err(e) => {
            let hint = match e {
                crate::fsutil::ReadError::NotRegular { .. } => {
                    "only regular *.xml files belong in the XML configuration folder: remove it or rename it"
                }
                crate::fsutil::ReadError::TooLarge { .. } => {
                    "split the configuration into several files, or remove what the agent does not need"
                }
                crate::fsutil::ReadError::Io(_) => "make the file readable by the agent's user",
            };
            diags.push(
                Diagnostic::error(
                    Some(Origin::File(Location::file_only(path))),
                    format!("cannot read the XML configuration file: {e}"),
                )
                .hint(hint),
            );
            return Vec::new();
        }
    };
    let text = match decode(&bytes) {
        Some(t) => t,
        None => {
            diags.push(
                Diagnostic::error(
                    Some(Origin::File(Location::file_only(path))),
                    "the file is not valid UTF-8 or UTF-16 text",
                )
                .hint("save the XML file as UTF-8"),
            );
            return Vec::new();
        }
    };
    parse_text(path, &text, diags)
}

fn decode(bytes: &[u8]) -> Option<String> {
    if let Some((enc, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, had_errors) = enc.decode_without_bom_handling(&bytes[bom_len..]);
        return (!had_errors).then(|| text.into_owned());
    }
    std::str::from_utf8(bytes).ok().map(str::to_string)
}

pub fn parse_text(path: &Path, text: &str, diags: &mut Diagnostics) -> Vec<RawElement> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        ..Default::default()
    };
    let doc = match roxmltree::Document::parse_with_options(text, options) {
        Ok(d) => d,
        Err(e) => {
            let mut pos = e.pos();
            if matches!(e, roxmltree::Error::DtdDetected)
                && let Some(at) = text.find("<!DOCTYPE")
            {
                let before = &text[..at];
                pos.row = before.matches('\n').count() as u32 + 1;
                pos.col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
            }
            let (message, hint) = match e {
                roxmltree::Error::DtdDetected => (
                    "DTD and entity declarations are not allowed in configuration files"
                        .to_string(),
                    "remove the <!DOCTYPE ...> declaration; entities are never expanded",
                ),
                other => (
                    format!("the file is not well-formed XML: {other}"),
                    "fix the XML syntax at this position",
                ),
            };
            diags.push(
                Diagnostic::error(
                    Some(Origin::File(Location::new(path, pos.row, pos.col))),
                    message,
                )
                .hint(hint),
            );
            return Vec::new();
        }
    };
    let root = doc.root_element();
    if let Some(node) = too_deep(root) {
        let pos = doc.text_pos_at(node.range().start);
        diags.push(
            Diagnostic::error(
                Some(Origin::File(Location::new(path, pos.row, pos.col))),
                format!(
                    "elements are nested more than {MAX_DEPTH} levels deep here (<{}>); the file is refused",
                    node.tag_name().name()
                ),
            )
            .hint("remove or flatten the nested elements; configuration files never need this depth"),
        );
        return Vec::new();
    }
    if root.tag_name().name() != ROOT_ELEMENT {
        let pos = doc.text_pos_at(root.range().start);
        diags.push(
            Diagnostic::error(
                Some(Origin::File(Location::new(path, pos.row, pos.col))),
                format!(
                    "the root element is <{}>, expected <{ROOT_ELEMENT}>",
                    root.tag_name().name()
                ),
            )
            .hint(format!(
                "wrap the configuration in <{ROOT_ELEMENT}> ... </{ROOT_ELEMENT}>"
            )),
        );
        return Vec::new();
    }
    root.children()
        .filter(|n| n.is_element())
        .map(|n| convert(&doc, path, n))
        .collect()
}

/// The first element nested deeper than [`MAX_DEPTH`], found without recursion: a walk in
/// document order keeping the chain of open ancestors.
fn too_deep<'a, 'i>(root: roxmltree::Node<'a, 'i>) -> Option<roxmltree::Node<'a, 'i>> {
    let mut open: Vec<roxmltree::NodeId> = Vec::new();
    for n in root.descendants().filter(|n| n.is_element()) {
        let parent = n.parent().map(|p| p.id());
        while open.last().is_some_and(|top| Some(*top) != parent) {
            open.pop();
        }
        open.push(n.id());
        if open.len() > MAX_DEPTH {
            return Some(n);
        }
    }
    None
}

/// Converts an element and its children; the depth was bounded by [`too_deep`] before.
fn convert(doc: &roxmltree::Document, path: &Path, node: roxmltree::Node) -> RawElement {
    let pos = doc.text_pos_at(node.range().start);
    let attrs = node
        .attributes()
        .map(|a| {
            let apos = doc.text_pos_at(a.range().start);
            RawAttr {
                name: a.name().to_string(),
                namespaced: a.namespace().is_some(),
                value: a.value().to_string(),
                loc: Location::new(path, apos.row, apos.col),
            }
        })
        .collect();
    let children = node
        .children()
        .filter(|n| n.is_element())
        .map(|n| convert(doc, path, n))
        .collect();
    RawElement {
        name: node.tag_name().name().to_string(),
        loc: Location::new(path, pos.row, pos.col),
        attrs,
        children,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_root_and_positions() {
        let mut d = Diagnostics::default();
        let xml = "<?xml version=\"1.0\"?>\n<ConfigurationFile xmlns=\"urn:x\">\n  <Connector Identifier=\"HR\"/>\n</ConfigurationFile>";
        let els = parse_text(Path::new("a.xml"), xml, &mut d);
        assert!(!d.has_errors());
        assert_eq!(els.len(), 1);
        assert_eq!(els[0].name, "Connector");
        assert_eq!((els[0].loc.line, els[0].loc.column), (3, 3));
        let a = els[0]
            .attr("Identifier")
            .map(|a| (a.loc.line, a.loc.column));
        assert_eq!(a, Some((3, 14)));
    }

    #[test]
    fn deep_nesting_is_refused_at_its_place_without_recursion() {
        let mut d = Diagnostics::default();
        let depth = 200_000;
        let xml = format!(
            "<ConfigurationFile>\n{}{}</ConfigurationFile>",
            "<X>".repeat(depth),
            "</X>".repeat(depth)
        );
        let els = parse_text(Path::new("a.xml"), &xml, &mut d);
        assert!(els.is_empty());
        let shown = d.0[0].to_string();
        assert!(
            shown.starts_with("a.xml:2:190: error: elements are nested more than 64 levels"),
            "{shown}"
        );
        // At the limit, fine.
        let mut d = Diagnostics::default();
        let ok = format!(
            "<ConfigurationFile>{}{}</ConfigurationFile>",
            "<X>".repeat(MAX_DEPTH - 1),
            "</X>".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(parse_text(Path::new("a.xml"), &ok, &mut d).len(), 1);
        assert!(!d.has_errors(), "{d:?}");
    }

    #[test]
    fn dtd_is_refused() {
        let mut d = Diagnostics::default();
        let xml = "<!DOCTYPE x [<!ENTITY a \"b\">]>\n<ConfigurationFile/>";
        let els = parse_text(Path::new("a.xml"), xml, &mut d);
        assert!(els.is_empty());
        assert!(d.0[0].message.contains("DTD"), "{:?}", d.0);
    }
}
