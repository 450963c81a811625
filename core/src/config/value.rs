//! The syntax of one value, shared by every section: sizes, durations, booleans, lists,
//! double quotes, `${ENV}` expansion, and the [`Secret`] and [`Compression`] types.
//!
//! Design: each parser is a pure function from the text of one value to a typed value, or
//! to a message saying what was given and what is accepted. Messages carry no file, line or
//! key: the caller puts `FILE:LINE: [section] key:` in front, so the same parsers serve
//! command-line options too. The quoting and expansion helpers never repeat the text they
//! were given, because they also handle secrets.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

const KIB: u64 = 1 << 10;

/// Size units, lowercase, with their multipliers (powers of 1024 only).
const SIZE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kib", KIB),
    ("mib", KIB << 10),
    ("gib", KIB << 20),
    ("tib", KIB << 30),
];

const SIZE_ACCEPTED: &str =
    "write a number of bytes, optionally followed by B, KiB, MiB, GiB or TiB (e.g. `32MiB`)";

/// Parse a size: a whole number of bytes, optionally followed (with or without a space) by
/// `B`, `KiB`, `MiB`, `GiB` or `TiB`. `K`, `KB`, `M`, `MB`, … are refused as ambiguous.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty size; {SIZE_ACCEPTED}"));
    }
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, rest) = s.split_at(digits);
    if num.is_empty() {
        return Err(format!("`{s}` is not a size; {SIZE_ACCEPTED}"));
    }
    if rest.starts_with(['.', ',']) {
        return Err(format!(
            "`{s}` is not a whole number; sizes are whole numbers (e.g. `1536KiB`, not `1.5MiB`)"
        ));
    }
    let unit = rest.trim_start();
    let lower = unit.to_ascii_lowercase();
    let multiplier = if lower.is_empty() {
        1
    } else if let Some(&(_, m)) = SIZE_UNITS.iter().find(|(u, _)| *u == lower) {
        m
    } else if matches!(
        lower.as_str(),
        "k" | "kb" | "m" | "mb" | "g" | "gb" | "t" | "tb"
    ) {
        let prefix = lower[..1].to_ascii_uppercase();
        return Err(format!(
            "`{s}` is ambiguous (powers of 1000 or of 1024?); write `{num}{prefix}iB`: \
             sizes count in powers of 1024"
        ));
    } else {
        return Err(format!(
            "`{s}` has an unknown unit `{unit}`; {SIZE_ACCEPTED}"
        ));
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Render a byte count the way [`parse_size`] reads it: the largest unit that divides it
/// exactly, e.g. `512 KiB`, `1 MiB`, `1000 B`.
pub fn format_size(bytes: u64) -> String {
    let units = [
        ("TiB", KIB << 30),
        ("GiB", KIB << 20),
        ("MiB", KIB << 10),
        ("KiB", KIB),
    ];
    for (name, m) in units {
        if bytes != 0 && bytes & (m - 1) == 0 {
            return format!("{} {name}", bytes / m);
        }
    }
    format!("{bytes} B")
}

const DURATION_ACCEPTED: &str =
    "write numbers with units s, min, h, d or w (e.g. `90s`, `1h 30min`, `7d`)";

/// Parse a duration: one or more `NUMBER UNIT` terms that are added up, units `s`, `min`,
/// `h`, `d`, `w` (e.g. `1h 30min`, `2w`). A bare number is refused: it names no unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {DURATION_ACCEPTED}"));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{s}` is not a duration; {DURATION_ACCEPTED}"));
        }
        let num = &rest[..digits];
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit_given = &rest[..letters];
        let unit = unit_given.to_ascii_lowercase();
        rest = rest[letters..].trim_start();
        let seconds: u64 = match unit.as_str() {
            "s" => 1,
            "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            "" if rest.starts_with(['.', ',']) => {
                return Err(format!(
                    "`{s}` is not a whole number; durations add whole units (e.g. `1h 30min`)"
                ))
            }
            "" if num == s => return Err(format!("`{s}` has no unit; {DURATION_ACCEPTED}")),
            "" => return Err(format!("`{s}`: `{num}` has no unit; {DURATION_ACCEPTED}")),
            "m" => {
                return Err(format!(
                    "`{s}`: the unit `m` is ambiguous (minutes or months?); write `min` for minutes"
                ))
            }
            _ => {
                return Err(format!(
                    "`{s}` has an unknown unit `{unit_given}`; {DURATION_ACCEPTED}"
                ))
            }
        };
        let term = num
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(seconds))
            .and_then(|t| t.checked_add(total));
        total = term.ok_or_else(|| format!("`{s}` is too long"))?;
    }
    Ok(Duration::from_secs(total))
}

