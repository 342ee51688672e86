//! Media plugin: an extra gzip newc initrd carrying the keys
