//! A repository's files: blueprints (`blueprints/*.yaml`, archived ones `_`-prefixed) and actor
//! templates (`actorTemplates/<actor>/{schema.yaml,config.yaml,actions/*}`). Reads and atomic
//! writes, nothing else: what the files mean is the engine's business.
//!
//! A cloned repository is not trusted: a blueprint, template or action that is a symbolic link
//! is not followed (a link to `/etc/passwd` must not be read, written or executed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::actors::error::AysError;
use crate::engine::{self, Problem, Template};
use crate::store::RepoFile;

/// A blueprint file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blueprint {
    /// File name, extension included (without the archive prefix).
    pub name: String,
    /// The YAML text.
    pub content: String,
    /// Whether it is archived (`_`-prefixed on disk).
    pub archived: bool,
}

/// An actor template's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFiles {
    /// The actor name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// `schema.yaml` as written.
    pub schema: String,
    /// The action names (files in `actions/`).
    pub actions: Vec<String>,
    /// `config.yaml` as written, if any.
    pub config: Option<String>,
    /// Each action's code (read for one template only, [`RepoFiles::template_with_code`]):
    /// its text up to [`MAX_CODE_BYTES`], or a note saying why not.
    pub code: BTreeMap<String, String>,
}

/// The most bytes of an action's code a template's view shows.
pub const MAX_CODE_BYTES: usize = 64 * 1024;

/// The files of one repository.
#[derive(Debug, Clone)]
pub struct Files {
    /// The repository directory.
    dir: PathBuf,
}

/// A blueprint name is a plain file name with a YAML extension, not `_`-prefixed (that marks
/// archived files on disk).
pub fn valid_blueprint_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('_')
        && !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// An IO failure as an internal error, logged with its path.
pub fn io_error(path: &Path, err: std::io::Error) -> AysError {
    warn!(path = %path.display(), %err, "file operation failed");
    AysError::Internal(format!("cannot access {}: {err}", path.display()))
}

/// Problems in words.
pub fn problems(list: Vec<Problem>) -> Vec<String> {
    list.into_iter().map(|p| p.to_string()).collect()
}

/// True for a regular file that is not a symbolic link.
fn plain_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// True for a directory that is not a symbolic link.
fn plain_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
}

/// Reads a plain file (never through a link).
fn read_plain(path: &Path) -> std::io::Result<String> {
    if !plain_file(path) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a regular file",
        ));
    }
    std::fs::read_to_string(path)
}

/// An action file as shown: its text, cut at [`MAX_CODE_BYTES`] (on a character boundary), or a
/// note when it is not text.
fn code_text(mut bytes: Vec<u8>) -> String {
    let size = bytes.len();
    let cut = size > MAX_CODE_BYTES;
    bytes.truncate(MAX_CODE_BYTES);
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) if cut && err.utf8_error().error_len().is_none() => {
            // Only the cut split a character: keep what comes before it.
            let valid = err.utf8_error().valid_up_to();
            let mut bytes = err.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).unwrap_or_default()
        }
        Err(_) => return format!("(not text: {size} bytes)"),
    };
    if cut {
        format!("{text}\n… (cut: {size} bytes in all)")
    } else {
        text
    }
}

/// Writes a file atomically (temp file and rename), so a crash never leaves half a blueprint.
fn write_atomic(path: &Path, content: &str) -> Result<(), AysError> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, content).map_err(|err| io_error(&tmp, err))?;
    std::fs::rename(&tmp, path).map_err(|err| io_error(path, err))
}

impl Files {
    /// The files under `dir`.
    pub fn new(dir: PathBuf) -> Files {
        Files { dir }
    }

