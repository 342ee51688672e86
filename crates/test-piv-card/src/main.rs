//! Test-only PIV card emulator for pcscd + vsmartcard-vpcd

fn main() {}
