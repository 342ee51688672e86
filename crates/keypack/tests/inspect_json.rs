//! `keypack inspect --json`: one JSON document for a bundle and for a Ventoy image, with the
//! field names the README lists; never a key byte.

mod assurance_support;

use assurance_support::*;

fn run(repo: &Repo, args: &[&str]) -> std::process::Output {
    repo.keypack(args)
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

#[test]
fn inspect_json_of_a_bundle_and_of_a_ventoy_image() {
    let test = "inspect_json_of_a_bundle_and_of_a_ventoy_image";
    if !ventoy_prereqs(test) {
        return;
    }
    let repo = standard_repo();
    let out_dir = repo.out_dir("json");
    let bundle = out_dir.join("keys.tar.gz");
    let pack = repo.run(
        "pack",
        &["-H", "web1", "-U", "alice", "-o", bundle.to_str().unwrap()],
    );
    assert!(pack.status.success(), "{}", stderr(&pack));
    let out = run(&repo, &["inspect", "--json", bundle.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PRIVATE KEY"));
    let doc = json(&out);
    assert_eq!(doc["kind"], "keys.tar.gz");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["problems"].as_array().unwrap().len(), 0);
    let entries = doc["entries"].as_array().unwrap();
    let host = entries
        .iter()
        .find(|e| e["path"] == "etc/ssh/ssh_host_ed25519_key")
        .expect("the host key is listed");
    assert_eq!(host["mode"], "0600");
    assert_eq!(host["type"], "-");
    assert_eq!(host["uid"], 0);
    assert!(host["fingerprint"].as_str().unwrap().starts_with("SHA256:"));

    // A Ventoy image built from the same keys.
    let scratch = repo.scratch();
    let vdir = ventoy_dir(&scratch);
    let iso = scratch.join("keypack-nixos.iso");
    fake_iso(&iso, 1 << 20);
    let image = out_dir.join("ventoy.img");
    let build = repo
        .command(&[
            "build",
            "--keys-repo",
            repo.root().to_str().unwrap(),
            "-i",
            AGE_KEY,
            "-H",
            "web1",
            "--iso",
            iso.to_str().unwrap(),
            "--ventoy-dir",
            vdir.to_str().unwrap(),
            "-o",
            image.to_str().unwrap(),
        ])
        .env("KEYPACK_STATE_DIR", out_dir.join("state"))
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", stderr(&build));
    let out = run(&repo, &["inspect", "--json", image.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["kind"], "ventoy");
    assert_eq!(doc["ok"], true, "{doc}");
    assert!(doc["disk_bytes"].as_u64().unwrap() > 0);
    assert!(doc["data_partition"]["sectors"].as_u64().unwrap() > 0);
    assert!(doc["ventoy_version"].as_str().is_some(), "{doc}");
    assert_eq!(doc["ventoy_json"], "ok");
    let injection = doc["injection"].as_array().unwrap();
    assert_eq!(injection.len(), 1, "{doc}");
    let archive = injection[0]["archive"].as_str().unwrap();
    let bundles = doc["bundles"].as_array().unwrap();
    assert_eq!(bundles[0]["path"], archive);
    assert!(
        bundles[0]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "etc/ssh/ssh_host_ed25519_key"),
        "{doc}"
    );
    assert!(
        doc["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"].as_str().is_some_and(|p| p.ends_with(".iso"))),
        "{doc}"
    );
}