    /// The repository directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blueprints_dir(&self) -> PathBuf {
        self.dir.join("blueprints")
    }

    fn templates_dir(&self) -> PathBuf {
        self.dir.join("actorTemplates")
    }

    /// The executable of an action of an actor template (listed by [`Files::template_files`]
    /// only when it is a regular file).
    pub fn action_program(&self, actor: &str, action: &str) -> PathBuf {
        self.templates_dir()
            .join(actor)
            .join("actions")
            .join(action)
    }

    /// The file of blueprint `name` and whether it is archived; 404 if neither exists.
    fn find(&self, name: &str) -> Result<(PathBuf, bool), AysError> {
        if !valid_blueprint_name(name) {
            return Err(AysError::NotFound(format!("blueprint {name:?} not found")));
        }
        let plain = self.blueprints_dir().join(name);
        if plain_file(&plain) {
            return Ok((plain, false));
        }
        let archived = self.blueprints_dir().join(format!("_{name}"));
        if plain_file(&archived) {
            return Ok((archived, true));
        }
        Err(AysError::NotFound(format!("blueprint {name:?} not found")))
    }

    /// One blueprint.
    pub fn blueprint(&self, name: &str) -> Result<Blueprint, AysError> {
        let (path, archived) = self.find(name)?;
        let content = read_plain(&path).map_err(|err| io_error(&path, err))?;
        Ok(Blueprint {
            name: name.to_string(),
            content,
            archived,
        })
    }

    /// Every blueprint, by name (archived ones when asked).
    pub fn blueprints(&self, include_archived: bool) -> Result<Vec<Blueprint>, AysError> {
        let dir = self.blueprints_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error(&dir, err)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| plain_file(&e.path()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|file| match file.strip_prefix('_') {
                Some(name) if include_archived => Some(name.to_string()),
                Some(_) => None,
                None => Some(file),
            })
            .filter(|name| valid_blueprint_name(name))
            .collect();
        names.sort();
        names.dedup();
        names.iter().map(|n| self.blueprint(n)).collect()
    }

    /// Creates (`create`, 409 if it exists) or replaces (404 if missing) a blueprint; invalid
    /// YAML is refused and nothing is written.
    pub fn put_blueprint(
        &self,
        name: &str,
        content: &str,
        create: bool,
    ) -> Result<Blueprint, AysError> {
        if !valid_blueprint_name(name) {
            return Err(AysError::BadRequest(format!(
                "invalid blueprint name {name:?}: a file name ending in .yaml or .yml, \
                 of A-Z a-z 0-9 _ - ., not starting with _ or ."
            )));
        }
        let existing = self.find(name).ok();
        let path = match (&existing, create) {
            (Some(_), true) => {
                return Err(AysError::Conflict(format!("blueprint {name:?} exists")));
            }
            (None, false) => {
                return Err(AysError::NotFound(format!("blueprint {name:?} not found")));
            }
            (Some((path, _)), false) => path.clone(),
            (None, true) => self.blueprints_dir().join(name),
        };
        if let Err(list) = engine::Blueprint::parse(name, content) {
            return Err(AysError::BadRequest(format!(
                "invalid blueprint: {}",
                problems(list).join("; ")
            )));
        }
        let dir = self.blueprints_dir();
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(AysError::BadRequest(
                "blueprints/ is a symbolic link; refusing to write through it".into(),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|err| io_error(&dir, err))?;
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(AysError::BadRequest(format!(
                "blueprint {name:?} is a symbolic link; refusing to write through it"
            )));
        }
        write_atomic(&path, content)?;
        self.blueprint(name)
    }

    /// Deletes a blueprint file.
    pub fn delete_blueprint(&self, name: &str) -> Result<(), AysError> {
        let (path, _) = self.find(name)?;
        std::fs::remove_file(&path).map_err(|err| io_error(&path, err))
    }

    /// Archives (`_`-prefixes) or restores a blueprint.
    pub fn archive(&self, name: &str, archived: bool) -> Result<Blueprint, AysError> {
        let (path, is_archived) = self.find(name)?;
        if is_archived != archived {
            let target = if archived {
                self.blueprints_dir().join(format!("_{name}"))
            } else {
                self.blueprints_dir().join(name)
            };
            std::fs::rename(&path, &target).map_err(|err| io_error(&path, err))?;
        }
        self.blueprint(name)
    }

    /// Every actor template's files, by name.
    pub fn template_files(&self) -> Result<Vec<TemplateFiles>, AysError> {
        let dir = self.templates_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error(&dir, err)),
        };
        let mut views = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            let Some(name) = entry.file_name().into_string().ok() else {
                continue;
            };
            if !plain_dir(&path) || name.starts_with('.') {
                continue;
            }
            let schema = read_plain(&path.join("schema.yaml")).unwrap_or_default();
            let config = read_plain(&path.join("config.yaml")).ok();
            let actions_dir = path.join("actions");
            let mut actions: Vec<String> = if plain_dir(&actions_dir) {
                std::fs::read_dir(&actions_dir)
                    .map(|rd| {
                        rd.filter_map(|e| e.ok())
                            .filter(|e| plain_file(&e.path()))
                            .filter_map(|e| e.file_name().into_string().ok())
                            .filter(|n| !n.starts_with('.'))
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            actions.sort();
            views.push(TemplateFiles {
                role: engine::role_of(&name).to_string(),
                name,
                schema,
                actions,
                config,
                code: BTreeMap::new(),
            });
        }
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    }

    /// One actor template's files with its actions' code.
    pub fn template_with_code(&self, name: &str) -> Result<TemplateFiles, AysError> {
        let mut template = self
            .template_files()?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| AysError::NotFound(format!("template {name:?} not found")))?;
        let dir = self.templates_dir().join(name).join("actions");
        for action in &template.actions {
            let text = match std::fs::read(dir.join(action)) {
                Err(err) => format!("(cannot be read: {err})"),
                Ok(bytes) => code_text(bytes),
            };
            template.code.insert(action.clone(), text);
        }
        Ok(template)
    }

    /// Reads every actor template; problems are returned beside the good ones.
    pub fn templates(&self) -> Result<(BTreeMap<String, Template>, Vec<Problem>), AysError> {
        let mut templates = BTreeMap::new();
        let mut found = Vec::new();
        for view in self.template_files()? {
            let schema = match engine::Schema::parse(&view.schema) {
                Ok(schema) => schema,
                Err(list) => {
                    found.extend(list.into_iter().map(|p| {
                        Problem::new(
                            format!("actorTemplates/{}/schema.yaml: {}", view.name, p.location),
                            p.message,
                        )
                    }));
                    continue;
                }
            };
            let config = match view.config.as_deref().map(engine::TemplateConfig::parse) {
                None => engine::TemplateConfig::default(),
                Some(Ok(config)) => config,
                Some(Err(list)) => {
                    found.extend(list.into_iter().map(|p| {
                        Problem::new(
                            format!("actorTemplates/{}/config.yaml: {}", view.name, p.location),
                            p.message,
                        )
                    }));
                    continue;
                }
            };
            templates.insert(
                view.name.clone(),
                Template {
                    actor: view.name,
                    schema,
                    actions: view.actions,
                    config,
                },
            );
        }
        Ok((templates, found))
    }
}

