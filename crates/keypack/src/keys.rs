//! The key pipeline: keys repository → decrypt → sealed bundle. Owned by the foundation work.
