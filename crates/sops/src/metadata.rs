//! The `sops` metadata block, read from the tree every store produces: age entries, the MAC,
//! `lastmodified` (raw text: it is the MAC's associated data), the encryption rule and
//! `mac_only_encrypted`. `null` entries (sops ≤ 3.9 JSON writes `"kms": null`) count as absent.

use regex::Regex;

use crate::error::{SopsError, malformed};
use crate::tree::Node;

/// One `sops.age[]` entry: the recipient as written (any kind: `age1…`, `age1yubikey1…`,
/// `age1pq1…`, `ssh-…`; never parsed) and its armored age file holding the data key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgeEntry {
    /// Recipient string as written in the file (public, unauthenticated by sops).
    pub recipient: String,
    /// The armored age file (`-----BEGIN AGE ENCRYPTED FILE-----`) wrapping the data key.
    pub enc: String,
}

/// Which values a file encrypts (sops allows exactly one rule; default `_unencrypted` suffix).
#[derive(Debug)]
pub(crate) enum Rule {
    UnencryptedSuffix(String),
    EncryptedSuffix(String),
    UnencryptedRegex(Regex),
    EncryptedRegex(Regex),
}

impl Rule {
    /// sops' `shouldBeEncrypted` for a path of keys (list positions are not part of it).
    pub(crate) fn encrypted(&self, path: &[&str]) -> bool {
        match self {
            Rule::UnencryptedSuffix(s) => !path.iter().any(|p| p.ends_with(s.as_str())),
            Rule::EncryptedSuffix(s) => path.iter().any(|p| p.ends_with(s.as_str())),
            Rule::UnencryptedRegex(r) => !path.iter().any(|p| r.is_match(p)),
            Rule::EncryptedRegex(r) => path.iter().any(|p| r.is_match(p)),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Metadata {
    pub age: Vec<AgeEntry>,
    pub lastmodified: String,
    pub mac: Option<String>,
    pub rule: Rule,
    pub mac_only_encrypted: bool,
    /// The age entries came from `key_groups` (not the top-level `age` list).
    pub in_key_groups: bool,
}

fn text(n: &Node) -> Option<&str> {
    match n {
        Node::Str(s) => Some(s),
        Node::Plain { text, .. } => Some(text),
        _ => None,
    }
}

fn field<'a>(meta: &'a Node, key: &str) -> Option<&'a Node> {
    meta.get(key).filter(|n| !matches!(n, Node::Null))
}

fn str_field<'a>(meta: &'a Node, key: &str) -> Result<Option<&'a str>, SopsError> {
    match field(meta, key) {
        None => Ok(None),
        Some(n) => text(n)
            .map(Some)
            .ok_or_else(|| malformed(format!("metadata `sops.{key}` is not a scalar"))),
    }
}

fn age_list(list: &Node, at: &str, out: &mut Vec<AgeEntry>) -> Result<(), SopsError> {
    let items = match list {
        Node::List(items) => items,
        Node::Null => return Ok(()),
        _ => return Err(malformed(format!("metadata `{at}` is not a list"))),
    };
    for (i, item) in items.iter().enumerate() {
        let get = |k: &str| {
            field(item, k)
                .and_then(text)
                .map(str::to_owned)
                .ok_or_else(|| malformed(format!("metadata `{at}[{i}].{k}` is missing")))
        };
        out.push(AgeEntry {
            recipient: get("recipient")?,
            enc: get("enc")?,
        });
    }
    Ok(())
}

impl Metadata {
    pub(crate) fn from_node(meta: &Node) -> Result<Metadata, SopsError> {
        if !matches!(meta, Node::Map(_)) {
            return Err(malformed("`sops` metadata is not a mapping"));
        }
        for k in ["unencrypted_comment_regex", "encrypted_comment_regex"] {
            if str_field(meta, k)?.is_some_and(|s| !s.is_empty()) {
                return Err(SopsError::Unsupported {
                    what: format!("`{k}` (comment-driven encryption rules)"),
                });
            }
        }
        let mut age = Vec::new();
        let mut in_key_groups = false;
        if let Some(groups) = field(meta, "key_groups") {
            let Node::List(groups) = groups else {
                return Err(malformed("metadata `sops.key_groups` is not a list"));
            };
            if groups.len() > 1 {
                return Err(SopsError::UnsupportedKeyGroups {
                    groups: groups.len(),
                });
            }
            in_key_groups = !groups.is_empty();
            if let Some(g) = groups.first()
                && let Some(list) = field(g, "age")
            {
                age_list(list, "sops.key_groups[0].age", &mut age)?;
            }
        }
        if let Some(list) = field(meta, "age") {
            age_list(list, "sops.age", &mut age)?;
        }
        let lastmodified = str_field(meta, "lastmodified")?
            .ok_or_else(|| malformed("metadata `sops.lastmodified` is missing"))?
            .to_owned();
        let mac = str_field(meta, "mac")?
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        let mac_only_encrypted = match str_field(meta, "mac_only_encrypted")? {
            None => false,
            Some("true" | "True" | "TRUE" | "1" | "t" | "T") => true,
            Some("false" | "False" | "FALSE" | "0" | "f" | "F") => false,
            Some(_) => {
                return Err(malformed(
                    "metadata `sops.mac_only_encrypted` is not a boolean",
                ));
            }
        };
        let regex = |k: &str, r: &str| {
            Regex::new(r)
                .map_err(|_| malformed(format!("metadata `sops.{k}` is not a valid regex")))
        };
        let mut rules = Vec::new();
        for k in [
            "unencrypted_suffix",
            "encrypted_suffix",
            "unencrypted_regex",
            "encrypted_regex",
        ] {
            if let Some(v) = str_field(meta, k)?.filter(|v| !v.is_empty()) {
                rules.push(match k {
                    "unencrypted_suffix" => Rule::UnencryptedSuffix(v.to_owned()),
                    "encrypted_suffix" => Rule::EncryptedSuffix(v.to_owned()),
                    "unencrypted_regex" => Rule::UnencryptedRegex(regex(k, v)?),
                    _ => Rule::EncryptedRegex(regex(k, v)?),
                });
            }
        }
        if rules.len() > 1 {
            return Err(malformed(
                "metadata sets more than one of unencrypted_suffix, encrypted_suffix, unencrypted_regex, encrypted_regex",
            ));
        }
        let rule = rules
            .pop()
            .unwrap_or_else(|| Rule::UnencryptedSuffix("_unencrypted".to_owned()));
        Ok(Metadata {
            age,
            lastmodified,
            mac,
            rule,
            mac_only_encrypted,
            in_key_groups,
        })
    }
}
