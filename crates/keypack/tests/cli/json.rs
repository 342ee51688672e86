//! `--json` where scripts read (`verify`, `inspect`, `plugins`, `doctor`; `status` has its own
//! test): one JSON document on stdout with the field names the README lists, errors on stderr.

use crate::common::*;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}\nstderr: {}",
            stdout(out),
            stderr(out)
        )
    })
}

#[test]
fn verify_json_lists_every_key_and_keeps_errors_on_stderr() {
    if !have_sops("verify_json_lists_every_key_and_keeps_errors_on_stderr") {
        return;
    }
    let repo = standard_repo();
    let out = repo.run(
        "verify",
        &["-H", "web1", "-U", "alice", "-U", "bob", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["host"], "web1");
    assert_eq!(doc["ok"], true);
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4);
    let scratch = repo.scratch();
    for (key, (path, role, user, source, pair)) in keys.iter().zip([
        (
            "etc/ssh/ssh_host_ed25519_key",
            "host",
            None,
            "hosts/web1.yaml",
            &repo.host,
        ),
        (
            "root/.ssh/deploy_key_ed25519",
            "deploy",
            None,
            "hosts/web1.yaml",
            &repo.deploy,
        ),
        (
            "users/alice/.ssh/id_ed25519",
            "user",
            Some("alice"),
            "users/alice.json",
            &repo.alice,
        ),
        (
            "users/bob/.ssh/id_ed25519",
            "user",
            Some("bob"),
            "users/bob/id_ed25519",
            &repo.bob,
        ),
    ]) {
        assert_eq!(key["path"], path);
        assert_eq!(key["role"], role);
        assert_eq!(key["user"].as_str(), user);
        assert_eq!(key["source"], source);
        assert_eq!(
            key["fingerprint"],
            fingerprint(&pair.public, &scratch).as_str()
        );
        assert!(key["error"].is_null());
    }

    // A failing key: still one document on stdout, `ok: false`, the error also on stderr.
    repo.write("users/carol.json", b"{\"id_ed25519\": \"not sops\"}");
    let out = repo.run("verify", &["-H", "web1", "-U", "carol", "--json"]);
    assert!(!out.status.success());
    let doc = json(&out);
    assert_eq!(doc["ok"], false);
    let carol = &doc["keys"][2];
    assert_eq!(carol["path"], "users/carol/.ssh/id_ed25519");
    assert!(carol["fingerprint"].is_null());
    assert!(
        carol["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{doc}"
    );
    assert!(
        stderr(&out).contains("error: users/carol/.ssh/id_ed25519"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plugins_json_names_media_and_runners() {
    let repo = standard_repo();
    let out = repo.keypack(&["plugins", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    let media = doc["media"].as_array().unwrap();
    let names: Vec<&str> = media.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"ventoy") && names.contains(&"initrd"),
        "{doc}"
    );
    let defaults: Vec<&str> = media
        .iter()
        .filter(|m| m["default"] == true)
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(defaults, ["ventoy"]);
    assert!(
        media
            .iter()
            .all(|m| m["about"].as_str().is_some_and(|a| !a.is_empty()))
    );
    assert_eq!(doc["runners"][0]["name"], "qemu");
}

#[test]
fn doctor_json_is_one_document_with_levels_and_fixes() {
    let repo = standard_repo();
    let out = repo.keypack(&["doctor", "--json"]);
    let doc = json(&out);
    let checks = doc["checks"].as_array().unwrap();
    assert!(checks.len() >= 3, "{doc}");
    let failed = checks.iter().filter(|c| c["level"] == "fail").count();
    let warned = checks.iter().filter(|c| c["level"] == "warn").count();
    assert_eq!(doc["failed"], failed);
    assert_eq!(doc["warnings"], warned);
    assert_eq!(doc["ok"], failed == 0);
    assert_eq!(out.status.success(), failed == 0);
    for c in checks {
        assert!(
            ["ok", "warn", "fail"].contains(&c["level"].as_str().unwrap()),
            "{c}"
        );
        assert!(c["what"].as_str().is_some_and(|w| !w.is_empty()), "{c}");
        assert!(c["details"].is_array(), "{c}");
        // A fix is given for what is not ok, never for what is.
        if c["level"] == "ok" {
            assert!(c["fix"].is_null(), "{c}");
        }
    }
    assert!(
        !stdout(&out).contains("fix: "),
        "no text lines mixed into the JSON"
    );
}
