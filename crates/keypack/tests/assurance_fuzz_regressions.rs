//! Replays every input kept under `fuzz/regressions/<target>/` through the fuzz target bodies
//! (`fuzz/src/lib.rs`, included here), plus the sops test vectors through both sops targets,
//! on every `cargo test`: a crash the fuzzer once found stays fixed (SECURITY.md "Fuzzing").
//!
//! Each target must have at least one input there (seeds are kept alongside crashes), or the
//! replay fails naming the target.
//!
//! To keep a new crash: copy the input from `fuzz/artifacts/<target>/` into
//! `fuzz/regressions/<target>/` with a name that says what it was.

#[path = "../../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz;

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 6] = [
    ("sops_parse", fuzz::sops_parse),
    ("sops_decrypt", fuzz::sops_decrypt),
    ("repo_resolve", fuzz::repo_resolve),
    ("ventoy_json", fuzz::ventoy_json),
    ("ventoy_inspect", fuzz::ventoy_inspect),
    ("bundle_read", fuzz::bundle_read),
];

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn replay(name: &str, target: Target, input: &Path, data: &[u8]) {
    let result = std::panic::catch_unwind(|| target(data));
    assert!(
        result.is_ok(),
        "fuzz target {name} panics again on {}",
        input.display()
    );
}

#[test]
fn assurance_fuzz_regressions_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    let mut empty = Vec::new();
    for (name, target) in TARGETS {
        let inputs = files(&root.join(name));
        for input in &inputs {
            replay(name, target, input, &std::fs::read(input).unwrap());
        }
        eprintln!("{name}: replayed {} regression input(s)", inputs.len());
        if inputs.is_empty() {
            empty.push(name);
        }
    }
    // A target with no kept input would make this test pass without running it at all.
    assert!(
        empty.is_empty(),
        "fuzz target(s) with no input under {}: {}",
        root.display(),
        empty.join(", ")
    );
}

/// The sops vectors through the sops targets, with the store byte each extension implies: the
/// targets' own code must accept what the real sops writes (and the decrypt walk must run).
#[test]
fn assurance_fuzz_targets_accept_the_sops_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sops/tests/vectors");
    let mut n = 0;
    for input in files(&dir) {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        let store = if name.ends_with(".yaml") {
            0
        } else if name.ends_with(".json") {
            1
        } else if name.ends_with(".env") {
            2
        } else if name.ends_with(".ini") {
            3
        } else {
            4
        };
        let mut data = vec![store];
        data.extend(std::fs::read(&input).unwrap());
        replay("sops_parse", fuzz::sops_parse, &input, &data);
        replay("sops_decrypt", fuzz::sops_decrypt, &input, &data);
        n += 1;
    }
    assert!(n > 0, "no sops vectors found in {}", dir.display());
}
