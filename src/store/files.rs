//! A repository's files (blueprints, templates, actions) in the store, so that a server taking a
//! shared store over ([`Store::shared`]: PostgreSQL) finds every repository's files even though
//! it never saw them written. A SQLite store does not keep them: its data directory has them.

use super::db::params;
use super::{Store, StoreError};

/// One file of a repository, by its path in the repository's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// Relative path, `/`-separated (`blueprints/a.yaml`, `actorTemplates/node/actions/install`).
    pub path: String,
    /// The file's bytes.
    pub content: Vec<u8>,
    /// Its permission bits (an action must stay executable).
    pub mode: u32,
    /// When it was last written (ms since the epoch).
    pub updated_ms: i64,
}

impl Store {
    /// Every file kept for repository `repo`, by path.
    pub fn repo_files(&self, repo: &str) -> Result<Vec<RepoFile>, StoreError> {
        self.repo_files_under(repo, "")
    }

    /// The files kept for repository `repo` whose path starts with `prefix`, by path.
    pub fn repo_files_under(&self, repo: &str, prefix: &str) -> Result<Vec<RepoFile>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT path, content, mode, updated_ms FROM repo_files
             WHERE repo = ?1 AND substr(path, 1, length(?2)) = ?2 ORDER BY path",
        )?;
        let rows = stmt.query_map(params![repo, prefix], |row| {
            Ok(RepoFile {
                path: row.get(0)?,
                content: row.get(1)?,
                mode: row.get::<_, i64>(2)? as u32,
                updated_ms: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes `put` and forgets `removed` for repository `repo`, in one transaction.
    pub fn save_repo_files(
        &self,
        repo: &str,
        put: &[RepoFile],
        removed: &[String],
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let tx = conn.transaction()?;
        for file in put {
            tx.execute(
                "INSERT INTO repo_files (repo, path, content, mode, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (repo, path) DO UPDATE SET content = excluded.content,
                   mode = excluded.mode, updated_ms = excluded.updated_ms",
                params![
                    repo,
                    file.path,
                    file.content,
                    i64::from(file.mode),
                    file.updated_ms
                ],
            )?;
        }
        for path in removed {
            tx.execute(
                "DELETE FROM repo_files WHERE repo = ?1 AND path = ?2",
                params![repo, path],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_replaced_and_forgotten_per_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let file = |path: &str, content: &str, updated_ms| RepoFile {
            path: path.into(),
            content: content.as_bytes().to_vec(),
            mode: 0o755,
            updated_ms,
        };
        store
            .save_repo_files(
                "a",
                &[file("blueprints/x.yaml", "one", 1), file("b/y", "two", 1)],
                &[],
            )
            .expect("save");
        store
            .save_repo_files("b", &[file("blueprints/x.yaml", "other", 1)], &[])
            .expect("save b");
        store
            .save_repo_files(
                "a",
                &[file("blueprints/x.yaml", "three", 2)],
                &["b/y".into()],
            )
            .expect("replace");
        assert_eq!(
            store.repo_files("a").expect("read"),
            vec![file("blueprints/x.yaml", "three", 2)]
        );
        assert_eq!(store.repo_files("b").expect("read b").len(), 1);
        assert_eq!(
            store
                .repo_files_under("a", "blueprints/")
                .expect("under")
                .len(),
            1
        );
        assert!(store.repo_files_under("a", "b/").expect("under").is_empty());
        store.delete_repo("a", None).expect("delete");
        assert!(store.repo_files("a").expect("read").is_empty());
        assert_eq!(store.repo_files("b").expect("read b").len(), 1);
    }
}
