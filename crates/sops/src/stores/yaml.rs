//! YAML store: multi-document, order-preserving, built on the event parser of `yaml-rust2`
//! (maintained; `serde_yaml` is deprecated) so every scalar arrives with its style and tag and is
//! typed here the way sops' `yaml.v3` types it.
//!
//! Comments (`#…`, including sops' encrypted `#ENC[…,type:comment]` lines) are not part of the
//! data: sops leaves them out of the MAC and tolerates their decryption failing, so they are
//! skipped. Comments that sops turned into list *elements* (`- ENC[…,type:comment]`) are ordinary
//! strings here and are handled (authenticated, then dropped) by the decrypt walk.
//! Aliases are expanded (yaml.v3 does the same for sops); `<<` is an ordinary key, as in sops.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::scalar::resolve_yaml_plain;
use crate::error::{SopsError, malformed};
use crate::tree::Node;

/// Maximum nesting depth, so that hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 256;
/// Maximum number of nodes after alias expansion ("billion laughs" guard).
const MAX_NODES: usize = 1_000_000;

enum Frame {
    Map {
        items: Vec<(String, Node)>,
        key: Option<String>,
        anchor: usize,
        line: usize,
    },
    Seq {
        items: Vec<Node>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Node>,
    /// Anchored nodes and their sizes (in nodes).
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes created so far, aliases counted at their expanded size.
    nodes: usize,
    /// Size of the node being built at each open frame.
    sizes: Vec<usize>,
    error: Option<SopsError>,
}

fn at(m: &Marker) -> String {
    format!("line {} column {}", m.line(), m.col() + 1)
}

impl Builder {
    fn fail(&mut self, e: SopsError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// `size`: the node's size in nodes (for its parent and anchors); `added`: how many new
    /// nodes this event creates (1 for a scalar or a container, the expanded size for an alias).
    fn complete(&mut self, node: Node, size: usize, added: usize, anchor: usize, mark: &Marker) {
        self.nodes += added;
        if self.nodes > MAX_NODES {
            return self.fail(malformed(format!(
                "YAML expands to more than {MAX_NODES} nodes (aliases) at {}",
                at(mark)
            )));
        }
        if let Some(parent) = self.sizes.last_mut() {
            *parent += size;
        }
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                let doc = match node {
                    Node::Map(_) => node,
                    Node::Null => Node::Map(Vec::new()),
                    _ => {
                        return self.fail(malformed(format!(
                            "YAML document ending at {} is not a mapping",
                            at(mark)
                        )));
                    }
                };
                self.docs.push(doc);
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { items, key, .. }) => match key.take() {
                Some(k) => items.push((k, node)),
                None => match node {
                    Node::Str(k) => {
                        if items.iter().any(|(e, _)| *e == k) {
                            let what = format!("duplicate YAML key `{k}` at {}", at(mark));
                            return self.fail(malformed(what));
                        }
                        *key = Some(k);
                    }
                    _ => {
                        self.fail(malformed(format!(
                            "non-string YAML mapping key at {} (sops supports string keys only)",
                            at(mark)
                        )));
                    }
                },
            },
        }
    }
}

fn is_core_tag(tag: &Tag) -> Option<&str> {
    (tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:").then_some(tag.suffix.as_str())
}

fn scalar_node(value: String, style: TScalarStyle, tag: Option<&Tag>) -> Node {
    match tag.and_then(is_core_tag) {
        Some("str") | Some("binary") => return Node::Str(value),
        Some("null") => return Node::Null,
        _ => {}
    }
    match style {
        TScalarStyle::Plain => resolve_yaml_plain(&value),
        _ => Node::Str(value),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(value, style, anchor, tag) => {
                let node = scalar_node(value, style, tag.as_ref());
                self.complete(node, 1, 1, anchor, &mark);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((n, size)) => {
                    let size = *size;
                    if self.nodes + size > MAX_NODES {
                        return self.fail(malformed(format!(
                            "YAML expands to more than {MAX_NODES} nodes (aliases) at {}",
                            at(&mark)
                        )));
                    }
                    let n = n.clone();
                    // The expanded copy counts again; its nodes were counted once when defined.
                    self.complete(n, size, size, 0, &mark);
                }
                None => self.fail(malformed(format!("unknown YAML alias at {}", at(&mark)))),
            },
            Event::SequenceStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return self.fail(malformed(format!(
                        "YAML nested too deeply at {}",
                        at(&mark)
                    )));
                }
                self.sizes.push(1);
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                });
            }
            Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    return self.fail(malformed(format!(
                        "YAML nested too deeply at {}",
                        at(&mark)
                    )));
                }
                self.sizes.push(1);
                self.stack.push(Frame::Map {
                    items: Vec::new(),
                    key: None,
                    anchor,
                    line: mark.line(),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match (self.stack.pop(), self.sizes.pop()) {
                (Some(Frame::Seq { items, anchor }), Some(size)) => {
                    self.complete(Node::List(items), size, 1, anchor, &mark)
                }
                (
                    Some(Frame::Map {
                        items,
                        anchor,
                        key,
                        line,
                    }),
                    Some(size),
                ) => {
                    if key.is_some() {
                        return self.fail(malformed(format!(
                            "YAML mapping at line {line} ends after a key"
                        )));
                    }
                    self.complete(Node::Map(items), size, 1, anchor, &mark)
                }
                _ => self.fail(malformed("unbalanced YAML events")),
            },
            Event::DocumentEnd => self.anchors.clear(),
            _ => {}
        }
    }
}

/// Parses every document of a YAML stream.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Node>, SopsError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        malformed(format!(
            "YAML is not UTF-8 (byte offset {})",
            e.valid_up_to()
        ))
    })?;
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut b, true)
        .map_err(|e| malformed(format!("YAML syntax: {} at {}", e.info(), at(e.marker()))))?;
    if let Some(e) = b.error {
        return Err(e);
    }
    if b.docs.is_empty() {
        return Err(malformed("empty YAML file"));
    }
    Ok(b.docs)
}
