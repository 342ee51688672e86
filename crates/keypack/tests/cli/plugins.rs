//! External media plugins (issue 15): discovery (absolute PATH entries and `plugin_dir`, never
//! the working directory; a built-in wins), `keypack plugins` with origins, `keypack plugins
//! check`, a build through the Python example plugin of `plugins/examples/`, the boundary a
//! plugin sees (a sealed read-only memfd, no other fd, the allow-listed environment) and the
//! clean failures of broken plugins (garbage, death, hang, flood, stray key copies, 0644); an
//! external runner's failures and the passphrase descriptor it gets.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{Repo, have_sops, skip, standard_repo, stderr, stdout};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/examples/keypack-media-pyexample")
}

fn have_python(test: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg("import fcntl; fcntl.F_GET_SEALS")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(
            test,
            "python3 (3.8+, for fcntl.F_GET_SEALS) is not installed",
        );
    }
    ok
}

/// A folder `name` under the repo's temp dir holding `files` (name, contents), all 0755.
fn bin_dir(repo: &Repo, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = repo.tmp.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (f, text) in files {
        let p = dir.join(f);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// `keypack ARGS` with `dirs` in front of PATH.
fn kp(repo: &Repo, dirs: &[&Path], args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut path: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let mut cmd = repo.command(args);
    cmd.env("PATH", std::env::join_paths(path).unwrap());
    cmd.env("KEYPACK_STATE_DIR", repo.tmp.path().join("state"));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    eprintln!(
        "$ keypack {}\n{}{}",
        args.join(" "),
        stdout(&out),
        stderr(&out)
    );
    out
}

/// `build --keys-repo ROOT -i AGE_KEY -H web1 REST…`.
fn build_args<'a>(root: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "build",
        "--keys-repo",
        root,
        "-i",
        crate::common::AGE_KEY,
        "-H",
        "web1",
    ];
    a.extend_from_slice(rest);
    a
}

fn boot_inputs(repo: &Repo) -> (String, String) {
    let k = repo.tmp.path().join("vmlinuz");
    let i = repo.tmp.path().join("base.img");
    std::fs::write(&k, b"kernel").unwrap();
    std::fs::write(&i, b"initrd").unwrap();
    (k.display().to_string(), i.display().to_string())
}

fn with_example(repo: &Repo) -> PathBuf {
    let text = std::fs::read_to_string(example()).unwrap();
    bin_dir(repo, "bin", &[("keypack-media-pyexample", &text)])
}

