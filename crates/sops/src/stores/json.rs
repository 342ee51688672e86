//! JSON store (`serde_json` with `preserve_order`). Numbers are typed the way sops ≤ 3.13.1 reads
//! them (Go `float64`), which for the MAC of a plain number means Go float formatting.

use serde_json::Value as J;

use super::scalar::go_float;
use crate::error::{SopsError, malformed};
use crate::tree::{Node, ValueType};

fn convert(v: J, depth: usize) -> Result<Node, SopsError> {
    if depth > 256 {
        return Err(malformed("JSON nested too deeply"));
    }
    Ok(match v {
        J::Null => Node::Null,
        J::Bool(b) => Node::Plain {
            kind: ValueType::Bool,
            mac: if b { "True" } else { "False" }.into(),
            text: b.to_string(),
        },
        J::Number(n) => {
            let text = n.to_string();
            let mac = match n.as_f64() {
                Some(f) => go_float(f),
                None => text.clone(),
            };
            Node::Plain {
                kind: ValueType::Float,
                mac,
                text,
            }
        }
        J::String(s) => Node::Str(s),
        J::Array(a) => Node::List(
            a.into_iter()
                .map(|x| convert(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(o) => Node::Map(
            o.into_iter()
                .map(|(k, x)| Ok((k, convert(x, depth + 1)?)))
                .collect::<Result<_, SopsError>>()?,
        ),
    })
}

/// Parses a JSON document (an object at the top).
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Node>, SopsError> {
    let v: J = serde_json::from_slice(bytes).map_err(|e| {
        malformed(format!(
            "JSON syntax ({:?}) at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    match convert(v, 0)? {
        n @ Node::Map(_) => Ok(vec![n]),
        _ => Err(malformed("JSON document is not an object")),
    }
}
