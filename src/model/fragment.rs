//! Fragments: what one source says about one object, the unit the compiler accepts or
//! rejects as a whole, and the record of a rejection.

use super::{ClientValidation, HostMatch, Origin, RouteConfig, UpstreamConfig};
use crate::tls::LoadedCertificate;
use std::fmt;
use std::sync::Arc;

/// The routes, upstreams and certificates of one object (or of the whole config file).
#[derive(Debug, Clone)]
pub struct Fragment {
    /// The object, or the config file.
    pub origin: Origin,
    /// When the object was created (seconds since the epoch): in a conflict the older
    /// claim wins, as Gateway API specifies. `None` for the config file, which wins over
    /// every object.
    pub created: Option<i64>,
    /// Shared with the models assembled from the fragment.
    pub routes: Vec<Arc<RouteConfig>>,
    pub upstreams: Vec<Arc<UpstreamConfig>>,
    /// Certificates for TLS listeners of the config file (a Kubernetes Secret, say).
    pub certificates: Vec<ListenerCertificate>,
    /// Names that TLS listeners of the config file serve as listeners of their own (a
    /// Gateway's HTTPS listeners).
    pub server_name_scopes: Vec<ServerNameScope>,
    /// Client certificate checks asked of TLS listeners of the config file.
    pub client_validations: Vec<ListenerClientValidation>,
    /// What its routes do with a match a route before them already holds.
    pub overlap: Overlap,
    /// Host names that listeners of the config file route as groups of their own.
    pub reserved_hosts: Vec<ReservedHost>,
}

/// A host group that exists on a listener whether or not a route names it: a request for
/// one of its names is answered by its routes only, 404 when there are none, and never by
/// a broader group (a Gateway listener's hostname that a broader listener of its Gateway
/// must not serve: listener isolation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedHost {
    pub listener: String,
    pub host: HostMatch,
}

/// What a route does with a match (listener, host, path and conditions) that a route before
/// it holds: one of an older fragment, or an earlier one of its own fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// The fragment is rejected: in the config file or an Ingress the overlap is a mistake to
    /// fix, and the older claim keeps serving.
    #[default]
    Refused,
    /// The route before keeps the match and the fragment is admitted with the rest, as
    /// Gateway API orders matches: the oldest route wins a tie across routes, and the first
    /// rule a tie within one. The router tries routes of one match in model order, so the
    /// yielding route serves the match again once the holder is gone.
    Yielded,
}

impl Fragment {
    /// An empty fragment of `origin`.
    pub fn new(origin: Origin, created: Option<i64>) -> Self {
        Self {
            origin,
            created,
            routes: Vec::new(),
            upstreams: Vec::new(),
            certificates: Vec::new(),
            server_name_scopes: Vec::new(),
            client_validations: Vec::new(),
            overlap: Overlap::Refused,
            reserved_hosts: Vec::new(),
        }
    }

    /// Whether it offers nothing at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
            && self.upstreams.is_empty()
            && self.certificates.is_empty()
            && self.server_name_scopes.is_empty()
            && self.client_validations.is_empty()
            && self.reserved_hosts.is_empty()
    }

    /// The order in which fragments claim names, hosts and paths: the config file first,
    /// then objects by creation time, then by namespace/name (deterministic on ties).
    pub fn precedence(&self) -> (bool, i64, String) {
        (
            !self.origin.is_file(),
            self.created.unwrap_or(i64::MIN),
            self.origin.name(),
        )
    }
}

/// A certificate a fragment offers to a TLS listener.
#[derive(Debug, Clone)]
pub struct ListenerCertificate {
    pub listener: String,
    pub origin: Origin,
    pub certificate: LoadedCertificate,
}

/// A Gateway listener's names on a TLS listener of the config file (`hostname: None`: any
/// name); see [`super::ListenerTls::server_name_scopes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerNameScope {
    pub listener: String,
    pub hostname: Option<HostMatch>,
}

/// A Gateway's client certificate checks on a TLS listener of the config file.
#[derive(Debug, Clone)]
pub struct ListenerClientValidation {
    pub listener: String,
    pub origin: Origin,
    pub validation: Arc<ClientValidation>,
}

/// One thing wrong with an item of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The item (route, upstream, certificate) at fault.
    pub origin: Origin,
    /// The field of the item, e.g. `paths[0]`; empty for the item as a whole.
    pub field: String,
    pub message: String,
}

impl Problem {
    /// The key path of the field: `routes[2].upstream` for a file item, `upstream` for an
    /// object's.
    pub fn key_path(&self) -> String {
        let item = match &self.origin {
            Origin::File { key_path, .. } => key_path.as_str(),
            Origin::Object { .. } => "",
        };
        match (item.is_empty(), self.field.is_empty()) {
            (true, _) => self.field.clone(),
            (false, true) => item.to_string(),
            (false, false) => format!("{item}.{}", self.field),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        let key_path = self.key_path();
        if !key_path.is_empty() {
            write!(f, "{key_path}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A fragment the compiler did not take, and why.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The source that offered it.
    pub source: String,
    pub origin: Origin,
    pub problems: Vec<Problem>,
}
