//! Basic authentication of a request against a route's htpasswd users.
//!
//! Hashes worth having are slow on purpose (bcrypt at cost 10 is tens of milliseconds of
//! CPU), so they are checked on a blocking thread, never on a proxy worker, at most half the
//! cores' worth at once (the rest wait), and a success is
//! remembered in [`VerifiedCredentials`] for the life of the config: a client sending the
//! same credentials on every request pays for the hash once. The memory holds a keyed
//! SHA-256 of the credentials, never the password.

use crate::model::{BasicAuth, PasswordHash};
use base64::Engine as _;
use once_cell::sync::Lazy;
use pingora::http::RequestHeader;
use ring::digest;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use tokio::sync::Semaphore;

/// Most remembered successes; past it the set starts again (a flood of distinct valid
/// credentials only costs hashing again).
const MAX_REMEMBERED: usize = 10_000;

/// Slow hashes checked at once: half the cores, at least one. A flood of wrong passwords then
/// queues here instead of taking every core from proxying.
static HASHING: Lazy<Semaphore> = Lazy::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Semaphore::new((cores / 2).max(1))
});

/// The user and password of a request's `Authorization: Basic` header.
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    password: Vec<u8>,
}

/// Reads `Authorization: Basic base64(user:password)`; `None` if absent or malformed.
pub fn credentials(request: &RequestHeader) -> Option<Credentials> {
    let value = request.headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, encoded) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some(Credentials {
        user,
        password: decoded[colon + 1..].to_vec(),
    })
}

/// Successful checks of one route's users.
#[derive(Debug)]
pub struct VerifiedCredentials {
    /// Random per config, so the remembered digests are of no use elsewhere.
    key: [u8; 32],
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl Default for VerifiedCredentials {
    fn default() -> Self {
        Self {
            key: rand::random(),
            verified: Mutex::default(),
        }
    }
}

impl VerifiedCredentials {
    fn digest(&self, credentials: &Credentials) -> [u8; 32] {
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(&self.key);
        context.update(credentials.user.as_bytes());
        context.update(b"\0");
        context.update(&credentials.password);
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        out
    }

    fn remembers(&self, digest: &[u8; 32]) -> bool {
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        verified.contains(digest)
    }

    fn remember(&self, digest: [u8; 32]) {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert(digest);
    }
}

/// Whether `credentials` are those of a user of `basic`.
pub async fn verify(
    basic: &BasicAuth,
    verified: &VerifiedCredentials,
    credentials: Credentials,
) -> bool {
    let Some(hash) = basic.users.hash_of(&credentials.user).cloned() else {
        return false;
    };
    let digest = verified.digest(&credentials);
    if verified.remembers(&digest) {
        return true;
    }
    let matches = match hash {
        PasswordHash::Sha1(_) => matches_hash(&credentials.password, &hash),
        // Slow hashes on a blocking thread, a bounded number at once; a failed spawn is a
        // failed check.
        _ => {
            let Ok(_permit) = HASHING.acquire().await else {
                return false;
            };
            tokio::task::spawn_blocking(move || matches_hash(&credentials.password, &hash))
                .await
                .unwrap_or(false)
        }
    };
    if matches {
        verified.remember(digest);
    }
    matches
}

/// Whether `password` hashes to `hash` (CPU-heavy for bcrypt and SHA-crypt).
pub fn matches_hash(password: &[u8], hash: &PasswordHash) -> bool {
    match hash {
        PasswordHash::Bcrypt(stored) => bcrypt::verify(password, stored).unwrap_or(false),
        PasswordHash::ShaCrypt(stored) => {
            use sha_crypt::PasswordVerifier as _;
            sha_crypt::ShaCrypt::default()
                .verify_password(password, stored.as_str())
                .is_ok()
        }
        PasswordHash::Sha1(stored) => {
            let computed = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, password);
            // Constant time: every byte is compared whatever the first difference.
            computed
                .as_ref()
                .iter()
                .zip(stored)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Htpasswd;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn request(authorization: &str) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request
            .insert_header(http::header::AUTHORIZATION, authorization)
            .unwrap();
        request
    }

    #[test]
    fn credentials_are_read_from_the_basic_scheme_only() {
        // "alice:open sesame"
        let found = credentials(&request("Basic YWxpY2U6b3BlbiBzZXNhbWU=")).unwrap();
        assert_eq!(found.user, "alice");
        assert_eq!(found.password, b"open sesame");
        assert!(credentials(&request("basic  YWxpY2U6b3BlbiBzZXNhbWU=")).is_some());
        assert!(credentials(&request("Bearer YWxpY2U6b3BlbiBzZXNhbWU=")).is_none());
        assert!(credentials(&request("Basic !!!")).is_none());
        // "nocolon"
        assert!(credentials(&request("Basic bm9jb2xvbg==")).is_none());
    }

    #[tokio::test]
    async fn every_scheme_verifies_and_successes_are_remembered() {
        let bcrypt_hash = bcrypt::hash("b-secret", 4).unwrap();
        // `openssl passwd -6 -salt saltsalt s-secret` (and -5), `htpasswd -nbs carol c-secret`.
        let text = format!(
            "alice:{bcrypt_hash}\n\
             bob:$6$saltsalt$CNPAfHhWVkpnMGH9qwAEQXUzLNXQG0m.y0H.5fPkw9hiNI3uNZIVHZYbZIa3TW2.0ohDKZmhen15o86GmuiI20\n\
             dave:$5$saltsalt$AcFCis4xGH4sN9Vsi5ewpwdK1fVH4aYxgsN2xtdG/k2\n\
             carol:{{SHA}}FZnlXWOVO9N/p/1CgTiwAD+nhRc=\n"
        );
        let basic = BasicAuth {
            realm: "r".into(),
            file: PathBuf::from("test"),
            users: Arc::new(Htpasswd::parse(&text).unwrap()),
        };
        let verified = VerifiedCredentials::default();
        let check = |user: &str, password: &str| Credentials {
            user: user.into(),
            password: password.as_bytes().to_vec(),
        };
        assert!(verify(&basic, &verified, check("alice", "b-secret")).await);
        assert!(!verify(&basic, &verified, check("alice", "wrong")).await);
        assert!(!verify(&basic, &verified, check("nobody", "b-secret")).await);
        assert!(verify(&basic, &verified, check("carol", "c-secret")).await);
        assert!(!verify(&basic, &verified, check("carol", "C-secret")).await);
        assert_eq!(verified.verified.lock().unwrap().len(), 2);

        assert!(verified.remembers(&verified.digest(&check("alice", "b-secret"))));
        assert!(!verified.remembers(&verified.digest(&check("alice", "wrong"))));
        for user in ["bob", "dave"] {
            assert!(
                verify(&basic, &verified, check(user, "s-secret")).await,
                "{user}"
            );
            assert!(
                !verify(&basic, &verified, check(user, "wrong")).await,
                "{user}"
            );
        }
    }
}
