//! `sluice ingress check`, the migration report, on a corpus of 40 realistic Ingresses
//! (tests/data/ingress-corpus.yaml) that uses every annotation the issue lists: the report
//! must match the golden file word for word. After an intended change, regenerate it with
//! `SLUICE_UPDATE_GOLDEN=1 cargo test --test ingress_check` and review the diff.

mod support;

use std::process::Command;
use support::*;

const CORPUS: &str = "tests/data/ingress-corpus.yaml";
const GOLDEN: &str = "tests/data/ingress-corpus.report";

fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(sluice_binary())
        .args(["-c", "/nonexistent/sluice.yaml", "ingress", "check"])
        .args(args)
        .output()
        .expect("run sluice ingress check");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_migration_report_of_the_corpus_matches_the_golden_file() {
    let (code, report, stderr) = check(&["--file", CORPUS]);
    if std::env::var_os("SLUICE_UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &report).expect("write the golden file");
    }
    let golden = std::fs::read_to_string(GOLDEN).expect("the golden file");
    if report != golden {
        let first = report
            .lines()
            .zip(golden.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(report.lines().count().min(golden.lines().count()));
        panic!(
            "the report differs from {GOLDEN} at line {}:\n  now:    {:?}\n  golden: {:?}\n\
             (regenerate with SLUICE_UPDATE_GOLDEN=1 after checking the change is intended)",
            first + 1,
            report.lines().nth(first),
            golden.lines().nth(first)
        );
    }
    // Something is rejected or not supported in the corpus: the exit status says so.
    assert_eq!(code, Some(1), "{stderr}");
    for expected in [
        "Ingress blog/ghost-admin",
        "error (RefusedAnnotation): annotation configuration-snippet",
        "error (InvalidAnnotation): annotation proxy-body-size",
        "annotation upstream-hash-by: mapped (consistent_hash on \"$host$request_uri\")",
        "40 Ingresses from tests/data/ingress-corpus.yaml",
    ] {
        assert!(report.contains(expected), "the report lacks {expected:?}");
    }
}

#[test]
fn a_clean_file_passes_and_a_missing_one_is_a_clear_error() {
    let dir = ScratchDir::new();
    let clean = dir.write(
        "clean.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\n\
         metadata: { name: web, namespace: shop }\n\
         spec:\n  ingressClassName: nginx\n  rules:\n  - host: shop.test\n    http:\n      paths:\n\
         \x20     - { path: /, pathType: Prefix, backend: { service: { name: web, port: { number: 80 } } } }\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: { name: web, namespace: shop }\n\
         spec: { ports: [{ name: http, port: 80 }] }\n",
    );
    let (code, report, _) = check(&["--file", &clean.display().to_string()]);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("Ingress shop/web: served\n"), "{report}");
    let (code, _, stderr) = check(&["--file", "/nonexistent/all.yaml"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("cannot read /nonexistent/all.yaml"),
        "{stderr}"
    );
}
