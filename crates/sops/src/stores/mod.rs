//! Store parsers: bytes of one format in, a list of documents ([`Node`] maps) out, with the sops
//! metadata left under the top-level key `sops` of the first document (dotenv and INI metadata is
//! unflattened into that shape). Parsers see only ciphertext and plain values, never plaintext.

pub(crate) mod dotenv;
pub(crate) mod ini;
pub(crate) mod json;
pub(crate) mod scalar;
pub(crate) mod yaml;

use crate::error::{SopsError, malformed};
use crate::tree::Node;

/// Rebuilds sops' flattened metadata (`age__list_0__map_enc` → `age[0].enc`).
pub(crate) fn unflatten(pairs: Vec<(String, String)>) -> Result<Node, SopsError> {
    let mut root = Node::Map(Vec::new());
    for (key, value) in pairs {
        let mut comps = key.split("__");
        let first = comps.next().unwrap_or_default().to_owned();
        let rest: Vec<&str> = comps.collect();
        let mut cur = map_entry(&mut root, &first, &key)?;
        for c in rest {
            if let Some(i) = c.strip_prefix("list_") {
                let i: usize = i
                    .parse()
                    .map_err(|_| malformed(format!("metadata key `{key}`: bad list index")))?;
                if i > 1024 {
                    return Err(malformed(format!(
                        "metadata key `{key}`: list index too large"
                    )));
                }
                if matches!(cur, Node::Null) {
                    *cur = Node::List(Vec::new());
                }
                let Node::List(items) = cur else {
                    return Err(malformed(format!(
                        "metadata key `{key}`: list and map mixed"
                    )));
                };
                while items.len() <= i {
                    items.push(Node::Null);
                }
                cur = &mut items[i];
            } else if let Some(k) = c.strip_prefix("map_") {
                cur = map_entry(cur, k, &key)?;
            } else {
                return Err(malformed(format!(
                    "metadata key `{key}`: bad flattened component"
                )));
            }
        }
        *cur = Node::Str(value);
    }
    Ok(root)
}

fn map_entry<'a>(node: &'a mut Node, k: &str, full: &str) -> Result<&'a mut Node, SopsError> {
    if matches!(node, Node::Null) {
        *node = Node::Map(Vec::new());
    }
    let Node::Map(items) = node else {
        return Err(malformed(format!(
            "metadata key `{full}`: list and map mixed"
        )));
    };
    let pos = match items.iter().position(|(key, _)| key == k) {
        Some(p) => p,
        None => {
            items.push((k.to_owned(), Node::Null));
            items.len() - 1
        }
    };
    Ok(&mut items[pos].1)
}
