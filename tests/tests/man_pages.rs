//! The manual pages in `man/`: lint-clean under `mandoc -Tlint`, and in step with the
//! binaries' command lines.
//!
//! Design: the command line is the source of truth, read from the built binaries'
//! `--help` (clap's layout: `Options:` and `Commands:` sections), so a flag added to a
//! binary without documentation, or a documented flag that no longer exists, fails here.
//! Pages are read as roff source rather than rendered, so that line filling and
//! hyphenation can never split a flag; the few roff escapes the pages use are undone
//! first. Flags count as documented only where options are documented: in sections whose
//! title contains `OPTIONS`, and in `COMMANDS` (where a multi-command page documents each
//! command's options) — a flag that appears only in EXAMPLES is not documentation.
//!
//! Binaries are found next to the test executable's `deps/` directory, or in
//! `$CAIRN_BIN_DIR`; nothing is built here (`cargo build --workspace` first).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Pages whose flags are checked against a binary: (page file in `man/`, binary name).
const PAGES: &[(&str, &str)] = &[
    ("cairn.8", "cairn"),
    ("cairn-snapshot.8", "cairn-snapshot"),
    ("cairn-preflight.8", "cairn-preflight"),
    ("cairn-quiesce.8", "cairn-quiesce"),
    ("cairn-upload.8", "cairn-upload"),
    ("cairn-drill.8", "cairn-drill"),
    ("cairn-heartbeat.8", "cairn-heartbeat"),
];

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .join("man")
}

fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAIRN_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().expect("the test executable's directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "binary {name} not found at {}: run `cargo build --workspace` first \
         (or point CAIRN_BIN_DIR at the directory holding the binaries)",
        p.display()
    );
    p
}

// --- mandoc lint -------------------------------------------------------------------------

#[test]
fn man_pages_are_lint_clean() {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(man_dir())
        .expect("read man/")
        .map(|e| e.expect("man/ entry").path())
        .filter(|p| p.is_file())
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "no pages in {}", man_dir().display());
    let mut problems = Vec::new();
    for page in &pages {
        let out = match Command::new("mandoc")
            .args(["-Tlint", "-Wwarning"])
            .arg(page)
            .output()
        {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "mandoc is not installed: install it with `apt-get install mandoc` \
                 (CI installs it) to lint the man pages"
            ),
            Err(e) => panic!("cannot run mandoc: {e}"),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // With -Wwarning, mandoc reports only WARNING, ERROR and UNSUPP messages; exit
        // status 2 and up means such a message (or a failure to run).
        if !text.trim().is_empty() || out.status.code().is_none_or(|c| c >= 2) {
            problems.push(format!(
                "{} ({}):\n{}",
                page.display(),
                out.status,
                text.trim_end()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "mandoc -Tlint -Wwarning is not clean:\n{}",
        problems.join("\n")
    );
}

// --- --help ------------------------------------------------------------------------------

/// What a clap `--help` text declares.
#[derive(Debug, Default, PartialEq)]
struct Help {
    /// Long flags of the `Options:` section, with their dashes (`--dry-run`).
    flags: BTreeSet<String>,
    /// Names in the `Commands:` section, without clap's `help`.
    commands: Vec<String>,
}

fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut section = "";
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            section = match line.trim_end() {
                "Options:" => "options",
                "Commands:" => "commands",
                _ => "",
            };
            continue;
        }
        let t = line.trim_start();
        match section {
            // An option line starts with its dashes; description lines that wrap are
            // indented to the description column, far right of the option column.
            "options" if t.starts_with('-') && indent <= 8 => {
                let definition = t.split("  ").next().unwrap_or(t);
                for token in definition.split([' ', ',']) {
                    if let Some(f) = long_flag_at(token, 0) {
                        help.flags.insert(f);
                    }
                }
            }
            "commands" if indent <= 4 => {
                let name = t.split_whitespace().next().unwrap_or("");
                if name != "help" && !name.is_empty() {
                    help.commands.push(name.to_string());
                }
            }
            _ => {}
        }
    }
    help
}

