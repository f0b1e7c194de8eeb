#!/usr/bin/env bash
# Proves that the vendored Pingora crates are pristine 0.9.1 plus patches/*.patch, in order.
#
# The pristine sources come from crates.io through cargo (pristine/Cargo.lock pins each
# crate's checksum). They are copied, the patches applied, and the result compared with
# the vendored trees. Any difference is printed as a unified diff on stdout and the check
# fails: an edit made in the vendored tree must become a patch. To write a new patch,
# edit the vendored tree, then run
#     third_party/pingora/check.sh > /tmp/new.patch
# (not straight into patches/: the check applies every file there), add a header (problem,
# fix) above the diff and move it to patches/NNNN-what-it-does.patch.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
crates=(pingora-core pingora-proxy pingora-runtime)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

manifest="$here/pristine/Cargo.toml"
cargo fetch --locked --manifest-path "$manifest" >&2
metadata="$(cargo metadata --locked --format-version 1 --manifest-path "$manifest")"

for crate in "${crates[@]}"; do
    source_manifest="$(grep -o "\"manifest_path\":\"[^\"]*/$crate-0\.9\.1/Cargo\.toml\"" <<<"$metadata" |
        head -n 1 | cut -d'"' -f4)"
    if [ -z "$source_manifest" ]; then
        echo "check.sh: cargo did not report the pristine source of $crate 0.9.1" >&2
        exit 1
    fi
    cp -a "$(dirname "$source_manifest")" "$work/$crate"
    rm -f "$work/$crate/.cargo-ok"
done

shopt -s nullglob
patches=("$here"/patches/*.patch)
for patch in "${patches[@]}"; do
    if ! (cd "$work" && git apply --whitespace=nowarn "$patch"); then
        echo "check.sh: $(basename "$patch") does not apply on pristine 0.9.1 plus the patches before it" >&2
        exit 1
    fi
done

status=0
for crate in "${crates[@]}"; do
    if ! (cd "$work" && diff -ruN "$crate" "$here/$crate" |
        sed -e "s|^diff -ruN $crate/\([^ ]*\) $here/|diff -ruN a/$crate/\1 b/|" -e "s|^--- $crate/|--- a/$crate/|" -e "s|^+++ $here/$crate/|+++ b/$crate/|"); then
        status=1
    fi
done
if [ "$status" -ne 0 ]; then
    echo "check.sh: the vendored Pingora differs from pristine 0.9.1 plus third_party/pingora/patches (diff above)" >&2
    exit 1
fi
echo "check.sh: vendored pingora-core, pingora-proxy and pingora-runtime = pristine 0.9.1 + ${#patches[@]} patches" >&2
