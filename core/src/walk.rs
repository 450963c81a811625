//! Walking a snapshot's trees with include/exclude selection.
//!
//! Restore, tar export and listing share one walker. Selection uses the same glob rules as
//! backup excludes, matched on the entry's absolute path in the snapshot: a pattern with a
//! `/` matches the whole path, one without matches the name. An entry is selected when it
//! or one of its ancestors matches an include (or there are no includes) and neither it
//! nor an ancestor matches an exclude. Directories are entered lazily — only when
//! something inside them is selected — so `--include` restores the parents of what it
//! selects and nothing else.

use globset::GlobSet;

use crate::archiver::compile_excludes;
use crate::repo::{RepoError, Repository, BLOB_TREE};
use crate::tree::{self, Kind, Node};

pub struct Selection {
    include: Option<(GlobSet, GlobSet)>,
    exclude: (GlobSet, GlobSet),
    /// Exactly these non-directory entries (absolute paths in the snapshot), as a drill's
    /// sample picks them; their parent directories are entered as for an include.
    only: Option<std::collections::HashSet<Vec<u8>>>,
}

impl Selection {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Selection, RepoError> {
        let include = if include.is_empty() {
            None
        } else {
            Some(compile_excludes(include).map_err(RepoError::Usage)?)
        };
        Ok(Selection {
            include,
            exclude: compile_excludes(exclude).map_err(RepoError::Usage)?,
            only: None,
        })
    }

    /// Select exactly these non-directory entries (and the directories leading to them).
    pub fn only(paths: std::collections::HashSet<Vec<u8>>) -> Selection {
        Selection {
            only: Some(paths),
            ..Selection::all()
        }
    }

    pub fn all() -> Selection {
        Selection::new(&[], &[]).expect("empty selection compiles")
    }

    fn matches(set: &(GlobSet, GlobSet), path: &[u8], name: &[u8]) -> bool {
        set.0.is_match(std::path::Path::new(crate::util::os(path)))
            || set.1.is_match(std::path::Path::new(crate::util::os(name)))
    }
}

/// What a walk does with the entries it selects.
pub trait Visitor {
    /// A selected directory (or one leading to a selected entry), before its contents.
    fn enter_dir(&mut self, path: &[u8], node: &Node) -> Result<(), RepoError>;
    /// After the contents of an entered directory.
    fn leave_dir(&mut self, path: &[u8], node: &Node) -> Result<(), RepoError>;
    /// A selected non-directory entry.
    fn entry(&mut self, path: &[u8], node: &Node) -> Result<(), RepoError>;
    /// A subtree that could not be read; the walk goes on without it.
    fn tree_error(&mut self, path: &[u8], error: &RepoError) -> Result<(), RepoError>;
}

pub fn join(path: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = path.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Read and decode a tree blob.
pub fn load_tree(repo: &Repository, id: &[u8; 32]) -> Result<Vec<Node>, RepoError> {
    let b = repo.read_blob(BLOB_TREE, id)?;
    tree::decode(&b).map_err(|e| RepoError::Corrupt(format!("tree {}: {e}", hex::encode(id))))
}

pub fn root_id(hexid: &str) -> Result<[u8; 32], RepoError> {
    crate::repo::parse_id(hexid).ok_or_else(|| {
        RepoError::Corrupt(format!("snapshot names an invalid root tree id {hexid:?}"))
    })
}

/// Walk the tree `root`, calling `v` for every selected entry in name order.
pub fn walk(
    repo: &Repository,
    root: &[u8; 32],
    sel: &Selection,
    v: &mut dyn Visitor,
) -> Result<(), RepoError> {
    let nodes = load_tree(repo, root)?;
    let mut w = Walk {
        repo,
        sel,
        pending: Vec::new(),
        entered: 0,
    };
    w.dir(&nodes, b"/", sel.include.is_none() && sel.only.is_none(), v)
}

struct Walk<'a> {
    repo: &'a Repository,
    sel: &'a Selection,
    /// Directories on the current path; the first `entered` have been entered.
    pending: Vec<(Vec<u8>, Node)>,
    entered: usize,
}

impl Walk<'_> {
    fn flush(&mut self, v: &mut dyn Visitor) -> Result<(), RepoError> {
        while self.entered < self.pending.len() {
            let (p, n) = &self.pending[self.entered];
            v.enter_dir(p, n)?;
            self.entered += 1;
        }
        Ok(())
    }

    fn dir(
        &mut self,
        nodes: &[Node],
        path: &[u8],
        included: bool,
        v: &mut dyn Visitor,
    ) -> Result<(), RepoError> {
        for n in nodes {
            let p = join(path, &n.name);
            if Selection::matches(&self.sel.exclude, &p, &n.name) {
                continue;
            }
            let inc = included
                || self
                    .sel
                    .include
                    .as_ref()
                    .is_some_and(|s| Selection::matches(s, &p, &n.name));
            match &n.kind {
                Kind::Dir { subtree } => {
                    self.pending.push((p.clone(), n.clone()));
                    if inc {
                        self.flush(v)?;
                    }
                    match load_tree(self.repo, subtree) {
                        Ok(sub) => self.dir(&sub, &p, inc, v)?,
                        Err(e) => {
                            self.flush(v)?;
                            v.tree_error(&p, &e)?;
                        }
                    }
                    let (_, node) = self.pending.pop().expect("pushed above");
                    if self.entered > self.pending.len() {
                        self.entered -= 1;
                        v.leave_dir(&p, &node)?;
                    }
                }
                _ => {
                    let inc = inc || self.sel.only.as_ref().is_some_and(|o| o.contains(&p));
                    if inc {
                        self.flush(v)?;
                        v.entry(&p, n)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Find the node at an absolute path in a snapshot (None for the root itself).
pub fn lookup(repo: &Repository, root: &[u8; 32], path: &[u8]) -> Result<Option<Node>, RepoError> {
    let mut nodes = load_tree(repo, root)?;
    let comps: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    for (i, c) in comps.iter().enumerate() {
        let n = tree::find(&nodes, c).cloned().ok_or_else(|| {
            RepoError::Usage(format!(
                "{} is not in the snapshot",
                crate::util::show(path)
            ))
        })?;
        if i + 1 == comps.len() {
            return Ok(Some(n));
        }
        match &n.kind {
            Kind::Dir { subtree } => nodes = load_tree(repo, subtree)?,
            _ => {
                return Err(RepoError::Usage(format!(
                    "{} is not in the snapshot",
                    crate::util::show(path)
                )))
            }
        }
    }
    Ok(None)
}
