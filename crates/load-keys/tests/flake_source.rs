//! The flake builds its Rust checks (`checks.clippy`, `checks.tests`, the packages) from the
//! source set `lib.fileset.unions [ … ]` in `flake.nix`'s `commonArgs.src`. A path missing from
//! that list breaks those checks on a machine with Nix, which this project's CI does not have; so
//! this test reads the list from `flake.nix`, copies exactly those paths (the files git tracks
//! or would track: a flake sees only those) into a folder of its own, and runs
//! `cargo check --workspace --all-targets --offline --locked` there.
//!
//! The copy lives at `<target>/flake-source-check/src` and builds into
//! `<target>/flake-source-check/target`: fixed paths and the files' own modification times make
//! a re-run incremental. The first run builds every dependency (a few minutes).

use std::path::{Path, PathBuf};
use std::process::Command;

use rnix::{SyntaxKind, SyntaxNode};

fn skip(test: &str, why: &str) {
    if std::env::var("KEYPACK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: required but cannot run: {why}");
    }
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("KEYPACK-SKIPPED: {test}: {why}\n").as_bytes(),
    );
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn squash(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

fn attrpath_of(apv: &SyntaxNode) -> Vec<String> {
    apv.children()
        .find(|c| c.kind() == SyntaxKind::NODE_ATTRPATH)
        .map(|p| p.children().map(|c| c.text().to_string()).collect())
        .unwrap_or_default()
}

/// The names of the bindings (`a.b = …;`, let or attribute set) enclosing `node`, outermost first.
fn enclosing_names(node: &SyntaxNode) -> Vec<String> {
    let mut out = Vec::new();
    for anc in node.ancestors() {
        if anc.kind() == SyntaxKind::NODE_ATTRPATH_VALUE {
            let mut path = attrpath_of(&anc);
            path.extend(out);
            out = path;
        }
    }
    out
}

/// The paths (relative, without `./`) of the `lib.fileset.unions [ … ]` list that is the
/// `fileset` of `commonArgs.src`, and the `root` it is relative to.
fn flake_rust_source_set(flake: &str) -> Vec<String> {
    let parsed = rnix::Root::parse(flake);
    assert!(
        parsed.errors().is_empty(),
        "flake.nix: {:?}",
        parsed.errors()
    );
    let root = parsed.syntax();
    let sources: Vec<SyntaxNode> = root
        .descendants()
        .filter(|n| n.kind() == SyntaxKind::NODE_ATTRPATH_VALUE)
        .filter(|n| {
            let names = enclosing_names(n);
            names.ends_with(&["commonArgs".into(), "src".into()])
        })
        .collect();
    assert_eq!(
        sources.len(),
        1,
        "flake.nix: expected one `commonArgs.src` binding, found {}",
        sources.len()
    );
    let src = &sources[0];
    let value = src.children().last().expect("src value");
    let text = squash(&value.text().to_string());
    assert!(
        text.starts_with("lib.fileset.toSource{root=./.;"),
        "flake.nix: commonArgs.src is no longer `lib.fileset.toSource {{ root = ./.; … }}`; \
         update this test: {text}"
    );
    let filesets: Vec<SyntaxNode> = value
        .descendants()
        .filter(|n| {
            n.kind() == SyntaxKind::NODE_ATTRPATH_VALUE && attrpath_of(n) == ["fileset".to_owned()]
        })
        .collect();
    assert_eq!(filesets.len(), 1, "flake.nix: commonArgs.src.fileset");
    let fileset = filesets[0].children().last().expect("fileset value");
    assert_eq!(
        fileset.kind(),
        SyntaxKind::NODE_APPLY,
        "flake.nix: commonArgs.src.fileset is not `lib.fileset.unions [ … ]`; update this test"
    );
    let parts: Vec<SyntaxNode> = fileset.children().collect();
    assert_eq!(
        parts.len(),
        2,
        "flake.nix: commonArgs.src.fileset: {fileset}"
    );
    assert_eq!(
        squash(&parts[0].text().to_string()),
        "lib.fileset.unions",
        "flake.nix: commonArgs.src.fileset is not `lib.fileset.unions [ … ]`; update this test"
    );
    assert_eq!(parts[1].kind(), SyntaxKind::NODE_LIST);
    let mut out = Vec::new();
    for item in parts[1].children() {
        let t = item.text().to_string();
        assert_eq!(
            item.kind(),
            SyntaxKind::NODE_PATH_REL,
            "flake.nix: fileset entry {t} is not a plain relative path; this test only reads those"
        );
        let rel = t.strip_prefix("./").unwrap_or(&t).trim_end_matches('/');
        assert!(
            !rel.is_empty() && !rel.split('/').any(|c| c == ".." || c == "."),
            "flake.nix: fileset entry {t} is not below the root"
        );
        out.push(rel.to_owned());
    }
    out
}

#[test]
fn the_source_set_is_read_from_the_flake() {
    // The parser sees what the flake says, not a copy of it.
    let flake = std::fs::read_to_string(repo().join("flake.nix")).expect("flake.nix");
    let set = flake_rust_source_set(&flake);
    for must in ["Cargo.toml", "Cargo.lock", "crates"] {
        assert!(set.iter().any(|p| p == must), "{must} missing from {set:?}");
    }
    let fake = r#"{ outputs = _: let commonArgs = { src = lib.fileset.toSource { root = ./.;
        fileset = lib.fileset.unions [ ./Cargo.toml ./a/b ]; }; }; in { }; }"#;
    assert_eq!(flake_rust_source_set(fake), ["Cargo.toml", "a/b"]);
}

