//! `ventoy/ventoy.json`: the injection entry and the control list keypack writes, and the merge
//! into a user's existing file.
//!
//! Supports: the `injection` plugin (`image` entries), `control` (`VTOY_DEFAULT_IMAGE`,
//! `VTOY_MENU_TIMEOUT`, `VTOY_SECONDARY_BOOT_MENU`), `theme.display_mode`; UTF-8 with or
//! without a BOM on input; every other key is kept as it is.
//! Does not support: comments (Ventoy rejects them too), UTF-16, editing per-mode
//! `injection_<mode>` keys (they are reported as warnings).
//! Lives in `keypack-burn` (moved from the ventoy plugin, which re-exports it) because
//! `load-keys` edits the file too, when it burns a bundle, and must not link the plugin.
//! Reference: `ventoy.md` §1.1; `decisions.md` "ventoy.json for unattended boots";
//! https://ventoy.net/en/plugin_injection.html and plugin_control.html.

use serde_json::{Map, Value, json};

/// What keypack wants in `ventoy.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Path of the ISO on the data partition (`/x.iso`).
    pub iso: String,
    /// Path of the bundle on the data partition (`/keys.tar.gz`).
    pub archive: String,
    /// `VTOY_MENU_TIMEOUT`.
    pub menu_timeout: u32,
    /// Set `VTOY_DEFAULT_IMAGE` to the ISO.
    pub default_image: bool,
    /// `theme.display_mode = CLI`.
    pub text_menu: bool,
}

/// Per-mode injection keys that shadow `injection` in their boot mode.
pub const PER_MODE_KEYS: [&str; 5] = [
    "injection_legacy",
    "injection_uefi",
    "injection_ia32",
    "injection_aa64",
    "injection_mips",
];

impl Settings {
    fn injection_entry(&self) -> Value {
        json!({ "image": self.iso, "archive": self.archive })
    }

    fn control(&self) -> Vec<(&'static str, String)> {
        let mut c = Vec::new();
        if self.default_image {
            c.push(("VTOY_DEFAULT_IMAGE", self.iso.clone()));
        }
        c.push(("VTOY_MENU_TIMEOUT", self.menu_timeout.to_string()));
        c.push(("VTOY_SECONDARY_BOOT_MENU", "0".to_string()));
        c
    }

    /// The file for a fresh disk.
    pub fn fresh(&self) -> Vec<u8> {
        let mut root = Map::new();
        root.insert(
            "control".into(),
            Value::Array(
                self.control()
                    .into_iter()
                    .map(|(k, v)| json!({ k: v }))
                    .collect(),
            ),
        );
        if self.text_menu {
            root.insert("theme".into(), json!({ "display_mode": "CLI" }));
        }
        root.insert("injection".into(), json!([self.injection_entry()]));
        render(&Value::Object(root))
    }

    /// Merges our entries into an existing file. Returns the new bytes and warnings.
    pub fn merge(&self, existing: &[u8]) -> Result<(Vec<u8>, Vec<String>), String> {
        let text = existing.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(existing);
        if text.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok((self.fresh(), Vec::new()));
        }
        let text = std::str::from_utf8(text).map_err(|_| "is not UTF-8".to_string())?;
        let mut root: Value =
            serde_json::from_str(text).map_err(|e| format!("is not valid JSON: {e}"))?;
        let obj = root
            .as_object_mut()
            .ok_or_else(|| "top level is not an object".to_string())?;
        let mut warnings = Vec::new();

        // injection: drop entries for our ISO, append ours (the last matching entry wins).
        let inj = obj
            .entry("injection")
            .or_insert_with(|| Value::Array(Vec::new()));
        let arr = inj
            .as_array_mut()
            .ok_or_else(|| "\"injection\" is not an array".to_string())?;
        arr.retain(|e| e.get("image").and_then(Value::as_str) != Some(self.iso.as_str()));
        arr.push(self.injection_entry());

        for key in PER_MODE_KEYS {
            if obj.contains_key(key) {
                warnings.push(format!(
                    "ventoy.json has \"{key}\", which replaces \"injection\" in that boot mode: keypack's entry {{\"image\": {:?}, \"archive\": {:?}}} is ignored there unless you add it to \"{key}\"",
                    self.iso, self.archive
                ));
            }
        }

        // control: keep every user entry; add ours only where the user has none.
        let ctl = obj
            .entry("control")
            .or_insert_with(|| Value::Array(Vec::new()));
        let ctl = ctl
            .as_array_mut()
            .ok_or_else(|| "\"control\" is not an array".to_string())?;
        for (k, v) in self.control() {
            let existing = ctl.iter().find_map(|e| e.get(k).cloned());
            match existing {
                Some(user) if user.as_str() != Some(v.as_str()) => warnings.push(format!(
                    "ventoy.json keeps your control entry {k} = {user}; keypack would have set {v:?}"
                )),
                Some(_) => {}
                None => ctl.push(json!({ k: v })),
            }
        }

        if self.text_menu {
            let theme = obj.entry("theme").or_insert_with(|| json!({}));
            let theme = theme
                .as_object_mut()
                .ok_or_else(|| "\"theme\" is not an object".to_string())?;
            theme.insert("display_mode".into(), json!("CLI"));
        }
        Ok((render(&root), warnings))
    }
}

