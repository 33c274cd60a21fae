//! Persistent identities: a [`Keypair`] stored in a file, in libp2p's protobuf encoding
//! ([`Keypair::to_protobuf_encoding`]).
//!
//! [`load_or_create`] never overwrites an existing file: a file that does not parse is an
//! error, so a typo in a path or a damaged file never silently changes a node's identity.

use std::io::{ErrorKind, Write};
use std::path::Path;

use libp2p_identity::Keypair;

use crate::HostError;

/// Largest key file accepted (protobuf-encoded keys are a few hundred bytes at most).
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Loads the keypair stored at `path`, or, if no file exists there, generates a new
/// ed25519 keypair and stores it (created with mode `0600` on Unix).
///
/// # Errors
///
/// [`HostError::KeyFile`] when the file cannot be read or written, or when its contents
/// are not a protobuf-encoded keypair.
pub fn load_or_create(path: &Path) -> Result<Keypair, HostError> {
    match load(path) {
        Ok(key) => return Ok(key),
        Err(LoadError::Missing) => {}
        Err(LoadError::Other(e)) => return Err(e),
    }
    let key = Keypair::generate_ed25519();
    let encoded = key
        .to_protobuf_encoding()
        .map_err(|e| HostError::KeyFile(format!("encoding the new key: {e}")))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        // Someone created it between our read and our create: use theirs.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return load(path).map_err(|e| match e {
                LoadError::Missing => HostError::KeyFile(format!("{}: vanished", path.display())),
                LoadError::Other(e) => e,
            })
        }
        Err(e) => return Err(HostError::KeyFile(format!("creating {}: {e}", path.display()))),
    };
    file.write_all(&encoded)
        .and_then(|()| file.sync_all())
        .map_err(|e| HostError::KeyFile(format!("writing {}: {e}", path.display())))?;
    Ok(key)
}

enum LoadError {
    Missing,
    Other(HostError),
}

fn load(path: &Path) -> Result<Keypair, LoadError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => {
            return Err(LoadError::Other(HostError::KeyFile(format!("{}: {e}", path.display()))))
        }
    };
    if meta.len() > MAX_KEY_FILE {
        return Err(LoadError::Other(HostError::KeyFile(format!(
            "{}: {} bytes is too large for a key file",
            path.display(),
            meta.len()
        ))));
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => {
            return Err(LoadError::Other(HostError::KeyFile(format!("{}: {e}", path.display()))))
        }
    };
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
        LoadError::Other(HostError::KeyFile(format!("{}: not a valid key: {e}", path.display())))
    })
}
