//! Shared helpers for keypack-sops integration tests: the vector identity, a structural
//! comparison form for decrypted trees and for expected plaintext files, and the skip convention.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};

use keypack_sops::{Decrypted, Value};

/// The folder of committed vectors.
pub fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

pub fn read_vector(name: &str) -> Vec<u8> {
    std::fs::read(vectors().join(name)).unwrap_or_else(|e| panic!("reading vector {name}: {e}"))
}

/// The throwaway identity of the vectors (`age-key.txt`).
pub fn vector_identity() -> age::x25519::Identity {
    let text = String::from_utf8(read_vector("age-key.txt")).expect("utf8");
    let line = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("secret key line");
    line.parse().expect("identity")
}

/// Prints the KEYPACK-SKIPPED marker, or panics when KEYPACK_REQUIRE_ALL=1 (CI).
pub fn skip(test: &str, why: &str) {
    if std::env::var("KEYPACK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: prerequisite missing and KEYPACK_REQUIRE_ALL=1: {why}");
    }
    // Written to the stderr handle directly: libtest's capture only swallows `eprintln!`.
    let _ = writeln!(std::io::stderr(), "KEYPACK-SKIPPED: {test}: {why}");
}

/// A plain tree for comparisons: scalars as their text.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmp {
    Map(Vec<(String, Cmp)>),
    List(Vec<Cmp>),
    Leaf(Vec<u8>),
    Null,
}

impl Cmp {
    pub fn leaf(s: &str) -> Cmp {
        Cmp::Leaf(s.as_bytes().to_vec())
    }
    /// Every leaf's bytes, depth first.
    pub fn leaves(&self, out: &mut Vec<Vec<u8>>) {
        match self {
            Cmp::Map(m) => m.iter().for_each(|(_, v)| v.leaves(out)),
            Cmp::List(l) => l.iter().for_each(|v| v.leaves(out)),
            Cmp::Leaf(b) => out.push(b.clone()),
            Cmp::Null => {}
        }
    }
}

pub fn from_value(v: &Value) -> Cmp {
    match v {
        Value::Map(m) => Cmp::Map(m.iter().map(|(k, v)| (k.clone(), from_value(v))).collect()),
        Value::List(l) => Cmp::List(l.iter().map(from_value).collect()),
        Value::Scalar(s) => Cmp::Leaf(s.expose().to_vec()),
        Value::Null => Cmp::Null,
        _ => panic!("unknown value kind"),
    }
}

/// The decrypted documents, with an empty INI `DEFAULT` section dropped.
pub fn from_decrypted(d: &Decrypted) -> Vec<Cmp> {
    d.documents()
        .iter()
        .map(|doc| match from_value(doc) {
            Cmp::Map(m) => Cmp::Map(
                m.into_iter()
                    .filter(|(k, v)| !(k == "DEFAULT" && *v == Cmp::Map(vec![])))
                    .collect(),
            ),
            other => other,
        })
        .collect()
}

pub fn from_yaml(y: &yaml_rust2::Yaml) -> Cmp {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Hash(h) => Cmp::Map(
            h.iter()
                .map(|(k, v)| (k.as_str().expect("string key").to_owned(), from_yaml(v)))
                .collect(),
        ),
        Yaml::Array(a) => Cmp::List(a.iter().map(from_yaml).collect()),
        Yaml::String(s) | Yaml::Real(s) => Cmp::leaf(s),
        Yaml::Integer(i) => Cmp::leaf(&i.to_string()),
        Yaml::Boolean(b) => Cmp::leaf(&b.to_string()),
        Yaml::Null => Cmp::Null,
        other => panic!("unexpected YAML node {other:?}"),
    }
}

/// All documents of a YAML stream (an empty stream is one empty map, as sops prints `{}`).
pub fn parse_yaml(text: &str) -> Vec<Cmp> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).expect("expected YAML parses");
    docs.iter().map(from_yaml).collect()
}

pub fn from_json(v: &serde_json::Value) -> Cmp {
    use serde_json::Value as J;
    match v {
        J::Object(o) => Cmp::Map(o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect()),
        J::Array(a) => Cmp::List(a.iter().map(from_json).collect()),
        J::String(s) => Cmp::leaf(s),
        J::Number(n) => Cmp::leaf(&n.to_string()),
        J::Bool(b) => Cmp::leaf(&b.to_string()),
        J::Null => Cmp::Null,
    }
}

pub fn parse_json(text: &str) -> Vec<Cmp> {
    vec![from_json(
        &serde_json::from_str(text).expect("expected JSON parses"),
    )]
}

/// dotenv as sops prints it: `K=V` lines, `\n` escaped, `#` comments.
pub fn parse_dotenv(text: &str) -> Vec<Cmp> {
    let m = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("K=V");
            (k.to_owned(), Cmp::leaf(&v.replace("\\n", "\n")))
        })
        .collect();
    vec![Cmp::Map(m)]
}

/// Minimal INI (sections of `k = v`).
pub fn parse_ini(text: &str) -> Vec<Cmp> {
    let mut sections: Vec<(String, Cmp)> = Vec::new();
    for l in text.lines().map(str::trim) {
        if l.is_empty() || l.starts_with(';') || l.starts_with('#') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            sections.push((name.to_owned(), Cmp::Map(vec![])));
            continue;
        }
        let (k, v) = l.split_once('=').expect("k = v");
        let Some((_, Cmp::Map(m))) = sections.last_mut() else {
            panic!("key outside section")
        };
        m.push((k.trim().to_owned(), Cmp::leaf(v.trim())));
    }
    vec![Cmp::Map(sections)]
}
