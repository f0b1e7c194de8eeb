//! What became of one Ingress: what it serves, each annotation's outcome, warnings, errors
//! (which reject it) and differences from ingress-nginx. Events, metrics, the admission
//! webhook and `sluice ingress check` all read it.

use super::annotations::{AnnotationReport, Outcome};
use std::fmt;

/// Why an object is rejected: the Event reason and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    InvalidAnnotation,
    RefusedAnnotation,
    MissingService,
    MissingSecret,
    InvalidSecret,
    InvalidSpec,
    /// The compiler refused it (a conflict with an older object, say).
    Conflict,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidAnnotation => "InvalidAnnotation",
            Reason::RefusedAnnotation => "RefusedAnnotation",
            Reason::MissingService => "MissingService",
            Reason::MissingSecret => "MissingSecret",
            Reason::InvalidSecret => "InvalidSecret",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::Conflict => "Conflict",
        }
    }
}

/// The report of one object.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `Ingress namespace/name`.
    pub object: String,
    /// One line per route: `http://host path -> upstream`.
    pub serves: Vec<String>,
    pub annotations: Vec<AnnotationReport>,
    /// Served anyway, but someone should know.
    pub warnings: Vec<String>,
    /// Why the object is rejected; empty when it is not.
    pub errors: Vec<(Reason, String)>,
    /// Where sluice behaves differently from ingress-nginx for this object.
    pub differences: Vec<String>,
}

impl Report {
    pub fn new(object: String) -> Self {
        Self {
            object,
            ..Default::default()
        }
    }

    pub fn error(&mut self, reason: Reason, message: String) {
        if !self.errors.iter().any(|(_, m)| *m == message) {
            self.errors.push((reason, message));
        }
    }

    pub fn warn(&mut self, message: String) {
        if !self.warnings.contains(&message) {
            self.warnings.push(message);
        }
    }

    /// Whether the object is rejected.
    pub fn rejected(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The reason of the first error.
    pub fn reason(&self) -> Option<Reason> {
        self.errors.first().map(|(reason, _)| *reason)
    }

    /// The errors as one line, for an Event or a webhook denial.
    pub fn error_message(&self) -> String {
        self.errors
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The annotations that are not supported, by name.
    pub fn unsupported(&self) -> Vec<&str> {
        self.annotations
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Unsupported(_)))
            .map(|a| a.name.as_str())
            .collect()
    }

    /// Whether `sluice ingress check` should fail for this object: rejected, or with an
    /// annotation that is not supported.
    pub fn fails_check(&self) -> bool {
        self.rejected() || !self.unsupported().is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.rejected() {
            "REJECTED"
        } else if !self.unsupported().is_empty() {
            "served, with annotations not supported"
        } else {
            "served"
        };
        writeln!(f, "{}: {verdict}", self.object)?;
        for (reason, message) in &self.errors {
            writeln!(f, "  error ({}): {message}", reason.as_str())?;
        }
        let serves = if self.rejected() {
            "would serve"
        } else {
            "serves"
        };
        for line in &self.serves {
            writeln!(f, "  {serves} {line}")?;
        }
        for a in &self.annotations {
            writeln!(
                f,
                "  annotation {}: {} ({})",
                a.name,
                a.outcome.label(),
                a.outcome.detail()
            )?;
        }
        for warning in &self.warnings {
            writeln!(f, "  warning: {warning}")?;
        }
        for difference in &self.differences {
            writeln!(f, "  differs from ingress-nginx: {difference}")?;
        }
        Ok(())
    }
}
