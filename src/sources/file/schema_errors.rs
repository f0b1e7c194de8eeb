//! Every schema error of a file in one run.
//!
//! serde stops at the first unknown key or wrong type. To report them all, the file is
//! deserialized again after each error with the offending node repaired in a copy of the
//! document: an unknown or ill-typed key is removed, a missing key gets an empty value, a
//! sequence element that fits no form is dropped. Each pass reads the repaired document as
//! YAML text, so scalars mean what they mean in the file (`grace_period: 0` is a string to
//! a string field). Errors are located by their key path in the original file; an error
//! caused by a repair (the removed key is now missing) is not reported.

use super::location::PositionIndex;
use super::schema::RawConfig;
use super::ConfigError;
use serde_yaml::Value;
use std::collections::HashMap;

/// At most this many schema errors are collected from one file.
const MAX_ERRORS: usize = 50;
/// At most this many passes of serde over one file (a repair may take three).
const MAX_PASSES: usize = 4 * MAX_ERRORS;

/// One step of a key path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The steps of a serde path (enum variants and unknown segments name no node).
fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    path.iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
            _ => None,
        })
        .collect()
}

fn render(steps: &[Step]) -> String {
    let mut path = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Step::Index(index) => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

fn node_mut<'a>(value: &'a mut Value, steps: &[Step]) -> Option<&'a mut Value> {
    steps.iter().try_fold(value, |node, step| match step {
        Step::Key(key) => node.as_mapping_mut()?.get_mut(key.as_str()),
        Step::Index(index) => node.as_sequence_mut()?.get_mut(*index),
    })
}

/// The repaired document, and how its sequence indexes map back to the file's.
struct Repairs {
    document: Value,
    /// Original sequence path → original indexes of the elements dropped from it.
    dropped: HashMap<String, Vec<usize>>,
}

impl Repairs {
    /// The file's steps for `steps` of the repaired document.
    fn original(&self, steps: &[Step]) -> Vec<Step> {
        let mut original = Vec::with_capacity(steps.len());
        for step in steps {
            let step = match step {
                Step::Index(index) => {
                    let mut index = *index;
                    let mut dropped = self
                        .dropped
                        .get(&render(&original))
                        .cloned()
                        .unwrap_or_default();
                    dropped.sort_unstable();
                    for at in dropped {
                        if at <= index {
                            index += 1;
                        }
                    }
                    Step::Index(index)
                }
                key => key.clone(),
            };
            original.push(step);
        }
        original
    }

    /// Removes the node at `steps` (of the repaired document); false if there is none.
    fn remove(&mut self, steps: &[Step], original: &[Step]) -> bool {
        let Some((last, parent)) = steps.split_last() else {
            return false;
        };
        let Some(parent) = node_mut(&mut self.document, parent) else {
            return false;
        };
        match (last, original.last()) {
            (Step::Key(key), _) => parent
                .as_mapping_mut()
                .and_then(|m| m.remove(key.as_str()))
                .is_some(),
            (Step::Index(index), Some(Step::Index(original_index))) => {
                let Some(sequence) = parent.as_sequence_mut() else {
                    return false;
                };
                if *index >= sequence.len() {
                    return false;
                }
                sequence.remove(*index);
                let sequence_path = render(&original[..original.len() - 1]);
                self.dropped
                    .entry(sequence_path)
                    .or_default()
                    .push(*original_index);
                true
            }
            _ => false,
        }
    }

    /// Gives the mapping at `steps` an empty `field`; false if it is not a mapping.
    fn fill(&mut self, steps: &[Step], field: &str) -> bool {
        node_mut(&mut self.document, steps)
            .and_then(Value::as_mapping_mut)
            .map(|m| m.insert(Value::from(field), Value::from("")))
            .is_some()
    }
}

/// serde_yaml's message without its own path prefix and its position (which is the
/// position in the repaired text, not in the file).
fn clean(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(cut) => &message[..cut],
        None => message,
    };
    match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && !prefix.contains(' ') => rest.to_string(),
        _ => message.to_string(),
    }
}

