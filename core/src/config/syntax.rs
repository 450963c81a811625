//! One file's text to an ordered list of section headers and `key = value` entries, each
//! with its line number.
//!
//! Design: rust-ini does the parsing (values, `\` line continuations), but it keeps no
//! line numbers and accepts some odd input (`key: value`, text after `]`, an indented
//! comment read as a key). So a small line scanner runs first: it checks that every line
//! is blank, a full-line comment, a `[section]` header or `key = value`, reporting
//! `FILE:LINE` otherwise, and records the line of each header and key. It hands rust-ini a
//! cleaned copy of the text with the same line count (comments blanked, CRLF made LF), then
//! walks rust-ini's result, which keeps document order, side by side with its own record:
//! the two must name the same sections and keys in the same order, so every value gets its
//! line, and any disagreement is an error rather than a wrong line.

use std::path::Path;

use ini::{Ini, ParseOption};

use super::error::{ConfigError, Location};

/// One header or entry, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// `[name]`.
    Section { name: String, line: usize },
    /// `key = value`: the value as rust-ini returns it (trimmed, continuations joined,
    /// quotes and backslashes untouched), `line` the line of the key.
    Key {
        key: String,
        line: usize,
        value: String,
    },
}

/// What the scanner saw on a line that matters.
#[derive(Debug)]
enum Seen {
    Section { name: String, line: usize },
    Key { key: String, line: usize },
}

impl Seen {
    fn line(&self) -> usize {
        match self {
            Seen::Section { line, .. } | Seen::Key { line, .. } => *line,
        }
    }
}

const LINE_KINDS: &str =
    "each line must be `key = value`, a `[section]` header, a comment starting with `#` or `;`, \
     or empty";

/// Parse the text of `file`.
pub(crate) fn parse(text: &str, file: &Path) -> Result<Vec<Item>, ConfigError> {
    let syntax = |line: usize, message: String| ConfigError::Syntax {
        loc: Location::new(file, line),
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut clean = String::with_capacity(text.len());
    let mut seen = Vec::new();
    let mut continued = false;
    for (index, raw) in text.split('\n').enumerate() {
        let n = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.contains('\r') {
            return Err(syntax(
                n,
                "stray carriage return; save the file with Unix (LF) line ends".to_string(),
            ));
        }
        if index > 0 {
            clean.push('\n');
        }
        if continued {
            // The continuation of a value: rust-ini reads it verbatim.
            clean.push_str(line);
            continued = ends_in_continuation(line);
            continue;
        }
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if let Some(header) = trimmed.strip_prefix('[') {
            let Some(inner) = header.strip_suffix(']') else {
                return Err(syntax(
                    n,
                    "a section header must be `[name]` alone on its line; comments go on \
                     their own line"
                        .to_string(),
                ));
            };
            let name = inner.trim();
            if name.is_empty() || !name.chars().all(is_section_char) {
                return Err(syntax(
                    n,
                    format!(
                        "`[{inner}]` is not a section header; a section name is made of \
                         letters, digits, `_`, `-` and `.`, e.g. `[repository]`"
                    ),
                ));
            }
            clean.push('[');
            clean.push_str(name);
            clean.push(']');
            seen.push(Seen::Section {
                name: name.to_string(),
                line: n,
            });
            continue;
        }
        let Some((key, _)) = trimmed.split_once('=') else {
            let message = if trimmed.contains(':') {
                format!("expected `key = value` (with `=`, not `:`); {LINE_KINDS}")
            } else {
                format!("expected `key = value`; {LINE_KINDS}")
            };
            return Err(syntax(n, message));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(syntax(n, "a key name is missing before `=`".to_string()));
        }
        if !key.chars().all(is_key_char) {
            let message = if key.contains(':') {
                format!("expected `key = value` (with `=`, not `:`); {LINE_KINDS}")
            } else {
                "the text before `=` is not a key name; key names are made of letters, \
                 digits, `_` and `-`"
                    .to_string()
            };
            return Err(syntax(n, message));
        }
        clean.push_str(line.trim_start());
        continued = ends_in_continuation(line);
        seen.push(Seen::Key {
            key: key.to_string(),
            line: n,
        });
    }

    let options = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: false,
        enabled_preserve_key_leading_whitespace: false,
    };
    let ini = Ini::load_from_str_opt(&clean, options).map_err(|e| {
        syntax(
            e.line.max(1),
            format!("cannot parse: {}; {LINE_KINDS}", e.msg),
        )
    })?;

    // Pair rust-ini's sections and keys, in document order, with the scanner's lines.
    let mismatch = |at: Option<&Seen>| {
        syntax(
            at.map_or(text.split('\n').count(), Seen::line),
            format!("cannot parse this line; {LINE_KINDS}"),
        )
    };
    let mut seen = seen.into_iter();
    let mut items = Vec::new();
    for (section, properties) in ini.iter() {
        if let Some(name) = section {
            match seen.next() {
                Some(Seen::Section { name: n, line }) if n == name => {
                    items.push(Item::Section { name: n, line });
                }
                other => return Err(mismatch(other.as_ref())),
            }
        }
        for (key, value) in properties.iter() {
            match seen.next() {
                Some(Seen::Key { key: k, line }) if k == key => items.push(Item::Key {
                    key: k,
                    line,
                    value: value.to_string(),
                }),
                other => return Err(mismatch(other.as_ref())),
            }
        }
    }
    if let Some(extra) = seen.next() {
        return Err(mismatch(Some(&extra)));
    }
    Ok(items)
}

