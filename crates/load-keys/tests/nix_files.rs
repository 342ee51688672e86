//! Offline checks of `flake.nix` and `nix/**/*.nix`: Nix ≥ 2.18 (needed to evaluate nixpkgs) is
//! not available in CI, so the files are checked as syntax: they parse (rnix, and Debian's
//! `nix-instantiate --parse`), they are formatted (`nixfmt --check`) and have no dead code
//! (`deadnix --fail`), and their structure says what issue 6 requires — the unit ordering of the
//! stage-1 service, `postMountCommands` only under the scripted-stage-1 condition, one ed25519
//! host key, no secret as a path literal, the flake's outputs.
//!
//! Structural checks work on "bindings": every `a.b.c = value;` with its full attribute path
//! (the paths of all enclosing bindings, through `lib.mkIf`/`lib.mkMerge` calls) and the list of
//! `lib.mkIf` conditions it sits under, with let-bound names substituted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rnix::{SyntaxKind, SyntaxNode};

fn skip(test: &str, why: &str) {
    if std::env::var("KEYPACK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: required but cannot run: {why}");
    }
    // Written past libtest's capture (which swallows eprintln! of passing tests), so the
    // marker reaches scripts/test.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "KEYPACK-SKIPPED: {test}: {why}
"
        )
        .as_bytes(),
    );
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const REQUIRED: &[&str] = &[
    "flake.nix",
    "nix/default.nix",
    "nix/load-keys.nix",
    "nix/ssh.nix",
    "nix/boot.nix",
    "nix/network.nix",
    "nix/users.nix",
    "nix/programs.nix",
    "nix/tailscale.nix",
    "nix/pkgs/load-keys.nix",
    "nix/pkgs/keypack.nix",
    "nix/tests/vm.nix",
    "nix/tests/iso.nix",
    "nix/tests/fixtures.nix",
    "nix/tests/assertions.nix",
];