/// Files under `paths` that a flake would see: tracked, or untracked and not ignored.
fn git_files(repo: &Path, paths: &[String]) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
        ])
        .args(paths)
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git ls-files: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut files: Vec<PathBuf> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| PathBuf::from(String::from_utf8_lossy(s).into_owned()))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// Copies `rel` from `from` to `to`, keeping the modification time (so cargo's fingerprints
/// of an earlier run stay valid) and symbolic links as links.
fn copy_file(from: &Path, to: &Path, rel: &Path) {
    let src = from.join(rel);
    let dst = to.join(rel);
    let Ok(meta) = std::fs::symlink_metadata(&src) else {
        return; // tracked but deleted in the working tree: the flake does not see it either
    };
    std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&src).expect("readlink");
        std::os::unix::fs::symlink(target, &dst).expect("symlink");
        return;
    }
    std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    let f = std::fs::File::options()
        .write(true)
        .open(&dst)
        .expect("open copy");
    f.set_modified(meta.modified().expect("mtime"))
        .expect("set mtime");
}

#[test]
fn cargo_checks_the_workspace_from_exactly_the_flake_source_set() {
    const TEST: &str = "cargo_checks_the_workspace_from_exactly_the_flake_source_set";
    let repo = repo();
    if !repo.join(".git").exists() {
        // Inside the flake's own build the source already is that set.
        return skip(
            TEST,
            "not a git checkout (the flake's source set is what git tracks)",
        );
    }
    if Command::new("git").arg("--version").output().is_err() {
        return skip(TEST, "git not found");
    }
    let flake = std::fs::read_to_string(repo.join("flake.nix")).expect("flake.nix");
    let set = flake_rust_source_set(&flake);
    for p in &set {
        assert!(
            repo.join(p).exists(),
            "flake.nix names ./{p}, which does not exist"
        );
    }
    let files = git_files(&repo, &set).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        files.iter().any(|f| f == Path::new("Cargo.toml")),
        "git lists no Cargo.toml"
    );

    let work = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("flake-source-check");
    let src = work.join("src");
    if src.exists() {
        std::fs::remove_dir_all(&src).expect("remove the previous copy");
    }
    std::fs::create_dir_all(&src).expect("mkdir");
    for f in &files {
        copy_file(&repo, &src, f);
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&src)
        .args([
            "check",
            "--workspace",
            "--all-targets",
            "--offline",
            "--locked",
            "--quiet",
        ])
        .env("CARGO_TARGET_DIR", work.join("target"))
        // The outer cargo's jobserver and package variables are not for this build.
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_PRIMARY_PACKAGE");
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo check of a copy of flake.nix's source set {set:?} (in {}) failed: a path the \
         workspace needs is missing from `lib.fileset.unions` in flake.nix or not tracked by \
         git (or the workspace itself does not build: check that first):\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
