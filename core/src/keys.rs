//! Which secrets open the repository, from configuration and environment.
//!
//! Sources are tried in a fixed, documented order: `key_file`, `key_credential`,
//! `passphrase`, `passphrase_file` from `[repository]`; then `$CAIRN_PASSPHRASE`; then the
//! systemd credential `cairn-repository-key` when systemd passed one. A person at a
//! terminal with none of these is asked for the passphrase. Nothing here ever prints a
//! secret: a source is described by where it comes from.

use std::io::IsTerminal;
use std::path::Path;

use crate::config::RepositoryConfig;
use crate::repo::keyslot::KeySource;

/// The credential name used when no key source is configured.
pub const DEFAULT_CREDENTIAL: &str = "cairn-repository-key";

/// Key sources for a repository, in the order they are tried.
pub fn sources(cfg: &RepositoryConfig) -> Result<Vec<KeySource>, String> {
    let mut out = Vec::new();
    if let Some(p) = &cfg.key_file {
        out.push(KeySource::KeyFile(p.clone()));
    }
    if let Some(n) = &cfg.key_credential {
        out.push(KeySource::Credential(n.clone()));
    }
    if let Some(p) = &cfg.passphrase {
        out.push(KeySource::Passphrase {
            secret: p.expose().to_string(),
            origin: "[repository] passphrase".into(),
        });
    }
    if let Some(p) = &cfg.passphrase_file {
        out.push(read_passphrase_file(p)?);
    }
    if let Ok(p) = std::env::var("CAIRN_PASSPHRASE") {
        out.push(KeySource::Passphrase {
            secret: p,
            origin: "$CAIRN_PASSPHRASE".into(),
        });
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        if Path::new(&dir).join(DEFAULT_CREDENTIAL).exists()
            && cfg.key_credential.as_deref() != Some(DEFAULT_CREDENTIAL)
        {
            out.push(KeySource::Credential(DEFAULT_CREDENTIAL.into()));
        }
    }
    Ok(out)
}

/// Like [`sources`], but asks a person at a terminal when nothing is configured.
pub fn sources_or_prompt(cfg: &RepositoryConfig, confirm: bool) -> Result<Vec<KeySource>, String> {
    let mut s = sources(cfg)?;
    if s.is_empty() && std::io::stdin().is_terminal() {
        s.push(prompt_passphrase("Repository passphrase: ", confirm)?);
    }
    Ok(s)
}

/// A passphrase file: its content less one trailing newline.
pub fn read_passphrase_file(p: &Path) -> Result<KeySource, String> {
    let mut s = std::fs::read_to_string(p)
        .map_err(|e| format!("cannot read passphrase file {}: {e}", p.display()))?;
    if s.ends_with('\n') {
        s.pop();
    }
    Ok(KeySource::Passphrase {
        secret: s,
        origin: format!("passphrase file {}", p.display()),
    })
}

/// Ask on the terminal (twice when `confirm`).
pub fn prompt_passphrase(prompt: &str, confirm: bool) -> Result<KeySource, String> {
    let a = rpassword::prompt_password(prompt)
        .map_err(|e| format!("cannot read a passphrase from the terminal: {e}"))?;
    if confirm {
        let b = rpassword::prompt_password("Repeat it: ")
            .map_err(|e| format!("cannot read a passphrase: {e}"))?;
        if a != b {
            return Err("the two passphrases differ".into());
        }
    }
    Ok(KeySource::Passphrase {
        secret: a,
        origin: "the terminal".into(),
    })
}