/// `flake.nix` and every `.nix` file under `nix/`, relative to the repository, sorted.
fn nix_files() -> Vec<String> {
    let mut out = vec!["flake.nix".to_owned()];
    let mut todo = vec![repo().join("nix")];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read nix/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "nix") {
                let rel = path.strip_prefix(repo()).expect("under repo");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn parse(rel: &str) -> SyntaxNode {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let parsed = rnix::Root::parse(&text);
    assert!(parsed.errors().is_empty(), "{rel}: {:?}", parsed.errors());
    parsed.syntax()
}

fn squash(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

#[derive(Debug)]
struct Binding {
    path: Vec<String>,
    value: SyntaxNode,
    guards: Vec<String>,
}

impl Binding {
    fn value_text(&self) -> String {
        squash(&self.value.text().to_string())
    }
    /// String literals anywhere in the value, without quotes.
    fn strings(&self) -> Vec<String> {
        self.value
            .descendants()
            .filter(|n| n.kind() == SyntaxKind::NODE_STRING)
            .map(|n| n.text().to_string().trim_matches('"').to_owned())
            .collect()
    }
}

struct NixFile {
    name: String,
    root: SyntaxNode,
    lets: BTreeMap<String, String>,
    bindings: Vec<Binding>,
}

fn attrpath_of(apv: &SyntaxNode) -> Vec<String> {
    apv.children()
        .find(|c| c.kind() == SyntaxKind::NODE_ATTRPATH)
        .map(|p| {
            p.children()
                .map(|c| c.text().to_string().trim_matches('"').to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn is_let_binding(apv: &SyntaxNode) -> bool {
    apv.parent()
        .is_some_and(|p| p.kind() == SyntaxKind::NODE_LET_IN)
}

/// Substitutes let-bound names (whole identifiers) in a squashed expression, to a fixpoint.
fn resolve(expr: &str, lets: &BTreeMap<String, String>) -> String {
    let mut out = expr.to_owned();
    for _ in 0..4 {
        let mut next = String::new();
        let mut word = String::new();
        let flush = |word: &mut String, next: &mut String| {
            match lets.get(word.as_str()) {
                Some(v) => next.push_str(v),
                None => next.push_str(word),
            }
            word.clear();
        };
        let mut prev_dot = false;
        for c in out.chars() {
            if c.is_alphanumeric() || c == '_' || c == '-' || c == '\'' {
                word.push(c);
            } else {
                if prev_dot {
                    next.push_str(&word);
                    word.clear();
                } else {
                    flush(&mut word, &mut next);
                }
                prev_dot = c == '.';
                next.push(c);
            }
        }
        if prev_dot {
            next.push_str(&word);
        } else {
            flush(&mut word, &mut next);
        }
        if next == out {
            break;
        }
        out = next;
    }
    out
}

/// The `lib.mkIf` conditions `node` sits in the body of, innermost first.
fn guards(node: &SyntaxNode, lets: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut child = node.clone();
    while let Some(parent) = child.parent() {
        if parent.kind() == SyntaxKind::NODE_APPLY {
            let parts: Vec<SyntaxNode> = parent.children().collect();
            if parts.len() == 2 && parts[1] == child && parts[0].kind() == SyntaxKind::NODE_APPLY {
                let inner: Vec<SyntaxNode> = parts[0].children().collect();
                if inner.len() == 2 && squash(&inner[0].text().to_string()) == "lib.mkIf" {
                    let cond = squash(&inner[1].text().to_string());
                    let cond = cond.trim_start_matches('(').trim_end_matches(')');
                    out.push(resolve(cond, lets));
                }
            }
        }
        child = parent;
    }
    out
}

fn load(rel: &str) -> NixFile {
    let root = parse(rel);
    let mut lets = BTreeMap::new();
    for apv in root
        .descendants()
        .filter(|n| n.kind() == SyntaxKind::NODE_ATTRPATH_VALUE && is_let_binding(n))
    {
        let path = attrpath_of(&apv);
        if let (Some(name), Some(value)) = (path.first(), apv.children().last()) {
            lets.insert(name.clone(), squash(&value.text().to_string()));
        }
    }
    let mut bindings = Vec::new();
    for apv in root
        .descendants()
        .filter(|n| n.kind() == SyntaxKind::NODE_ATTRPATH_VALUE && !is_let_binding(n))
    {
        let mut path = Vec::new();
        for anc in apv.ancestors().skip(1) {
            if anc.kind() == SyntaxKind::NODE_ATTRPATH_VALUE && !is_let_binding(&anc) {
                let mut outer = attrpath_of(&anc);
                outer.extend(path);
                path = outer;
            }
        }
        path.extend(attrpath_of(&apv));
        let Some(value) = apv.children().last() else {
            continue;
        };
        let guards = guards(&apv, &lets);
        bindings.push(Binding {
            path,
            value,
            guards,
        });
    }
    NixFile {
        name: rel.to_owned(),
        root,
        lets,
        bindings,
    }
}

impl NixFile {
    /// Bindings whose full path ends with `suffix`.
    fn find(&self, suffix: &[&str]) -> Vec<&Binding> {
        self.bindings
            .iter()
            .filter(|b| b.path.len() >= suffix.len() && b.path.ends_with_strs(suffix))
            .collect()
    }
    fn one(&self, suffix: &[&str]) -> &Binding {
        let found = self.find(suffix);
        assert_eq!(
            found.len(),
            1,
            "{}: {suffix:?} bound {} times",
            self.name,
            found.len()
        );
        found[0]
    }
    /// `suffix` is bound, or inherited (`inherit (x) name;`) inside a binding ending in `prefix`.
    fn defines(&self, prefix: &[&str], name: &str) -> bool {
        let mut full: Vec<&str> = prefix.to_vec();
        full.push(name);
        if !self.find(&full).is_empty() {
            return true;
        }
        self.root
            .descendants()
            .filter(|n| n.kind() == SyntaxKind::NODE_INHERIT)
            .any(|inh| {
                let names: Vec<String> = inh
                    .children()
                    .filter(|c| c.kind() == SyntaxKind::NODE_IDENT)
                    .map(|c| c.text().to_string())
                    .collect();
                let owner = inh
                    .ancestors()
                    .find(|a| a.kind() == SyntaxKind::NODE_ATTRPATH_VALUE && !is_let_binding(a));
                names.iter().any(|n| n == name)
                    && owner.is_some_and(|o| {
                        attrpath_of(&o).last().map(String::as_str) == prefix.last().copied()
                    })
            })
    }
    fn text(&self) -> String {
        self.root.text().to_string()
    }
}

trait EndsWithStrs {
    fn ends_with_strs(&self, suffix: &[&str]) -> bool;
}

impl EndsWithStrs for Vec<String> {
    fn ends_with_strs(&self, suffix: &[&str]) -> bool {
        self.len() >= suffix.len()
            && self[self.len() - suffix.len()..]
                .iter()
                .zip(suffix)
                .all(|(a, b)| a == b)
    }
}

const SYSTEMD_STAGE1: &str = "config.boot.initrd.systemd.enable";

#[test]
fn every_required_nix_file_exists_and_parses_with_rnix() {
    let files = nix_files();
    for required in REQUIRED {
        assert!(files.iter().any(|f| f == required), "missing {required}");
    }
    for f in &files {
        parse(f);
    }
    // The parser is not vacuous: a truncated file is an error.
    assert!(!rnix::Root::parse("{ a = 1; ").errors().is_empty());
}

/// Finds a tool on PATH, in `$KEYPACK_TOOLS/bin` or in `~/.cache/keypack-tools/bin`.
fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(t) = std::env::var_os("KEYPACK_TOOLS") {
        dirs.push(PathBuf::from(t).join("bin"));
    }
    if let Some(c) = std::env::var_os("XDG_CACHE_HOME") {
        dirs.push(PathBuf::from(c).join("keypack-tools/bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cache/keypack-tools/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Runs `tool args files` in the repository; returns (success, combined output).
fn run_tool(tool: &Path, args: &[&str], files: &[String]) -> (bool, String) {
    // nix-instantiate opens /nix/var/nix/db even to parse; tests running in parallel then
    // fail with "SQLite database is busy". A state folder of its own per call avoids that.
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new(tool)
        .args(args)
        .args(files)
        .current_dir(repo())
        .env("NIX_STATE_DIR", state.path())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn bad_file(name: &str, body: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, body).expect("write");
    let shown = path.to_string_lossy().into_owned();
    (dir, shown)
}

#[test]
fn nix_instantiate_parses_every_file() {
    let Some(nix) = tool("nix-instantiate") else {
        return skip(
            "nix_instantiate_parses_every_file",
            "nix-instantiate not found (apt-get install nix-bin)",
        );
    };
    for f in nix_files() {
        let (ok, out) = run_tool(&nix, &["--parse"], std::slice::from_ref(&f));
        assert!(ok, "nix-instantiate --parse {f}: {out}");
    }
    let (_dir, broken) = bad_file("broken.nix", "{ a = 1; ");
    assert!(
        !run_tool(&nix, &["--parse"], &[broken]).0,
        "a broken file parsed"
    );
}

#[test]
fn nixfmt_check_passes() {
    let Some(nixfmt) = tool("nixfmt") else {
        return skip(
            "nixfmt_check_passes",
            "nixfmt not found (cargo install nixfmt_rs)",
        );
    };
    let (ok, out) = run_tool(&nixfmt, &["--check"], &nix_files());
    assert!(
        ok,
        "nixfmt --check (run `nixfmt flake.nix nix` to fix): {out}"
    );
    let (_dir, ugly) = bad_file("ugly.nix", "{a=1;  b =   2;}\n");
    assert!(
        !run_tool(&nixfmt, &["--check"], &[ugly]).0,
        "nixfmt accepted a badly formatted file"
    );
}

#[test]
fn deadnix_finds_nothing() {
    let Some(deadnix) = tool("deadnix") else {
        return skip(
            "deadnix_finds_nothing",
            "deadnix not found (cargo install deadnix)",
        );
    };
    let (ok, out) = run_tool(&deadnix, &["--fail"], &nix_files());
    assert!(ok, "deadnix --fail: {out}");
    let (_dir, dead) = bad_file("dead.nix", "{ lib, ... }:\nlet\n  unused = 1;\nin\n{ }\n");
    assert!(
        !run_tool(&deadnix, &["--fail"], &[dead]).0,
        "deadnix missed dead code"
    );
}

#[test]
fn stage1_unit_is_ordered_before_activation_and_only_wanted() {
    let f = load("nix/load-keys.nix");
    let unit = ["boot", "initrd", "systemd", "services", "load-keys"];
    let service = f.one(&unit);
    assert!(
        service.guards.iter().any(|g| g == SYSTEMD_STAGE1),
        "the initrd unit must sit under lib.mkIf {SYSTEMD_STAGE1}: {:?}",
        service.guards
    );
    let list = |key: &str| -> Vec<String> {
        let mut path = unit.to_vec();
        path.push(key);
        f.one(&path).strings()
    };
    assert!(list("after").contains(&"initrd-fs.target".to_owned()));
    assert!(list("before").contains(&"initrd-nixos-activation.service".to_owned()));
    assert_eq!(list("wantedBy"), ["initrd.target"]);
    for hard in ["requiredBy", "requires", "requisite", "bindsTo", "upholds"] {
        let mut path = unit.to_vec();
        path.push(hard);
        assert!(
            f.find(&path).is_empty(),
            "load-keys must not be {hard}: a failure must never block boot"
        );
    }
    let mut ty = unit.to_vec();
    ty.extend(["serviceConfig", "Type"]);
    assert_eq!(f.one(&ty).value_text(), "\"oneshot\"");
    let mut dd = unit.to_vec();
    dd.extend(["unitConfig", "DefaultDependencies"]);
    assert_eq!(f.one(&dd).value_text(), "false");
    let mut exec = unit.to_vec();
    exec.extend(["serviceConfig", "ExecStart"]);
    let exec = f.one(&exec).value_text();
    assert!(
        exec.contains("${loadKeys}") && exec.contains("/sysroot"),
        "{exec}"
    );

    // The binary is copied into the initrd (an ExecStart store path is not, by itself).
    let store = f.one(&["boot", "initrd", "systemd", "storePaths"]);
    assert!(
        store.value_text().contains("loadKeys"),
        "{}",
        store.value_text()
    );
    assert!(store.guards.iter().any(|g| g == SYSTEMD_STAGE1));
    assert_eq!(
        resolve("loadKeys", &f.lets),
        "\"${config.keypack.loadKeys.package}/bin/load-keys\"",
        "loadKeys must name the package's binary"
    );
}

#[test]
fn post_mount_commands_only_under_the_scripted_stage1_condition() {
    let scripted = format!("!{SYSTEMD_STAGE1}");
    let mut seen = 0;
    for rel in nix_files() {
        let f = load(&rel);
        for b in &f.bindings {
            let last = b.path.last().map(String::as_str).unwrap_or("");
            if matches!(
                last,
                "postMountCommands" | "extraUtilsCommands" | "extraUtilsCommandsTest"
            ) {
                seen += 1;
                assert!(
                    b.guards.contains(&scripted),
                    "{rel}: {} is not under lib.mkIf (!{SYSTEMD_STAGE1}): guards {:?}",
                    b.path.join("."),
                    b.guards
                );
            }
        }
    }
    assert!(seen >= 2, "the scripted stage-1 path is missing");
    let f = load("nix/load-keys.nix");
    let pm = f.one(&["boot", "initrd", "postMountCommands"]);
    assert!(
        pm.strings().concat().contains("load-keys"),
        "postMountCommands must run load-keys"
    );
    assert!(pm.strings().concat().contains("$targetRoot"));
}

#[test]
fn stage2_unit_installs_user_keys_before_sshd() {
    let f = load("nix/load-keys.nix");
    let unit = ["systemd", "services", "keypack-user-keys"];
    let get = |key: &[&str]| {
        let mut p = unit.to_vec();
        p.extend(key);
        f.one(&p)
    };
    assert!(
        get(&["before"])
            .strings()
            .contains(&"sshd.service".to_owned())
    );
    assert_eq!(get(&["wantedBy"]).strings(), ["multi-user.target"]);
    assert!(
        get(&["after"])
            .strings()
            .contains(&"systemd-tmpfiles-setup.service".to_owned())
    );
    assert!(
        get(&["serviceConfig", "ExecStart"])
            .value_text()
            .contains("--install-users")
    );
    assert!(
        get(&["unitConfig", "ConditionDirectoryNotEmpty"])
            .value_text()
            .contains("/users")
    );
    assert!(f.text().contains("default = \"/run/keypack\";"));
}

#[test]
fn ssh_serves_only_the_injected_ed25519_key_and_sops_uses_it() {
    let f = load("nix/ssh.nix");
    assert_eq!(
        f.lets.get("hostKey").map(String::as_str),
        Some("\"/etc/ssh/ssh_host_ed25519_key\"")
    );
    let keys = f.one(&["services", "openssh", "hostKeys"]);
    let sets = keys
        .value
        .children()
        .filter(|c| c.kind() == SyntaxKind::NODE_ATTR_SET)
        .count();
    assert_eq!(sets, 1, "exactly one host key");
    assert_eq!(f.one(&["hostKeys", "type"]).value_text(), "\"ed25519\"");
    assert_eq!(f.one(&["hostKeys", "path"]).value_text(), "hostKey");
    assert_eq!(
        f.one(&["sops", "age", "sshKeyPaths"]).value_text(),
        "[hostKey]"
    );
    assert_eq!(f.one(&["sops", "gnupg", "sshKeyPaths"]).value_text(), "[]");
    let cond = f.one(&[
        "keypack-host-key-check",
        "unitConfig",
        "ConditionPathExists",
    ]);
    assert_eq!(cond.value_text(), "\"!${hostKey}\"");
    let script = f.one(&["keypack-host-key-check", "script"]).value_text();
    assert!(script.contains("WARNING"), "{script}");
    let out = f.one(&["keypack-host-key-check", "serviceConfig", "StandardOutput"]);
    assert!(out.value_text().contains("console"));
}

#[test]
fn tailscale_key_is_a_string_path_with_a_condition() {
    let f = load("nix/tailscale.nix");
    let paths = f
        .root
        .descendants()
        .filter(|n| {
            matches!(
                n.kind(),
                SyntaxKind::NODE_PATH_ABS | SyntaxKind::NODE_PATH_REL | SyntaxKind::NODE_PATH_HOME
            )
        })
        .count();
    assert_eq!(
        paths, 0,
        "no path literals in tailscale.nix: they copy files into the store"
    );
    assert_eq!(
        f.one(&["services", "tailscale", "authKeyFile"])
            .value_text(),
        "keyFile"
    );
    let staged = f.lets.get("stagedKey").cloned().unwrap_or_default();
    assert!(staged.starts_with("\"/run/keypack/"), "{staged}");
    assert!(
        f.lets["keyFile"].contains("config.sops.secrets"),
        "sops is the default source"
    );
    let cond = f.one(&[
        "tailscaled-autoconnect",
        "unitConfig",
        "ConditionPathExists",
    ]);
    assert_eq!(cond.value_text(), "keyFile");
    assert_eq!(
        f.one(&["authKeySource", "default"]).value_text(),
        "\"sops\""
    );
}

#[test]
fn no_secret_is_a_path_literal_and_the_iso_boots_uefi() {
    for rel in nix_files() {
        let f = load(&rel);
        for n in f.root.descendants().filter(|n| {
            matches!(
                n.kind(),
                SyntaxKind::NODE_PATH_ABS | SyntaxKind::NODE_PATH_REL | SyntaxKind::NODE_PATH_HOME
            )
        }) {
            let p = n.text().to_string().to_lowercase();
            for bad in ["secret", "_key", "id_ed25519", ".age", "authkey", ".pem"] {
                assert!(
                    !p.contains(bad),
                    "{rel}: path literal {p} looks like a secret"
                );
            }
        }
    }
    let f = load("nix/boot.nix");
    // EFI (and, on x86, BIOS/USB) boot come from installation-cd-base.nix; boot.nix neither
    // repeats nor overrides them (makeUsbBootable only matters with BIOS boot).
    assert!(
        f.text()
            .contains("installer/cd-dvd/installation-cd-minimal.nix")
    );
    for flag in ["makeEfiBootable", "makeUsbBootable", "makeBiosBootable"] {
        assert!(
            f.find(&["isoImage", flag]).is_empty(),
            "boot.nix sets isoImage.{flag}; the installer profile decides it"
        );
    }
    let asserts: String = f
        .find(&["assertions"])
        .iter()
        .map(|b| b.value_text())
        .collect();
    for what in [
        "hostKeys",
        "sops.age.keyFile",
        "tailscale",
        "initrd.secrets",
    ] {
        assert!(asserts.contains(what), "boot.nix must assert on {what}");
    }
}

#[test]
fn flake_is_pure_and_has_the_outputs() {
    let f = load("flake.nix");
    let text = f.text();
    for impure in [
        "getEnv",
        "currentSystem",
        "--impure",
        "builtins.fetchGit",
        "builtins.fetchTarball",
    ] {
        assert!(!text.contains(impure), "flake.nix uses {impure}");
    }
    for input in ["nixpkgs", "crane", "sops-nix"] {
        assert!(
            !f.find(&["inputs", input, "url"]).is_empty() || !f.find(&["inputs", input]).is_empty(),
            "input {input}"
        );
    }
    for (prefix, name) in [
        (&["packages"][..], "default"),
        (&["packages"], "keypack"),
        (&["packages"], "load-keys"),
        (&["packages"], "iso"),
        (&["nixosModules"], "default"),
        (&["nixosModules"], "load-keys"),
        (&["nixosConfigurations"], "iso"),
        (&["devShells"], "default"),
        (&["checks"], "clippy"),
        (&["checks"], "tests"),
        (&["checks"], "nix-lint"),
        (&["checks"], "vm-systemd-stage1"),
        (&["checks"], "vm-scripted-stage1"),
        (&["checks"], "vm-not-injected"),
        (&["checks"], "iso-systemd-stage1"),
        (&["checks"], "iso-scripted-stage1"),
    ] {
        assert!(
            f.defines(prefix, name),
            "flake.nix: {prefix:?}.{name} missing"
        );
    }
    assert!(!f.find(&["formatter"]).is_empty());
    assert!(text.contains("crane.mkLib"));
    assert!(text.contains("cargoClippy") && text.contains("cargoNextest"));
    assert!(text.contains("pkgsStatic.callPackage ./nix/pkgs/load-keys.nix"));
    let iso = f.lets.get("iso").cloned().unwrap_or_default();
    assert!(
        iso.contains("writeShellScriptBin\"iso\"") && iso.contains("exec"),
        "dev shell iso command: {iso}"
    );
    for tool in [
        "pkgs.qemu",
        "pkgs.OVMF.fd",
        "pkgs.age",
        "pkgs.sops",
        "pkgs.age-plugin-yubikey",
    ] {
        assert!(text.contains(tool), "dev shell lacks {tool}");
    }

    // The VM tests boot with the injected cpio under both flavours and check the three outcomes.
    let vm = load("nix/tests/vm.nix");
    assert!(vm.text().contains("runNixOSTest"));
    assert_eq!(
        vm.one(&["boot", "initrd", "systemd", "enable"])
            .value_text(),
        "systemdStage1"
    );
    assert!(
        vm.one(&["boot", "initrd", "prepend"])
            .value_text()
            .contains("keys.cpio.gz")
    );
    let script = std::fs::read_to_string(repo().join("nix/tests/assertions.nix")).unwrap();
    for must in [
        "ssh-keyscan -t ed25519",
        "/run/secrets/test-secret",
        "600:alice:users",
        "700:alice:users",
        "=== Stage 1: Key loading complete ===",
    ] {
        assert!(script.contains(must), "test script lacks {must}");
    }
}

/// The guards `node` sits under: `(function, condition)` for the argument of `lib.optionalAttrs
/// C`, `lib.optional C`, `lib.optionals C` and `lib.mkIf C`, and `("if", C)` / `("else", C)` for
/// the branches of `if C then … else …`; conditions squashed, let-bound names substituted.
fn all_guards(node: &SyntaxNode, lets: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut child = node.clone();
    while let Some(parent) = child.parent() {
        let parts: Vec<SyntaxNode> = parent.children().collect();
        match parent.kind() {
            SyntaxKind::NODE_APPLY
                if parts.len() == 2
                    && parts[1] == child
                    && parts[0].kind() == SyntaxKind::NODE_APPLY =>
            {
                let inner: Vec<SyntaxNode> = parts[0].children().collect();
                if inner.len() == 2 {
                    let func = squash(&inner[0].text().to_string());
                    let cond = squash(&inner[1].text().to_string());
                    out.push((func, resolve(&cond, lets)));
                }
            }
            SyntaxKind::NODE_IF_ELSE if parts.len() == 3 && parts[0] != child => {
                let cond = resolve(&squash(&parts[0].text().to_string()), lets);
                let branch = if parts[1] == child { "if" } else { "else" };
                out.push((branch.to_owned(), cond));
            }
            _ => {}
        }
        child = parent;
    }
    out
}

/// Sits where sops-nix's options are known to exist: under `lib.optionalAttrs`, `lib.optional(s)`
/// or the `then` branch of an `if` whose condition requires `options ? sops`. A `lib.mkIf` does
/// not count: the module system still sees the definitions under it.
fn sops_guarded(node: &SyntaxNode, lets: &BTreeMap<String, String>) -> bool {
    all_guards(node, lets).iter().any(|(func, cond)| {
        matches!(
            func.as_str(),
            "lib.optionalAttrs" | "lib.optional" | "lib.optionals" | "if"
        ) && cond.contains("options?sops")
            && !cond.contains("!(options?sops)")
            && !cond.contains("!options?sops")
    })
}

/// `nixosModules.NAME = ./nix/FILE.nix;` entries of flake.nix.
fn exported_module_files() -> Vec<(String, String)> {
    let flake = load("flake.nix");
    flake
        .bindings
        .iter()
        .filter(|b| b.path.len() >= 2 && b.path[b.path.len() - 2] == "nixosModules")
        .filter(|b| b.value.kind() == SyntaxKind::NODE_PATH_REL)
        .map(|b| {
            let text = b.value.text().to_string();
            (
                b.path[b.path.len() - 1].clone(),
                text.trim_start_matches("./").to_owned(),
            )
        })
        .collect()
}

#[test]
fn exported_modules_use_sops_nix_only_where_it_is_imported() {
    let exported = exported_module_files();
    for must in ["ssh", "boot", "tailscale", "load-keys"] {
        assert!(
            exported.iter().any(|(n, _)| n == must),
            "flake.nix exports no nixosModules.{must} as a file: {exported:?}"
        );
    }
    // The whole ISO brings sops-nix itself.
    let flake = load("flake.nix");
    let default = flake
        .one(&["nixosModules", "default", "imports"])
        .value_text();
    assert!(default.contains("sops-nix.nixosModules.sops"), "{default}");

    let mut guarded_definitions = 0;
    for (name, rel) in &exported {
        let f = load(rel);
        for b in &f.bindings {
            let path: Vec<&str> = b.path.iter().map(String::as_str).collect();
            let path = path.strip_prefix(&["config"]).unwrap_or(&path);
            if path.first() == Some(&"sops") {
                guarded_definitions += 1;
                let apv = b.value.parent().expect("binding");
                assert!(
                    sops_guarded(&apv, &f.lets),
                    "{rel} (nixosModules.{name}): {} is defined without \
                     lib.optionalAttrs (options ? sops): guards {:?}",
                    b.path.join("."),
                    all_guards(&apv, &f.lets)
                );
            }
        }
        for sel in f
            .root
            .descendants()
            .filter(|n| n.kind() == SyntaxKind::NODE_SELECT)
        {
            let text = squash(&sel.text().to_string());
            if text == "config.sops" || text.starts_with("config.sops.") {
                assert!(
                    sops_guarded(&sel, &f.lets),
                    "{rel} (nixosModules.{name}): {text} is read without a guard on \
                     options ? sops: guards {:?}",
                    all_guards(&sel, &f.lets)
                );
            }
        }
    }
    assert!(
        guarded_definitions >= 3,
        "ssh.nix and tailscale.nix configure sops-nix when it is there"
    );
}

/// Evaluates a module's `config` with Nix (2.8 is enough: no nixpkgs, a stub `lib` whose
/// `mkIf` keeps its content as the module system does) and returns the top-level names it
/// defines, with and without sops-nix's options present.
const MODULE_NAMES_NIX: &str = r#"file: withSops:
let
  override = content: { _type = "override"; inherit content; };
  lib = {
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkIf = _: content: { _type = "if"; inherit content; };
    optionalAttrs = c: x: if c then x else { };
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: x: if c then x else [ ];
    mkForce = override;
    mkDefault = override;
    mkOverride = _: override;
  };
  m = import file {
    inherit lib;
    config = throw "config is not needed to find the defined options";
    pkgs = throw "pkgs is not needed to find the defined options";
    options = { keypack = { }; } // (if withSops then { sops = { }; } else { });
    modulesPath = "/modules";
  };
  cfg = if m ? config || m ? options then m.config or { } else removeAttrs m [ "imports" ];
  names = v:
    if v ? _type then
      (if v._type == "merge" then builtins.concatMap names v.contents else names v.content)
    else builtins.attrNames v;
in
builtins.concatStringsSep " " (builtins.sort builtins.lessThan (names cfg))
"#;

#[test]
fn exported_modules_evaluate_without_sops_nix() {
    let Some(nix) = tool("nix-instantiate") else {
        return skip(
            "exported_modules_evaluate_without_sops_nix",
            "nix-instantiate not found (apt-get install nix-bin)",
        );
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let stub = dir.path().join("module-names.nix");
    std::fs::write(&stub, MODULE_NAMES_NIX).expect("write");
    let names = |file: &Path, with_sops: bool| -> Vec<String> {
        let expr = format!("import {} {} {}", stub.display(), file.display(), with_sops);
        let out = Command::new(&nix)
            .args([
                "--eval",
                "--strict",
                "--json",
                "--readonly-mode",
                "-E",
                &expr,
            ])
            // Its own state folder: parallel evaluations sharing /nix/var/nix/db failed with
            // "SQLite database is busy" on a fresh Debian 12.
            .env("NIX_STATE_DIR", dir.path().join("nix-state"))
            .output()
            .expect("nix-instantiate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{expr}: {stderr}");
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .trim_matches('"')
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let exported = exported_module_files();
    assert!(
        exported.len() >= 7,
        "nixosModules in flake.nix: {exported:?}"
    );
    for (name, rel) in exported {
        let file = repo().join(&rel).canonicalize().expect("module file");
        let without = names(&file, false);
        assert!(
            !without.is_empty(),
            "nixosModules.{name}: no definitions found"
        );
        assert!(
            !without.iter().any(|n| n == "sops"),
            "nixosModules.{name} ({rel}) defines sops.* without sops-nix: {without:?}"
        );
        let with = names(&file, true);
        if matches!(name.as_str(), "ssh" | "tailscale") {
            assert!(
                with.iter().any(|n| n == "sops"),
                "nixosModules.{name} no longer configures sops-nix when it is there: {with:?}"
            );
        }
    }
    // The stub is not vacuous: a `lib.mkIf` guard still defines the option.
    let (_d, bad) = bad_file(
        "bad.nix",
        "{ lib, options, ... }: { config = lib.mkIf (options ? sops) { sops.x = 1; }; }\n",
    );
    assert_eq!(names(Path::new(&bad), false), ["sops"]);
}

#[test]
fn test_nodes_do_not_read_the_sops_fixture_at_evaluation_time() {
    for rel in ["nix/tests/vm.nix", "nix/tests/iso.nix"] {
        let f = load(rel);
        let file = f.one(&["sops", "defaultSopsFile"]);
        assert!(file.value_text().contains("${fixtures}"), "{rel}");
        assert_eq!(
            f.one(&["sops", "validateSopsFiles"]).value_text(),
            "false",
            "{rel}: sops-nix would hash the fixtures derivation's file at evaluation time"
        );
        let per_secret = f.find(&["sopsFile"]);
        assert!(
            per_secret.is_empty(),
            "{rel}: a secret names its own sops file: {:?}",
            per_secret
                .iter()
                .map(|b| b.path.join("."))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn serial_consoles_get_no_autologin_and_no_empty_password() {
    let f = load("nix/boot.nix");
    assert_eq!(
        f.one(&["serialConsole", "autologin", "default"])
            .value_text(),
        "false"
    );
    let exec = f.one(&[
        "systemd",
        "services",
        "serial-getty@",
        "serviceConfig",
        "ExecStart",
    ]);
    let guard = "!config.keypack.serialConsole.autologin";
    assert!(exec.guards.iter().any(|g| g == guard), "{:?}", exec.guards);
    assert!(
        exec.value_text().starts_with("lib.mkForce["),
        "{}",
        exec.value_text()
    );
    let cmd = f.lets.get("serialGetty").cloned().unwrap_or_default();
    assert!(
        cmd.contains("agetty") && cmd.contains("getty.loginProgram"),
        "{cmd}"
    );
    assert!(
        !cmd.contains("autologin"),
        "serial getty keeps --autologin: {cmd}"
    );
    let pam = f.one(&["security", "pam", "services", "login", "allowNullPassword"]);
    assert!(pam.guards.iter().any(|g| g == guard));
    assert_eq!(pam.value_text(), "lib.mkForce false".replace(' ', ""));
    // The local console keeps the installer's autologin: getty@ and autovt@ are left alone.
    for local in ["getty@", "autovt@"] {
        assert!(
            f.find(&["systemd", "services", local]).is_empty(),
            "{local}"
        );
    }
    assert!(f.find(&["services", "getty", "autologinUser"]).is_empty());
    let params = f.one(&["boot", "kernelParams"]);
    assert!(params.value_text().contains("\"console=tty0\""));
    assert!(params.value_text().contains("console=${cfg.device}"));
    assert_eq!(
        f.one(&["serialConsole", "device", "default"]).value_text(),
        "\"ttyS0,115200\""
    );
}

#[test]
fn the_initrd_offers_no_emergency_shell_beside_injected_keys() {
    let f = load("nix/load-keys.nix");
    assert_eq!(
        f.one(&["initrdEmergencyAccess", "default"]).value_text(),
        "false"
    );
    let access = f.one(&["boot", "initrd", "systemd", "emergencyAccess"]);
    assert!(access.guards.iter().any(|g| g == SYSTEMD_STAGE1));
    assert!(
        access.value_text().ends_with("cfg.initrdEmergencyAccess"),
        "{}",
        access.value_text()
    );
    assert_eq!(f.lets["cfg"], "config.keypack.loadKeys");
    // Above the installer's lib.mkImageMediaOverride (60).
    assert!(access.value_text().starts_with("lib.mkOverride55"));
    let params = f.one(&["boot", "kernelParams"]);
    assert!(params.guards.contains(&format!("!{SYSTEMD_STAGE1}")));
    assert!(params.strings().contains(&"boot.panic_on_fail".to_owned()));
}

#[test]
fn the_scripted_stage1_warns_and_its_tests_end_with_its_release() {
    let f = load("nix/load-keys.nix");
    let warnings = f.one(&["warnings"]);
    assert!(
        warnings.guards.contains(&format!("!{SYSTEMD_STAGE1}")),
        "{:?}",
        warnings.guards
    );
    let text = warnings.strings().concat();
    assert!(
        text.contains("deprecated") && text.contains("26.11"),
        "{text}"
    );
    // Systemd stage 1 stays the default.
    let boot = load("nix/boot.nix");
    assert_eq!(
        boot.one(&["boot", "initrd", "systemd", "enable"])
            .value_text(),
        "lib.mkDefaulttrue"
    );

    let flake = load("flake.nix");
    assert_eq!(
        flake.lets.get("hasScriptedStage1").map(String::as_str),
        Some("lib.versionOlderlib.trivial.release\"26.11\"")
    );
    for check in ["vm-scripted-stage1", "iso-scripted-stage1"] {
        let b = flake.one(&["checks", check]);
        let guarded = all_guards(&b.value.parent().unwrap(), &BTreeMap::new())
            .iter()
            .any(|(func, cond)| func == "lib.optionalAttrs" && cond == "hasScriptedStage1");
        assert!(
            guarded,
            "checks.{check} is not under lib.optionalAttrs hasScriptedStage1"
        );
    }
    for check in ["vm-systemd-stage1", "iso-systemd-stage1", "vm-not-injected"] {
        let b = flake.one(&["checks", check]);
        let guarded = all_guards(&b.value.parent().unwrap(), &BTreeMap::new())
            .iter()
            .any(|(_, cond)| cond == "hasScriptedStage1");
        assert!(
            !guarded,
            "checks.{check} must not depend on the scripted stage 1"
        );
    }
}

#[test]
fn the_iso_says_what_it_is_and_tailscale_waits_for_the_real_provider() {
    let f = load("nix/boot.nix");
    let id = f.one(&["isoImage", "volumeID"]).value_text();
    assert!(id.contains("\"keypack-"), "{id}");
    assert!(
        f.find(&["assertions"])
            .iter()
            .any(|a| a.value_text().contains("volumeID"))
    );

    let t = load("nix/tailscale.nix");
    let text = t.text();
    let unit = t.one(&["systemd", "services", "tailscaled-autoconnect", "after"]);
    assert_eq!(unit.strings(), ["sops-install-secrets.service"]);
    let guards = all_guards(&unit.value.parent().unwrap(), &t.lets);
    assert!(
        guards
            .iter()
            .any(|(func, cond)| func == "lib.mkIf" && cond == "config.sops.useSystemdActivation"),
        "sops-install-secrets.service only exists with sops.useSystemdActivation: {guards:?}"
    );
    assert!(
        text.contains("setupSecrets"),
        "tailscale.nix says why the default mode needs no ordering"
    );
}

/// The flake's keypack package installs the shell completions and man pages the README lists,
/// generated by the binary itself (newcomer issue, item 4), and still wraps PATH.
#[test]
fn keypack_package_installs_completions_and_man_pages() {
    let text = std::fs::read_to_string(repo().join("nix/pkgs/keypack.nix")).unwrap();
    assert!(text.contains("installShellFiles"), "{text}");
    for shell in ["bash", "zsh", "fish"] {
        assert!(
            text.contains(&format!(
                "--{shell} <($out/bin/keypack completions {shell})"
            )),
            "no {shell} completions: {text}"
        );
    }
    assert!(
        text.contains("installShellCompletion --cmd keypack"),
        "{text}"
    );
    assert!(
        text.contains("$out/bin/keypack man --out $out/share/man/man1"),
        "{text}"
    );
    // Generated before wrapProgram, from the real binary, and skipped when cross-compiling.
    let man = text.find("keypack man --out").unwrap();
    assert!(man < text.find("wrapProgram").unwrap(), "{text}");
    assert!(
        text.contains("stdenv.buildPlatform.canExecute stdenv.hostPlatform"),
        "{text}"
    );
}
