//! `[database.NAME]`: databases dumped online, streamed straight into the snapshot.
//!
//! Design: each section names one database server (or SQLite file) and how to reach it;
//! the dump tool and its arguments are built from these keys by `crate::dump`, never from
//! a free-form command line, so a password can only travel through the environment
//! (`PGPASSWORD`, `MYSQL_PWD`) or an option file, never through argv where `ps` shows it.
//! Which keys apply depends on `kind`; a key of another kind is an error that says so,
//! because a silently ignored `password` is a backup that fails at 3 a.m.

use std::path::PathBuf;

use super::{ConfigError, KeySpec, Secret, Section, SectionSpec};

pub(crate) const SPEC: SectionSpec = SectionSpec {
    name: "database",
    instances: true,
    keys: &[
        KeySpec::plain("kind"),
        KeySpec::plain("databases"),
        KeySpec::plain("format"),
        KeySpec::plain("run_as"),
        KeySpec::plain("host"),
        KeySpec::plain("port"),
        KeySpec::plain("user"),
        KeySpec::secret("password"),
        KeySpec::plain("option_file"),
        KeySpec::plain("command"),
        KeySpec::plain("path"),
    ],
    example: "[database.main]\nkind = postgresql\ndatabases = app\n",
};

/// Which database a `[database.NAME]` section dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// PostgreSQL: `pg_dump` per database, or `pg_dumpall`.
    Postgresql,
    /// MySQL or MariaDB: `mysqldump` / `mariadb-dump --single-transaction`.
    Mysql,
    /// SQLite: the online backup API.
    Sqlite,
}

impl DatabaseKind {
    /// The word used in the config.
    pub fn word(self) -> &'static str {
        match self {
            DatabaseKind::Postgresql => "postgresql",
            DatabaseKind::Mysql => "mysql",
            DatabaseKind::Sqlite => "sqlite",
        }
    }
}

/// PostgreSQL dump format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgFormat {
    /// `pg_dump -Fc`: compressed by pg_dump off (cairn compresses), restored with
    /// `pg_restore`, selectively if need be.
    Custom,
    /// Plain SQL, restored with `psql`.
    Plain,
}

/// `[database.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// The section's name (`main` in `[database.main]`): the directory in the snapshot.
    pub name: String,
    /// What kind of database.
    pub kind: DatabaseKind,
    /// Databases to dump, one file each; empty: all of them in one dump (`pg_dumpall`,
    /// `--all-databases`). Unused for SQLite.
    pub databases: Vec<String>,
    /// PostgreSQL only: the format of per-database dumps (`pg_dumpall` is always plain).
    pub format: PgFormat,
    /// Run the dump tool as this system user (needs cairn-snapshot to run as root):
    /// `postgres` for peer authentication.
    pub run_as: Option<String>,
    /// Server host or socket directory; unset: the tool's default (the local socket).
    pub host: Option<String>,
    /// Server port.
    pub port: Option<u16>,
    /// The database role / account to log in as.
    pub user: Option<String>,
    /// Password, given to the tool through its environment variable.
    pub password: Option<Secret>,
    /// MySQL only: an option file (`--defaults-extra-file`), e.g. holding the password.
    pub option_file: Option<PathBuf>,
    /// The dump program; unset: `pg_dump`/`pg_dumpall`, or `mariadb-dump` else
    /// `mysqldump` from `$PATH`.
    pub command: Option<PathBuf>,
    /// SQLite only: the database file.
    pub path: Option<PathBuf>,
}

/// The keys each kind takes besides `kind`.
fn allowed(kind: DatabaseKind) -> &'static [&'static str] {
    match kind {
        DatabaseKind::Postgresql => &[
            "databases",
            "format",
            "run_as",
            "host",
            "port",
            "user",
            "password",
            "command",
        ],
        DatabaseKind::Mysql => &[
            "databases",
            "run_as",
            "host",
            "port",
            "user",
            "password",
            "option_file",
            "command",
        ],
        DatabaseKind::Sqlite => &["path"],
    }
}

pub(crate) fn parse(s: &Section<'_>) -> Result<DatabaseConfig, ConfigError> {
    let kind = s.parsed("kind", |v| match v {
        "postgresql" | "postgres" => Ok(DatabaseKind::Postgresql),
        "mysql" | "mariadb" => Ok(DatabaseKind::Mysql),
        "sqlite" => Ok(DatabaseKind::Sqlite),
        _ => Err(format!(
            "`{v}` is not a database kind this version dumps; write `postgresql`, `mysql` \
             or `sqlite`"
        )),
    })?;
    let kind = s.required("kind", kind, "kind = postgresql")?;
    for key in SPEC.keys.iter().map(|k| k.name) {
        if key != "kind" && s.is_set(key) && !allowed(kind).contains(&key) {
            return Err(s.invalid(
                key,
                format!(
                    "does not apply to kind = {}; its keys are {}",
                    kind.word(),
                    allowed(kind).join(", ")
                ),
            ));
        }
    }
    let databases = s.list_of("databases", db_name)?.unwrap_or_default();
    let format = s
        .parsed("format", |v| match v {
            "custom" => Ok(PgFormat::Custom),
            "plain" => Ok(PgFormat::Plain),
            _ => Err(format!(
                "`{v}` is not a dump format; write `custom` or `plain`"
            )),
        })?
        .unwrap_or(PgFormat::Custom);
    let path = s.absolute_path("path")?;
    let path = if kind == DatabaseKind::Sqlite {
        Some(s.required("path", path, "path = /var/lib/app/app.db")?)
    } else {
        None
    };
    Ok(DatabaseConfig {
        name: s.instance().to_string(),
        kind,
        databases,
        format,
        run_as: s.parsed("run_as", super::quiesce::user_name)?,
        host: s.parsed("host", |v| {
            if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(format!("`{v}` is not a host name or socket directory"))
            } else {
                Ok(v.to_string())
            }
        })?,
        port: s.parsed("port", |v| {
            v.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{v}` is not a port number (1-65535)"))
        })?,
        user: s.parsed("user", |v| {
            if v.is_empty() || v.chars().any(|c| c.is_control()) {
                Err(format!("`{v}` is not a user name"))
            } else {
                Ok(v.to_string())
            }
        })?,
        password: s.secret("password")?,
        option_file: s.absolute_path("option_file")?,
        command: s.absolute_path("command")?,
        path,
    })
}

/// A database name: it becomes a file name in the snapshot, and it reaches the dump tool
/// as one argument, so no `/`, no leading `-` and no control characters.
fn db_name(v: String) -> Result<String, String> {
    if v.is_empty()
        || v.len() > 128
        || v.starts_with('-')
        || v.starts_with('.')
        || v.contains('/')
        || v.chars().any(|c| c.is_control())
    {
        return Err(format!(
            "`{v}` is not a database name cairn can dump (no `/`, no leading `-` or `.`)"
        ));
    }
    Ok(v)
}