/// The long flag starting at byte `i` of `s` (`--name`, name of `[a-z0-9-]`, starting
/// with a letter), if there is one.
fn long_flag_at(s: &str, i: usize) -> Option<String> {
    let rest = s.get(i..)?.strip_prefix("--")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .collect();
    let name = name.trim_end_matches('-');
    name.starts_with(|c: char| c.is_ascii_lowercase())
        .then(|| format!("--{name}"))
}

fn run_help(bin: &Path, args: &[String]) -> String {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .env_remove("CAIRN_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} {} --help failed ({}): {}",
        bin.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("--help is UTF-8")
}

/// The help of a binary and of every (nested) subcommand: (command path, help).
fn all_helps(bin: &Path) -> Vec<(Vec<String>, Help)> {
    let mut out = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        assert!(path.len() < 5, "runaway subcommand nesting: {path:?}");
        let help = parse_help(&run_help(bin, &path));
        for c in &help.commands {
            let mut sub = path.clone();
            sub.push(c.clone());
            todo.push(sub);
        }
        out.push((path, help));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

// --- roff --------------------------------------------------------------------------------

/// A page as plain text: (section title, text of the section), and the `.SS` titles.
#[derive(Debug, Default)]
struct Page {
    sections: Vec<(String, String)>,
    subsections: Vec<String>,
}

impl Page {
    /// Flags mentioned where options are documented.
    fn documented_flags(&self) -> BTreeSet<String> {
        self.sections
            .iter()
            .filter(|(title, _)| title.contains("OPTIONS") || title == "COMMANDS")
            .flat_map(|(_, text)| flags_in(text))
            .collect()
    }
}

/// Undo the roff escapes man pages use: `\-`, `\e`, font changes, `\&`, `\(xx`…
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('-') => out.push('-'),
            Some('e') | Some('\\') => out.push('\\'),
            Some(' ') | Some('~') => out.push(' '),
            Some('&') | Some('c') | Some('/') | Some(',') | Some(':') | Some('%') | None => {}
            Some('f') | Some('*') => {
                // \fB, \f(CW, \f[BI]; \*x, \*(xx, \*[name]: dropped.
                match chars.next() {
                    Some('(') => {
                        chars.next();
                        chars.next();
                    }
                    Some('[') => {
                        for c in chars.by_ref() {
                            if c == ']' {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            Some('(') => {
                let name: String = chars.by_ref().take(2).collect();
                out.push_str(match name.as_str() {
                    "aq" => "'",
                    "dq" => "\"",
                    "em" | "en" => " - ",
                    "bu" => "*",
                    _ => " ",
                });
            }
            Some('[') => {
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                }
                out.push(' ');
            }
            Some(other) => out.push(other),
        }
    }
    out
}

/// A macro line's arguments, split as roff does: on spaces, with `"…"` quoting and `""`
/// standing for a quote inside quotes.
fn macro_args(s: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            break;
        };
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        arg.push('"');
                    } else {
                        break;
                    }
                } else {
                    arg.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    args
}

fn parse_page(source: &str) -> Page {
    let mut page = Page::default();
    let mut title = String::new();
    let mut text = String::new();
    for line in source.lines() {
        let (mac, rest) = match line.strip_prefix('.').or_else(|| line.strip_prefix('\'')) {
            Some(m) => {
                let m = m.trim_start();
                let end = m.find(' ').unwrap_or(m.len());
                (Some(&m[..end]), &m[end..])
            }
            None => (None, line),
        };
        let plain = match mac {
            None => unescape(rest),
            Some("\\\"") => continue,
            Some(m) => {
                let args: Vec<String> = macro_args(rest).iter().map(|a| unescape(a)).collect();
                // The font-alternating macros set their arguments without spaces between.
                let sep = if matches!(m, "BR" | "RB" | "BI" | "IB" | "IR" | "RI") {
                    ""
                } else {
                    " "
                };
                let joined = args.join(sep);
                match m {
                    "SH" => {
                        page.sections
                            .push((std::mem::take(&mut title), std::mem::take(&mut text)));
                        title = joined.trim().to_string();
                        continue;
                    }
                    "SS" => page.subsections.push(joined.trim().to_string()),
                    _ => {}
                }
                joined
            }
        };
        text.push_str(&plain);
        text.push('\n');
    }
    page.sections.push((title, text));
    page
}

/// Every long flag (`--name`) in a text.
fn flags_in(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    (0..bytes.len())
        .filter(|&i| {
            bytes[i..].starts_with(b"--")
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-'))
        })
        .filter_map(|i| long_flag_at(text, i))
        .collect()
}

fn read_page(name: &str) -> Page {
    let path = man_dir().join(name);
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_page(&source)
}

// --- page against --help -----------------------------------------------------------------

fn check_page_against_help(page_name: &str, bin_name: &str) {
    let page = read_page(page_name);
    let helps = all_helps(&bin(bin_name));
    let documented = page.documented_flags();
    let mut problems = Vec::new();

    let mut known = BTreeSet::new();
    for (path, help) in &helps {
        let cmd = std::iter::once(bin_name)
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            help.flags.contains("--help"),
            "no --help found in `{cmd} --help`: the help parser no longer understands it"
        );
        for f in &help.flags {
            if !documented.contains(f) {
                problems.push(format!(
                    "{f} (from `{cmd} --help`) is not documented in an OPTIONS or COMMANDS \
                     section of man/{page_name}"
                ));
            }
        }
        known.extend(help.flags.iter().cloned());
        // Every subcommand has its own subsection, titled by its command path.
        if !path.is_empty() {
            let want = path.join(" ");
            let found = page.subsections.iter().any(|t| {
                let t = t.strip_prefix(bin_name).map(str::trim_start).unwrap_or(t);
                t == want || t.starts_with(&format!("{want} "))
            });
            if !found {
                problems.push(format!(
                    "`{cmd}` has no subsection (.SS \"{want} ...\") in man/{page_name}"
                ));
            }
        }
    }
    for f in &documented {
        if !known.contains(f) {
            problems.push(format!(
                "{f} is documented in man/{page_name} but `{bin_name}` has no such option \
                 (in no --help of it or its subcommands)"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "man/{page_name} and `{bin_name}` disagree:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn cairn_page_matches_the_command_line() {
    let (page, bin) = PAGES[0];
    check_page_against_help(page, bin);
}

#[test]
fn cairn_snapshot_page_matches_the_command_line() {
    let (page, bin) = PAGES[1];
    check_page_against_help(page, bin);
}

#[test]
fn cairn_preflight_page_matches_the_command_line() {
    let (page, bin) = PAGES[2];
    check_page_against_help(page, bin);
}

#[test]
fn cairn_quiesce_page_matches_the_command_line() {
    let (page, bin) = PAGES[3];
    check_page_against_help(page, bin);
}

#[test]
fn cairn_upload_page_matches_the_command_line() {
    let (page, bin) = PAGES[4];
    check_page_against_help(page, bin);
}

#[test]
fn cairn_drill_page_matches_the_command_line() {
    let (page, bin) = PAGES
        .iter()
        .copied()
        .find(|(p, _)| *p == "cairn-drill.8")
        .unwrap();
    check_page_against_help(page, bin);
}

#[test]
fn cairn_heartbeat_page_matches_the_command_line() {
    let (page, bin) = *PAGES
        .iter()
        .find(|(p, _)| *p == "cairn-heartbeat.8")
        .expect("cairn-heartbeat.8 is in PAGES");
    check_page_against_help(page, bin);
}

// --- cairn(7), the overview ---------------------------------------------------------------

/// The overview page: it has no binary, so its flags are not checked; it is linted with
/// the others (`man_pages_are_lint_clean` reads every file in `man/`).
const OVERVIEW: &str = "cairn.7";

/// Pages outside `man/` that cairn's pages may refer to: systemd's, the shells', and the
/// tools an operator uses beside cairn. A reference to anything else in cairn(7) fails,
/// so that a typo or a page that does not exist is caught; add real pages here.
const SYSTEM_PAGES: &[&str] = &[
    "bash(1)",
    "blkid(8)",
    "busctl(1)",
    "dbus-daemon(1)",
    "findmnt(8)",
    "fstab(5)",
    "journalctl(1)",
    "mount(8)",
    "sd-journal(3)",
    "sd_notify(3)",
    "sendmail(8)",
    "sudoers(5)",
    "systemctl(1)",
    "systemd-analyze(1)",
    "systemd-creds(1)",
    "systemd-mount(1)",
    "systemd.exec(5)",
    "systemd.mount(5)",
    "systemd.service(5)",
    "systemd.timer(5)",
    "systemd.unit(5)",
    "tar(1)",
    "useradd(8)",
    "visudo(8)",
    "zsh(1)",
];

/// Every `name(section)` a page's text refers to, as `name(section)`.
fn page_references(page: &Page) -> BTreeSet<String> {
    let text: String = page.sections.iter().map(|(_, t)| t.as_str()).collect();
    let b = text.as_bytes();
    let name_byte = |c: u8| c.is_ascii_alphanumeric() || b"._-@+:".contains(&c);
    let mut refs = BTreeSet::new();
    for (i, _) in text.match_indices('(') {
        let sect: String = text[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if !sect.starts_with(|c: char| c.is_ascii_digit())
            || !text[i + 1 + sect.len()..].starts_with(')')
        {
            continue;
        }
        let mut start = i;
        while start > 0 && name_byte(b[start - 1]) {
            start -= 1;
        }
        let name = text[start..i].trim_start_matches(['.', '-', ':']);
        if name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            refs.insert(format!("{name}({sect})"));
        }
    }
    refs
}

/// `man/NAME.SECTION` for `NAME(SECTION)`.
fn in_man_dir(reference: &str) -> bool {
    let Some((name, sect)) = reference.trim_end_matches(')').split_once('(') else {
        return false;
    };
    man_dir().join(format!("{name}.{sect}")).is_file()
}

#[test]
fn overview_page_references_exist() {
    let page = read_page(OVERVIEW);
    let refs = page_references(&page);
    assert!(
        refs.contains("cairn.conf(5)"),
        "the reference parser found {refs:?}"
    );
    let missing: Vec<&String> = refs
        .iter()
        .filter(|r| !in_man_dir(r) && !SYSTEM_PAGES.contains(&r.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "man/{OVERVIEW} refers to pages that are neither in man/ nor known system pages \
         (SYSTEM_PAGES in this file): {missing:?}"
    );
}

#[test]
fn cairn_pages_refer_only_to_cairn_pages_that_exist() {
    let mut problems = Vec::new();
    for e in std::fs::read_dir(man_dir()).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for r in page_references(&read_page(&name)) {
            if r.starts_with("cairn") && !in_man_dir(&r) {
                problems.push(format!("man/{name} refers to {r}, which is not in man/"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn overview_page_lists_every_program_and_exit_code() {
    let page = read_page(OVERVIEW);
    let section = |title: &str| {
        page.sections
            .iter()
            .find(|(t, _)| t == title)
            .map(|(_, text)| text.clone())
            .unwrap_or_else(|| panic!("man/{OVERVIEW} has no {title} section"))
    };
    let programs = section("PROGRAMS");
    for (page_name, bin_name) in PAGES {
        let (_, sect) = page_name.rsplit_once('.').unwrap();
        assert!(
            programs.contains(&format!("{bin_name}({sect})")),
            "man/{OVERVIEW} PROGRAMS does not list {bin_name}({sect})"
        );
    }
    let exit = section("EXIT STATUS");
    let codes: Vec<&str> = exit
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 1 && l.as_bytes()[0].is_ascii_digit())
        .collect();
    assert_eq!(codes, ["0", "1", "2", "3", "4", "5"], "{exit}");
    for title in ["FILES", "JOURNAL", "SECURITY", "SEE ALSO"] {
        section(title);
    }
    // The completion mechanism is documented where the environment is.
    assert!(section("ENVIRONMENT").contains("CAIRN_COMPLETIONS"));
}

#[test]
fn every_page_refers_to_the_overview() {
    for e in std::fs::read_dir(man_dir()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if name == OVERVIEW {
            continue;
        }
        let page = read_page(&name);
        let see_also = page
            .sections
            .iter()
            .find(|(t, _)| t == "SEE ALSO")
            .map(|(_, t)| t.as_str())
            .unwrap_or_default();
        assert!(
            see_also.contains("cairn(7)"),
            "man/{name}: SEE ALSO does not name cairn(7)"
        );
    }
}

#[test]
fn reference_parser_finds_man_references() {
    let page = parse_page(
        ".TH X 7\n.SH SEE ALSO\n.BR cairn\\-snapshot (8),\n\\fBsd_notify\\fR(3) and\n\
         .BR systemd.exec (5).\nStageFinished(stage s) is not one.\n",
    );
    let refs: Vec<String> = page_references(&page).into_iter().collect();
    assert_eq!(
        refs,
        ["cairn-snapshot(8)", "sd_notify(3)", "systemd.exec(5)"]
    );
}

#[test]
fn every_checked_page_exists() {
    for (page, _) in PAGES {
        assert!(man_dir().join(page).is_file(), "man/{page} is missing");
    }
}

// --- the parsers themselves ----------------------------------------------------------------

#[test]
fn help_parser_reads_clap_layout() {
    let text = "\
Restore a snapshot (see --tar below)

Usage: cairn restore [OPTIONS] <SNAPSHOT>

Commands:
  add   Add a slot (with --label)
  help  Print this message

Arguments:
  <SNAPSHOT>  Snapshot id, unique id prefix, or \"latest\"

Options:
      --config <FILE>          Configuration file [env:
                               CAIRN_CONFIG=]
      --overwrite <OVERWRITE>  What to do [default:
                               never] [possible values: never, if-changed, always]
      --dry-run                List what would be restored; see --json
  -h, --help                   Print help
  -V, --version                Print version
";
    let h = parse_help(text);
    let flags: Vec<&str> = h.flags.iter().map(String::as_str).collect();
    assert_eq!(
        flags,
        [
            "--config",
            "--dry-run",
            "--help",
            "--overwrite",
            "--version"
        ]
    );
    assert_eq!(h.commands, ["add"]);
}

#[test]
fn roff_parser_finds_flags_by_section() {
    let source = r#".TH X 8
.SH NAME
x \- y
.SH SYNOPSIS
.B x
.RB [ \-\-synopsis\-only ]
.SH OPTIONS
.TP
.BI \-\-config " FILE"
Read \fB\-\-also\fR this;
.BR \-\-key\-file ,
not a\-\-flag.
.SH COMMANDS
.SS "key add \fIID\fP"
.TP
.B \-\-label
.SH EXAMPLES
.EX
tar \-x \-\-example\-only
.EE
"#;
    let page = parse_page(source);
    let flags: Vec<String> = page.documented_flags().into_iter().collect();
    assert_eq!(flags, ["--also", "--config", "--key-file", "--label"]);
    assert_eq!(page.subsections, ["key add ID"]);
    assert_eq!(unescape(r"\(aqa\e\&b\(aq"), r"'a\b'");
}
