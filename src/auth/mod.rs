//! Shared-secret authentication of TCP peers, off by default, and what binds
//! a connection to it afterwards. `PROTOCOL.md` section 4 states every byte.
//!
//! With a secret on both sides, the server speaks first:
//!
//! ```text
//! server: miniray-auth-v2 challenge NS
//! client: miniray-auth-v2 answer MODE NC CLIENT_PROOF [NOISE1]
//! server: miniray-auth-v2 ok SERVER_PROOF [NOISE2]      (or: miniray-auth-v2 refused REASON)
//! ```
//!
//! `NS`, `NC` are 32 random bytes from each side, the proofs HMAC-SHA256 of
//! the secret over a role label, the mode and both nonces, so each side
//! proves the secret to the other over a transcript neither chose alone.
//! What follows is bound to that transcript: in mode `tag` every line
//! carries an HMAC tag under a per-direction key derived from it, with a
//! sequence number ([`tags`]); in mode `noise` the bytes are Noise
//! transport records under a key agreed with a pre-shared key derived from
//! it ([`noise`]). A relay that passed the handshake through can then only
//! forward each side's own lines, unchanged and in order.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::sys;

pub(crate) mod handshake;
pub(crate) mod noise;
pub(crate) mod session;
pub(crate) mod tags;

/// The environment variable `serve` and `call` read the secret from. It is
/// never passed on to an exec worker's program (unless set there with
/// [`Exec::env`](crate::Exec::env)).
pub const SECRET_ENV: &str = "MINIRAY_SECRET";

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// The first word of every handshake line.
pub(crate) const PREFIX: &str = "miniray-auth-v2";
/// What a line from a server that wants authentication starts with (any
/// version): never the start of a JSON text, base64 or a frame.
pub(crate) const ANY_VERSION: &[u8] = b"miniray-auth-";
/// Longest line either side reads during the handshake.
pub(crate) const MAX_LINE: usize = 512;

/// A shared secret: at least [`MIN_SECRET_LEN`] bytes. Its `Debug` never
/// shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes.
    ///
    /// Errors: [`Error::Secret`] when it is shorter than
    /// [`MIN_SECRET_LEN`] bytes (an empty one included).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        Self::checked(bytes.into(), "the secret given")
    }

    pub(crate) fn checked(bytes: Vec<u8>, origin: &str) -> Result<Self> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(Error::Secret {
                origin: origin.to_owned(),
                reason: format!(
                    "it has {} bytes; at least {MIN_SECRET_LEN} are needed",
                    bytes.len()
                ),
            });
        }
        Ok(Secret(bytes))
    }

    /// Reads a secret from a file (a trailing newline removed). As ssh does
    /// with a key file, a file that group or others may read or write is
    /// refused: `chmod 600` it.
    ///
    /// Errors: [`Error::Secret`] naming the path: it cannot be read, its
    /// mode lets others in, or the secret is too short.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let path = path.as_ref();
        let origin = format!("secret file {}", path.display());
        let fail = |reason: String| Error::Secret {
            origin: origin.clone(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let mode = file
            .metadata()
            .map_err(|e| fail(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "its permissions {:04o} let group or others in (chmod 600 it)",
                mode & 0o7777
            )));
        }
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut &file, &mut bytes).map_err(|e| fail(e.to_string()))?;
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Self::checked(bytes, &origin)
    }

    /// Reads a secret from an environment variable: `Ok(None)` when it is
    /// not set.
    ///
    /// Errors: [`Error::Secret`] naming the variable when it is set but
    /// too short (an empty value included: it never turns authentication
    /// on with an empty key).
    pub fn from_env(var: &str) -> Result<Option<Self>> {
        match std::env::var_os(var) {
            None => Ok(None),
            Some(v) => Self::checked(
                std::os::unix::ffi::OsStringExt::into_vec(v),
                &format!("${var}"),
            )
            .map(Some),
        }
    }

    /// HMAC-SHA256 under the secret over `text`.
    pub(crate) fn mac(&self, text: &[u8]) -> [u8; 32] {
        mac(&self.0, text)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// HMAC-SHA256 of `text` under `key`.
pub(crate) fn mac(key: &[u8], text: &[u8]) -> [u8; 32] {
    let mut m = keyed(key);
    m.update(text);
    m.finalize().into_bytes().into()
}

/// An HMAC-SHA256 instance keyed with `key` (cloned per message).
pub(crate) fn keyed(key: &[u8]) -> Hmac<Sha256> {
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length: this arm cannot run. An empty key
        // is still a key (and no secret of ours is empty).
        Err(_) => <Hmac<Sha256> as Mac>::new(&Default::default()),
    }
}

/// 32 fresh random bytes.
pub(crate) fn nonce() -> io::Result<[u8; 32]> {
    let mut n = [0u8; 32];
    sys::getrandom(&mut n)?;
    Ok(n)
}

/// Takes one line (at most [`MAX_LINE`] bytes) off a non-blocking socket
/// without reading past it, so what follows stays for the protocol.
/// `Ok(None)` while the line is incomplete.
pub(crate) fn take_line(fd: impl AsFd) -> io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; MAX_LINE + 1];
    let n = sys::peek(fd.as_fd(), &mut buf)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    match buf[..n].iter().position(|&b| b == b'\n') {
        Some(i) => {
            let mut line = vec![0u8; i + 1];
            let got = sys::recv_exact_nonblocking(fd.as_fd(), &mut line)?;
            line.truncate(got.saturating_sub(1));
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Ok(Some(line))
        }
        None if n > MAX_LINE => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "handshake line too long",
        )),
        None => Ok(None),
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut digits = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut digits);
    digits.into_iter().map(char::from).collect()
}

/// Writes the lowercase hex digits of `bytes` into `dst` (two per byte;
/// `dst` is exactly that long).
pub(crate) fn hex_into(bytes: &[u8], dst: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(dst.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

/// Hex (either case) to bytes; `None` for anything else.
pub(crate) fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let val = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks_exact(2)
        .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_empty_secrets_are_refused_naming_their_origin() {
        let e = Secret::new(Vec::new()).expect_err("empty");
        assert!(e.to_string().contains("0 bytes"), "{e}");
        assert!(Secret::new(vec![b'x'; MIN_SECRET_LEN - 1]).is_err());
        assert!(Secret::new(vec![b'x'; MIN_SECRET_LEN]).is_ok());
        let s = Secret::new(b"correct horse battery".to_vec()).expect("long enough");
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("miniray-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("secret");
        std::fs::write(&path, b"a secret of enough length\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = Secret::from_file(&path).expect_err("world-readable");
        assert!(e.to_string().contains("0644"), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let s = Secret::from_file(&path).expect("private file");
        assert_eq!(
            s,
            Secret::new(b"a secret of enough length".to_vec()).expect("ok")
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex(b"00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex(b"0"), None);
        assert_eq!(unhex(b"zz"), None);
    }
}
