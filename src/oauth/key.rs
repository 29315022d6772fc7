//! The proxy's signing key file: read it, or create it on first start.
//!
//! The file is a PKCS#8 PEM (`BEGIN PRIVATE KEY`, the format `openssl genpkey -algorithm ed25519`
//! writes), created with mode 0600 and never rewritten. A key file that others can read is
//! refused: whoever reads it can log in as anybody at every app that trusts this proxy.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use super::token::SigningKey;

/// Why the signing key could not be loaded; messages name the file and the fix, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or created.
    #[error("[oauth_proxy].signing_key: cannot {action} {path}: {err}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file.
        path: String,
        /// The cause.
        err: std::io::Error,
    },
    /// The file exists but holds no Ed25519 key.
    #[error("[oauth_proxy].signing_key: {path} is {why}; remove it to have a new key generated")]
    Bad {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// Group or others may read or write the file.
    #[error(
        "[oauth_proxy].signing_key: {path} is accessible by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// Whether the key was read or created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Read from an existing file.
    Loaded,
    /// Generated and written now.
    Generated,
}

/// Reads the key at `path`, or generates one there (0600, parent directories created) if missing.
pub fn load_or_generate(path: &Path) -> Result<(SigningKey, Origin), KeyFileError> {
    let shown = path.display().to_string();
    let io = |action: &'static str| {
        let path = shown.clone();
        move |err| KeyFileError::Io { action, path, err }
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Permissions { path: shown, mode });
            }
            let text = std::fs::read_to_string(path).map_err(io("read"))?;
            let key = SigningKey::from_pem(&text).map_err(|err| KeyFileError::Bad {
                path: shown.clone(),
                why: err.to_string(),
            })?;
            Ok((key, Origin::Loaded))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io("create the directory of"))?;
            }
            let key = SigningKey::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io("create"))?;
            file.write_all(key.to_pem().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io("write"))?;
            Ok((key, Origin::Generated))
        }
        Err(err) => Err(io("read")(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_generated_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/oauth_proxy.key");
        let (first, origin) = load_or_generate(&path).expect("generate");
        assert_eq!(origin, Origin::Generated);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, origin) = load_or_generate(&path).expect("load");
        assert_eq!(origin, Origin::Loaded);
        assert_eq!(first.public_hex(), again.public_hex());
    }

    #[test]
    fn a_readable_or_broken_key_file_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        load_or_generate(&path).expect("generate");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_or_generate(&path).expect_err("refused").to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::write(&path, "SECRET-GARBAGE").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = load_or_generate(&path).expect_err("refused").to_string();
        assert!(err.contains("remove it"), "{err}");
        assert!(!err.contains("SECRET-GARBAGE"), "{err}");
    }
}
