//! Resolves a host's and users' key files in a nix-keys repository
