//! Test-only scriptable mock of age-plugin-yubikey

fn main() {}