/// The most bytes of one file kept in a shared store ([`Files::tree`]); a bigger one is left
/// out, with a warning.
pub const MAX_KEPT_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// The most bytes of one repository's files kept in a shared store.
pub const MAX_KEPT_BYTES: u64 = 64 * 1024 * 1024;

/// The directories of a repository whose files are kept in a shared store.
const KEPT_DIRS: [&str; 2] = ["blueprints", "actorTemplates"];

/// Milliseconds since the epoch of a file's last change.
fn modified_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

impl Files {
    /// The file at `path` (relative, `/`-separated) as the store keeps it, `None` when it is not
    /// a plain file (missing, a link, a directory) or is over [`MAX_KEPT_FILE_BYTES`].
    pub fn kept(&self, path: &str) -> Option<RepoFile> {
        use std::os::unix::fs::PermissionsExt as _;
        let full = self.dir.join(path);
        let meta = std::fs::symlink_metadata(&full).ok()?;
        if !meta.file_type().is_file() {
            return None;
        }
        if meta.len() > MAX_KEPT_FILE_BYTES {
            warn!(path = %full.display(), bytes = meta.len(), "file too big to keep in the store; other servers will not have it");
            return None;
        }
        let content = std::fs::read(&full).ok()?;
        Some(RepoFile {
            path: path.to_owned(),
            content,
            mode: meta.permissions().mode() & 0o777,
            updated_ms: modified_ms(&meta),
        })
    }

    /// The paths of every plain file under the kept directories (links are not followed).
    pub fn kept_paths(&self) -> Vec<String> {
        self.paths_under(&KEPT_DIRS)
    }