/// rust-ini joins a line that ends in an odd number of backslashes with the next one.
fn ends_in_continuation(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

fn is_section_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(text: &str) -> Vec<Item> {
        parse(text, Path::new("/t.conf")).unwrap()
    }

    fn key(key: &str, line: usize, value: &str) -> Item {
        Item::Key {
            key: key.into(),
            line,
            value: value.into(),
        }
    }

    fn section(name: &str, line: usize) -> Item {
        Item::Section {
            name: name.into(),
            line,
        }
    }

    fn error(text: &str) -> (usize, String) {
        let e = parse(text, Path::new("/t.conf")).unwrap_err();
        let line = e.location().unwrap().line;
        (line, e.to_string())
    }

    #[test]
    fn lines_of_sections_and_keys() {
        let text = "# comment\n\n[a]\nx = 1\n  ; indented comment\n  y=two words # not a comment\n\
                    [b]\n[a]\nz =\n";
        assert_eq!(
            items(text),
            vec![
                section("a", 3),
                key("x", 4, "1"),
                key("y", 6, "two words # not a comment"),
                section("b", 7),
                section("a", 8),
                key("z", 9, ""),
            ]
        );
    }

    #[test]
    fn values_are_raw() {
        let text = "[a]\nq = \"quoted\\\" value\"\nb = C:\\dir\\x \nu = s3://bucket/prefix\n";
        assert_eq!(
            items(text),
            vec![
                section("a", 1),
                key("q", 2, "\"quoted\\\" value\""),
                key("b", 3, "C:\\dir\\x"),
                key("u", 4, "s3://bucket/prefix"),
            ]
        );
    }

    #[test]
    fn continuation_lines_keep_numbering() {
        let text = "[a]\nlist = /one \\\n  /two \\\n# kept\nafter = 1\n";
        assert_eq!(
            items(text),
            vec![
                section("a", 1),
                key("list", 2, "/one   /two # kept"),
                key("after", 5, "1"),
            ]
        );
        // An even number of backslashes is no continuation.
        let text = "[a]\nx = a\\\\\ny = b\n";
        assert_eq!(
            items(text),
            vec![section("a", 1), key("x", 2, "a\\\\"), key("y", 3, "b")]
        );
    }

    #[test]
    fn crlf_and_bom() {
        let text = "\u{feff}[a]\r\nx = 1\r\ny = 2 \\\r\n3\r\n";
        assert_eq!(
            items(text),
            vec![section("a", 1), key("x", 2, "1"), key("y", 3, "2 3")]
        );
        assert_eq!(error("[a]\nx = 1\ry = 2\n").0, 2);
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let (line, msg) = error("[a]\nx = 1\njust words\n");
        assert_eq!(line, 3);
        assert!(
            msg.starts_with("/t.conf:3: expected `key = value`"),
            "{msg}"
        );
        let (line, msg) = error("[a]\n\npath: /srv\n");
        assert_eq!(line, 3);
        assert!(msg.contains("not `:`"), "{msg}");
        let (line, msg) = error("[a]\nx = 1\n[b] # note\n");
        assert_eq!(line, 3);
        assert!(msg.contains("alone on its line"), "{msg}");
        assert_eq!(error("[a]\n[b\n").0, 2);
        assert_eq!(error("[a]\n[]\n").0, 2);
        assert_eq!(error("[a]\n[my section]\n").0, 2);
        assert_eq!(error("[a]\n = 3\n").0, 2);
        let (line, msg) = error("[a]\nmy key = 3\n");
        assert_eq!(line, 2);
        assert!(msg.contains("not a key name"), "{msg}");
    }

    #[test]
    fn keys_before_any_section_are_kept_for_the_caller() {
        assert_eq!(
            items("x = 1\n[a]\ny = 2\n"),
            vec![key("x", 1, "1"), section("a", 2), key("y", 3, "2")]
        );
    }

    #[test]
    fn empty_text() {
        assert_eq!(items(""), vec![]);
        assert_eq!(items("\n\n# only comments\n"), vec![]);
    }
}
