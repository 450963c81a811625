//! A strict parser of the Prometheus text exposition format (version 0.0.4, what
//! node_exporter's textfile collector reads), for checking cairn's metrics file.
//!
//! Design choice: written here rather than taken from a crate. The maintained Rust
//! crates either parse leniently (skipping what they do not understand, which is the
//! opposite of what a test wants) or come with a whole client library; the grammar is
//! small. *Strict* means every rule of the format is an error: a metric or label name of
//! the wrong shape, a bad escape or an unterminated label value, a value that Go's
//! `ParseFloat` would not take, a `# TYPE` after the family's first sample or given twice,
//! an unknown type, a family whose samples are not together, the same series twice, or a
//! file that does not end with a newline — any of which would make node_exporter drop the
//! whole file.

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Result};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
    /// The optional timestamp (ms).
    pub timestamp: Option<i64>,
}

/// A metric family: its `# HELP`, `# TYPE` and samples.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Family {
    /// The name.
    pub name: String,
    /// `# HELP` text (unescaped), if any.
    pub help: Option<String>,
    /// `# TYPE`, `untyped` if none.
    pub kind: String,
    /// Samples, in file order.
    pub samples: Vec<Sample>,
}

/// A parsed exposition.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exposition {
    /// Families, in file order.
    pub families: Vec<Family>,
}

impl Exposition {
    /// The family `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The value of the series `name{labels}` (labels given as pairs, all of them).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Every sample name (with labels) as `name{k="v",…}`, sorted: for comparing files.
    pub fn series(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .families
            .iter()
            .flat_map(|f| &f.samples)
            .map(|s| {
                let l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                format!("{}{{{}}}", s.name, l.join(","))
            })
            .collect();
        out.sort();
        out
    }
}

const TYPES: &[&str] = &["counter", "gauge", "histogram", "summary", "untyped"];

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value as Go's `strconv.ParseFloat` takes it (what Prometheus uses).
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => return Some(f64::NAN),
        "+Inf" | "Inf" => return Some(f64::INFINITY),
        "-Inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && s.chars().any(|c| c.is_ascii_digit());
    if !ok {
        return None;
    }
    s.parse().ok()
}

/// The base family name of a sample (`x_bucket`, `x_sum`, `x_count` belong to `x` for
/// histograms and summaries).
fn family_of<'a>(sample: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    sample
}

/// Parse `text` strictly (see the module docs).
pub fn parse(text: &str) -> Result<Exposition> {
    if !text.is_empty() && !text.ends_with('\n') {
        bail!("the exposition does not end with a newline");
    }
    let mut exp = Exposition::default();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            let (kw, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if kw != "HELP" && kw != "TYPE" {
                continue; // a comment
            }
            let (name, value) = tail.split_once(' ').unwrap_or((tail, ""));
            if !is_metric_name(name) {
                bail!("line {n}: bad metric name {name:?} in # {kw}");
            }
            let fam = family_mut(&mut exp, name, &mut current, &mut finished, n)?;
            if kw == "HELP" {
                if !helps.insert(name.to_string()) {
                    bail!("line {n}: second # HELP for {name}");
                }
                fam.help =
                    Some(unescape(value, false).map_err(|e| anyhow::anyhow!("line {n}: {e}"))?);
            } else {
                if types.contains_key(name) {
                    bail!("line {n}: second # TYPE for {name}");
                }
                if !fam.samples.is_empty() {
                    bail!("line {n}: # TYPE for {name} after its samples");
                }
                if !TYPES.contains(&value) {
                    bail!("line {n}: unknown type {value:?} for {name}");
                }
                fam.kind = value.to_string();
                types.insert(name.to_string(), value.to_string());
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|e| anyhow::anyhow!("line {n}: {e}: {line:?}"))?;
        let base = family_of(&sample.name, &types).to_string();
        let key = format!("{}{:?}", sample.name, sample.labels);
        if !series.insert(key) {
            bail!(
                "line {n}: the series {} {:?} appears twice",
                sample.name,
                sample.labels
            );
        }
        let fam = family_mut(&mut exp, &base, &mut current, &mut finished, n)?;
        fam.samples.push(sample);
    }
    for f in &mut exp.families {
        if f.kind.is_empty() {
            f.kind = "untyped".into();
        }
    }
    Ok(exp)
}