#[test]
fn python_example_is_listed_checked_and_builds_through_keypack() {
    const T: &str = "python_example_is_listed_checked_and_builds_through_keypack";
    if !have_sops(T) || !have_python(T) {
        return;
    }
    let repo = standard_repo();
    let bin = with_example(&repo);
    let program = bin.join("keypack-media-pyexample");

    let out = kp(&repo, &[&bin], &["plugins"], &[]);
    assert!(out.status.success());
    let line = stdout(&out)
        .lines()
        .find(|l| l.split_whitespace().next() == Some("pyexample"))
        .map(String::from)
        .unwrap_or_default();
    assert!(
        line.contains(&format!("[external: {}]", program.display())),
        "{line}"
    );
    assert!(stdout(&out).contains("[built-in]"));
    let out = kp(&repo, &[&bin], &["plugins", "--json"], &[]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let py = doc["media"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "pyexample")
        .cloned()
        .unwrap();
    assert_eq!(py["origin"], "external");
    assert_eq!(py["path"], program.display().to_string());
    let ventoy = &doc["media"][0];
    assert_eq!(
        (&ventoy["name"], &ventoy["origin"]),
        (&"ventoy".into(), &"built-in".into())
    );

    // build --help lists its flags under its own heading, like a built-in medium's.
    let help = stdout(&kp(&repo, &[&bin], &["build", "--help"], &[]));
    let heading = help
        .find("Python example medium (--media pyexample):")
        .unwrap_or_else(|| panic!("{help}"));
    assert!(help[heading..].contains("--py-cmdline <ARGS>"), "{help}");
    // Without build, no plugin program is started (its flags are unknown there).
    let help = stdout(&kp(&repo, &[&bin], &["status", "--help"], &[]));
    assert!(!help.contains("py-cmdline"));

    let (k, i) = boot_inputs(&repo);
    let out = kp(
        &repo,
        &[&bin],
        &[
            "plugins",
            "check",
            "pyexample",
            "--",
            "--kernel",
            &k,
            "--initrd",
            &i,
        ],
        &[],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    for check in [
        "handshake",
        "describe",
        "build twice with seed 42",
        "no key bytes on argv or in the environment",
        "boot description valid",
        "artifacts byte-identical",
        "artifacts 0600",
        "no key bytes outside the listed artifacts",
    ] {
        assert!(
            text.contains(&format!("  ok    {check}:")),
            "{check}: {text}"
        );
    }

    // A real build from the sops repository through the plugin.
    let dir = repo.out_dir("py");
    let artifact = dir.join("keys.tar.gz");
    let a = artifact.display().to_string();
    let root = repo.root().display().to_string();
    let args = build_args(
        &root,
        &[
            "-U",
            "alice",
            "--media",
            "pyexample",
            "--kernel",
            &k,
            "--initrd",
            &i,
            "--py-cmdline",
            "-quiet console=ttyS0",
            "-o",
            &a,
        ],
    );
    let out = kp(&repo, &[&bin], &args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The plugin's stderr reaches the user, prefixed with its name.
    assert!(
        stderr(&out).contains("pyexample: wrote "),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::metadata(&artifact).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // It is the bundle: keypack inspect reads it back with the host key in it.
    let inspect = kp(&repo, &[], &["inspect", &a], &[]);
    assert!(
        stdout(&inspect).contains("etc/ssh/ssh_host_ed25519_key"),
        "{}",
        stdout(&inspect)
    );
    assert!(
        stdout(&inspect).contains("problems: none"),
        "{}",
        stdout(&inspect)
    );
    let boot: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo.tmp.path().join("state/web1/boot.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(boot["medium"], "pyexample");
    assert_eq!(boot["boot"]["kind"], "kernel");
    assert_eq!(boot["boot"]["initrds"][1], a);
    assert_eq!(boot["boot"]["cmdline"], "-quiet console=ttyS0");
    let host_pub: String = repo
        .host
        .public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        boot["host_public_key"]
            .as_str()
            .unwrap()
            .starts_with(&host_pub)
    );

    // Its error, in keypack's own format, with its hint.
    let args = build_args(&root, &["--media", "pyexample", "-o", &a]);
    let out = kp(&repo, &[&bin], &args, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("error: pyexample: --kernel and --initrd are required"),
        "{err}"
    );
    assert!(
        err.contains("hint: pass --kernel FILE --initrd FILE"),
        "{err}"
    );
}

/// What a plugin can see, probed from inside one: the bundle fd is read-only and sealed
/// (writes, truncation and a writable reopen all fail), it is the only fd besides stdio,
/// keypack's non-allow-listed variables are absent, the argv is the program alone and the
/// working directory is the host's state folder.
const PROBE: &str = r#"#!/usr/bin/env python3
import fcntl, json, os, sys
for line in sys.stdin:
    req = json.loads(line)
    t = req["type"]
    if t == "hello":
        print(json.dumps({"type": "hello", "version": 1}), flush=True)
    elif t == "describe":
        print(json.dumps({"type": "description", "kind": "media", "name": "probe",
                          "about": "probe", "default_artifact_name": "x", "flags": []}), flush=True)
    elif t == "build":
        fd = req["bundle_fd"]
        r = {"fd": fd, "len": req["bundle_len"], "argv": sys.argv[1:], "cwd": os.getcwd(),
             "env": sorted(os.environ.keys()), "manifest": req["manifest"]}
        r["accmode"] = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        r["seals"] = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        try:
            os.write(fd, b"x"); r["write"] = "allowed"
        except OSError as e:
            r["write"] = e.errno
        try:
            os.ftruncate(fd, 0); r["truncate"] = "allowed"
        except OSError as e:
            r["truncate"] = e.errno
        try:
            w = os.open("/proc/self/fd/%d" % fd, os.O_RDWR)
            try:
                os.write(w, b"x"); r["reopen_write"] = "allowed"
            except OSError as e:
                r["reopen_write"] = e.errno
            os.close(w)
        except OSError as e:
            r["reopen_write"] = e.errno
        data = os.pread(fd, req["bundle_len"] + 10, 0)
        r["read"] = len(data)
        r["magic"] = data[:2].hex()
        fds = []
        for n in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink("/proc/self/fd/" + n)
            except OSError:
                continue
            if "/fd" not in link:
                fds.append((int(n), link))
        r["fds"] = sorted(fds)
        print(json.dumps({"type": "error", "message": "PROBE " + json.dumps(r)}), flush=True)
    elif t == "bye":
        break
"#;

#[test]
fn a_plugin_sees_a_sealed_read_only_fd_and_nothing_else_of_keypack() {
    const T: &str = "a_plugin_sees_a_sealed_read_only_fd_and_nothing_else_of_keypack";
    if !have_sops(T) || !have_python(T) {
        return;
    }
    let repo = standard_repo();
    let bin = bin_dir(&repo, "bin", &[("keypack-media-probe", PROBE)]);
    let root = repo.root().display().to_string();
    let dir = repo.out_dir("probe");
    let o = dir.join("x").display().to_string();
    let args = build_args(&root, &["-U", "alice", "--media", "probe", "-o", &o]);
    let canary = "KEYPACK_CANARY_MUST_NOT_REACH_A_PLUGIN";
    let out = kp(
        &repo,
        &[&bin],
        &args,
        &[("KEYPACK_CANARY", canary), ("SOPS_AGE_KEY", canary)],
    );
    let err = stderr(&out);
    let json = err
        .split("PROBE ")
        .nth(1)
        .and_then(|s| s.lines().next())
        .unwrap_or_else(|| panic!("{err}"));
    let r: serde_json::Value = serde_json::from_str(json).unwrap();
    eprintln!("probe: {r:#}");
    assert_eq!(r["accmode"], 0, "O_RDONLY");
    // F_SEAL_SEAL 1 | SHRINK 2 | GROW 4 | WRITE 8
    assert_eq!(r["seals"].as_u64().unwrap() & 15, 15, "all four seals");
    for k in ["write", "truncate", "reopen_write"] {
        assert_ne!(r[k], "allowed", "{k}");
    }
    assert_eq!(r["read"], r["len"], "the whole archive, nothing more");
    assert_eq!(r["magic"], "1f8b", "a gzip archive");
    let fd = r["fd"].as_u64().unwrap();
    let fds: Vec<u64> = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    assert_eq!(fds, [0, 1, 2, fd], "no other fd of keypack: {}", r["fds"]);
    assert_eq!(r["argv"], serde_json::json!([]), "nothing on its argv");
    // It runs in the host's private state folder, not in the user's working directory.
    let state = std::fs::canonicalize(repo.tmp.path().join("state/web1")).unwrap();
    assert_eq!(r["cwd"], state.display().to_string());
    let env: Vec<&str> = r["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        !env.contains(&"KEYPACK_CANARY") && !env.contains(&"SOPS_AGE_KEY"),
        "{env:?}"
    );
    assert!(!env.contains(&"KEYPACK_STATE_DIR"), "{env:?}");
    // The manifest: paths, modes, public keys; no private bytes.
    let manifest = r["manifest"].to_string();
    assert!(
        manifest.contains("etc/ssh/ssh_host_ed25519_key"),
        "{manifest}"
    );
    assert!(!manifest.contains("PRIVATE KEY"));
    let private_line = repo.host.private.lines().nth(1).unwrap();
    assert!(!json.contains(private_line));
}

/// A runner program that describes itself; `start` is answered as `FAKE_START` says: an error
/// with a hint, a pid that does not run, or it dies; the request is saved for the test.
const RUNNER: &str = r#"#!/usr/bin/env python3
import json, os, sys
for line in sys.stdin:
    req = json.loads(line)
    t = req["type"]
    if t == "hello":
        print(json.dumps({"type": "hello", "version": 1}), flush=True)
    elif t == "describe":
        print(json.dumps({"type": "description", "kind": "runner", "name": "fake",
                          "about": "a fake runner"}), flush=True)
    elif t == "start":
        open(os.path.join(req["state_dir"], "start.json"), "w").write(line)
        how = open(os.path.join(req["state_dir"], "..", "..", "..", "fake-start")).read().strip()
        if how == "error":
            print(json.dumps({"type": "error", "message": "no hypervisor here",
                              "hint": "install one"}), flush=True)
        elif how == "probe":
            # A sealed build's passphrase fd, from inside: access mode, seals, a failed write,
            # the descriptors, and a digest (the passphrase itself goes nowhere).
            import fcntl, hashlib
            fd = req["passphrase_fd"]
            r = {"rdonly": fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY,
                 "seals": fcntl.fcntl(fd, fcntl.F_GET_SEALS),
                 "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
                 "sha256": hashlib.sha256(os.pread(fd, req["passphrase_len"], 0)).hexdigest()}
            try:
                os.write(fd, b"x"); r["write"] = "allowed"
            except OSError as e:
                r["write"] = e.errno
            open(os.path.join(req["state_dir"], "probe.json"), "w").write(json.dumps(r))
            print(json.dumps({"type": "error", "message": "probed"}), flush=True)
        elif how == "ghost":
            print(json.dumps({"type": "started", "pid": 999999999}), flush=True)
        else:
            sys.exit(4)
    else:
        break
"#;

/// `keypack run --runner NAME` with a runner that fails: an unknown name lists the runners, a
/// runner's error is shown as it said it, a pid that does not run and a dying runner are clean
/// errors, QEMU's own flags are refused; none leaves a record behind. The `start` request
/// carries the boot description, the runner's own 0700 folder and no passphrase fd for an
/// unsealed build.
#[test]
fn an_external_runner_that_fails_leaves_a_clean_error_and_no_record() {
    const T: &str = "an_external_runner_that_fails_leaves_a_clean_error_and_no_record";
    if !have_sops(T) || !have_python(T) {
        return;
    }
    let repo = standard_repo();
    let bin = bin_dir(&repo, "bin", &[("keypack-runner-fake", RUNNER)]);
    let (k, i) = boot_inputs(&repo);
    let root = repo.root().display().to_string();
    let build = build_args(
        &root,
        &["--media", "initrd", "--kernel", &k, "--initrd", &i],
    );
    let out = kp(&repo, &[&bin], &build, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let state = repo.tmp.path().join("state").join("web1");
    let record = state.join("runner.json");
    let run = |how: &str, extra: &[&str]| {
        std::fs::write(repo.tmp.path().join("fake-start"), how).unwrap();
        let mut args = vec!["run", "-H", "web1", "--runner", "fake", "--port", "auto"];
        args.extend_from_slice(extra);
        let out = kp(&repo, &[&bin], &args, &[]);
        assert!(!out.status.success());
        assert!(!record.exists(), "a failed start leaves no record");
        stderr(&out)
    };

    let err = stderr(&kp(
        &repo,
        &[&bin],
        &["run", "-H", "web1", "--runner", "nosuch"],
        &[],
    ));
    assert!(
        err.contains("no runner `nosuch` (runners: qemu, fake)"),
        "{err}"
    );
    let err = run("error", &[]);
    assert!(
        err.contains("runner fake") && err.contains("no hypervisor here"),
        "{err}"
    );
    let err = run("ghost", &[]);
    assert!(err.contains("pid 999999999, which does not run"), "{err}");
    let err = run("die", &[]);
    assert!(err.contains("exited before answering"), "{err}");
    for flag in [["--accel", "kvm"], ["--firmware", "/x"]] {
        let err = run("error", &flag);
        assert!(
            err.contains(&format!(
                "{} is an option of the built-in QEMU runner",
                flag[0]
            )),
            "{err}"
        );
    }

    let runner_dir = state.join("runner-fake");
    assert_eq!(
        std::fs::metadata(&runner_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let req: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runner_dir.join("start.json")).unwrap()).unwrap();
    assert_eq!(req["host"], "web1");
    assert_eq!(req["boot"]["medium"], "initrd");
    assert_eq!(req["state_dir"], runner_dir.display().to_string());
    assert!(req["ssh_port"].as_u64().unwrap() > 0);
    assert!(req.get("passphrase_fd").is_none(), "{req}");
    // A sealed build: the runner gets the checked passphrase as a read-only sealed memfd,
    // its only descriptor besides stdio; a wrong one never reaches it.
    let pass = "runner probe passphrase";
    let mut sealed = build.to_vec();
    sealed.extend(["--seal", "passphrase"]);
    let with_pin = |args: &[&str], input: &str| {
        let mut path: Vec<PathBuf> = vec![bin.clone()];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let mut child = repo
            .command(args)
            .env("PATH", std::env::join_paths(path).unwrap())
            .env("KEYPACK_STATE_DIR", repo.tmp.path().join("state"))
            .env("KEYPACK_PIN_FD", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(!stderr(&out).contains(pass), "the passphrase was printed");
        out
    };
    let out = with_pin(&sealed, &format!("{pass}\n{pass}\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    let probe = runner_dir.join("probe.json");
    std::fs::write(repo.tmp.path().join("fake-start"), "probe").unwrap();
    let run = ["run", "-H", "web1", "--runner", "fake", "--port", "auto"];
    let out = with_pin(&run, "not the passphrase\n");
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
    assert!(!probe.exists(), "a wrong passphrase started the runner");
    let out = with_pin(&run, &format!("{pass}\n"));
    assert!(
        stderr(&out).contains("runner fake: probed"),
        "{}",
        stderr(&out)
    );
    assert!(!record.exists());
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&probe).unwrap()).unwrap();
    assert_eq!(r["rdonly"], true, "{r}");
    assert_eq!(r["seals"].as_u64().unwrap() & 15, 15, "all four seals: {r}");
    assert_ne!(r["write"], "allowed", "{r}");
    let fds: Vec<u64> = r["fds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // stdio, the passphrase, and the folder listdir itself opened.
    assert_eq!(fds.len(), 5, "{r}");
    use sha2::Digest;
    assert_eq!(
        r["sha256"],
        format!("{:x}", sha2::Sha256::digest(pass.as_bytes())),
        "the passphrase the runner got is the one typed, without the newline"
    );

    // The machine it never started: stop and status say so plainly.
    let out = kp(&repo, &[&bin], &["status", "-H", "web1", "--json"], &[]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["running"], false);
}

fn py_plugin(name: &str, on_build: &str) -> String {
    format!(
        r#"#!/usr/bin/env python3
import json, os, sys, time
for line in sys.stdin:
    req = json.loads(line)
    t = req["type"]
    if t == "hello":
        print(json.dumps({{"type": "hello", "version": 1}}), flush=True)
    elif t == "describe":
        print(json.dumps({{"type": "description", "kind": "media", "name": "{name}",
            "about": "test", "default_artifact_name": "a.img", "flags": []}}), flush=True)
    elif t == "build":
        data = os.pread(req["bundle_fd"], req["bundle_len"], 0)
        out = req["output"]
{on_build}
        print(json.dumps({{"type": "built", "boot": {{"version": 1, "medium": "{name}",
            "host": req["host"], "boot": {{"kind": "disk", "image": out}}, "firmware": "any",
            "host_public_key": [e["public_key"] for e in req["manifest"]
                                if e["role"] == "host" and e["public"]][0]}}}}), flush=True)
    elif t == "bye":
        break
"#
    )
}

#[test]
fn broken_plugins_fail_cleanly_and_the_check_names_what_is_wrong() {
    const T: &str = "broken_plugins_fail_cleanly_and_the_check_names_what_is_wrong";
    if !have_python(T) {
        return;
    }
    let repo = standard_repo();
    let write_0600 = "        fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, data); os.close(fd)";
    let good = py_plugin("good", write_0600);
    let stray = py_plugin(
        "stray",
        &format!(
            "{write_0600}\n        open(os.path.join(req['state_dir'], 'copy'), 'wb').write(data)"
        ),
    );
    let world = py_plugin(
        "world",
        "        open(out, 'wb').write(data); os.chmod(out, 0o644)",
    );
    let unstable = py_plugin(
        "unstable",
        "        fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, data + os.urandom(8)); os.close(fd)",
    );
    let bin = bin_dir(
        &repo,
        "bin",
        &[
            ("keypack-media-good", good.as_str()),
            ("keypack-media-stray", stray.as_str()),
            ("keypack-media-world", world.as_str()),
            ("keypack-media-unstable", unstable.as_str()),
            ("keypack-media-dies", "#!/bin/sh\necho dying >&2\nexit 3\n"),
            (
                "keypack-media-garbage",
                "#!/bin/sh\nread l\necho 'this is not json'\n",
            ),
            ("keypack-media-hangs", "#!/bin/sh\nexec sleep 60\n"),
            (
                "keypack-media-floods",
                "#!/usr/bin/env python3\nimport sys\nsys.stdout.write('x' * (3 << 20)); sys.stdout.flush()\n",
            ),
            // Shadowed by the built-in initrd medium: never started.
            (
                "keypack-media-initrd",
                "#!/bin/sh\necho STARTED >&2\nexit 1\n",
            ),
            ("keypack-runner-fake", RUNNER),
        ],
    );
    let check = |name: &str, env: &[(&str, &str)]| {
        let out = kp(&repo, &[&bin], &["plugins", "check", name], env);
        (out.status.success(), stdout(&out) + &stderr(&out))
    };
    let (ok, text) = check("good", &[]);
    assert!(ok, "{text}");
    let (ok, text) = check("stray", &[]);
    assert!(!ok);
    assert!(
        text.contains("FAIL  no key bytes outside the listed artifacts")
            && text.contains("/copy holds key bytes"),
        "{text}"
    );
    let (ok, text) = check("world", &[]);
    assert!(
        !ok && text.contains("FAIL  artifacts 0600") && text.contains("mode 0644"),
        "{text}"
    );
    let (ok, text) = check("unstable", &[]);
    assert!(
        !ok && text.contains("FAIL  artifacts byte-identical"),
        "{text}"
    );

    // Death, garbage, a hang and a flood: clean errors, never a hang of keypack.
    let started = std::time::Instant::now();
    let out = kp(
        &repo,
        &[&bin],
        &["plugins", "--json"],
        &[("KEYPACK_PLUGIN_TIMEOUT", "3")],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let broken = doc["broken"].to_string();
    for (prog, why) in [
        (
            "keypack-media-dies",
            "exited before answering (exit status: 3)",
        ),
        (
            "keypack-media-garbage",
            "broke the plugin protocol: not a protocol message",
        ),
        ("keypack-media-hangs", "did not answer within 3 s"),
        ("keypack-media-floods", "a line longer than 1048576 bytes"),
    ] {
        let entry = doc["broken"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["path"].as_str().unwrap().ends_with(prog))
            .unwrap_or_else(|| panic!("{prog} not in {broken}"));
        assert!(
            entry["error"].as_str().unwrap().contains(why),
            "{prog}: {entry}"
        );
    }
    let err = stderr(&out);
    assert!(err.contains("dies: dying"), "stderr prefixed: {err}");
    // The built-in wins, with a warning naming the shadowed file, which is never started.
    assert!(
        err.contains(&format!(
            "warning: the built-in medium `initrd` shadows {}",
            bin.join("keypack-media-initrd").display()
        )),
        "{err}"
    );
    assert!(!err.contains("STARTED"), "{err}");
    let initrd = doc["media"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "initrd")
        .unwrap();
    assert_eq!(initrd["origin"], "built-in");
    assert_eq!(
        initrd["shadows"][0],
        bin.join("keypack-media-initrd").display().to_string()
    );
    // Runners are discovered and listed.
    let fake = doc["runners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "fake")
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(fake["origin"], "external");
    assert_eq!(fake["about"], "a fake runner");
    let (ok, text) = check("hangs", &[("KEYPACK_PLUGIN_TIMEOUT", "2")]);
    assert!(!ok && text.contains("did not answer within 2 s"), "{text}");
}

#[test]
fn plugins_come_from_absolute_path_entries_and_plugin_dir_never_the_working_directory() {
    const T: &str =
        "plugins_come_from_absolute_path_entries_and_plugin_dir_never_the_working_directory";
    if !have_python(T) {
        return;
    }
    let repo = standard_repo();
    let text = std::fs::read_to_string(example()).unwrap();
    let renamed = |n: &str| text.replace("NAME = \"pyexample\"", &format!("NAME = \"{n}\""));
    // `rel` is a relative PATH entry, resolved against the working directory (the temp dir).
    bin_dir(
        &repo,
        "rel",
        &[("keypack-media-relative", &renamed("relative"))],
    );
    bin_dir(&repo, ".", &[("keypack-media-cwd", &renamed("cwd"))]);
    let config = repo.tmp.path().join("xdg/keypack");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.toml"), "plugin_dir = \"plugins\"\n").unwrap();
    bin_dir(
        &repo,
        "xdg/keypack/plugins",
        &[("keypack-media-configured", &renamed("configured"))],
    );
    let path = format!("rel:.::{}", std::env::var("PATH").unwrap());
    let xdg = repo.tmp.path().join("xdg").display().to_string();
    let out = kp(
        &repo,
        &[],
        &["plugins"],
        &[("PATH", &path), ("XDG_CONFIG_HOME", &xdg)],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains(&"configured"), "{text}");
    assert!(
        !names.contains(&"relative") && !names.contains(&"cwd"),
        "{text}"
    );
}
