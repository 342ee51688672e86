//! The README's quick start and `.ci/run` name scripts that exist and can be run: a renamed or
//! non-executable script would otherwise only show up on a newcomer's first try.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
}

/// Every `./scripts/NAME` mentioned in `text`.
fn scripts_named(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("./scripts/")
        .map(|(at, prefix)| {
            text[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn quick_start(readme: &str) -> &str {
    let start = readme
        .find("## Quick start")
        .expect("README.md has a \"Quick start\" section");
    let rest = &readme[start + 1..];
    let end = rest.find("\n## ").map_or(rest.len(), |i| i + 1);
    &readme[start..start + end]
}

fn assert_executable(name: &str) {
    let path = workspace().join("scripts").join(name);
    let meta = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{} is named but missing: {e}", path.display()));
    assert!(meta.is_file(), "{} is not a file", path.display());
    assert!(
        meta.permissions().mode() & 0o111 == 0o111,
        "{} is not executable by everyone",
        path.display()
    );
    let text = std::fs::read_to_string(&path).expect("scripts are text");
    assert!(text.starts_with("#!"), "{} has no #! line", path.display());
}

#[test]
fn readme_quick_start_names_the_demo_and_the_test_script_and_both_exist() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let names = scripts_named(quick_start(&readme));
    assert!(
        names.contains(&"demo".to_string()),
        "quick start names ./scripts/demo: {names:?}"
    );
    assert!(
        names.contains(&"test".to_string()),
        "quick start names ./scripts/test: {names:?}"
    );
    for name in &names {
        assert_executable(name);
    }
}

#[test]
fn ci_runs_the_same_scripts_as_the_readme() {
    let ci = std::fs::read_to_string(workspace().join(".ci/run")).expect(".ci/run");
    let names = scripts_named(&ci);
    assert_eq!(
        names,
        ["demo", "test"],
        ".ci/run runs exactly the README's two commands"
    );
    for name in &names {
        assert_executable(name);
    }
}

#[test]
fn script_names_are_found_in_text() {
    assert_eq!(
        scripts_named("run ./scripts/demo, then ./scripts/test; ./scripts/"),
        ["demo", "test"]
    );
}

/// Both quick-start scripts run bootstrap and then put its tools cache first on PATH: the tools
/// it installs (sops, age-plugin-yubikey) are only there. On a fresh Debian 12 the demo stopped
/// with "sops is not installed" right after "bootstrap: ready" without this; a machine with
/// another sops on PATH hid it.
#[test]
fn both_scripts_use_the_tools_bootstrap_installed() {
    for name in ["demo", "test"] {
        let text = std::fs::read_to_string(workspace().join("scripts").join(name)).unwrap();
        let bootstrap = text
            .find("bootstrap\"")
            .or_else(|| text.find("/bootstrap"))
            .unwrap_or_else(|| panic!("scripts/{name} does not run bootstrap"));
        let path = text
            .find("export PATH=\"$TOOLS/bin:$PATH\"")
            .unwrap_or_else(|| panic!("scripts/{name} does not put $TOOLS/bin on PATH"));
        assert!(
            text.contains("keypack-tools}"),
            "scripts/{name}: TOOLS is bootstrap's cache"
        );
        let run = text
            .find("cargo ")
            .unwrap_or_else(|| panic!("scripts/{name} runs no cargo"));
        assert!(
            bootstrap < run && path < run,
            "scripts/{name}: PATH set before the work"
        );
    }
}
