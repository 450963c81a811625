//! Tests of the whole configuration module: files, drop-ins, sections and their errors.
//!
//! Design: most tests parse with a fixed environment lookup, so they share no process
//! state; the one test that sets real variables uses names no other test reads. Error tests
//! check the `FILE:LINE:` prefix, since that is what an operator relies on.

use super::*;
use std::time::Duration;

const FILE: &str = "/etc/cairn/cairn.conf";

/// A fixed environment, so that most tests touch no process state.
fn env(name: &str) -> Option<OsString> {
    match name {
        "REPO" => Some("/srv/repo".into()),
        "PASS" => Some("from env".into()),
        "TWO_WORDS" => Some("/srv/a b".into()),
        "RELATIVE" => Some("srv/repo".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str_with(text, Path::new(FILE), &env)
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
        Err(e) => e,
    }
}

/// Assert that `text` fails at `line` with a message that contains every one of `parts`.
#[track_caller]
fn assert_err_at(text: &str, line: usize, parts: &[&str]) -> String {
    let e = err(text);
    let msg = e.to_string();
    assert_eq!(e.location().map(|l| l.line), Some(line), "{msg}");
    assert!(msg.starts_with(&format!("{FILE}:{line}: ")), "{msg}");
    for part in parts {
        assert!(msg.contains(part), "{msg:?} lacks {part:?}");
    }
    msg
}

const REPO: &str = "[repository]\npath = /srv/backup\n";

const FULL: &str = r#"# cairn configuration
[repository]
path = /srv/backup/cairn
key_file = /etc/cairn/key
key_credential = cairn.key
passphrase = "correct horse"
passphrase_file = /etc/cairn/pass
compression = zstd:6
chunk_min = 256KiB
chunk_avg = 1 MiB
chunk_max = 4MiB
pack_size = 64MiB

[sources]
paths = /etc /home "/srv/my data"
exclude = *.tmp /home/*/.cache "/srv/my data/*.iso"
one_file_system = yes
exclude_caches = true
exclude_if_present = .nobackup

[retention]
keep_last = 3
keep_daily = 7
keep_within = 1w 2d
keep_tag = keep "do not delete"
"#;

#[test]
fn full_config() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.files, vec![PathBuf::from(FILE)]);
    let r = c.repository().unwrap();
    assert_eq!(r.path, Path::new("/srv/backup/cairn"));
    assert_eq!(r.key_file.as_deref(), Some(Path::new("/etc/cairn/key")));
    assert_eq!(r.key_credential.as_deref(), Some("cairn.key"));
    assert_eq!(
        r.passphrase.as_ref().map(Secret::expose),
        Some("correct horse")
    );
    assert_eq!(
        r.passphrase_file.as_deref(),
        Some(Path::new("/etc/cairn/pass"))
    );
    assert_eq!(r.compression, Compression::Zstd(6));
    assert_eq!(
        (r.chunk_min, r.chunk_avg, r.chunk_max),
        (256 << 10, 1 << 20, 4 << 20)
    );
    assert_eq!(r.pack_size, 64 << 20);
    let s = c.sources().unwrap();
    assert_eq!(
        s.paths,
        vec![
            PathBuf::from("/etc"),
            PathBuf::from("/home"),
            PathBuf::from("/srv/my data")
        ]
    );
    assert_eq!(s.exclude, ["*.tmp", "/home/*/.cache", "/srv/my data/*.iso"]);
    assert!(s.one_file_system && s.exclude_caches);
    assert_eq!(s.exclude_if_present, [".nobackup"]);
    let t = c.retention().unwrap();
    assert_eq!(t.keep_last, Some(3));
    assert_eq!(t.keep_daily, Some(7));
    assert_eq!(t.keep_hourly, None);
    assert_eq!(t.keep_within, Some(Duration::from_secs(9 * 86_400)));
    assert_eq!(t.keep_tag, ["keep", "do not delete"]);
}

#[test]
fn defaults_and_absent_sections() {
    let c = parse(REPO).unwrap();
    assert_eq!(
        c.repository().unwrap(),
        &RepositoryConfig::new("/srv/backup")
    );
    let r = c.repository.as_ref().unwrap();
    assert_eq!(r.compression, Compression::Zstd(3));
    assert_eq!(
        (r.chunk_min, r.chunk_avg, r.chunk_max),
        (512 << 10, 1 << 20, 8 << 20)
    );
    assert_eq!(r.pack_size, 32 << 20);
    assert!(c.sources.is_none() && c.retention.is_none());

    let c = parse("[sources]\npaths = /\n").unwrap();
    let s = c.sources().unwrap();
    assert!(!s.one_file_system && !s.exclude_caches);
    assert!(s.exclude.is_empty() && s.exclude_if_present.is_empty());
    assert_eq!(
        parse("[retention]\n").unwrap().retention,
        Some(RetentionConfig::default())
    );
}

#[test]
fn missing_section_names_files_and_shows_an_example() {
    let c = parse("[sources]\npaths = /etc\n").unwrap();
    let msg = c.repository().unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("no [repository] section in {FILE}; add one")),
        "{msg}"
    );
    assert!(msg.contains("\n[repository]\npath = /"), "{msg}");
    // The example must itself be a valid section.
    let example = msg.split_once("\n\n").unwrap().1;
    assert!(parse(example).unwrap().repository.is_some());
    let msg = parse(REPO).unwrap().sources().unwrap_err().to_string();
    assert!(msg.contains("[sources]\npaths = "), "{msg}");
    assert!(parse(REPO).unwrap().retention().is_err());
}

#[test]
fn misspelled_key_suggests_the_right_one() {
    let text = format!(
        "{}[sources]\npaths = /etc\nexclude_cache = yes\n",
        "#\n".repeat(9)
    );
    let e = err(&text);
    assert_eq!(
        e.to_string(),
        "/etc/cairn/cairn.conf:12: [sources] exclude_cache: unknown key; \
         did you mean `exclude_caches`?"
    );
    assert_err_at(
        "[retention]\nkeep_dayly = 7\n",
        2,
        &["did you mean `keep_daily`?"],
    );
    // A key of another section says where it belongs.
    assert_err_at(
        "[repository]\npath = /r\none_file_system = yes\n",
        3,
        &[
            "[repository] one_file_system: unknown key",
            "belongs in section [sources]",
        ],
    );
    // Nothing close: list the keys.
    assert_err_at(
        "[retention]\nfrobnicate = 1\n",
        2,
        &["keep_last, keep_hourly"],
    );
}

#[test]
fn unknown_sections() {
    assert_err_at(
        "# x\n\n[respository]\npath = /r\n",
        3,
        &["[respository]: unknown section; did you mean `[repository]`?"],
    );
    // Sections of later releases are unknown until their code exists.
    assert_err_at(
        "[repository]\npath = /r\n[upload]\n",
        3,
        &[
            "unknown section",
            "[repository], [sources], [retention], [preflight], [alert], [quiesce], \
             [database.NAME], [remote]",
        ],
    );
    assert_err_at("[datbase.main]\n", 1, &["did you mean `[database]`"]);
}

#[test]
fn every_kind_of_error_names_its_line() {
    // (text, line, parts of the message)
    let cases: &[(&str, usize, &[&str])] = &[
        (
            "[repository]\npath = /r\npath = /s\n",
            3,
            &["set again (first set on line 2)"],
        ),
        (
            "path = /r\n[repository]\n",
            1,
            &["outside any section", "[repository]"],
        ),
        (
            "[repository]\n\nkey_file = /k\n",
            1,
            &["required key `path` is missing", "path = /"],
        ),
        (
            "[repository]\npath =\n",
            2,
            &["is empty, but this key is required"],
        ),
        (
            "[repository]\npath = srv/r\n",
            2,
            &["`srv/r` is a relative path"],
        ),
        (
            "[repository]\npath = /r\nkey_file = key\n",
            3,
            &["key_file", "relative"],
        ),
        (
            "[repository]\npath = /r\npassphrase_file = p\n",
            3,
            &["passphrase_file", "relative"],
        ),
        (
            "[repository]\npath = /r\nkey_credential = a/b\n",
            3,
            &["not a credential name"],
        ),
        (
            "[repository]\npath = /r\ncompression = gzip\n",
            3,
            &["`gzip`", "zstd:N"],
        ),
        (
            "[repository]\npath = /r\npack_size = 64MB\n",
            3,
            &["`64MiB`"],
        ),
        (
            "[repository]\npath = /r\npack_size = 512KiB\n",
            3,
            &["from 1 MiB to 1 GiB"],
        ),
        (
            "[repository]\npath = ${NOT_SET}\n",
            2,
            &["`NOT_SET` is not set"],
        ),
        (
            "[repository]\npath = $HOME/r\n",
            2,
            &["`$$` for a literal `$`"],
        ),
        ("[repository]\npath = \"/r\n", 2, &["never closed"]),
        (
            "[sources]\npaths = /a \"/b\n",
            2,
            &["item 2", "never closed"],
        ),
        ("[sources]\n", 1, &["required key `paths`"]),
        (
            "[sources]\npaths =\n",
            2,
            &["is empty, but this key is required"],
        ),
        ("[sources]\npaths = /a b\n", 2, &["`b` is a relative path"]),
        (
            "[sources]\npaths = /a\nexclude = a[b\n",
            3,
            &["`a[b` is not a valid glob"],
        ),
        (
            "[sources]\npaths = /a\nexclude_if_present = a/b\n",
            3,
            &["not a file name"],
        ),
        (
            "[sources]\npaths = /a\none_file_system = maybe\n",
            3,
            &["`maybe` is not a boolean"],
        ),
        (
            "[retention]\nkeep_daily = -1\n",
            2,
            &["`-1` is not a count"],
        ),
        ("[retention]\nkeep_within = 30\n", 2, &["no unit", "min"]),
        ("[retention]\nkeep_tag = a \"\"\n", 2, &["empty tag"]),
        ("[repository]\npath /r\n", 2, &["expected `key = value`"]),
        ("[repository]\n[x\n", 2, &["alone on its line"]),
    ];
    for (text, line, parts) in cases {
        assert_err_at(text, *line, parts);
    }
}

#[test]
fn errors_in_values_after_a_continuation_keep_their_line() {
    let text = "[sources]\npaths = /etc \\\n  /home \\\n  /srv\nexclude_caches = perhaps\n";
    assert_err_at(text, 5, &["exclude_caches", "`perhaps`"]);
    let text = "[sources]\npaths = /etc \\\n  /home \\\n  /srv\n";
    assert_eq!(parse(text).unwrap().sources.unwrap().paths.len(), 3);
}

#[test]
fn repeated_header_in_one_file_merges_but_keys_may_not_repeat() {
    let c =
        parse("[repository]\npath = /r\n[sources]\npaths = /a\n[repository]\npack_size = 2MiB\n")
            .unwrap();
    assert_eq!(c.repository.unwrap().pack_size, 2 << 20);
    assert_err_at(
        "[repository]\npath = /r\n[sources]\npaths = /a\n[repository]\npath = /s\n",
        6,
        &["[repository] path: set again (first set on line 2)"],
    );
}

#[test]
fn values_may_contain_hash_and_quotes() {
    let c = parse(
        "[repository]\npath = /srv/#1 \"x\"\n[sources]\npaths = /a\nexclude = #* \"*.bak #2\"\n",
    )
    .unwrap();
    assert_eq!(c.repository.unwrap().path, Path::new("/srv/#1 \"x\""));
    assert_eq!(c.sources.unwrap().exclude, ["#*", "*.bak #2"]);
}

#[test]
fn environment_expansion() {
    let c = parse(
        "[repository]\npath = ${REPO}/main\npassphrase = \"${PASS}\"\n\
         [sources]\npaths = ${TWO_WORDS} \"${REPO} x\"\nexclude = $$HOME *.$$$$\n",
    )
    .unwrap();
    let r = c.repository.unwrap();
    assert_eq!(r.path, Path::new("/srv/repo/main"));
    assert_eq!(r.passphrase.unwrap().expose(), "from env");
    let s = c.sources.unwrap();
    // An expanded value is one item, never split at its spaces.
    assert_eq!(
        s.paths,
        vec![PathBuf::from("/srv/a b"), PathBuf::from("/srv/repo x")]
    );
    assert_eq!(s.exclude, ["$HOME", "*.$$"]);
    // The expanded value is what gets validated.
    assert_err_at(
        "[repository]\npath = ${RELATIVE}\n",
        2,
        &["`srv/repo` is a relative path"],
    );
    // The missing-variable error names file, line, key and variable.
    let e = err("[retention]\n\nkeep_tag = a ${CAIRN_TEST_NOPE_2B7C}\n");
    assert_eq!(
        e.to_string().split(';').next().unwrap(),
        "/etc/cairn/cairn.conf:3: [retention] keep_tag: environment variable \
         `CAIRN_TEST_NOPE_2B7C` is not set"
    );
    assert!(
        matches!(e, ConfigError::MissingVariable { ref variable, .. } if variable == "CAIRN_TEST_NOPE_2B7C")
    );
}

#[test]
fn environment_expansion_from_the_process() {
    // A name no other test uses, so setting it races with nothing.
    std::env::set_var("CAIRN_TEST_CONFIG_REPO_91D4", "/srv/from-process");
    let c = Config::parse_str(
        "[repository]\npath = ${CAIRN_TEST_CONFIG_REPO_91D4}\n",
        Path::new("/x.conf"),
    )
    .unwrap();
    assert_eq!(c.repository.unwrap().path, Path::new("/srv/from-process"));
    let e = Config::parse_str(
        "[repository]\npath = ${CAIRN_TEST_CONFIG_UNSET_91D4}\n",
        Path::new("/x.conf"),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("/x.conf:2: "), "{e}");
    assert!(
        e.to_string().contains("CAIRN_TEST_CONFIG_UNSET_91D4"),
        "{e}"
    );
}

#[test]
fn passphrase_never_shows() {
    let c = parse("[repository]\npath = /r\npassphrase = Tr0ub4dor&3\n").unwrap();
    let debug = format!("{c:?} {c:#?}");
    assert!(!debug.contains("Tr0ub4dor"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");

    // Bad passphrase values: the error says what is wrong, never what was written.
    let cases = [
        "passphrase = \"Tr0ub4dor&3",
        "passphrase = \"Tr0ub4dor&3\" extra",
        "passphrase = Tr0ub4dor$3",
        "passphrase = Tr0ub4dor${3",
        "passphrase = Tr0ub4dor${BAD NAME}",
        "passphrase = Tr0ub4dor${NOT_SET_EITHER}",
    ];
    for case in cases {
        let text = format!("[repository]\npath = /r\n{case}\n");
        let e = err(&text);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("Tr0ub4dor"), "{shown}");
        assert_eq!(e.location().unwrap().line, 3, "{shown}");
        assert!(shown.contains("passphrase"), "{shown}");
    }
    // Errors about other keys of the section do not show it either.
    let e = err("[repository]\npath = /r\npassphrase = Tr0ub4dor&3\nchunk_min = 3\n");
    assert!(!format!("{e} {e:?}").contains("Tr0ub4dor"), "{e}");
}

#[test]
fn chunk_sizes_are_validated() {
    let chunks = |lines: &str| format!("[repository]\npath = /r\n{lines}\n");
    let ok = parse(&chunks("chunk_min = 64\nchunk_avg = 256\nchunk_max = 1KiB")).unwrap();
    let r = ok.repository.unwrap();
    assert_eq!((r.chunk_min, r.chunk_avg, r.chunk_max), (64, 256, 1024));
    let ok = parse(&chunks(
        "chunk_min = 1MiB\nchunk_avg = 4MiB\nchunk_max = 16MiB",
    ))
    .unwrap();
    assert_eq!(ok.repository.unwrap().chunk_max, 16 << 20);
    // Equal sizes are allowed.
    assert!(parse(&chunks(
        "chunk_min = 1MiB\nchunk_avg = 1MiB\nchunk_max = 1MiB"
    ))
    .is_ok());

    assert_err_at(
        &chunks("chunk_min = 32"),
        3,
        &["chunk_min", "`32` is out of range", "64 B to 1 MiB"],
    );
    assert_err_at(&chunks("chunk_min = 2MiB"), 3, &["64 B to 1 MiB"]);
    assert_err_at(
        &chunks("chunk_avg = 128"),
        3,
        &["chunk_avg", "256 B to 4 MiB"],
    );
    assert_err_at(&chunks("chunk_avg = 8MiB"), 3, &["256 B to 4 MiB"]);
    assert_err_at(
        &chunks("chunk_max = 512"),
        3,
        &["chunk_max", "1 KiB to 16 MiB"],
    );
    assert_err_at(&chunks("chunk_max = 32MiB"), 3, &["1 KiB to 16 MiB"]);
    assert_err_at(&chunks("chunk_min = 1001"), 3, &["`1001` is odd"]);
    assert_err_at(&chunks("chunk_max = 4097"), 3, &["chunk_max", "odd"]);
    // Order: blamed on the key that is set, with both sizes named.
    assert_err_at(
        &chunks("chunk_avg = 256KiB"),
        3,
        &[
            "chunk_avg:",
            "chunk_min is 512 KiB (the default) and chunk_avg is 256 KiB",
        ],
    );
    assert_err_at(
        &chunks("\nchunk_max = 512KiB"),
        4,
        &[
            "chunk_max:",
            "chunk_avg is 1 MiB (the default) and chunk_max is 512 KiB",
        ],
    );
    assert_err_at(
        &chunks("chunk_min = 1MiB\nchunk_avg = 768KiB"),
        4,
        &["chunk_avg:"],
    );
    assert_err_at(
        &chunks("chunk_max = 768KiB\nchunk_avg = 512KiB\nchunk_min = 640KiB"),
        4,
        &[
            "chunk_avg:",
            "chunk_min is 640 KiB and chunk_avg is 512 KiB",
        ],
    );
}

#[test]
fn resolving_the_main_file() {
    let arg = Path::new("/tmp/a.conf");
    assert_eq!(
        resolve_path_with(Some(arg), Some("/tmp/b.conf".into())),
        (arg.to_path_buf(), PathOrigin::Argument)
    );
    assert_eq!(
        resolve_path_with(None, Some("/tmp/b.conf".into())),
        (PathBuf::from("/tmp/b.conf"), PathOrigin::Environment)
    );
    assert_eq!(
        resolve_path_with(None, Some("".into())),
        (PathBuf::from(DEFAULT_PATH), PathOrigin::Default)
    );
    assert_eq!(
        resolve_path_with(None, None),
        (PathBuf::from(DEFAULT_PATH), PathOrigin::Default)
    );
    assert_eq!(
        dropin_dir(Path::new(DEFAULT_PATH)),
        Path::new("/etc/cairn/cairn.conf.d")
    );
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

#[test]
fn dropins_override_in_lexical_order() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("cairn.conf");
    write(
        &main,
        "[repository]\npath = /srv/main\npack_size = 2MiB\ncompression = off\n",
    );
    let d = dropin_dir(&main);
    fs::create_dir(&d).unwrap();
    write(
        &d.join("20-later.conf"),
        "[repository]\npath = /srv/twenty\n",
    );
    write(
        &d.join("10-first.conf"),
        "[repository]\npath = /srv/ten\npack_size = 4MiB\n",
    );
    write(
        &d.join("30-reset.conf"),
        "[repository]\ncompression =\n[sources]\npaths = /etc\n",
    );
    // A value overridden by a later file is never expanded: no error for its variable.
    write(
        &d.join("15-unset.conf"),
        "[repository]\npath = ${CAIRN_TEST_UNSET_5E1A}\n",
    );
    // Not read: wrong suffix, hidden, and a backup copy.
    write(&d.join("40-ignored.txt"), "garbage");
    write(&d.join(".50-hidden.conf"), "garbage");
    write(&d.join("60-x.conf~"), "garbage");

    let c = Config::load(Some(&main)).unwrap();
    assert_eq!(
        c.files,
        vec![
            main.clone(),
            d.join("10-first.conf"),
            d.join("15-unset.conf"),
            d.join("20-later.conf"),
            d.join("30-reset.conf")
        ]
    );
    let r = c.repository().unwrap();
    assert_eq!(r.path, Path::new("/srv/twenty"));
    assert_eq!(r.pack_size, 4 << 20);
    // An empty value in a later file restores the default.
    assert_eq!(r.compression, Compression::Zstd(3));
    assert_eq!(c.sources().unwrap().paths, vec![PathBuf::from("/etc")]);

    // The same key once per file is fine; errors in a drop-in name the drop-in.
    write(
        &d.join("25-bad.conf"),
        "# comment\n[sources]\nexclude_cache = yes\n",
    );
    let e = Config::load(Some(&main)).unwrap_err().to_string();
    let bad = d.join("25-bad.conf");
    assert!(
        e.starts_with(&format!("{}:3: [sources] exclude_cache", bad.display())),
        "{e}"
    );
}

#[test]
fn a_required_key_can_come_from_a_dropin() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("c.conf");
    write(&main, "[sources]\none_file_system = yes\n");
    let d = dropin_dir(&main);
    fs::create_dir(&d).unwrap();
    write(&d.join("paths.conf"), "[sources]\npaths = /home\n");
    let c = Config::load(Some(&main)).unwrap();
    assert_eq!(c.sources().unwrap().paths, vec![PathBuf::from("/home")]);
    assert!(c.sources().unwrap().one_file_system);
    // A drop-in emptying a required key is blamed on its own line.
    write(&d.join("zz.conf"), "\n[sources]\npaths =\n");
    let e = Config::load(Some(&main)).unwrap_err();
    assert_eq!(e.location(), Some(&Location::new(&d.join("zz.conf"), 3)));
}

#[test]
fn missing_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("cairn.conf");
    let e = Config::load(Some(&main)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(
        e,
        ConfigError::NotFound {
            origin: PathOrigin::Argument,
            ..
        }
    ));
    assert!(
        msg.starts_with(&format!("{}: no such configuration file", main.display())),
        "{msg}"
    );
    assert!(
        msg.contains("--config PATH") && msg.contains("CAIRN_CONFIG"),
        "{msg}"
    );

    // No drop-in directory is fine.
    write(&main, REPO);
    assert_eq!(Config::load(Some(&main)).unwrap().files, vec![main.clone()]);
    // One that cannot be read as a directory is an error naming it.
    let d = dropin_dir(&main);
    write(&d, "not a directory");
    let e = Config::load(Some(&main)).unwrap_err();
    assert!(
        matches!(e, ConfigError::Read { ref path, .. } if path == &d),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read", d.display())),
        "{e}"
    );
    // A main "file" that is a directory.
    let e = Config::load(Some(dir.path())).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
}

#[test]
fn non_utf8_files_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("cairn.conf");
    fs::write(&main, b"[repository]\npath = /r\nkey_file = /k\xff\n").unwrap();
    let e = Config::load(Some(&main)).unwrap_err();
    assert_eq!(e.location(), Some(&Location::new(&main, 3)));
    assert!(e.to_string().contains("UTF-8"), "{e}");
}

#[test]
fn no_panics_on_arbitrary_input() {
    const PIECES: &[&str] = &[
        "[",
        "]",
        "=",
        ":",
        "#",
        ";",
        "\"",
        "\\",
        "$",
        "${",
        "}",
        "\n",
        "\r",
        "\r\n",
        " ",
        "\t",
        "repository",
        "sources",
        "retention",
        "path",
        "paths",
        "/",
        "a",
        "1",
        "KiB",
        "zstd:",
        "chunk_min",
        "keep_within",
        "h",
        "\u{feff}",
        "é",
        "\u{a0}",
        "passphrase",
        "exclude",
        "[repository]\n",
        "[sources]\n",
        "\\\n",
        "\0",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        let mut text = String::new();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 24) as usize;
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(PIECES[(state % PIECES.len() as u64) as usize]);
        }
        if let Ok(c) = parse(&text) {
            let _ = (c.repository(), c.sources(), c.retention());
        }
        let _ = (
            parse_size(&text),
            parse_duration(&text),
            parse_list(&text),
            parse_bool(&text),
        );
    }
}

const MAN_PAGE: &str = include_str!("../../../man/cairn.conf.5");

#[test]
fn man_page_examples_parse() {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in MAN_PAGE.lines() {
        match (line, current.as_mut()) {
            (".EX", None) => current = Some(String::new()),
            (".EE", Some(_)) => blocks.extend(current.take()),
            (text, Some(block)) => {
                block.push_str(&text.replace("\\-", "-").replace("\\e", "\\"));
                block.push('\n');
            }
            _ => {}
        }
    }
    let main = blocks
        .iter()
        .find(|b| b.starts_with("# /etc/cairn/cairn.conf\n"))
        .unwrap();
    let c = parse(main).unwrap();
    assert!(c.repository.is_some() && c.sources.is_some() && c.retention.is_some());
    let dropin = blocks.iter().find(|b| b.contains("cairn.conf.d/")).unwrap();
    assert!(parse(dropin).unwrap().sources().unwrap().paths.len() > 4);
    let continued = blocks.iter().find(|b| b.starts_with("paths = ")).unwrap();
    let c = parse(&format!("[sources]\n{continued}")).unwrap();
    assert_eq!(c.sources().unwrap().paths.len(), 3);
}

#[test]
fn man_page_documents_every_key() {
    for spec in SECTIONS {
        let header = if spec.instances {
            format!(".SH [{}.NAME]\n", spec.name)
        } else {
            format!(".SH [{}]\n", spec.name)
        };
        let start = MAN_PAGE
            .find(&header)
            .unwrap_or_else(|| panic!("no {header:?}"));
        let rest = &MAN_PAGE[start + header.len()..];
        let body = &rest[..rest.find("\n.SH ").unwrap_or(rest.len())];
        // The tag lines of `.TP` paragraphs, where the keys are listed.
        let tags: Vec<&str> = body
            .split(".TP\n")
            .skip(1)
            .filter_map(|p| p.lines().next())
            .collect();
        for key in spec.keys {
            assert!(
                tags.iter()
                    .any(|t| t.split_whitespace().any(|w| w == key.name)),
                "[{}] {} is not documented in man/cairn.conf.5",
                spec.name,
                key.name
            );
        }
    }
}

const PREFLIGHT: &str = "[preflight]\nmount = /srv/backup\n";

#[test]
fn preflight_defaults_and_full_section() {
    let c = parse(PREFLIGHT).unwrap();
    let p = c.preflight().unwrap();
    assert_eq!(p.mount, Path::new("/srv/backup"));
    assert!(p.auto_mount, "auto_mount defaults to yes");
    assert!(!p.ensure_fstab && !p.fix_owner);
    assert_eq!(p.mount_options, DEFAULT_MOUNT_OPTIONS);
    assert_eq!(
        (p.uuid.as_deref(), p.label.as_deref(), p.min_free),
        (None, None, None)
    );

    let c = parse(
        "[preflight]\nmount = /srv/backup/\nuuid = 0A1B2C3D-4E5F-6789-ABCD-EF0123456789\n\
         label = BACKUP\nfs_type = ext4\nowner = cairn:cairn\nfix_owner = yes\n\
         auto_mount = no\nensure_fstab = yes\nmount_options = defaults,nofail,noatime\n\
         min_free = 10%\nmax_age = 2d\n",
    )
    .unwrap();
    let p = c.preflight().unwrap();
    assert_eq!(
        p.uuid.as_deref(),
        Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789")
    );
    assert_eq!(p.label.as_deref(), Some("BACKUP"));
    assert_eq!(
        p.owner,
        Some(Owner {
            user: "cairn".into(),
            group: Some("cairn".into())
        })
    );
    assert!(p.fix_owner && !p.auto_mount && p.ensure_fstab);
    assert_eq!(p.min_free, Some(MinFree::Percent(10)));
    assert_eq!(p.max_age, Some(Duration::from_secs(2 * 86_400)));
    assert_eq!(MinFree::Percent(10).required(1000), 100);
    let c = parse("[preflight]\nmount = /b\nmin_free = 20GiB\n").unwrap();
    assert_eq!(
        c.preflight().unwrap().min_free,
        Some(MinFree::Bytes(20 << 30))
    );
}

#[test]
fn preflight_errors_name_the_line() {
    let cases: &[(&str, usize, &[&str])] = &[
        ("[preflight]\nlabel = B\n", 1, &["mount", "required"]),
        ("[preflight]\nmount = /\n", 2, &["root filesystem"]),
        ("[preflight]\nmount = srv\n", 2, &["relative path"]),
        (
            "[preflight]\nmount = /b\nuuid = not-a-uuid!\n",
            3,
            &["not a filesystem UUID"],
        ),
        (
            "[preflight]\nmount = /b\nlabel = \"two words\"\n",
            3,
            &["label"],
        ),
        (
            "[preflight]\nmount = /b\nensure_fstab = yes\n",
            3,
            &["uuid"],
        ),
        (
            "[preflight]\nmount = /b\nmin_free = 120%\n",
            3,
            &["percentage"],
        ),
        ("[preflight]\nmount = /b\nmin_free = lots\n", 3, &["10%"]),
        (
            "[preflight]\nmount = /b\nowner = a:b:c\n",
            3,
            &["USER:GROUP"],
        ),
        (
            "[preflight]\nmount = /b\nmount_options = \"a, b\"\n",
            3,
            &["options"],
        ),
        ("[preflight]\nmount = /b\nmax_age = soon\n", 3, &["max_age"]),
        (
            "[preflight]\nmount = /b\nauto_mount = maybe\n",
            3,
            &["auto_mount"],
        ),
        ("[preflight]\nmount = /b\nmail_to = root\n", 3, &["[alert]"]),
    ];
    for (text, line, parts) in cases {
        assert_err_at(text, *line, parts);
    }
}

#[test]
fn alert_addresses() {
    let c = parse("[alert]\nmail_to = root ops@example.org\nmail_from = cairn@db1\n").unwrap();
    let a = c.alert().unwrap();
    assert_eq!(a.mail_to, vec!["root@localhost", "ops@example.org"]);
    assert_eq!(a.mail_from.as_deref(), Some("cairn@db1"));
    assert_eq!(a.sendmail, Path::new(DEFAULT_SENDMAIL));
    assert_err_at("[alert]\nmail_from = x@y\n", 1, &["mail_to", "required"]);
    assert_err_at("[alert]\nmail_to = \"a b@c\"\n", 2, &["not a mail address"]);
    assert_err_at(
        "[alert]\nmail_to = root\nsendmail = sendmail\n",
        3,
        &["relative"],
    );
    let missing = parse(REPO).unwrap().alert().unwrap_err().to_string();
    assert!(
        missing.contains("[alert]") && missing.contains("mail_to"),
        "{missing}"
    );
}

#[test]
fn quiesce_units_and_hooks() {
    let c = parse(
        "[quiesce]\nunits = postgresql@15-main nginx.service app.socket\nstop_timeout = 2min\n\
         pre_hook = \"echo 'going down'\"\npost_hook = /usr/local/bin/after\nhook_user = app\n",
    )
    .unwrap();
    let q = c.quiesce().unwrap();
    assert_eq!(
        q.units,
        vec!["postgresql@15-main.service", "nginx.service", "app.socket"],
        "a bare name is a service; the order is kept"
    );
    assert_eq!(q.stop_timeout, std::time::Duration::from_secs(120));
    assert_eq!(q.pre_hook.as_deref(), Some("echo 'going down'"));
    assert_eq!(q.hook_user.as_deref(), Some("app"));
    let d = parse("[quiesce]\nunits = a\n").unwrap();
    assert_eq!(d.quiesce().unwrap().stop_timeout, DEFAULT_STOP_TIMEOUT);
    assert_err_at(
        "[quiesce]\nunits = \"a b\"\n",
        2,
        &["not a systemd unit name"],
    );
    assert_err_at("[quiesce]\nunits = a.conf\n", 2, &["unknown unit type"]);
    assert_err_at("[quiesce]\nunits = a a.service\n", 2, &["listed twice"]);
    assert_err_at("[quiesce]\nunits =\n", 2, &["nothing to do"]);
    assert_err_at(
        "[quiesce]\nunits = a\nstop_timeout = 0s\n",
        3,
        &["longer than 0s"],
    );
    assert_err_at(
        "[quiesce]\nunits = a\nhook_user = \"x y\"\n",
        3,
        &["not a user name"],
    );
    let missing = parse(REPO).unwrap().quiesce().unwrap_err().to_string();
    assert!(missing.contains("[quiesce]"), "{missing}");
}

#[test]
fn database_sections_are_named_and_checked_by_kind() {
    let c = parse(
        "[database.pg]\nkind = postgresql\ndatabases = app \"my db\"\nrun_as = postgres\n\
         [database.lite]\nkind = sqlite\npath = /var/lib/app/app.db\n\
         [database.my]\nkind = mariadb\nuser = backup\npassword = s3cret\nport = 3307\n",
    )
    .unwrap();
    let names: Vec<&str> = c.databases.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["lite", "my", "pg"], "in name order");
    let pg = &c.databases[2];
    assert_eq!(pg.kind, DatabaseKind::Postgresql);
    assert_eq!(pg.databases, ["app", "my db"]);
    assert_eq!(pg.format, PgFormat::Custom);
    assert_eq!(pg.run_as.as_deref(), Some("postgres"));
    let my = &c.databases[1];
    assert_eq!(my.kind, DatabaseKind::Mysql);
    assert!(my.databases.is_empty(), "no list: all databases");
    assert_eq!(my.port, Some(3307));
    assert_eq!(my.password.as_ref().map(|p| p.expose()), Some("s3cret"));
    assert_eq!(
        c.databases[0].path.as_deref(),
        Some(Path::new("/var/lib/app/app.db"))
    );

    assert_err_at("[database]\nkind = sqlite\n", 1, &["[database.NAME]"]);
    assert_err_at("[database.a/b]\nkind = sqlite\n", 1, &["letters, digits"]);
    assert_err_at("[alert.x]\nmail_to = root\n", 1, &["takes no name"]);
    assert_err_at("[database.x]\ndatabases = a\n", 1, &["kind", "required"]);
    assert_err_at(
        "[database.x]\nkind = oracle\n",
        2,
        &["postgresql", "sqlite"],
    );
    assert_err_at("[database.x]\nkind = sqlite\n", 1, &["path", "required"]);
    assert_err_at(
        "[database.x]\nkind = sqlite\npath = /a.db\nuser = u\n",
        4,
        &["does not apply to kind = sqlite"],
    );
    assert_err_at(
        "[database.x]\nkind = postgresql\noption_file = /f\n",
        3,
        &["does not apply to kind = postgresql"],
    );
    assert_err_at(
        "[database.x]\nkind = postgresql\ndatabases = -x\n",
        3,
        &["leading"],
    );
    assert_err_at("[database.x]\nkind = mysql\nport = 0\n", 3, &["port"]);
    assert_err_at(
        "[database.x]\nkind = mysql\nkind = mysql\n",
        3,
        &["set again"],
    );
    // Two instances may each set the same key.
    parse("[database.a]\nkind = sqlite\npath = /a\n[database.b]\nkind = sqlite\npath = /b\n")
        .unwrap();
    // A secret's value never appears in an error.
    let e = parse("[database.x]\nkind = sqlite\npath = /a\npassword = hunter2\n")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn remote_presets_fill_endpoint_and_addressing() {
    let c = parse(
        "[remote]\nurl = s3://my-backups/hosts/db1/\npreset = b2\nregion = eu-central-003\n\
         credentials = credential:cairn-s3\ndelete_credentials = /etc/cairn/s3-delete.cred\n\
         bandwidth_limit = 10 MiB/s\nconcurrency = 8\npart_size = 32 MiB\n",
    )
    .unwrap();
    let r = c.remote().unwrap();
    assert_eq!(r.bucket, "my-backups");
    assert_eq!(r.prefix, "hosts/db1");
    assert_eq!(
        r.endpoint.as_deref(),
        Some("https://s3.eu-central-003.backblazeb2.com")
    );
    assert!(!r.path_style);
    assert_eq!(r.credentials, Credentials::Credential("cairn-s3".into()));
    assert_eq!(
        r.delete_credentials,
        Some(Credentials::File("/etc/cairn/s3-delete.cred".into()))
    );
    assert_eq!(r.bandwidth_limit, Some(10 << 20));
    assert_eq!((r.concurrency, r.part_size), (8, 32 << 20));

    let g = parse("[remote]\nurl = s3://bkp\npreset = garage\nendpoint = http://127.0.0.1:3900\n")
        .unwrap();
    let g = g.remote().unwrap();
    assert_eq!(g.prefix, "");
    assert!(g.path_style, "self-hosted: path style");
    assert_eq!(g.region, "garage");
    assert_eq!(g.credentials, Credentials::Environment);
    // The request checksum: CRC-64/NVME where the provider verifies it, SHA-256 for the
    // presets not known to; the key wins over the preset.
    assert_eq!(g.checksum, UploadChecksum::Crc64Nvme);
    assert_eq!(r.checksum, UploadChecksum::Sha256, "b2");
    let plain = parse("[remote]\nurl = s3://bkp\n").unwrap();
    assert_eq!(plain.remote().unwrap().checksum, UploadChecksum::Crc64Nvme);
    let set =
        parse("[remote]\nurl = s3://bkp\npreset = b2\nregion = x\nchecksum = crc64nvme\n").unwrap();
    assert_eq!(set.remote().unwrap().checksum, UploadChecksum::Crc64Nvme);
    assert_err_at(
        "[remote]\nurl = s3://bkp\nchecksum = md5\n",
        3,
        &["`md5`", "checksum = sha256"],
    );
    let r2 = parse("[remote]\nurl = s3://bkp\npreset = r2\naccount = abc123\n").unwrap();
    assert_eq!(
        r2.remote().unwrap().endpoint.as_deref(),
        Some("https://abc123.r2.cloudflarestorage.com")
    );
    let inline =
        parse("[remote]\nurl = s3://bkp\naccess_key_id = AKIA1\nsecret_access_key = sEcReT\n")
            .unwrap();
    assert!(matches!(
        inline.remote().unwrap().credentials,
        Credentials::Inline { .. }
    ));

    assert_err_at("[remote]\nurl = https://x/y\n", 2, &["s3://"]);
    assert_err_at("[remote]\nurl = s3://Bad_Bucket\n", 2, &["bucket name"]);
    assert_err_at(
        "[remote]\nurl = s3://bkp\npreset = dropbox\n",
        3,
        &["b2", "garage"],
    );
    assert_err_at("[remote]\nurl = s3://bkp\npreset = b2\n", 1, &["region"]);
    assert_err_at("[remote]\nurl = s3://bkp\npreset = r2\n", 1, &["account"]);
    assert_err_at(
        "[remote]\nurl = s3://bkp\npreset = minio\n",
        1,
        &["endpoint"],
    );
    assert_err_at(
        "[remote]\nurl = s3://bkp\nendpoint = s3.example.com\n",
        3,
        &["endpoint URL"],
    );
    assert_err_at(
        "[remote]\nurl = s3://bkp\npart_size = 1 MiB\n",
        3,
        &["5 MiB to 5 GiB"],
    );
    assert_err_at(
        "[remote]\nurl = s3://bkp\nconcurrency = 0\n",
        3,
        &["1 to 64"],
    );
    assert_err_at(
        "[remote]\nurl = s3://bkp\naccess_key_id = A\n",
        1,
        &["secret_access_key"],
    );
    assert_err_at(
        "[remote]\nurl = s3://bkp\naccess_key_id = A\nsecret_access_key = B\ncredentials = /c\n",
        5,
        &["not both"],
    );
    assert_err_at(
        "[remote]\nurl = s3://bkp\ncredentials = c.txt\n",
        3,
        &["credential:NAME"],
    );
    let e = parse("[remote]\nurl = s3://bkp\nsecret_access_key = hunter2\n")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn drill_sample_source_and_scratch() {
    let c = parse(
        "[drill]\nsample = 12.5%\nscratch = /var/tmp/drill\ncompare_live = yes\nmax_age = 8d\n",
    )
    .unwrap();
    let d = c.drill.as_ref().unwrap();
    assert_eq!(d.sample, Sample::Percent { hundredths: 1250 });
    assert!((d.sample.fraction() - 0.125).abs() < 1e-9);
    assert!(d.compare_live);
    assert_eq!(c.drill_source(), DrillSource::Local, "no [remote]: local");
    let r = parse("[drill]\n[remote]\nurl = s3://bkp\n").unwrap();
    assert_eq!(
        r.drill_source(),
        DrillSource::Remote,
        "[remote] set: the bucket"
    );
    let l = parse("[drill]\nsource = local\n[remote]\nurl = s3://bkp\n").unwrap();
    assert_eq!(l.drill_source(), DrillSource::Local);
    assert_eq!(
        parse("[drill]\nsample = 100%\n")
            .unwrap()
            .drill
            .unwrap()
            .sample,
        Sample::All
    );
    assert_err_at("[drill]\nsample = half\n", 2, &["percentage"]);
    assert_err_at("[drill]\nsample = 0%\n", 2, &["percentage"]);
    assert_err_at("[drill]\nsource = tape\n", 2, &["remote", "local"]);
    assert_err_at("[drill]\nscratch = /\n", 2, &["emptied"]);
}

#[test]
fn heartbeat_urls_are_http_only_and_never_echoed() {
    let c = parse(
        "[heartbeat]\nping_url = https://hc-ping.com/abc-secret\nmetrics_file = /var/lib/prometheus/node-exporter/cairn.prom\nmax_age = 36h\n",
    )
    .unwrap();
    let h = c.heartbeat().unwrap();
    assert_eq!(
        h.ping_url.as_ref().unwrap().expose(),
        "https://hc-ping.com/abc-secret"
    );
    assert_eq!(h.max_age, Some(Duration::from_secs(36 * 3600)));
    assert_eq!(
        (h.timeout, h.retries),
        (DEFAULT_PING_TIMEOUT, DEFAULT_PING_RETRIES)
    );
    let e = parse("[heartbeat]\nping_url = file:///etc/secret-token\n").unwrap_err();
    assert!(e.to_string().contains("http://"), "{e}");
    assert!(!e.to_string().contains("secret-token"), "{e}");
    assert_err_at("[heartbeat]\ndrill_ping_url = ftp://x\n", 2, &["http"]);
    assert_err_at(
        "[heartbeat]\nmetrics_file = /tmp/cairn.txt\n",
        2,
        &[".prom"],
    );
    assert_err_at("[heartbeat]\ntimeout = 0s\n", 2, &["between"]);
    assert_err_at("[heartbeat]\nretries = 50\n", 2, &["0 to 10"]);
}

#[test]
fn alert_webhooks_guess_their_format_from_the_host() {
    let a = |t: &str| {
        parse(&format!("[alert]\nmail_to = root\n{t}"))
            .unwrap()
            .alert
            .unwrap()
    };
    assert_eq!(a("").webhook_format, WebhookFormat::Json);
    assert_eq!(
        a("webhook = https://hooks.slack.com/services/T/B/x\n").webhook_format,
        WebhookFormat::Slack
    );
    assert_eq!(
        a("webhook = https://discord.com/api/webhooks/1/x\n").webhook_format,
        WebhookFormat::Discord
    );
    assert_eq!(
        a("webhook = https://ntfy.sh/\n").webhook_format,
        WebhookFormat::Ntfy
    );
    assert_eq!(
        a("webhook = https://hooks.slack.com/x\nwebhook_format = json\n").webhook_format,
        WebhookFormat::Json,
        "an explicit format wins"
    );
    assert_err_at(
        "[alert]\nmail_to = root\nwebhook = gopher://x\n",
        3,
        &["http"],
    );
    assert_err_at(
        "[alert]\nmail_to = root\nwebhook_format = teams\n",
        3,
        &["slack"],
    );
}

#[test]
fn alert_smtp_fallback_is_loopback_only() {
    let a = |t: &str| parse(&format!("[alert]\nmail_to = root\n{t}"));
    assert_eq!(
        a("").unwrap().alert.unwrap().smtp,
        Some("127.0.0.1:25".parse().unwrap())
    );
    assert_eq!(a("smtp = no\n").unwrap().alert.unwrap().smtp, None);
    assert_eq!(
        a("smtp = [::1]:2525\n").unwrap().alert.unwrap().smtp,
        Some("[::1]:2525".parse().unwrap())
    );
    assert_err_at(
        "[alert]\nmail_to = root\nsmtp = 10.0.0.1:25\n",
        3,
        &["not on this host"],
    );
    assert_err_at(
        "[alert]\nmail_to = root\nsmtp = localhost\n",
        3,
        &["address:port"],
    );
}