/// Parse a boolean: `yes`/`true`/`on`/`1` or `no`/`false`/`off`/`0`, in any case.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(format!(
            "`{}` is not a boolean; write `yes` or `no` (also true/false, on/off, 1/0)",
            text.trim()
        )),
    }
}

/// Parse a whitespace-separated list. An item holding spaces goes in double quotes; inside
/// quotes `\"` is a quote and `\\` a backslash (any other backslash is kept as is). A quoted
/// part may touch unquoted text: `a"b c"` is the one item `ab c`. `""` is an empty item.
pub fn parse_list(text: &str) -> Result<Vec<String>, String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut in_item = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            if in_item {
                items.push(std::mem::take(&mut current));
                in_item = false;
            }
            continue;
        }
        in_item = true;
        if c == '"' {
            read_quoted(&mut chars, &mut current).map_err(|()| {
                format!(
                    "item {} opens a double quote that is never closed; close it with `\"`",
                    items.len() + 1
                )
            })?;
        } else {
            current.push(c);
        }
    }
    if in_item {
        items.push(current);
    }
    Ok(items)
}

/// Read the rest of a double-quoted string (the opening quote already consumed) into `out`.
fn read_quoted(chars: &mut std::str::Chars<'_>, out: &mut String) -> Result<(), ()> {
    loop {
        match chars.next() {
            None => return Err(()),
            Some('"') => return Ok(()),
            Some('\\') => match chars.next() {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => return Err(()),
            },
            Some(other) => out.push(other),
        }
    }
}

/// A single (non-list) value: if it starts with a double quote, it must be one quoted
/// string (escapes as in [`parse_list`]); otherwise it is taken literally.
/// The messages never repeat the value: it may be a secret.
pub(crate) fn unquote(value: &str) -> Result<String, String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Ok(value.to_string());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    read_quoted(&mut chars, &mut out).map_err(|()| {
        "the value opens a double quote that is never closed; close it with `\"`".to_string()
    })?;
    if chars.as_str().trim().is_empty() {
        Ok(out)
    } else {
        Err(
            "text follows the closing double quote; quote the whole value, \
             or write it without quotes"
                .to_string(),
        )
    }
}

/// Why `${…}` expansion failed. None of these carries the value being expanded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// The variable is not set.
    Missing(String),
    /// The variable is set but its value is not UTF-8.
    NotUnicode(String),
    /// Bad `$` syntax; the message says what to write instead.
    Syntax(&'static str),
}

