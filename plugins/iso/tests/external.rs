//! The keyed-ISO medium out of process (`keypack-media-iso-ext`, served by
//! `keypack_plugin::external::serve`): driven through keypack's client side
//! (`ExternalMedium`), it passes the plugin conformance check, names its artifact after the
//! host as the compiled-in medium does (`HOST.iso`, through the protocol's `artifact_name`),
//! and writes the very bytes the compiled-in medium writes, for a plain and a sealed bundle.

mod common;

use std::path::Path;

use common::{have_xorriso, make_iso, private_dir, skip};
use keypack_media_iso::IsoMedium;
use keypack_plugin::external::ExternalMedium;
use keypack_plugin::testing::{self, Check};
use keypack_plugin::{Boot, Medium};

const PROGRAM: &str = env!("CARGO_BIN_EXE_keypack-media-iso-ext");

fn image(desc: &keypack_plugin::BootDescription) -> Vec<u8> {
    let Boot::Cdrom { image } = &desc.boot else {
        panic!("a cdrom boot expected: {desc:?}");
    };
    std::fs::read(image).unwrap()
}

#[test]
fn the_keyed_iso_medium_out_of_process_writes_the_in_process_bytes() {
    const T: &str = "the_keyed_iso_medium_out_of_process_writes_the_in_process_bytes";
    if !have_xorriso() {
        return skip(T, "xorriso is not installed");
    }
    let ext = ExternalMedium::describe(Path::new(PROGRAM), "iso-ext").expect("describe");
    let host = testing::test_host();
    assert_eq!(ext.artifact_name(&host), IsoMedium.artifact_name(&host));
    assert!(ext.needs_iso());
    let flags: Vec<&str> = ext.flags().map(|f| f.name.as_str()).collect();
    assert_eq!(flags, ["iso-firmware"]);

    let dir = private_dir();
    let iso = make_iso(dir.path(), Some(1 << 20));
    let check = Check {
        args: vec!["--iso-firmware".into(), "bios".into()],
        iso: Some(&iso),
    };
    testing::check_medium_with(&ext, &check);

    let mut sealed = keypack_bundle::BundleBuilder::new();
    sealed
        .add_key(
            keypack_bundle::KeyRole::Host,
            testing::throwaway_key(),
            None,
        )
        .unwrap();
    sealed.seal_with_passphrase_work_factor(secrecy::SecretString::from("a passphrase"), 2);
    for (what, bundle) in [
        ("plain", testing::sealed_bundle_with_users(&["alice"])),
        ("sealed", sealed.seal(0).unwrap()),
    ] {
        let root = dir.path().join(what);
        let out_ext = testing::build_into(&ext, &bundle, &root.join("ext"), &check, Some(7));
        let out_in = testing::build_into(&IsoMedium, &bundle, &root.join("in"), &check, Some(7));
        assert_eq!(out_ext.medium, "iso-ext");
        assert_eq!(out_ext.firmware, out_in.firmware);
        assert_eq!(out_ext.host_public_key, out_in.host_public_key);
        assert!(
            image(&out_ext) == image(&out_in),
            "{what}: the keyed ISO differs between out of process and in process"
        );
    }
}
