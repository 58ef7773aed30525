//! Shared-secret authentication of TCP peers, off by default.
//!
//! With a secret set on both sides, the server sends the line
//! `miniray-auth-v1 NONCE` (32 random bytes as 64 hex digits) as soon as it
//! accepts; the client answers with one line, the 64 hex digits of
//! HMAC-SHA256(secret, nonce bytes). The server compares in constant time;
//! a wrong, malformed, late (5 s) or missing answer closes the connection
//! before anything is forked. Then the line protocol starts as usual.

use std::fmt;
use std::io;
use std::os::fd::AsFd;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::sys;

/// The challenge line's prefix.
pub(crate) const CHALLENGE: &str = "miniray-auth-v1 ";
/// Longest line either side reads during the handshake.
pub(crate) const MAX_LINE: usize = 128;

/// A shared secret. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes (at least 16 are advised).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// Reads a secret from a file (trailing newline removed).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        let mut bytes = std::fs::read(path)?;
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Ok(Secret(bytes))
    }

    /// Reads a secret from an environment variable, if set.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var_os(var).map(|v| Secret(std::os::unix::ffi::OsStringExt::into_vec(v)))
    }

    fn mac(&self, nonce: &[u8]) -> Option<Hmac<Sha256>> {
        // HMAC takes keys of any length; the error case cannot happen.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).ok()?;
        mac.update(nonce);
        Some(mac)
    }

    /// The answer to `nonce`, as the line to send (with `\n`).
    pub(crate) fn answer(&self, nonce: &[u8]) -> Vec<u8> {
        let mut line = self
            .mac(nonce)
            .map(|m| hex(&m.finalize().into_bytes()))
            .unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Checks an answer line (without `\n`) in constant time.
    pub(crate) fn verify(&self, nonce: &[u8], answer: &[u8]) -> bool {
        match (unhex(answer), self.mac(nonce)) {
            (Some(tag), Some(mac)) => mac.verify_slice(&tag).is_ok(),
            _ => false,
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A fresh nonce and its challenge line.
pub(crate) fn challenge() -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut nonce = vec![0u8; 32];
    sys::getrandom(&mut nonce)?;
    let mut line = CHALLENGE.as_bytes().to_vec();
    line.extend_from_slice(&hex(&nonce));
    line.push(b'\n');
    Ok((nonce, line))
}

/// The nonce of a challenge line (without `\n`).
pub(crate) fn parse_challenge(line: &[u8]) -> Option<Vec<u8>> {
    unhex(line.strip_prefix(CHALLENGE.as_bytes())?)
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
            Ok(Some(line))
        }
        None if n > MAX_LINE => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "handshake line too long",
        )),
        None => Ok(None),
    }
}

fn hex(bytes: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .collect()
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
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
    fn answers_verify_only_with_the_same_secret_and_nonce() {
        let s = Secret::new(b"correct horse".to_vec());
        let (nonce, line) = challenge().expect("nonce");
        assert_eq!(
            parse_challenge(&line[..line.len() - 1]),
            Some(nonce.clone())
        );
        let answer = s.answer(&nonce);
        assert!(s.verify(&nonce, &answer[..answer.len() - 1]));
        assert!(!Secret::new(b"wrong".to_vec()).verify(&nonce, &answer[..answer.len() - 1]));
        assert!(!s.verify(&[0u8; 32], &answer[..answer.len() - 1]));
        assert!(!s.verify(&nonce, b"zz"));
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }
}
