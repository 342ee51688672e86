//! Runner plugin: boots a boot description in QEMU