fn render(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Injection entries of a parsed `ventoy.json`: `(key, image or parent, archive)`.
pub fn injection_entries(root: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let Some(obj) = root.as_object() else {
        return out;
    };
    for key in std::iter::once("injection").chain(PER_MODE_KEYS) {
        if let Some(Value::Array(arr)) = obj.get(key) {
            for e in arr {
                let target = e
                    .get("image")
                    .or_else(|| e.get("parent"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let archive = e.get("archive").and_then(Value::as_str).unwrap_or("");
                out.push((key.to_string(), target.to_string(), archive.to_string()));
            }
        }
    }
    out
}

/// Parses `ventoy.json` bytes (BOM allowed).
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    serde_json::from_slice(text).map_err(|e| e.to_string())
}

/// Takes every injection entry (plain and per-mode keys) whose archive is one of `archives`
/// (ASCII case-insensitive: the data partition's names are) out of `ventoy.json`; every other
/// key and entry stays, `control` included. Returns the new bytes and how many entries went.
///
/// Used by the burn (`--burn-after-boot`): Ventoy then boots the ISO without injecting, instead
/// of failing to open an archive that is gone.
pub fn remove_injection(existing: &[u8], archives: &[String]) -> Result<(Vec<u8>, usize), String> {
    let mut root = parse(existing).map_err(|e| format!("is not valid JSON: {e}"))?;
    let obj = root
        .as_object_mut()
        .ok_or_else(|| "top level is not an object".to_string())?;
    let mut removed = 0;
    for key in std::iter::once("injection").chain(PER_MODE_KEYS) {
        if let Some(Value::Array(arr)) = obj.get_mut(key) {
            let before = arr.len();
            arr.retain(|e| {
                let archive = e.get("archive").and_then(Value::as_str).unwrap_or("");
                !archives.iter().any(|a| a.eq_ignore_ascii_case(archive))
            });
            removed += before - arr.len();
        }
    }
    Ok((render(&root), removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Settings {
        Settings {
            iso: "/k.iso".into(),
            archive: "/keys.tar.gz".into(),
            menu_timeout: 3,
            default_image: true,
            text_menu: false,
        }
    }

    #[test]
    fn fresh_has_injection_and_control() {
        let v: Value = serde_json::from_slice(&s().fresh()).unwrap();
        assert_eq!(v["injection"][0]["image"], "/k.iso");
        assert_eq!(v["injection"][0]["archive"], "/keys.tar.gz");
        assert_eq!(v["control"][0]["VTOY_DEFAULT_IMAGE"], "/k.iso");
        assert_eq!(v["control"][1]["VTOY_MENU_TIMEOUT"], "3");
        assert_eq!(v["control"][2]["VTOY_SECONDARY_BOOT_MENU"], "0");
        assert!(v.get("theme").is_none());
    }

    #[test]
    fn merge_keeps_user_keys_and_replaces_our_entry() {
        let user = br#"{"theme":{"file":"/t.txt"},"menu_alias":[{"image":"/a.iso","alias":"A"}],
          "control":[{"VTOY_MENU_TIMEOUT":"10"},{"VTOY_DEFAULT_SEARCH_ROOT":"/iso"}],
          "injection":[{"image":"/other.iso","archive":"/o.tar.gz"},{"image":"/k.iso","archive":"/old.tar.gz"}],
          "injection_uefi":[{"image":"/x.iso","archive":"/x.tar.gz"}]}"#;
        let mut set = s();
        set.text_menu = true;
        let (out, warnings) = set.merge(user).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["theme"]["file"], "/t.txt");
        assert_eq!(v["theme"]["display_mode"], "CLI");
        assert_eq!(v["menu_alias"][0]["alias"], "A");
        let inj = v["injection"].as_array().unwrap();
        assert_eq!(inj.len(), 2);
        assert_eq!(inj[0]["image"], "/other.iso");
        assert_eq!(inj[1]["archive"], "/keys.tar.gz");
        let ctl = v["control"].as_array().unwrap();
        assert!(ctl.iter().any(|e| e["VTOY_MENU_TIMEOUT"] == "10"));
        assert!(ctl.iter().any(|e| e["VTOY_DEFAULT_SEARCH_ROOT"] == "/iso"));
        assert!(ctl.iter().any(|e| e["VTOY_DEFAULT_IMAGE"] == "/k.iso"));
        assert!(
            ctl.iter()
                .all(|e| e.get("VTOY_MENU_TIMEOUT") != Some(&json!("3")))
        );
        assert_eq!(v["injection_uefi"][0]["image"], "/x.iso");
        assert!(warnings.iter().any(|w| w.contains("injection_uefi")));
        assert!(warnings.iter().any(|w| w.contains("VTOY_MENU_TIMEOUT")));
    }

    #[test]
    fn merge_accepts_bom_and_rejects_garbage() {
        let mut with_bom = b"\xEF\xBB\xBF".to_vec();
        with_bom.extend_from_slice(b"{\"x\":1}");
        let (out, _) = s().merge(&with_bom).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["x"], 1);
        assert!(s().merge(b"{ // comment\n}").is_err());
        assert!(s().merge(b"[1]").is_err());
        assert!(s().merge(br#"{"injection":{}}"#).is_err());
    }
}
