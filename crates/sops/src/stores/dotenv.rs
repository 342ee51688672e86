//! dotenv store, as sops' `stores/dotenv`: one `KEY=VALUE` per line, split at the first `=`,
//! `\n` in values unescaped, `#` lines are comments (not in the MAC), metadata flattened into
//! `sops_*` keys.

use super::unflatten;
use crate::error::{SopsError, malformed};
use crate::tree::Node;

/// Parses a dotenv file into one document with the metadata under `sops`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Node>, SopsError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        malformed(format!(
            "dotenv is not UTF-8 (byte offset {})",
            e.valid_up_to()
        ))
    })?;
    let mut items: Vec<(String, Node)> = Vec::new();
    let mut meta = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(pos) = line.find('=') else {
            return Err(malformed(format!("dotenv line {} has no `=`", n + 1)));
        };
        let key = &line[..pos];
        let value = line[pos + 1..].replace("\\n", "\n");
        if let Some(m) = key.strip_prefix("sops_") {
            meta.push((m.to_owned(), value));
        } else {
            if items.iter().any(|(k, _)| k == key) {
                return Err(malformed(format!(
                    "dotenv line {}: duplicate key `{key}`",
                    n + 1
                )));
            }
            items.push((key.to_owned(), Node::Str(value)));
        }
    }
    if !meta.is_empty() {
        items.push(("sops".to_owned(), unflatten(meta)?));
    }
    Ok(vec![Node::Map(items)])
}
