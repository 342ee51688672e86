//! Media plugin: a bootable Ventoy disk image with the ISO and injected keys
