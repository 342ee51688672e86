//! `keypack inspect IMAGE` for disk images. Owned by the Ventoy work.
