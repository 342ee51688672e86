//! Runner plugins boot a [`crate::BootDescription`]. Owned by the QEMU runner work; see
//! `plugins/qemu`.
