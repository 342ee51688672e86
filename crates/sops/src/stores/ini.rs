//! INI store, as sops' `stores/ini` on `gopkg.in/ini.v1` with default options: sections become
//! top-level maps (so the AES-GCM associated data is `section:key:`), keys before the first
//! section belong to `DEFAULT`, all values are strings, `;`/`#` lines and inline comments are
//! comments, the `[sops]` section holds the flattened metadata (`\n` escaped).

use super::unflatten;
use crate::error::{SopsError, malformed};
use crate::tree::Node;

fn value(
    raw: &str,
    lines: &mut std::iter::Enumerate<std::str::Lines<'_>>,
) -> Result<String, SopsError> {
    let line = raw.trim_start();
    if line.is_empty() {
        return Ok(String::new());
    }
    for q in ["\"\"\"", "`"] {
        if let Some(rest) = line.strip_prefix(q) {
            if let Some(end) = rest.rfind(q) {
                return Ok(rest[..end].to_owned());
            }
            // Multi-line quoted value.
            let mut out = rest.to_owned();
            for (_, l) in lines.by_ref() {
                out.push('\n');
                if let Some(end) = l.find(q) {
                    out.push_str(&l[..end]);
                    return Ok(out);
                }
                out.push_str(l);
            }
            return Err(malformed("INI quoted value is not closed"));
        }
    }
    let mut line = line.trim().to_owned();
    while line.ends_with('\\') {
        line.pop();
        match lines.next() {
            Some((_, l)) => line.push_str(l.trim()),
            None => break,
        }
    }
    if let Some(i) = line.find(['#', ';']) {
        line.truncate(i);
        line = line.trim().to_owned();
    }
    let b = line.as_bytes();
    if b.len() >= 2 && b[0] == b[b.len() - 1] && (b[0] == b'"' || b[0] == b'\'') {
        line = line[1..line.len() - 1].to_owned();
    }
    Ok(line)
}

/// Parses an INI file into one document of sections, the `[sops]` section unflattened.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Node>, SopsError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        malformed(format!(
            "INI is not UTF-8 (byte offset {})",
            e.valid_up_to()
        ))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections: Vec<(String, Vec<(String, String)>)> =
        vec![("DEFAULT".to_owned(), Vec::new())];
    let mut cur = 0usize;
    let mut lines = text.lines().enumerate();
    while let Some((n, raw)) = lines.next() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(end) = rest.find(']') else {
                return Err(malformed(format!(
                    "INI line {}: unclosed section header",
                    n + 1
                )));
            };
            let name = rest[..end].trim().to_owned();
            cur = match sections.iter().position(|(s, _)| *s == name) {
                Some(p) => p,
                None => {
                    sections.push((name, Vec::new()));
                    sections.len() - 1
                }
            };
            continue;
        }
        let Some(pos) = line.find(['=', ':']) else {
            return Err(malformed(format!("INI line {}: no `=` delimiter", n + 1)));
        };
        let key = line[..pos]
            .trim()
            .trim_matches(|c| c == '"' || c == '`')
            .to_owned();
        let v = value(&line[pos + 1..], &mut lines)?;
        let keys = &mut sections[cur].1;
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = v,
            None => keys.push((key, v)),
        }
    }
    let mut items = Vec::new();
    let mut meta = None;
    for (name, keys) in sections {
        if name == "sops" {
            let pairs = keys
                .into_iter()
                .map(|(k, v)| (k, v.replace("\\n", "\n")))
                .collect();
            meta = Some(unflatten(pairs)?);
        } else {
            let map = keys.into_iter().map(|(k, v)| (k, Node::Str(v))).collect();
            items.push((name, Node::Map(map)));
        }
    }
    if let Some(m) = meta {
        items.push(("sops".to_owned(), m));
    }
    Ok(vec![Node::Map(items)])
}