/// Expand `${NAME}` from `lookup` and `$$` to `$`; any other `$` is an error.
pub(crate) fn expand(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<OsString>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r.find('}').ok_or(ExpandError::Syntax(
                "`${` is not closed by `}`; write `${NAME}`, or `$$` for a literal `$`",
            ))?;
            let name = &r[..end];
            if !is_variable_name(name) {
                return Err(ExpandError::Syntax(
                    "`${…}` must hold a variable name (letters, digits and `_`, not starting \
                     with a digit); write `$$` for a literal `$`",
                ));
            }
            let v = lookup(name).ok_or_else(|| ExpandError::Missing(name.to_string()))?;
            let v = v
                .into_string()
                .map_err(|_| ExpandError::NotUnicode(name.to_string()))?;
            out.push_str(&v);
            rest = &r[end + 1..];
        } else {
            return Err(ExpandError::Syntax(
                "a `$` must start `${NAME}`; write `$$` for a literal `$`",
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An absolute path. Relative paths are refused: services run with an unrelated working
/// directory.
pub(crate) fn absolute_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        Err("empty path; write an absolute path starting with `/`".to_string())
    } else if s.contains('\0') {
        Err("the path contains a NUL character".to_string())
    } else if !s.starts_with('/') {
        Err(format!(
            "`{s}` is a relative path; write an absolute path starting with `/`"
        ))
    } else {
        Ok(PathBuf::from(s))
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The candidate closest to `given` (ignoring case), if it is close enough to be a typo.
pub(crate) fn closest<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    let limit = if given.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .map(|c| (edit_distance(&given, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A secret value (a passphrase). `Debug` and `Display` print `<redacted>`; read it with
/// [`Secret::expose`] only where it is used. The memory is overwritten when dropped
/// (best effort: copies made by the allocator when the string grew are out of reach).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&bytes);
    }
}

/// How new blobs are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    Off,
    /// zstd at this level: 1..=19, or a fast level -7..=-1.
    Zstd(i32),
}

impl Compression {
    /// The zstd level of a plain `zstd`.
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
}

impl Default for Compression {
    fn default() -> Compression {
        Compression::Zstd(Compression::DEFAULT_ZSTD_LEVEL)
    }
}

const COMPRESSION_ACCEPTED: &str = "write `off` (or `none`), `zstd` (level 3), or `zstd:N` \
     with N from 1 (fast) to 19 (small), or from -7 to -1 (fastest)";

impl FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Compression, String> {
        let s = text.trim();
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "off" | "none" => return Ok(Compression::Off),
            "zstd" => return Ok(Compression::default()),
            _ => {}
        }
        let level = lower
            .strip_prefix("zstd:")
            .ok_or_else(|| format!("`{s}` is not a compression; {COMPRESSION_ACCEPTED}"))?;
        match level.trim().parse::<i32>() {
            Ok(n) if (1..=19).contains(&n) || (-7..=-1).contains(&n) => Ok(Compression::Zstd(n)),
            _ => Err(format!(
                "`{s}` has no valid zstd level; {COMPRESSION_ACCEPTED}"
            )),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Off => f.write_str("off"),
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("17B"), Ok(17));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size(" 32MiB "), Ok(32 << 20));
        assert_eq!(parse_size("2gib"), Ok(2 << 30));
        assert_eq!(parse_size("1 TiB"), Ok(1 << 40));
        for bad in ["10MB", "10M", "10 kb", "1K", "3GB", "2T"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("ambiguous") && e.contains("iB`"), "{bad}: {e}");
        }
        assert!(parse_size("10MB").unwrap_err().contains("`10MiB`"));
        assert!(parse_size("1.5MiB").unwrap_err().contains("whole number"));
        assert!(parse_size("").unwrap_err().contains("KiB"));
        assert!(parse_size("MiB").unwrap_err().contains("not a size"));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("5 furlongs")
            .unwrap_err()
            .contains("unknown unit `furlongs`"));
        assert!(parse_size("16777216 TiB")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("99999999999999999999999")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn size_formatting_round_trips() {
        assert_eq!(format_size(512 << 10), "512 KiB");
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(1000), "1000 B");
        assert_eq!(format_size(0), "0 B");
        for n in [0, 1, 1000, 1 << 10, 3 << 20, 5 << 40] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15min"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h 30min"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h30min"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2 d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1w 1d"), Ok(Duration::from_secs(691_200)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        let bare = parse_duration("90").unwrap_err();
        for unit in ["s", "min", "h", "d", "w"] {
            assert!(bare.contains(unit), "{bare}");
        }
        assert!(bare.contains("no unit"), "{bare}");
        assert!(parse_duration("1h 30")
            .unwrap_err()
            .contains("`30` has no unit"));
        assert!(parse_duration("5m").unwrap_err().contains("`min`"));
        assert!(parse_duration("3 fortnights")
            .unwrap_err()
            .contains("unknown unit `fortnights`"));
        assert!(parse_duration("1.5h").unwrap_err().contains("whole"));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999w")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_duration("40000000000000w")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn booleans() {
        for t in ["yes", "true", "on", "1", "Yes", " TRUE "] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["no", "false", "off", "0", "NO"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        let e = parse_bool("maybe").unwrap_err();
        assert!(
            e.contains("`maybe`") && e.contains("yes") && e.contains("no"),
            "{e}"
        );
    }

    #[test]
    fn lists_with_quotes_and_escapes() {
        assert_eq!(parse_list(""), Ok(vec![]));
        assert_eq!(parse_list("  \t "), Ok(vec![]));
        assert_eq!(
            parse_list("/etc  /home\t/srv"),
            Ok(vec!["/etc".into(), "/home".into(), "/srv".into()])
        );
        assert_eq!(
            parse_list(r#"/srv "/home/my files" *.tmp"#),
            Ok(vec!["/srv".into(), "/home/my files".into(), "*.tmp".into()])
        );
        assert_eq!(
            parse_list(r#""say \"hi\"" "a\\b""#),
            Ok(vec![r#"say "hi""#.into(), r"a\b".into()])
        );
        // Other backslashes are kept, inside and outside quotes.
        assert_eq!(
            parse_list(r#""\*.tmp" a\b"#),
            Ok(vec![r"\*.tmp".into(), r"a\b".into()])
        );
        assert_eq!(parse_list(r#"a"b c"d"#), Ok(vec!["ab cd".into()]));
        assert_eq!(parse_list(r#""" x"#), Ok(vec![String::new(), "x".into()]));
        let e = parse_list(r#"/a "/b c"#).unwrap_err();
        assert!(e.contains("item 2") && e.contains("never closed"), "{e}");
        assert!(parse_list(r#""ends in backslash\"#).is_err());
    }

    #[test]
    fn unquoting_single_values() {
        assert_eq!(unquote("plain value"), Ok("plain value".into()));
        assert_eq!(unquote(r#"a "b" c"#), Ok(r#"a "b" c"#.into()));
        assert_eq!(unquote(r#"" padded ""#), Ok(" padded ".into()));
        assert_eq!(unquote(r#""a\"b""#), Ok(r#"a"b"#.into()));
        let e = unquote(r#""s3cr3t-pass"#).unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = unquote(r#""s3cr3t" trailing"#).unwrap_err();
        assert!(!e.contains("s3cr3t") && !e.contains("trailing"), "{e}");
    }

    #[test]
    fn expansion() {
        let env = |name: &str| match name {
            "HOST" => Some(OsString::from("db1")),
            "EMPTY" => Some(OsString::new()),
            _ => None,
        };
        assert_eq!(expand("/srv/${HOST}/x", &env), Ok("/srv/db1/x".into()));
        assert_eq!(expand("${HOST}${HOST}", &env), Ok("db1db1".into()));
        assert_eq!(expand("a${EMPTY}b", &env), Ok("ab".into()));
        assert_eq!(
            expand("cost $$5 $${HOST}", &env),
            Ok("cost $5 ${HOST}".into())
        );
        assert_eq!(expand("no dollars", &env), Ok("no dollars".into()));
        assert_eq!(
            expand("${NOPE}", &env),
            Err(ExpandError::Missing("NOPE".into()))
        );
        for bad in ["$HOME", "a$", "${HOST", "${}", "${1X}", "${A-B}"] {
            assert!(
                matches!(expand(bad, &env), Err(ExpandError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn compression() {
        assert_eq!("off".parse(), Ok(Compression::Off));
        assert_eq!("none".parse(), Ok(Compression::Off));
        assert_eq!("zstd".parse(), Ok(Compression::Zstd(3)));
        assert_eq!("zstd:19".parse(), Ok(Compression::Zstd(19)));
        assert_eq!("ZSTD:1".parse(), Ok(Compression::Zstd(1)));
        assert_eq!("zstd:-7".parse(), Ok(Compression::Zstd(-7)));
        assert_eq!(Compression::default(), Compression::Zstd(3));
        for bad in [
            "zstd:0", "zstd:20", "zstd:-8", "zstd:", "zstd:x", "gzip", "lz4:1",
        ] {
            let e = bad.parse::<Compression>().unwrap_err();
            assert!(e.contains(bad) && e.contains("zstd:N"), "{e}");
        }
        assert_eq!(
            Compression::Zstd(-3).to_string().parse(),
            Ok(Compression::Zstd(-3))
        );
        assert_eq!(Compression::Off.to_string(), "off");
    }

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(
            format!("{s:?} {s} {s:#?}"),
            "<redacted> <redacted> <redacted>"
        );
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn suggestions() {
        let keys = ["exclude", "exclude_caches", "exclude_if_present", "paths"];
        assert_eq!(closest("exclude_cache", keys), Some("exclude_caches"));
        assert_eq!(closest("Paths", keys), Some("paths"));
        assert_eq!(closest("path", keys), Some("paths"));
        assert_eq!(closest("compression", keys), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
