//! docker/Dockerfile's Rust toolchain can build Cargo.lock: it is at least the highest
//! `rust-version` of every locked package (crates.io sources from the local registry, plus
//! sluice and the vendored Pingora crates), since `cargo build --locked` refuses a crate
//! that needs a newer Rust and no Docker engine runs here to find out. Also `.dockerignore`
//! keeps `target/` (gigabytes) out of the build context.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// "1.95" or "1.95.0" as numbers, so that 1.100 > 1.95 and 1.95 == 1.95.0.
fn version(text: &str, what: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = text
        .split('.')
        .map(|p| {
            p.parse::<u64>()
                .unwrap_or_else(|_| panic!("{what}: {text:?} is not a version"))
        })
        .collect();
    while parts.len() > 1 && parts.last() == Some(&0) {
        parts.pop();
    }
    parts
}

/// The value of `key = "..."` in a manifest's [package] table (first occurrence; a line
/// scanner is enough for the normalized manifests of the registry and ours).
/// `rust-version.workspace = true` and the like give None: inherited, not stated here.
fn package_field(manifest: &str, key: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some(rest) = line.strip_prefix(key).filter(|_| in_package) {
            let value = rest.trim_start().strip_prefix('=')?.trim();
            return value
                .strip_prefix('"')?
                .split('"')
                .next()
                .map(str::to_string);
        }
    }
    None
}

/// The version in the first `FROM rust:X.Y[.Z]-...` line, as written there.
fn dockerfile_toolchain() -> String {
    let dockerfile = read(&Path::new(ROOT).join("docker/Dockerfile"));
    let image = dockerfile
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .flat_map(str::split_whitespace)
        .find_map(|word| word.split_once("rust:").map(|(_, tag)| tag.to_string()))
        .expect("docker/Dockerfile has no `FROM rust:...` line");
    let number: String = image
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    assert!(
        !number.is_empty(),
        "docker/Dockerfile: `rust:{image}` names no version; pin one such as rust:1.95.0-bookworm"
    );
    number.trim_end_matches('.').to_string()
}

/// Manifests of the path packages: sluice itself and the `{ path = "..." }` entries of
/// Cargo.toml (the vendored Pingora crates in [patch.crates-io]), by package name.
fn path_manifests() -> HashMap<String, PathBuf> {
    let root = Path::new(ROOT);
    let mut manifests = vec![root.join("Cargo.toml")];
    for line in read(&root.join("Cargo.toml")).lines() {
        // Inline tables only: a [[bench]]'s `path = "bench/ring_pick.rs"` is no package.
        if let Some((_, rest)) = line
            .split_once('{')
            .and_then(|(_, t)| t.split_once("path = \""))
        {
            let dir = rest.split('"').next().unwrap_or_default();
            manifests.push(root.join(dir).join("Cargo.toml"));
        }
    }
    manifests
        .into_iter()
        .map(|m| {
            let name = package_field(&read(&m), "name")
                .unwrap_or_else(|| panic!("{}: no [package] name", m.display()));
            (name, m)
        })
        .collect()
}

fn cargo_home() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("neither CARGO_HOME nor HOME is set"))
                .join(".cargo")
        }
    }
}

#[test]
fn dockerfile_toolchain_builds_every_locked_package() {
    let toolchain_text = dockerfile_toolchain();
    let toolchain = version(&toolchain_text, "docker/Dockerfile");
    let registry_src = cargo_home().join("registry/src");
    // One directory per registry index (index.crates.io-HASH), each with NAME-VERSION/ trees.
    let indexes: Vec<PathBuf> = std::fs::read_dir(&registry_src)
        .map(|dirs| dirs.flatten().map(|d| d.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    let paths = path_manifests();

    // (rust-version, package) for every locked package that states one.
    let mut needs: Vec<(Vec<u64>, String)> = Vec::new();
    let (mut registry_found, mut skipped) = (0, Vec::new());
    for block in read(&Path::new(ROOT).join("Cargo.lock"))
        .split("[[package]]")
        .skip(1)
    {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                let value = l.strip_prefix(key)?.trim_start().strip_prefix("= \"")?;
                Some(value.trim_end_matches('"').to_string())
            })
        };
        let name = field("name").expect("a [[package]] without name in Cargo.lock");
        let version_text = field("version").expect("a [[package]] without version in Cargo.lock");
        let manifest = match field("source") {
            None => paths.get(&name).cloned().unwrap_or_else(|| {
                panic!("Cargo.lock has path package {name}, but Cargo.toml names no path for it")
            }),
            Some(s) if s.starts_with("registry+") || s.starts_with("sparse+") => {
                let dir = format!("{name}-{version_text}/Cargo.toml");
                match indexes.iter().map(|i| i.join(&dir)).find(|m| m.is_file()) {
                    Some(manifest) => {
                        registry_found += 1;
                        manifest
                    }
                    None => {
                        skipped.push(format!("{name} {version_text}"));
                        continue;
                    }
                }
            }
            Some(other) => panic!("{name} {version_text}: source {other} is not handled here"),
        };
        if let Some(rv) = package_field(&read(&manifest), "rust-version") {
            let what = format!(
                "rust-version of {name} {version_text} ({})",
                manifest.display()
            );
            needs.push((
                version(&rv, &what),
                format!("{name} {version_text} (rust-version {rv})"),
            ));
        }
    }
    // `cargo test` compiled this test, so it extracted the sources of every package built on
    // this platform: a missing one belongs to another platform (49 of the 383 locked packages
    // are not built on x86_64 Linux: windows-sys, wasm-bindgen, security-framework, jni, ...;
    // `cargo build` downloads only this platform's, `cargo fetch` every platform's). The image
    // is Linux too, so they are skipped. No source at all means the registry is elsewhere.
    assert!(
        registry_found > 0,
        "no crate sources under {}: run `cargo fetch --locked` first",
        registry_src.display()
    );
    if !skipped.is_empty() {
        eprintln!(
            "not checked, sources not downloaded (not built on this platform; \
             `cargo fetch --locked` downloads them): {}",
            skipped.join(", ")
        );
    }

    needs.sort();
    let (highest, package) = needs
        .last()
        .expect("no locked package states a rust-version");
    let too_new: Vec<&str> = needs
        .iter()
        .rev()
        .filter(|(rv, _)| *rv > toolchain)
        .map(|(_, p)| p.as_str())
        .collect();
    assert!(
        too_new.is_empty(),
        "docker/Dockerfile builds with Rust {toolchain_text}, but {} need a newer one: pin \
         `FROM rust:X.Y.Z-bookworm` at {} or later",
        too_new.join(", "),
        dotted(highest)
    );
    eprintln!("Rust {toolchain_text} covers the highest rust-version, {package}");
}

fn dotted(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

#[test]
fn dockerignore_excludes_target() {
    let path = Path::new(ROOT).join(".dockerignore");
    let text = read(&path);
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let is_target = |p: &str| {
        let p = p.trim_start_matches('/').trim_end_matches('/');
        ["target", "**/target", "target/**", "target/*"].contains(&p)
    };
    // The last pattern that matches wins: an exclusion, not re-included by a later `!target`.
    let last = patterns
        .iter()
        .rev()
        .find(|p| is_target(p.trim_start_matches('!')))
        .unwrap_or_else(|| panic!("{} does not exclude target/", path.display()));
    assert!(
        !last.starts_with('!'),
        "{} re-includes target/ ({last})",
        path.display()
    );
}
