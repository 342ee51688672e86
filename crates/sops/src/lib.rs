//! Decrypt-only sops (and plain age) files: YAML, JSON, dotenv, INI, binary; MAC-verified
