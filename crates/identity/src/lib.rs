//! Age identities for keypack: discovery, X25519 and plugin (YubiKey) identities, batched unwraps, PIN callbacks