/// Deserializes `source` (valid YAML whose document is `document`), or returns every
/// schema error, each located in `file` through `positions`.
pub(super) fn deserialize(
    file: &str,
    source: &str,
    document: Value,
    positions: &PositionIndex,
) -> Result<RawConfig, Vec<ConfigError>> {
    let mut error =
        match serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(source)) {
            Ok(raw) => return Ok(raw),
            Err(error) => error,
        };
    let mut repairs = Repairs {
        document,
        dropped: HashMap::new(),
    };
    let mut errors: Vec<ConfigError> = Vec::new();
    // Repairs made at each original key path: an error there again is the repair's doing.
    let mut repairs_at: HashMap<String, u32> = HashMap::new();
    for _ in 0..MAX_PASSES {
        let steps = steps(error.path());
        let original = repairs.original(&steps);
        let message = clean(&error.inner().to_string());
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
            .map(str::to_string);
        let target = match &missing {
            Some(field) => render(&[original.clone(), vec![Step::Key(field.clone())]].concat()),
            None => render(&original),
        };
        let repaired_before = repairs_at.get(&target).copied().unwrap_or(0);
        repairs_at.insert(target.clone(), repaired_before + 1);
        if repaired_before == 0 {
            let key_path = render(&original);
            errors.push(ConfigError {
                file: file.to_string(),
                position: positions.find(&key_path),
                key_path,
                message,
            });
        }
        let fixed = match (&missing, repaired_before) {
            // A placeholder of the wrong type, or a removed key that is required: drop the
            // item that holds it (the document shrinks, so this ends).
            (Some(_), 1..) => repairs.remove(&steps, &original),
            (None, 2..) => {
                let (parent, original_parent) = (
                    &steps[..steps.len().saturating_sub(1)],
                    &original[..original.len().saturating_sub(1)],
                );
                repairs.remove(parent, original_parent)
            }
            (Some(field), 0) => repairs.fill(&steps, field),
            (None, _) => repairs.remove(&steps, &original),
        };
        if !fixed || errors.len() >= MAX_ERRORS {
            break;
        }
        let Ok(text) = serde_yaml::to_string(&repairs.document) else {
            break;
        };
        error = match serde_path_to_error::deserialize::<_, RawConfig>(
            serde_yaml::Deserializer::from_str(&text),
        ) {
            Ok(_) => break,
            Err(error) => error,
        };
    }
    errors.sort_by_key(|e| (e.position.line, e.position.column));
    Err(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(source: &str) -> Vec<String> {
        let document: Value = serde_yaml::from_str(source).expect("valid YAML");
        let positions = PositionIndex::build(source);
        match deserialize("t.yaml", source, document, &positions) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_unknown_key_and_wrong_type_in_one_run() {
        let errors = errors_of(
            "server: { grace_period: 0, thread: 2 }\n\
             listeners:\n  - name: web\n    lisen: 127.0.0.1:1\n\
             upstreams:\n  - name: u\n    hash_points: many\n    balance: fastest\n\
             \x20   endpoints: [\"127.0.0.1:2\", { adress: \"127.0.0.1:3\" }]\n",
        );
        let expected = [
            "t.yaml:1:36: server.thread: unknown field `thread`",
            "t.yaml:3:", // listeners[0]: missing field `listen` (it is spelt lisen)
            "t.yaml:4:12: listeners[0].lisen: unknown field `lisen`",
            "t.yaml:7:18: upstreams[0].hash_points: invalid type",
            "t.yaml:8:14: upstreams[0].balance: unknown variant `fastest`",
            "t.yaml:9:",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, start) in errors.iter().zip(expected) {
            assert!(error.starts_with(start), "{errors:#?}");
        }
        assert!(errors[1].contains("listeners[0]: missing field `listen`"));
        assert!(errors[5].contains("upstreams[0].endpoints[1]: an endpoint"));
    }

    #[test]
    fn a_missing_key_is_reported_once_at_its_item() {
        let errors = errors_of("listeners:\n  - listen: 1\n  - name: b\n    listen: 2\n    x: 1\n");
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].starts_with("t.yaml:2:")
                && errors[0].contains("listeners[0]: missing field `name`"),
            "{errors:#?}"
        );
        assert!(errors[1].starts_with("t.yaml:5:8: listeners[1].x: unknown field `x`"));
    }

    #[test]
    fn keys_that_look_like_paths_are_no_problem() {
        let errors = errors_of("\"foo[1]]\": 1\n\"a.b[x\": 2\nlisteners: []\n");
        assert_eq!(errors.len(), 2, "{errors:#?}");
    }

    #[test]
    fn a_required_key_of_the_wrong_type_does_not_hide_later_errors() {
        let errors = errors_of(
            "routes:\n  - { name: r, listener: web, upstream: u, rate_limit: { burst: 5 } }\n\
             listeners:\n  - { name: web, listen: \"127.0.0.1:1\", tls: { certificates: x } }\n\
             upstreams:\n  - { name: u, kubernetes: { namespace: n, service: s, port: [80] } }\n\
             \x20 - { name: v, typo: 1 }\n",
        );
        let expected = [
            "routes[0].rate_limit: missing field `requests_per_second`",
            "listeners[0].tls.certificates: invalid type",
            "upstreams[0].kubernetes.port:",
            "upstreams[1].typo: unknown field",
        ];
        for wanted in expected {
            assert!(
                errors.iter().any(|e| e.contains(wanted)),
                "{wanted}: {errors:#?}"
            );
        }
    }

    #[test]
    fn indexes_after_a_dropped_element_are_the_files() {
        let errors = errors_of(
            "upstreams:\n  - name: u\n    endpoints: [{ adress: a }, \"b\", { weight: x, address: c }]\n",
        );
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].contains("upstreams[0].endpoints[0]"),
            "{errors:#?}"
        );
        assert!(
            errors[1].contains("upstreams[0].endpoints[2]"),
            "{errors:#?}"
        );
    }
}
