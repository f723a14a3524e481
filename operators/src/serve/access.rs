//! Who may reach the server: the bearer token (read from a file, compared in constant time) and
//! the rule that a server listening beyond loopback must authenticate its callers unless told
//! explicitly not to.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

use crate::{Error, Result};

/// Whether only this machine can reach `addr` (127.0.0.0/8, `::1`, and `::ffff:127.x.y.z`).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip
            .to_ipv4_mapped()
            .map_or(ip.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// Why a server on `addr` may not start: it would answer anyone who can reach a non-loopback
/// address without a token. `None` when it may start. The caller words the fix in its own terms
/// (command-line flags or pipeline keys).
pub fn exposure_refused(
    addr: &SocketAddr,
    authenticated: bool,
    allow_unauthenticated: bool,
) -> Option<String> {
    if authenticated || allow_unauthenticated || is_loopback(addr) {
        return None;
    }
    Some(format!(
        "{addr} is reachable from other machines, and no auth token is set: anyone who can reach it could use the models"
    ))
}

/// The bearer token in `path`: its text with surrounding whitespace (a trailing newline) removed.
/// Errors name the file when it cannot be read, is empty, or holds more than one line.
pub fn read_token_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::Serve(format!(
            "the auth token file {} is empty: write the token into it",
            path.display()
        )));
    }
    if token.contains(['\n', '\r']) || token.chars().any(char::is_control) {
        return Err(Error::Serve(format!(
            "the auth token file {} holds more than one line or control characters: it must hold the token alone",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// A secret bearer token, kept as its SHA-256 digest so that checking a candidate takes the same
/// time whatever the candidate's length and wherever it first differs.
#[derive(Clone)]
pub struct BearerToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(…)")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

impl BearerToken {
    /// The token `secret`.
    pub fn new(secret: &str) -> Self {
        BearerToken {
            digest: sha256(secret.as_bytes()),
        }
    }

    /// Whether `candidate` is the token. Both sides are hashed to 32 bytes and compared without
    /// branching on their contents, so the time taken depends on neither the secret's length nor
    /// the position of the first difference.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        bool::from(sha256(candidate).ct_eq(&self.digest))
    }

    /// Whether an `Authorization` header value carries the token (`Bearer <token>`; the scheme
    /// is case-insensitive, as RFC 7235 says).
    pub fn authorizes(&self, header: Option<&[u8]>) -> bool {
        match header {
            Some(value) if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") => {
                self.matches(&value[7..])
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_only_itself() {
        let token = BearerToken::new("s3cret-token");
        assert!(token.matches(b"s3cret-token"));
        for wrong in [
            &b""[..],
            b"s",
            b"s3cret-toke",
            b"s3cret-tokenX",
            b"S3cret-token",
            b"s3cret-tokem",
            b"s3cret-token\0",
            b"a-much-longer-candidate-than-the-secret-itself-0123456789",
        ] {
            assert!(!token.matches(wrong), "{wrong:?} matched");
        }
        assert!(token.authorizes(Some(b"Bearer s3cret-token")));
        assert!(token.authorizes(Some(b"bearer s3cret-token")));
        assert!(!token.authorizes(Some(b"Bearer s3cret-tok")));
        assert!(!token.authorizes(Some(b"Basic s3cret-token")));
        assert!(!token.authorizes(Some(b"Bearer ")));
        assert!(!token.authorizes(None));
        assert_eq!(format!("{token:?}"), "BearerToken(…)");
    }

    #[test]
    fn equal_length_and_unequal_length_candidates_do_the_same_work() {
        // The comparison is of two 32-byte digests whatever the inputs: a candidate of another
        // length is rejected by the same constant-time compare, not by an early length check.
        let token = BearerToken::new("abc");
        assert_eq!(sha256(b"abcd").len(), token.digest.len());
        assert!(!token.matches(b"abcd"));
        assert!(!token.matches(b"ab"));
        assert!(token.matches(b"abc"));
    }

    #[test]
    fn loopback_addresses() {
        for (addr, loopback) in [
            ("127.0.0.1:8080", true),
            ("127.1.2.3:1", true),
            ("[::1]:8080", true),
            ("[::ffff:127.0.0.1]:8080", true),
            ("0.0.0.0:8080", false),
            ("[::]:8080", false),
            ("10.0.0.5:8080", false),
            ("[::ffff:10.0.0.5]:8080", false),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(is_loopback(&addr), loopback, "{addr}");
        }
    }

    #[test]
    fn exposure_needs_a_token_or_an_explicit_opt_out() {
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let refused = exposure_refused(&public, false, false).unwrap();
        assert!(refused.contains("0.0.0.0:8080"), "{refused}");
        assert!(refused.contains("no auth token"), "{refused}");
        assert_eq!(exposure_refused(&public, true, false), None);
        assert_eq!(exposure_refused(&public, false, true), None);
        assert_eq!(exposure_refused(&local, false, false), None);
    }

    #[test]
    fn token_files() {
        let dir = std::env::temp_dir().join(format!("millrace-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "  tok-123\n").unwrap();
        assert_eq!(read_token_file(&good).unwrap(), "tok-123");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n \n").unwrap();
        let e = read_token_file(&empty).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        let two = dir.join("two");
        std::fs::write(&two, "a\nb\n").unwrap();
        let e = read_token_file(&two).unwrap_err().to_string();
        assert!(e.contains("more than one line") && e.contains("two"), "{e}");
        let missing = dir.join("missing");
        let e = read_token_file(&missing).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