/// The family `name`, made current: a family may not come back after another began.
fn family_mut<'a>(
    exp: &'a mut Exposition,
    name: &str,
    current: &mut Option<String>,
    finished: &mut HashSet<String>,
    n: usize,
) -> Result<&'a mut Family> {
    if current.as_deref() != Some(name) {
        if finished.contains(name) {
            bail!("line {n}: the family {name} is not contiguous");
        }
        if let Some(c) = current.take() {
            finished.insert(c);
        }
        *current = Some(name.to_string());
        exp.families.push(Family {
            name: name.to_string(),
            ..Family::default()
        });
    }
    Ok(exp.families.last_mut().expect("just pushed"))
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line
        .find(['{', ' ', '\t'])
        .ok_or_else(|| anyhow::anyhow!("no value"))?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        bail!("bad metric name {name:?}");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            // Optional whitespace, then `}` or a label.
            while matches!(chars.peek(), Some((_, ' '))) {
                chars.next();
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = *i + 1;
                    break;
                }
                None => bail!("unterminated label set"),
                _ => {}
            }
            let mut lname = String::new();
            while let Some((_, c)) = chars.peek() {
                if *c == '=' {
                    break;
                }
                lname.push(*c);
                chars.next();
            }
            if chars.next().map(|x| x.1) != Some('=') || !is_label_name(lname.trim()) {
                bail!("bad label name {lname:?}");
            }
            if chars.next().map(|x| x.1) != Some('"') {
                bail!("label value of {lname} is not quoted");
            }
            let mut raw = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        raw.push('\\');
                        match chars.next() {
                            Some((_, e)) => raw.push(e),
                            None => bail!("unterminated escape"),
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\n' => bail!("newline in a label value"),
                    c => raw.push(c),
                }
            }
            if !closed {
                bail!("unterminated label value of {lname}");
            }
            let value = unescape(&raw, true)?;
            if labels.insert(lname.trim().to_string(), value).is_some() {
                bail!("label {lname} given twice");
            }
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    end = i + 1;
                    break;
                }
                _ => bail!("expected , or }} after a label"),
            }
        }
        rest = &r[end..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or_else(|| anyhow::anyhow!("no value"))?;
    let value = parse_value(value).ok_or_else(|| anyhow::anyhow!("bad value {value:?}"))?;
    let timestamp = match fields.next() {
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| anyhow::anyhow!("bad timestamp {t:?}"))?,
        ),
        None => None,
    };
    if fields.next().is_some() {
        bail!("trailing text after the value");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp,
    })
}

/// Undo `\\` and `\n` (and `\"` in label values); any other escape is an error.
fn unescape(s: &str, label: bool) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if label => out.push('"'),
            other => bail!(
                "bad escape \\{}",
                other.map(String::from).unwrap_or_default()
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_families_labels_escapes_and_special_values() {
        let text = "# HELP a_total Things, with a \\\\ and\\nnewline.\n# TYPE a_total counter\n\
                    a_total{x=\"1\",y=\"q\\\"uote\"} 3\na_total{x=\"2\"} 4.5e3 1700000000000\n\
                    # a comment\nb NaN\nc{} +Inf\n";
        let e = parse(text).unwrap();
        assert_eq!(e.families.len(), 3);
        let a = e.family("a_total").unwrap();
        assert_eq!(a.kind, "counter");
        assert_eq!(a.help.as_deref(), Some("Things, with a \\ and\nnewline."));
        assert_eq!(
            e.value("a_total", &[("x", "1"), ("y", "q\"uote")]),
            Some(3.0)
        );
        assert_eq!(e.value("a_total", &[("x", "2")]), Some(4500.0));
        assert_eq!(a.samples[1].timestamp, Some(1_700_000_000_000));
        assert!(e.value("b", &[]).unwrap().is_nan());
        assert_eq!(e.value("c", &[]), Some(f64::INFINITY));
        assert_eq!(e.family("b").unwrap().kind, "untyped");
    }

    #[test]
    fn rejects_what_node_exporter_would_reject() {
        for (bad, why) in [
            ("1abc 1\n", "name"),
            ("a{b=1} 1\n", "quoted"),
            ("a{b=\"x} 1\n", "unterminated"),
            ("a{b=\"\\t\"} 1\n", "escape"),
            ("a one\n", "value"),
            ("a 1 2 3\n", "trailing"),
            ("a 1\n# TYPE a gauge\n", "after"),
            ("# TYPE a gauge\n# TYPE a gauge\n", "second"),
            ("# TYPE a weird\n", "unknown"),
            ("a 1\nb 1\na{x=\"1\"} 2\n", "contiguous"),
            ("a 1\na 2\n", "twice"),
            ("a{x=\"1\",x=\"2\"} 1\n", "twice"),
            ("a 1", "newline"),
        ] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