    /// The paths of every plain file under the directories `roots` (links are not followed).
    fn paths_under(&self, roots: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        let mut pending: Vec<String> = roots.iter().map(|d| d.to_string()).collect();
        while let Some(rel) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(self.dir.join(&rel)) else {
                continue;
            };
            for entry in entries.filter_map(|e| e.ok()) {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.ends_with(".tmp~") {
                    continue;
                }
                let path = format!("{rel}/{name}");
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => pending.push(path),
                    Ok(kind) if kind.is_file() => found.push(path),
                    _ => {}
                }
            }
        }
        found.sort();
        found
    }

    /// Every kept file of the repository, up to [`MAX_KEPT_BYTES`] in all.
    pub fn tree(&self) -> Vec<RepoFile> {
        self.files_under(&KEPT_DIRS)
    }

    /// The templates' files (`actorTemplates/`), up to [`MAX_KEPT_BYTES`] in all.
    pub fn template_tree(&self) -> Vec<RepoFile> {
        self.files_under(&["actorTemplates"])
    }

    fn files_under(&self, roots: &[&str]) -> Vec<RepoFile> {
        let mut total = 0;
        let mut files = Vec::new();
        for path in self.paths_under(roots) {
            let Some(file) = self.kept(&path) else {
                continue;
            };
            total += file.content.len() as u64;
            if total > MAX_KEPT_BYTES {
                warn!(dir = %self.dir.display(), "repository files over {MAX_KEPT_BYTES} bytes: the rest is not kept in the store");
                break;
            }
            files.push(file);
        }
        files
    }

    /// Brings the directory in line with the store's copy `kept` (a server taking a repository
    /// over, or starting it again): a file the store has is written when missing or different,
    /// unless the one on disk changed after the store's (edited by hand here: it is kept, and
    /// returned to be stored); a file the store lacks is removed if it is a blueprint (deleted
    /// elsewhere) and returned to be stored otherwise (a template placed by hand). With nothing
    /// kept yet, every file here is returned. Links are neither followed nor replaced.
    pub fn restore(&self, kept: &[RepoFile]) -> Result<Vec<RepoFile>, AysError> {
        use std::os::unix::fs::PermissionsExt as _;
        if kept.is_empty() {
            return Ok(self.tree());
        }
        let mut newer = Vec::new();
        let known: std::collections::BTreeSet<&str> =
            kept.iter().map(|f| f.path.as_str()).collect();
        for file in kept {
            let rel = Path::new(&file.path);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                warn!(path = %file.path, "a stored file with an unsafe path is skipped");
                continue;
            }
            let full = self.dir.join(rel);
            if let Some(here) = self.kept(&file.path) {
                if here.content == file.content && here.mode == file.mode {
                    continue;
                }
                if here.updated_ms > file.updated_ms {
                    newer.push(here);
                    continue;
                }
            } else if std::fs::symlink_metadata(&full).is_ok() {
                continue; // a link or a directory: not ours to replace
            }
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).map_err(|err| io_error(parent, err))?;
            }
            let tmp = full.with_extension("tmp~");
            std::fs::write(&tmp, &file.content).map_err(|err| io_error(&tmp, err))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(file.mode & 0o777))
                .map_err(|err| io_error(&tmp, err))?;
            std::fs::rename(&tmp, &full).map_err(|err| io_error(&full, err))?;
        }
        for path in self.kept_paths() {
            if known.contains(path.as_str()) {
                continue;
            }
            if path.starts_with("blueprints/") {
                let full = self.dir.join(&path);
                std::fs::remove_file(&full).map_err(|err| io_error(&full, err))?;
            } else if let Some(file) = self.kept(&path) {
                newer.push(file);
            }
        }
        Ok(newer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, Files) {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Files::new(dir.path().to_path_buf());
        (dir, files)
    }

    #[test]
    fn an_action_s_code_is_its_text_cut_at_the_cap_or_a_note() {
        assert_eq!(code_text(b"echo hi\n".to_vec()), "echo hi\n");
        assert_eq!(code_text(vec![0xff, 0xfe, 0]), "(not text: 3 bytes)");
        // A long one is cut, on a character boundary (`é` is two bytes, the cap splits one).
        let mut long = "a".repeat(MAX_CODE_BYTES - 1).into_bytes();
        long.extend("é and more".as_bytes());
        let size = long.len();
        let text = code_text(long);
        assert!(text.starts_with(&"a".repeat(MAX_CODE_BYTES - 1)));
        assert!(
            text.ends_with(&format!("… (cut: {size} bytes in all)")),
            "{}",
            &text[text.len() - 40..]
        );
        assert!(!text.contains('é'));
    }

    #[test]
    fn a_template_with_its_code_is_read_for_one_template_only() {
        let (dir, files) = files();
        let actions = dir.path().join("actorTemplates/node/actions");
        std::fs::create_dir_all(&actions).expect("mkdir");
        std::fs::write(
            dir.path().join("actorTemplates/node/schema.yaml"),
            "x: {type: int}\n",
        )
        .expect("schema");
        std::fs::write(actions.join("install"), "#!/bin/sh\necho up\n").expect("action");
        let listed = files.template_files().expect("list");
        assert!(listed[0].code.is_empty(), "listings read no code");
        let one = files.template_with_code("node").expect("one");
        assert_eq!(one.code["install"], "#!/bin/sh\necho up\n");
        assert!(matches!(
            files.template_with_code("ghost"),
            Err(AysError::NotFound(_))
        ));
    }

    #[test]
    fn blueprints_are_created_replaced_archived_and_deleted() {
        let (_dir, files) = files();
        let text = "node__a:\n  x: 1\n";
        assert!(files.put_blueprint("a.yaml", text, false).is_err(), "404");
        let made = files.put_blueprint("a.yaml", text, true).expect("create");
        assert_eq!((made.content.as_str(), made.archived), (text, false));
        assert!(matches!(
            files.put_blueprint("a.yaml", text, true),
            Err(AysError::Conflict(_))
        ));
        assert!(matches!(
            files.put_blueprint("a.yaml", "[unclosed", false),
            Err(AysError::BadRequest(_))
        ));
        assert!(files.archive("a.yaml", true).expect("archive").archived);
        assert!(files.blueprints(false).expect("list").is_empty());
        assert_eq!(files.blueprints(true).expect("list").len(), 1);
        files.archive("a.yaml", false).expect("restore");
        files.delete_blueprint("a.yaml").expect("delete");
        assert!(matches!(
            files.blueprint("a.yaml"),
            Err(AysError::NotFound(_))
        ));
    }

    #[test]
    fn a_directory_is_restored_from_the_store_s_copy() {
        use std::os::unix::fs::PermissionsExt as _;
        let (dir, files) = files();
        std::fs::create_dir_all(dir.path().join("blueprints")).expect("dir");
        std::fs::write(dir.path().join("blueprints/stale.yaml"), "a: 1\n").expect("stale");
        std::fs::create_dir_all(dir.path().join("actorTemplates/own")).expect("dir");
        std::fs::write(dir.path().join("actorTemplates/own/schema.yaml"), "").expect("own");
        let later = crate::clock::now_ms() + 60_000;
        let kept = vec![
            RepoFile {
                path: "actorTemplates/node/actions/install".into(),
                content: b"#!/bin/sh\necho up\n".to_vec(),
                mode: 0o750,
                updated_ms: later,
            },
            RepoFile {
                path: "blueprints/a.yaml".into(),
                content: b"node__a: {}\n".to_vec(),
                mode: 0o644,
                updated_ms: later,
            },
            RepoFile {
                path: "../escape".into(),
                content: b"x".to_vec(),
                mode: 0o644,
                updated_ms: later,
            },
        ];
        let newer = files.restore(&kept).expect("restore");
        let install = dir.path().join("actorTemplates/node/actions/install");
        assert_eq!(
            std::fs::read_to_string(&install).expect("written"),
            "#!/bin/sh\necho up\n"
        );
        let mode = std::fs::metadata(&install)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750, "an action stays executable");
        assert_eq!(
            files.blueprint("a.yaml").expect("bp").content,
            "node__a: {}\n"
        );
        assert!(
            !dir.path().join("blueprints/stale.yaml").exists(),
            "a blueprint the store no longer has is removed"
        );
        assert!(!dir.path().parent().expect("parent").join("escape").exists());
        let paths: Vec<&str> = newer.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["actorTemplates/own/schema.yaml"],
            "a template placed by hand goes to the store"
        );
        // Nothing kept yet: everything here is to be kept.
        assert_eq!(files.restore(&[]).expect("first").len(), 3);
    }

    #[test]
    fn links_out_of_the_repository_are_not_followed() {
        let (dir, files) = files();
        let outside = tempfile::tempdir().expect("outside");
        let secret = outside.path().join("secret.yaml");
        std::fs::write(&secret, "node__x:\n  secret: 1\n").expect("secret");
        let blueprints = dir.path().join("blueprints");
        std::fs::create_dir_all(&blueprints).expect("dir");
        std::os::unix::fs::symlink(&secret, blueprints.join("s.yaml")).expect("link");
        assert!(matches!(
            files.blueprint("s.yaml"),
            Err(AysError::NotFound(_))
        ));
        assert!(files.blueprints(true).expect("list").is_empty());
        assert!(
            files
                .put_blueprint("s.yaml", "node__y: {}\n", true)
                .is_err()
        );
        assert_eq!(
            std::fs::read_to_string(&secret).expect("read"),
            "node__x:\n  secret: 1\n",
            "the target is unchanged"
        );
        let actor = dir.path().join("actorTemplates/node/actions");
        std::fs::create_dir_all(&actor).expect("dir");
        std::fs::write(dir.path().join("actorTemplates/node/schema.yaml"), "").expect("schema");
        std::os::unix::fs::symlink("/bin/true", actor.join("install")).expect("link");
        let templates = files.template_files().expect("templates");
        assert_eq!(templates.len(), 1);
        assert!(
            templates[0].actions.is_empty(),
            "a linked action is not an action"
        );
    }
}
