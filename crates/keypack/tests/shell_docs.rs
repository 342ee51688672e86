//! `keypack completions` and `keypack man` come from the same definition as `--help`, media
//! plugins' flags included.

use std::process::Command;

fn keypack(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keypack"))
        .args(args)
        .output()
        .expect("keypack runs")
}

#[test]
fn completions_for_every_shell_know_the_verbs_and_the_media_flags() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = keypack(&["completions", shell]);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        for word in ["build", "verify", "media", "ventoy-dir", "kernel"] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = keypack(&["completions", "tcsh"]);
    assert!(!out.status.success(), "an unknown shell is an error");
}

#[test]
fn man_writes_a_page_per_verb_with_the_plugins_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("man1");
    let out = keypack(&["man", "--out", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "keypack.1",
        "keypack-build.1",
        "keypack-verify.1",
        "keypack-media-update.1",
        "keypack-run.1",
        "keypack-completions.1",
    ] {
        let text =
            std::fs::read_to_string(out_dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is roff"
        );
    }
    let build = std::fs::read_to_string(out_dir.join("keypack-build.1")).unwrap();
    assert!(
        build.contains("ventoy\\-dir") && build.contains("kernel"),
        "keypack-build.1 lists the media plugins' flags"
    );
}
