//! Key files: `wecom-zone keygen` writes a pair the way WeCom's 消息加密公钥 expects.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::crypto::generate_key_pair_pem;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Key(#[from] crate::crypto::KeyError),
}

/// Writes `private_key_v{version}.pem` (PKCS#8, mode 0600) and `public_key_v{version}.pem` (SPKI).
pub fn write_key_pair(dir: &Path, version: u32) -> Result<(PathBuf, PathBuf), KeyFileError> {
    std::fs::create_dir_all(dir).map_err(|source| KeyFileError::Write { path: dir.to_path_buf(), source })?;
    let private_path = dir.join(format!("private_key_v{version}.pem"));
    let public_path = dir.join(format!("public_key_v{version}.pem"));
    for path in [&private_path, &public_path] {
        if path.exists() {
            return Err(KeyFileError::Exists(path.clone()));
        }
    }
    let (private_pem, public_pem) = generate_key_pair_pem()?;
    write_new(&private_path, &private_pem, 0o600)?;
    write_new(&public_path, &public_pem, 0o644)?;
    Ok((private_path, public_path))
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), KeyFileError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|source| KeyFileError::Write { path: path.to_path_buf(), source })?;
    file.write_all(contents.as_bytes()).map_err(|source| KeyFileError::Write { path: path.to_path_buf(), source })
}
