//! Test helpers for plugin crates (feature `testing`). Owned by the plugin-API work.
