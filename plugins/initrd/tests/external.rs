//! The initrd medium out of process (`keypack-media-initrd-ext`, served by
//! `keypack_plugin::external::serve`) is the same `impl Medium` as in process: driven through
//! keypack's client side (`ExternalMedium`: spawn, hello, sealed memfd, build, bye), it passes
//! the plugin conformance check and writes the very bytes the compiled-in medium writes for the
//! same bundle and flags.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use keypack_media_initrd::Initrd;
use keypack_plugin::external::ExternalMedium;
use keypack_plugin::testing::{self, Check};
use keypack_plugin::{Boot, Medium};

const PROGRAM: &str = env!("CARGO_BIN_EXE_keypack-media-initrd-ext");

fn inputs(dir: &Path) -> Check<'static> {
    let k = dir.join("vmlinuz");
    let i = dir.join("base.img");
    for (p, b) in [(&k, b"kernel".as_slice()), (&i, b"base initrd".as_slice())] {
        std::fs::write(p, b).unwrap();
        // The conformance check wants every listed file 0600, inputs included.
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    Check {
        args: vec![
            "--kernel".into(),
            k.display().to_string(),
            "--initrd".into(),
            i.display().to_string(),
            "--append".into(),
            "-x console=ttyS0".into(),
        ],
        iso: None,
    }
}

#[test]
fn the_external_initrd_medium_passes_the_check_and_writes_the_in_process_bytes() {
    let ext = ExternalMedium::describe(Path::new(PROGRAM), "initrd-ext").expect("describe");
    assert_eq!(ext.name(), "initrd-ext");
    assert_eq!(ext.default_artifact_name(), Initrd.default_artifact_name());
    assert!(!ext.needs_iso());
    let flags: Vec<&str> = ext.flags().map(|f| f.name.as_str()).collect();
    assert_eq!(flags, ["kernel", "initrd", "append"]);

    let tmp = tempfile::tempdir().unwrap();
    let check = inputs(tmp.path());
    testing::check_medium_with(&ext, &check);

    let bundle = testing::sealed_bundle_with_users(&["alice"]);
    let out_ext = testing::build_into(&ext, &bundle, &tmp.path().join("ext"), &check, Some(7));
    let out_in = testing::build_into(&Initrd, &bundle, &tmp.path().join("in"), &check, Some(7));
    let (
        Boot::Kernel {
            initrds: a,
            cmdline: ca,
            ..
        },
        Boot::Kernel {
            initrds: b,
            cmdline: cb,
            ..
        },
    ) = (&out_ext.boot, &out_in.boot)
    else {
        panic!("kernel boots expected: {out_ext:?} {out_in:?}");
    };
    assert_eq!(
        ca, "-x console=ttyS0",
        "a hyphenated value survives the trip"
    );
    assert_eq!(ca, cb);
    assert_eq!(a[0], b[0], "the same base initrd");
    let (ext_bytes, in_bytes) = (std::fs::read(&a[1]).unwrap(), std::fs::read(&b[1]).unwrap());
    assert!(ext_bytes.len() > 200);
    assert!(
        ext_bytes == in_bytes,
        "keys.cpio.gz differs between out of process and in process"
    );
    assert_eq!(out_ext.host_public_key, out_in.host_public_key);
    assert_eq!(out_ext.medium, "initrd-ext");
}

/// A `--seal passphrase` bundle (private keys only inside `keypack/sealed.age`) goes through
/// the fd too: the plugin reopens it with the manifest's sealed entries and writes the bytes
/// the compiled-in medium writes, blob included, no private key in plaintext.
#[test]
fn a_sealed_bundle_builds_out_of_process_to_the_in_process_bytes() {
    let ext = ExternalMedium::describe(Path::new(PROGRAM), "initrd-ext").expect("describe");
    let mut builder = keypack_bundle::BundleBuilder::new();
    let host_key = testing::throwaway_key();
    builder
        .add_key(keypack_bundle::KeyRole::Host, host_key.clone(), None)
        .unwrap();
    builder
        .burn_after_boot("0123456789abcdef0123456789abcdef")
        .unwrap();
    builder.seal_with_passphrase_work_factor(secrecy::SecretString::from("a passphrase"), 2);
    let bundle = builder.seal(0).unwrap();
    assert!(bundle.manifest().sealed.is_some());

    let tmp = tempfile::tempdir().unwrap();
    let check = inputs(tmp.path());
    let out_ext = testing::build_into(&ext, &bundle, &tmp.path().join("ext"), &check, Some(7));
    let out_in = testing::build_into(&Initrd, &bundle, &tmp.path().join("in"), &check, Some(7));
    let (Boot::Kernel { initrds: a, .. }, Boot::Kernel { initrds: b, .. }) =
        (&out_ext.boot, &out_in.boot)
    else {
        panic!("kernel boots expected: {out_ext:?} {out_in:?}");
    };
    let (ext_bytes, in_bytes) = (std::fs::read(&a[1]).unwrap(), std::fs::read(&b[1]).unwrap());
    assert!(
        ext_bytes == in_bytes,
        "keys.cpio.gz of a sealed bundle differs between out of process and in process"
    );
    let mut cpio = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(ext_bytes.as_slice()),
        &mut cpio,
    )
    .unwrap();
    let blob = keypack_bundle::sealed_blob_in_archive(bundle.expose_archive())
        .unwrap()
        .unwrap();
    assert!(
        testing::contains(&cpio, &blob),
        "the sealed blob is in the cpio"
    );
    assert!(testing::contains(&cpio, b"keypack/burn-after-boot"));
    use secrecy::ExposeSecret;
    assert!(
        !testing::contains(&cpio, &host_key.expose_secret()[40..120]),
        "a private key in plaintext"
    );
    assert_eq!(out_ext.host_public_key, out_in.host_public_key);
}

#[test]
fn an_external_medium_error_reaches_keypack_as_the_plugin_said_it() {
    let ext = ExternalMedium::describe(Path::new(PROGRAM), "initrd-ext").expect("describe");
    let bundle = testing::sealed_bundle();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    keypack_plugin::output::ensure_private_dir(&out).unwrap();
    let host = testing::test_host();
    let matches = testing::medium_matches(&ext, &[]);
    let artifact = out.join("k");
    let inputs = keypack_plugin::BuildInputs::new(&host, &artifact, &out, &matches);
    let err = ext.build(&bundle, &inputs).unwrap_err();
    let mut chain = err.to_string();
    let mut src = std::error::Error::source(&err);
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    // keypack's chain: the medium's name once, then the plugin's own chain.
    assert!(chain.starts_with("initrd-ext: initrd: "), "{chain}");
    assert!(!artifact.exists(), "a failed build writes nothing");
}
