//! Who may use a route: HTTP basic authentication against an htpasswd file, or an external
//! authentication service asked once per request (ingress-nginx's `auth-type: basic` and
//! `auth-url`). Plain data; `proxy::auth` checks requests with it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `routes[].auth`: one kind per route, as in ingress-nginx.
#[derive(Debug, Clone)]
pub enum Auth {
    Basic(BasicAuth),
    External(ExternalAuth),
}

/// `routes[].auth.basic`.
#[derive(Debug, Clone)]
pub struct BasicAuth {
    /// Shown by browsers in the login prompt (`WWW-Authenticate: Basic realm="…"`).
    pub realm: String,
    /// Where the users came from, for logs.
    pub file: PathBuf,
    pub users: Arc<Htpasswd>,
}

/// `routes[].auth.external`: every request is first sent, without its body, to an
/// authentication service, whose answer decides.
#[derive(Debug, Clone)]
pub struct ExternalAuth {
    /// The upstream that answers (its endpoints, balancing and timeouts apply).
    pub upstream: String,
    /// Path and query of the check, e.g. `/oauth2/auth`.
    pub path: String,
    /// The check's method; `None`: the request's own (ingress-nginx's `auth-method`).
    pub method: Option<http::Method>,
    /// Client headers sent with the check; `None`: all but those of the body and the
    /// connection.
    pub request_headers: Option<Vec<http::HeaderName>>,
    /// Headers of a 2xx answer copied onto the request upstream (the client's own values
    /// of these names are always removed).
    pub response_headers: Vec<http::HeaderName>,
    /// Where a browser is redirected when the service answers 401 (`auth-signin`).
    pub signin: Option<String>,
    /// The whole check, connection included, must end within this.
    pub timeout: Duration,
    /// What an unreachable, slow or erring service means.
    pub on_error: AuthFailure,
}

/// What a failed check (no answer in time, or a status other than 2xx, 401 and 403) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Answer 500, as nginx's `auth_request` does.
    Deny,
    /// Let the request through unauthenticated (for services that authorise themselves).
    Allow,
}

/// The users of an htpasswd file.
#[derive(Debug, Default)]
pub struct Htpasswd {
    users: Vec<(String, PasswordHash)>,
}

/// One stored password, by scheme. Plain text and MD5 (`$apr1$`, `$1$`) are refused when
/// the file is read.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$2a$`, `$2b$`, `$2y$` (`htpasswd -B`).
    Bcrypt(String),
    /// `$5$` (SHA-256-crypt) or `$6$` (SHA-512-crypt), as `htpasswd -2`/`-5` or `mkpasswd`.
    ShaCrypt(String),
    /// `{SHA}` and base64 of the SHA-1 (`htpasswd -s`): unsalted, accepted for old files.
    Sha1([u8; 20]),
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes stay out of logs and debug output.
        f.write_str(match self {
            Self::Bcrypt(_) => "Bcrypt(…)",
            Self::ShaCrypt(_) => "ShaCrypt(…)",
            Self::Sha1(_) => "Sha1(…)",
        })
    }
}

impl Htpasswd {
    /// Parses an htpasswd file: `user:hash` per line; blank lines and `#` comments are
    /// skipped. Every bad line is reported, by line number (never with its hash).
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let mut users = Vec::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                errors.push(format!("line {}: not user:hash", i + 1));
                continue;
            };
            if user.is_empty() {
                errors.push(format!("line {}: empty user name", i + 1));
                continue;
            }
            match PasswordHash::parse(hash) {
                Ok(hash) => users.push((user.to_string(), hash)),
                Err(why) => errors.push(format!("line {} (user {user:?}): {why}", i + 1)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if users.is_empty() {
            return Err(vec!["no users".into()]);
        }
        Ok(Self { users })
    }

    /// The stored hash of `user` (the first line of that name, as Apache and nginx).
    pub fn hash_of(&self, user: &str) -> Option<&PasswordHash> {
        self.users.iter().find(|(u, _)| u == user).map(|(_, h)| h)
    }
}

impl PasswordHash {
    fn parse(hash: &str) -> Result<Self, String> {
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
            // `$2y$NN$` and 53 characters of salt and hash.
            let cost = hash.get(4..6).and_then(|c| c.parse::<u8>().ok());
            let well_formed = hash.len() == 60
                && cost.is_some_and(|c| (4..=31).contains(&c))
                && hash.as_bytes()[6] == b'$';
            return if well_formed {
                Ok(Self::Bcrypt(hash.to_string()))
            } else {
                Err("malformed bcrypt hash".into())
            };
        }
        if hash.starts_with("$5$") || hash.starts_with("$6$") {
            return match sha_crypt::PasswordHashRef::new(hash) {
                Ok(_) => Ok(Self::ShaCrypt(hash.to_string())),
                Err(_) => Err("malformed SHA-crypt hash".into()),
            };
        }
        if let Some(encoded) = hash.strip_prefix("{SHA}") {
            use base64::Engine as _;
            let digest = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|d| <[u8; 20]>::try_from(d).ok())
                .ok_or("{SHA} is not base64 of 20 bytes")?;
            return Ok(Self::Sha1(digest));
        }
        if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
            return Err(
                "MD5 hashes are refused; hash the password again with bcrypt \
                        (htpasswd -B)"
                    .into(),
            );
        }
        Err(
            "not a bcrypt ($2y$), SHA-crypt ($5$, $6$) or {SHA} hash; plain text and \
             crypt(3) DES are refused"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_recognised_and_bad_lines_named() {
        let users = Htpasswd::parse(
            "# admins\nalice:$2y$05$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui\n\n\
             bob:$6$salt$hash\ncarol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
        )
        .unwrap();
        assert!(matches!(
            users.hash_of("alice"),
            Some(PasswordHash::Bcrypt(_))
        ));
        assert!(matches!(
            users.hash_of("bob"),
            Some(PasswordHash::ShaCrypt(_))
        ));
        assert!(matches!(
            users.hash_of("carol"),
            Some(PasswordHash::Sha1(_))
        ));
        assert!(users.hash_of("dave").is_none());

        let errors =
            Htpasswd::parse("a:plain\nb:$apr1$x$y\nnocolon\n:$6$x$y\nc:{SHA}short\n").unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].starts_with("line 1 (user \"a\")"));
        assert!(errors[1].contains("htpasswd -B"));
        assert!(
            errors.iter().all(|e| !e.contains("$x$y")),
            "no hash in errors"
        );
        assert_eq!(Htpasswd::parse("# none\n").unwrap_err(), vec!["no users"]);
    }
}
