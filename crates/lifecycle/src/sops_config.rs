//! `.sops.yaml`: which age recipients a new file gets (creation rules), the exact-string
//! replacement of a rotated host recipient, and the lines a sops-nix user adds for a new host.
//!
//! Supports: `creation_rules[]` with `path_regex` (absent = matches everything), `age` as a
//! comma-separated string or a list, `key_groups` with exactly one group (its `age` list);
//! anchors and aliases (`&host_web1` / `*host_web1`, the sops-nix style). Does not support:
//! several key groups (refused, see the crate docs), `shamir_threshold`, PGP/KMS/Vault keys
//! (ignored: keypack wraps for age only), `destination_rules`.

use std::path::{Path, PathBuf};

use regex::Regex;
use yaml_rust2::{Yaml, YamlLoader};

use crate::LifecycleError;

/// The configuration file sops looks for at the repository root.
pub const SOPS_CONFIG: &str = ".sops.yaml";

#[derive(Debug)]
struct Rule {
    path_regex: Option<Regex>,
    age: Vec<String>,
    groups: usize,
}

/// The creation rules of a `.sops.yaml`.
#[derive(Debug)]
pub struct SopsConfig {
    file: PathBuf,
    rules: Vec<Rule>,
}

fn bad(file: &Path, message: impl Into<String>) -> LifecycleError {
    LifecycleError::SopsConfig {
        file: file.to_owned(),
        message: message.into(),
    }
}

/// `age` as sops reads it: a string of comma-separated recipients, or a list of strings.
fn age_list(file: &Path, rule: usize, v: &Yaml) -> Result<Vec<String>, LifecycleError> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match v {
        Yaml::BadValue | Yaml::Null => Ok(Vec::new()),
        Yaml::String(s) => Ok(split(s)),
        Yaml::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Yaml::String(s) => out.extend(split(s)),
                    _ => {
                        return Err(bad(
                            file,
                            format!("creation rule #{rule}: `age` entries must be strings"),
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad(
            file,
            format!("creation rule #{rule}: `age` must be a string or a list of strings"),
        )),
    }
}

impl SopsConfig {
    /// Parses `.sops.yaml` text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<SopsConfig, LifecycleError> {
        let docs =
            YamlLoader::load_from_str(text).map_err(|e| bad(file, format!("not YAML: {e}")))?;
        let Some(doc) = docs.into_iter().next() else {
            return Ok(SopsConfig {
                file: file.to_owned(),
                rules: Vec::new(),
            });
        };
        if matches!(doc, Yaml::Null) {
            return Ok(SopsConfig {
                file: file.to_owned(),
                rules: Vec::new(),
            });
        }
        if doc.as_hash().is_none() {
            return Err(bad(file, "the top level is not a mapping"));
        }
        let rules_node = &doc["creation_rules"];
        let items = match rules_node {
            Yaml::BadValue | Yaml::Null => &Vec::new(),
            Yaml::Array(items) => items,
            _ => return Err(bad(file, "`creation_rules` is not a list")),
        };
        let mut rules = Vec::with_capacity(items.len());
        for (i, r) in items.iter().enumerate() {
            let n = i + 1;
            if r.as_hash().is_none() {
                return Err(bad(file, format!("creation rule #{n} is not a mapping")));
            }
            let path_regex = match &r["path_regex"] {
                Yaml::BadValue | Yaml::Null => None,
                Yaml::String(s) if s.is_empty() => None,
                Yaml::String(s) => Some(Regex::new(s).map_err(|e| {
                    bad(file, format!("creation rule #{n}: path_regex {s:?}: {e}"))
                })?),
                _ => {
                    return Err(bad(
                        file,
                        format!("creation rule #{n}: path_regex is not a string"),
                    ));
                }
            };
            let (age, groups) = match &r["key_groups"] {
                Yaml::Array(groups) if !groups.is_empty() => {
                    let mut age = Vec::new();
                    for g in groups {
                        age.extend(age_list(file, n, &g["age"])?);
                    }
                    (age, groups.len())
                }
                Yaml::BadValue | Yaml::Null | Yaml::Array(_) => (age_list(file, n, &r["age"])?, 1),
                _ => {
                    return Err(bad(
                        file,
                        format!("creation rule #{n}: key_groups is not a list"),
                    ));
                }
            };
            rules.push(Rule {
                path_regex,
                age,
                groups,
            });
        }
        Ok(SopsConfig {
            file: file.to_owned(),
            rules,
        })
    }

    /// Reads `<root>/.sops.yaml`; a missing file is a configuration without rules.
    pub fn load(root: &Path) -> Result<SopsConfig, LifecycleError> {
        SopsConfig::from_text(root, Self::read(root)?.as_deref())
    }

    /// The text of `<root>/.sops.yaml`, `None` when there is none (for a caller that edits
    /// it and then parses it with [`SopsConfig::from_text`]).
    pub fn read(root: &Path) -> Result<Option<String>, LifecycleError> {
        let file = root.join(SOPS_CONFIG);
        match std::fs::read(&file) {
            Ok(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| bad(&file, "not UTF-8")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LifecycleError::Io { path: file, source }),
        }
    }

    /// The configuration `text` (as [`SopsConfig::read`] gives it) describes for `root`; no
    /// text is a configuration without rules.
    pub fn from_text(root: &Path, text: Option<&str>) -> Result<SopsConfig, LifecycleError> {
        let file = root.join(SOPS_CONFIG);
        match text {
            Some(text) => SopsConfig::parse(text, &file),
            None => Ok(SopsConfig {
                file,
                rules: Vec::new(),
            }),
        }
    }

    /// The age recipients the first matching rule gives `rel_path` (relative to the folder of
    /// `.sops.yaml`, `/`-separated, as sops matches it). Errors when no rule matches, when the
    /// rule lists no age recipient, or when it has several key groups.
    pub fn recipients_for(&self, rel_path: &str) -> Result<Vec<String>, LifecycleError> {
        let found = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.path_regex.as_ref().is_none_or(|re| re.is_match(rel_path)));
        let Some((i, rule)) = found else {
            return Err(LifecycleError::NoCreationRule {
                file: self.file.clone(),
                path: rel_path.to_owned(),
            });
        };
        if rule.groups > 1 {
            return Err(LifecycleError::KeyGroups {
                file: self.file.clone(),
                rule: i + 1,
                path: rel_path.to_owned(),
                groups: rule.groups,
            });
        }
        if rule.age.is_empty() {
            return Err(LifecycleError::NoAgeRecipients {
                file: self.file.clone(),
                rule: i + 1,
                path: rel_path.to_owned(),
            });
        }
        let mut out: Vec<String> = Vec::with_capacity(rule.age.len());
        for r in &rule.age {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        Ok(out)
    }
}

