//! Where an item of the model came from, so that an error, a conflict or `/config` can
//! point a person at the line or the object to change.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a listener, route, upstream or certificate came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// An item of a config file.
    File {
        path: Arc<PathBuf>,
        line: usize,
        column: usize,
        /// The item's key path, e.g. `routes[2]`.
        key_path: String,
    },
    /// An object of an API (a Kubernetes object, or what a program pushed as one).
    Object {
        kind: String,
        namespace: String,
        name: String,
        /// `metadata.generation`: which version of the object this is.
        generation: i64,
    },
}

impl Origin {
    /// The origin of object `namespace/name` of `kind`, at generation 1.
    pub fn object(kind: &str, namespace: &str, name: &str) -> Self {
        Origin::Object {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            generation: 1,
        }
    }

    /// Whether this item comes from a config file.
    pub fn is_file(&self) -> bool {
        matches!(self, Origin::File { .. })
    }

    /// `namespace/name` of an object, or the key path of a file item.
    pub fn name(&self) -> String {
        match self {
            Origin::File { key_path, .. } => key_path.clone(),
            Origin::Object {
                namespace, name, ..
            } => format!("{namespace}/{name}"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path, line, column, ..
            } => write!(f, "{}:{line}:{column}", path.display()),
            Origin::Object {
                kind,
                namespace,
                name,
                generation,
            } => write!(f, "{kind} {namespace}/{name} (generation {generation})"),
        }
    }
}
