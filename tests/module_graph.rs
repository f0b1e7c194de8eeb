//! The layering of `src/` (documented in src/lib.rs) holds: every `crate::` reference
//! between top-level modules points to a layer above, or to the same layer without a cycle.
//! Reads the sources; `cargo test --test module_graph` prints the graph on failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules by layer, top first: a module may use its own layer and those above.
const LAYERS: &[&[&str]] = &[
    &["observe", "tls", "sockets", "priority", "cli"],
    &["model"],
    &["compile"],
    &["sources"],
    &["routing", "upstream"],
    &["limits"],
    &["lifecycle"],
    &["state"],
    &["proxy"],
    &["services"],
    &["ops"],
    &["server"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a file under `src/` belongs to (`None` for the crate roots).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_string())
}

/// `source` without comment lines and without the items under `#[cfg(test)]` (the item's
/// braces are matched, so code after a test module still counts).
fn without_tests_and_comments(source: &str) -> String {
    let code: String = source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut kept = String::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        kept.push_str(&rest[..at]);
        let item = &rest[at..];
        // The item ends at its `;` or at the brace that closes its first `{`.
        let end = match (item.find('{'), item.find(';')) {
            (Some(open), semicolon) if semicolon.is_none_or(|s| open < s) => {
                let mut depth = 0;
                let mut end = item.len();
                for (i, c) in item[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (_, Some(semicolon)) => semicolon + 1,
            _ => item.len(),
        };
        rest = &item[end..];
    }
    kept.push_str(rest);
    kept
}

/// The first identifier of `text`.
fn identifier(text: &str) -> String {
    text.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules `source` names through `crate::`, outside comments and tests.
fn references(source: &str) -> BTreeSet<String> {
    let code = without_tests_and_comments(source);
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.insert(identifier(rest));
            continue;
        };
        // `crate::{a::{b, c}, d}`: the first identifier of each item at depth 0.
        let mut depth = 0;
        let mut item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && !c.is_whitespace() => {
                    found.insert(identifier(&group[i..]));
                    item_start = false;
                }
                _ => {}
            }
        }
    }
    found.remove("");
    found
}

#[test]
fn references_are_read_from_use_trees_and_skip_tests() {
    let source = "use crate::{a::{b, c}, d};\n// crate::commented\n\
                  #[cfg(test)]\nmod tests { use crate::tested; }\nfn f() { crate::e::g(); }\n";
    let found: Vec<String> = references(source).into_iter().collect();
    assert_eq!(found, ["a", "d", "e"]);
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).expect("under src/");
            let Some(module) = module_of(relative) else {
                continue;
            };
            let source = std::fs::read_to_string(&path).expect("source is readable");
            let targets = edges.entry(module.clone()).or_default();
            for target in references(&source) {
                if target != module {
                    targets.insert(target);
                }
            }
        }
    }
    edges
}

#[test]
fn every_module_has_a_layer_and_every_edge_points_up() {
    let edges = graph();
    let mut wrong = Vec::new();
    for (from, targets) in &edges {
        let Some(from_layer) = layer_of(from) else {
            wrong.push(format!(
                "{from} is in no layer (add it to LAYERS and src/lib.rs)"
            ));
            continue;
        };
        for to in targets {
            match layer_of(to) {
                None => wrong.push(format!("{from} -> {to}: {to} is in no layer")),
                Some(to_layer) if to_layer > from_layer => {
                    wrong.push(format!("{from} -> {to} points down the layers"))
                }
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}\ngraph: {edges:#?}", wrong.join("\n"));
}

#[test]
fn the_module_graph_has_no_cycle() {
    let edges = graph();
    // Depth-first search with colours: grey = on the current path.
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        grey: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = grey.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = grey[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        grey.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, grey, done) {
                return Some(cycle);
            }
        }
        grey.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        let cycle = visit(node, &edges, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "cycle: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}
