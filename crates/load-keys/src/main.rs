//! Stage-1 loader: copies injected SSH keys from the initramfs into the target root

fn main() {}
