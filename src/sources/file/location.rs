//! Source positions of YAML nodes, by key path.
//!
//! serde keeps no positions once a value is deserialized, so semantic errors found after
//! parsing (an undefined upstream, a bad duration) could not point at the offending line.
//! This module walks the same text with yaml-rust2's marked event parser and records where
//! every node starts, keyed by its path (`upstreams[1].hash_key`), so validation can report
//! FILE:LINE:COL for any key path it complains about.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number, starting at 1.
    pub column: usize,
}

/// Positions of every node of a YAML document, keyed by key path.
#[derive(Debug, Default)]
pub struct PositionIndex {
    nodes: HashMap<String, Position>,
}

impl PositionIndex {
    /// Indexes `source`. A document that does not parse yields an empty index: serde reports
    /// the syntax error itself, with its own position.
    pub fn build(source: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(source);
        if parser.load(&mut builder, false).is_err() {
            return Self::default();
        }
        Self {
            nodes: builder.nodes,
        }
    }

    /// Position of the node at `path`, or of its nearest ancestor that exists in the file
    /// (a missing key is reported where its parent mapping starts).
    pub fn find(&self, path: &str) -> Position {
        let mut path = path;
        loop {
            if let Some(position) = self.nodes.get(path) {
                return *position;
            }
            match path.rfind(['.', '[']) {
                Some(cut) => path = &path[..cut],
                // Nothing of the path is in the file: its start.
                None => {
                    return self
                        .nodes
                        .get("")
                        .copied()
                        .unwrap_or(Position { line: 1, column: 1 })
                }
            }
        }
    }
}

/// One open collection while walking the event stream.
enum Frame {
    /// A mapping: `pending_key` holds the key whose value comes next.
    Mapping {
        path: String,
        pending_key: Option<String>,
    },
    /// A sequence: `next_index` is the index of the next item.
    Sequence { path: String, next_index: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    nodes: HashMap<String, Position>,
}

impl Builder {
    /// Path of the node that starts now, advancing the parent's key/index state.
    /// Returns `None` when the node is a mapping key rather than a value.
    fn next_node_path(&mut self, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Sequence { path, next_index }) => {
                let item = format!("{path}[{next_index}]");
                *next_index += 1;
                Some(item)
            }
            Some(Frame::Mapping { path, pending_key }) => match pending_key.take() {
                Some(key) if path.is_empty() => Some(key),
                Some(key) => Some(format!("{path}.{key}")),
                None => {
                    // This node is a key; complex (non-scalar) keys are not used in sluice.yaml.
                    *pending_key = Some(scalar.unwrap_or_default().to_string());
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let position = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match event {
            Event::Scalar(value, ..) => {
                if let Some(path) = self.next_node_path(Some(&value)) {
                    self.nodes.entry(path).or_insert(position);
                }
            }
            Event::Alias(_) => {
                if let Some(path) = self.next_node_path(None) {
                    self.nodes.entry(path).or_insert(position);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.next_node_path(None).unwrap_or_default();
                self.nodes.entry(path.clone()).or_insert(position);
                let frame = if matches!(event, Event::MappingStart(..)) {
                    Frame::Mapping {
                        path,
                        pending_key: None,
                    }
                } else {
                    Frame::Sequence {
                        path,
                        next_index: 0,
                    }
                };
                self.stack.push(frame);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
server:
  threads: 2
upstreams:
  - name: a
    endpoints: [\"10.0.0.1:80\", { address: \"10.0.0.2:80\", weight: 2 }]
  - name: b
    hash_key: \"$nope\"
";

    #[test]
    fn finds_block_and_flow_nodes() {
        let index = PositionIndex::build(SAMPLE);
        assert_eq!(
            index.find("server.threads"),
            Position {
                line: 2,
                column: 12
            }
        );
        assert_eq!(
            index.find("upstreams[1].hash_key"),
            Position {
                line: 7,
                column: 15
            }
        );
        assert_eq!(index.find("upstreams[0].endpoints[1].weight").line, 5);
        assert_eq!(
            index.find("upstreams[0].endpoints[0]"),
            Position {
                line: 5,
                column: 17
            }
        );
    }

    #[test]
    fn missing_key_falls_back_to_parent() {
        let index = PositionIndex::build(SAMPLE);
        assert_eq!(
            index.find("upstreams[1].balance"),
            index.find("upstreams[1]")
        );
        assert_eq!(index.find("upstreams[1]").line, 6);
    }
}