/// Replaces every occurrence of the recipient `old` in `text` by `new`, as whole words (an age
/// recipient is one Bech32 word), and nothing else: comments, anchors and layout stay. Returns
/// the new text and the number of replacements.
pub fn replace_recipient(text: &str, old: &str, new: &str) -> (String, usize) {
    let word = |c: char| c.is_ascii_alphanumeric();
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    let mut rest = text;
    while let Some(pos) = rest.find(old) {
        let before = rest[..pos].chars().next_back();
        let after = rest[pos + old.len()..].chars().next();
        out.push_str(&rest[..pos]);
        if before.is_some_and(word) || after.is_some_and(word) {
            out.push_str(old);
        } else {
            out.push_str(new);
            count += 1;
        }
        rest = &rest[pos + old.len()..];
    }
    out.push_str(rest);
    (out, count)
}

/// A sops file's recipient list after a rotation: `old` replaced by `new` in place (order
/// kept), `new` not listed twice.
pub fn replaced_recipients(current: &[String], old: &str, new: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(current.len());
    for r in current {
        let r = if r == old { new } else { r.as_str() };
        if !out.iter().any(|x| x == r) {
            out.push(r.to_owned());
        }
    }
    out
}

/// The `.sops.yaml` lines a sops-nix user adds for a new host: an anchored key and a creation
/// rule for the host's secrets (`secrets/HOST/…`) listing the host and the admins.
pub fn sops_nix_snippet(host: &str, recipient: &str) -> String {
    let anchor: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let regex_host = regex::escape(host);
    format!(
        "keys:\n  - &host_{anchor} {recipient}\ncreation_rules:\n  - path_regex: secrets/{regex_host}/.*\n    key_groups:\n      - age:\n          - *host_{anchor}\n          # - *admin_you   (your own recipients, as in your other rules)\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "age1u97jaylkzff0r93u9ft56wnqcl2vrffzgfjl6p8zjsy2m9sxk47sht8grs";
    const B: &str = "age1a8pk4akrdamj7nvqy3zywgtny8dxz7t5xzu7u8v9mhrayp9freqsqatyrs";

    fn cfg(text: &str) -> SopsConfig {
        SopsConfig::parse(text, Path::new(".sops.yaml")).unwrap()
    }

    #[test]
    fn first_matching_rule_wins_with_strings_lists_and_aliases() {
        let c = cfg(&format!(
            "keys:\n  - &admin {A}\n  - &web1 {B}\ncreation_rules:\n  - path_regex: secrets/web1/.*\n    key_groups:\n    - age:\n      - *admin\n      - *web1\n  - path_regex: ^hosts/\n    age: '{A}, {B}'\n  - age: [{A}]\n"
        ));
        assert_eq!(c.recipients_for("secrets/web1/db.yaml").unwrap(), [A, B]);
        assert_eq!(c.recipients_for("hosts/web3.yaml").unwrap(), [A, B]);
        // The catch-all rule (no path_regex).
        assert_eq!(c.recipients_for("users/carol.yaml").unwrap(), [A]);
        // Unanchored search, as Go's MatchString.
        let c = cfg(&format!(
            "creation_rules:\n  - path_regex: hosts\n    age: {A}\n"
        ));
        assert_eq!(c.recipients_for("x/hosts/y.yaml").unwrap(), [A]);
    }

    #[test]
    fn no_rule_no_age_and_groups_are_errors_naming_the_file() {
        let c = cfg(&format!(
            "creation_rules:\n  - path_regex: ^secrets/\n    age: {A}\n"
        ));
        let e = c.recipients_for("hosts/web3.yaml").unwrap_err();
        assert!(matches!(e, LifecycleError::NoCreationRule { .. }));
        assert!(e.to_string().contains(".sops.yaml") && e.to_string().contains("hosts/web3.yaml"));
        assert!(
            cfg("")
                .recipients_for("hosts/a.yaml")
                .is_err_and(|e| matches!(e, LifecycleError::NoCreationRule { .. }))
        );
        let c = cfg("creation_rules:\n  - pgp: ABCDEF\n");
        assert!(matches!(
            c.recipients_for("a").unwrap_err(),
            LifecycleError::NoAgeRecipients { rule: 1, .. }
        ));
        let c = cfg(&format!(
            "creation_rules:\n  - key_groups:\n    - age: [{A}]\n    - age: [{B}]\n"
        ));
        assert!(matches!(
            c.recipients_for("a").unwrap_err(),
            LifecycleError::KeyGroups { groups: 2, .. }
        ));
        assert!(SopsConfig::parse("creation_rules: 3\n", Path::new(".sops.yaml")).is_err());
        assert!(
            SopsConfig::parse("creation_rules:\n - path_regex: '('\n", Path::new("x")).is_err()
        );
    }

    #[test]
    fn replacement_is_exact_and_keeps_everything_else() {
        let text = format!(
            "keys:\n  - &web1 {A} # web1's host key\ncreation_rules:\n  - age: \"{A},{B}\"\n# {A}x stays\n"
        );
        let (out, n) = replace_recipient(&text, A, B);
        assert_eq!(n, 2);
        assert_eq!(
            out,
            format!(
                "keys:\n  - &web1 {B} # web1's host key\ncreation_rules:\n  - age: \"{B},{B}\"\n# {A}x stays\n"
            )
        );
        assert_eq!(replace_recipient("none", A, B), ("none".to_owned(), 0));
    }

    #[test]
    fn recipient_lists_keep_order() {
        let cur = vec!["x".to_owned(), A.to_owned(), "y".to_owned()];
        assert_eq!(replaced_recipients(&cur, A, B), ["x", B, "y"]);
        let cur = vec![A.to_owned(), B.to_owned()];
        assert_eq!(replaced_recipients(&cur, A, B), [B]);
    }

    #[test]
    fn snippet_parses_as_a_rule_for_the_hosts_secrets() {
        let s = sops_nix_snippet("web3", B);
        let c = cfg(&s);
        assert_eq!(c.recipients_for("secrets/web3/db.yaml").unwrap(), [B]);
        assert!(c.recipients_for("secrets/web4/db.yaml").is_err());
    }
}
