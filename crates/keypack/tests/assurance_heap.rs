//! Claim "no key byte is left in freed heap" (SECURITY.md), checked with a global allocator
//! that scans every block *before* it is freed, without the binary's zero-on-free allocator.
//!
//! The test runs keypack's pipeline in-process through the library crates, the way
//! `crates/keypack/src/keys.rs` does (keypack is a binary crate: its modules cannot be called
//! from here): `keypack-repo` resolves the files, `keypack-sops` parses them, one
//! `IdentitySet::decrypt_batch` unwraps every age layer, `DataKey` + `SopsFile::decrypt` give
//! each field, `BundleBuilder` seals, then the Ventoy medium builds an image and the initrd
//! medium a `keys.cpio.gz`, and everything is dropped. Needles: every key's ed25519 seed and
//! the PEM lines that encode it (raw), every file's sops data key, and windows of the sealed
//! `keys.tar.gz`, the raw cpio and `keys.cpio.gz` (learned from a dry run: all deterministic).
//! A second scenario does the same with the mock YubiKey identity (PIN as a needle); a third
//! drives the lifecycle verbs' work (`host rotate`, `host new`: key generation,
//! `encrypt_document`, `rewrap`), whose random keys are known only afterwards: there every
//! freed block is recorded and searched once the needles are learned from the ciphertext.
//!
//! What a hit means: a block was freed while holding a secret, and only the binary's
//! `ZeroizingAlloc` (not its owner) wipes it. What the test proves: the set of such blocks is
//! exactly the known list below (`KNOWN`); a new hit site fails the test, and a known site that
//! disappears is reported so the list can shrink. Zero hits is the goal; see SECURITY.md for
//! what remains.

mod assurance_support;
#[path = "yubikey_support/mod.rs"]
mod yk;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use assurance_support::*;
use base64::Engine as _;
use keypack_bundle::BundleBuilder;
use keypack_identity::{AgeFile, IdentitySet};
use keypack_layout::{HostName, UserName};
use keypack_repo::{DocumentFormat, Extract, KeysRepo, PublicSource};
use keypack_sops::{DataKey, Format, SopsFile};
use keypack_test_age_plugin_yubikey::harness::MockPlugin;
use secrecy::ExposeSecret;

/// Needles and the 8-byte-window table of [`Secrets::find_raw`], built before arming so the
/// allocator never allocates to search.
struct Scanner {
    needles: Vec<(String, Vec<u8>)>,
    table: HashMap<u64, Vec<(usize, usize)>>,
    /// Short needles (the PIN as typed and base64-encoded as the plugin protocol carries it),
    /// searched byte by byte in blocks of any size up to 64 KiB.
    short: Vec<Vec<u8>>,
}

impl Scanner {
    fn find(&self, hay: &[u8]) -> Option<usize> {
        for (wi, w) in hay.chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(w.try_into().unwrap());
            let Some(cands) = self.table.get(&word) else {
                continue;
            };
            for &(ni, shift) in cands {
                let n = &self.needles[ni].1;
                if let Some(start) = (wi * 8).checked_sub(shift)
                    && hay.get(start..start + n.len()) == Some(n.as_slice())
                {
                    return Some(ni);
                }
            }
        }
        None
    }
}

static SCANNER: OnceLock<Scanner> = OnceLock::new();
static SCANNER_YK: OnceLock<Scanner> = OnceLock::new();
static SCANNER_SEAL: OnceLock<Scanner> = OnceLock::new();
/// Which scanner the allocator uses: 0 none, 1 `SCANNER`, 2 `SCANNER_YK`, 3 `SCANNER_SEAL`.
static WHICH: AtomicUsize = AtomicUsize::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);
static HITS: AtomicUsize = AtomicUsize::new(0);
static FREED_BYTES: AtomicUsize = AtomicUsize::new(0);
static REPORTS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Recording mode (the lifecycle scenario, whose keys are random and so known only after the
/// run): every block freed while set is copied, with an unresolved backtrace, into
/// [`RECORDED`], and searched once the needles are known.
static RECORDING: AtomicBool = AtomicBool::new(false);
static RECORDED: Mutex<Recorded> = Mutex::new(Recorded {
    bytes: Vec::new(),
    blocks: Vec::new(),
    missed: 0,
});

/// The freed blocks of a recording: their bytes end to end and (start, length, where freed).
struct Recorded {
    bytes: Vec<u8>,
    blocks: Vec<(usize, usize, std::backtrace::Backtrace)>,
    /// Blocks that did not fit in the reserved buffer (must stay 0).
    missed: usize,
}

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

struct Checking;

// SAFETY: forwards every call to `System`; `dealloc` reads and then zeroes the block (valid
// for `layout.size()` bytes until it is freed right after) and, on a hit, captures a backtrace
// with the hook disabled on this thread so the nested allocations are not checked.
unsafe impl GlobalAlloc for Checking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::Relaxed)
            && layout.size() > 0
            && !IN_HOOK.with(Cell::get)
            && let Some(scanner) = match WHICH.load(Ordering::Relaxed) {
                1 => SCANNER.get(),
                2 => SCANNER_YK.get(),
                3 => SCANNER_SEAL.get(),
                _ => None,
            }
        {
            IN_HOOK.with(|h| h.set(true));
            // SAFETY: see the impl comment.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            FREED_BYTES.fetch_add(block.len(), Ordering::Relaxed);
            let short_hit = block.len() <= 1 << 16
                && scanner
                    .short
                    .iter()
                    .any(|pin| memchr::memmem::find(block, pin).is_some());
            if short_hit {
                HITS.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut r) = REPORTS.try_lock()
                    && r.len() < r.capacity()
                {
                    let bt = std::backtrace::Backtrace::force_capture().to_string();
                    r.push(format!(
                        "the PIN ({} bytes) freed from: {}",
                        layout.size(),
                        interesting_frames(&bt)
                    ));
                }
            }
            if let Some(ni) = scanner.find(block) {
                let n = HITS.fetch_add(1, Ordering::Relaxed);
                if n < 40 {
                    let bt = std::backtrace::Backtrace::force_capture().to_string();
                    let frames = interesting_frames(&bt);
                    REPORTS.lock().unwrap().push(format!(
                        "{} ({} bytes) freed from: {frames}",
                        scanner.needles[ni].0,
                        layout.size()
                    ));
                }
            }
            IN_HOOK.with(|h| h.set(false));
        }
        if RECORDING.load(Ordering::Relaxed) && layout.size() > 0 && !IN_HOOK.with(Cell::get) {
            IN_HOOK.with(|h| h.set(true));
            // SAFETY: see the impl comment.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            FREED_BYTES.fetch_add(block.len(), Ordering::Relaxed);
            if let Ok(mut r) = RECORDED.lock() {
                if r.bytes.len() + block.len() <= r.bytes.capacity()
                    && r.blocks.len() < r.blocks.capacity()
                {
                    let start = r.bytes.len();
                    r.bytes.extend_from_slice(block);
                    let bt = std::backtrace::Backtrace::force_capture();
                    r.blocks.push((start, block.len(), bt));
                } else {
                    r.missed += 1;
                }
            }
            IN_HOOK.with(|h| h.set(false));
        }
        // Zero after checking, as the binary's allocator does, so stale bytes never resurface
        // in a later block and each hit names the site that freed the secret first.
        // SAFETY: see the impl comment.
        unsafe {
            std::ptr::write_bytes(ptr, 0, layout.size());
            System.dealloc(ptr, layout)
        }
    }
}

#[global_allocator]
static ALLOC: Checking = Checking;

/// The first frames outside std/alloc/core and this allocator: where the block was freed.
fn interesting_frames(bt: &str) -> String {
    bt.lines()
        .map(str::trim)
        .filter(|l| {
            l.chars().next().is_some_and(|c| c.is_ascii_digit())
                && !l.contains(" std::")
                && !l.contains(" core::")
                && !l.contains(" alloc::")
                && !l.contains("assurance_heap::")
                && !l.contains("__rustc")
                && !l.contains("<alloc::")
                && !l.contains("<core::")
        })
        .map(|l| l.split_once(": ").map_or(l, |(_, f)| f))
        .take(4)
        .collect::<Vec<_>>()
        .join(" <- ")
}

/// Hit sites known today (substring of the reported frames) and why only the zero-on-free
/// allocator covers them. Keep in sync with SECURITY.md ("Freed heap").
const KNOWN: &[(&str, &str)] = &[
    (
        "age::primitives::stream::Stream::decrypt_chunk",
        "age 0.12 decrypts a STREAM chunk in a Vec and shrinks it with into_boxed_slice: the old \
         48-byte block (ciphertext + tag, now the 32-byte plaintext sops data key) is freed \
         unwiped; so is the private keys' tar of a sealed bundle opened to check it (upstream)",
    ),
    (
        "flate2::gz::write::GzEncoder",
        "flate2/miniz_oxide keep the deflate dictionary (the tar or cpio: PEM text), their \
         output buffer and flate2's 32 KiB writer buffer in plain Vecs freed unwiped (upstream)",
    ),
    (
        "age::primitives::stream::StreamWriter<W>::finish",
        "age 0.12's STREAM writer buffers the plaintext in a private 64 KiB Vec (`chunk`) that \
         `finish` frees unwiped: when keypack-sops wraps a sops data key for a recipient \
         (`SopsRecipient::wrap`, in `encrypt_document` and `rewrap`) that block holds the \
         32-byte data key, and with `--seal passphrase` the private keys' tar (upstream)",
    ),
    (
        "age_core::plugin::Connection<R,W>::send",
        "age-core 0.12 base64-encodes a reply's body (the PIN keypack answers the plugin's \
         request-secret with) into a String that cookie_factory frees unwiped (upstream)",
    ),
];

fn sops_format(f: DocumentFormat) -> Format {
    match f {
        DocumentFormat::Yaml => Format::Yaml,
        DocumentFormat::Json => Format::Json,
        DocumentFormat::Dotenv => Format::Dotenv,
    }
}

/// keys.rs's pipeline, condensed (no error collection: the test repo is good).
fn pack(root: &Path, identity: &Path) -> keypack_bundle::SealedBundle {
    pack_sealed(root, identity, None)
}

/// [`pack`], sealed to `passphrase` when given (`--seal passphrase`; a small scrypt work factor
/// keeps the test fast, the code path is the product's).
fn pack_sealed(
    root: &Path,
    identity: &Path,
    passphrase: Option<secrecy::SecretString>,
) -> keypack_bundle::SealedBundle {
    let repo = KeysRepo::open(root).unwrap();
    let users = [
        UserName::new("alice").unwrap(),
        UserName::new("bob").unwrap(),
        UserName::new("carol").unwrap(),
    ];
    let sources = repo
        .resolve(&HostName::new("web1").unwrap(), &users)
        .unwrap();
    // A sops file, or a plain age file (carol's `id_ed25519.age`: the key is the payload).
    let mut files: Vec<(std::path::PathBuf, Option<SopsFile>, Vec<u8>)> = Vec::new();
    for s in &sources {
        if files.iter().any(|(p, ..)| *p == s.path) {
            continue;
        }
        let bytes = repo.read_file(&s.path).unwrap();
        let format = match &s.extract {
            Extract::DocumentField { format, .. } => sops_format(*format),
            Extract::BinaryEnvelope {
                format: DocumentFormat::Dotenv,
            } => Format::Dotenv,
            Extract::BinaryEnvelope { .. } => Format::Binary,
            Extract::AgeFile => {
                files.push((s.path.clone(), None, bytes));
                continue;
            }
        };
        let parsed = SopsFile::parse(&bytes, format).unwrap();
        files.push((s.path.clone(), Some(parsed), Vec::new()));
    }
    let ids = IdentitySet::from_file(identity).unwrap();
    let batch: Vec<AgeFile> = files
        .iter()
        .map(|(p, f, age)| AgeFile {
            label: p.display().to_string(),
            alternatives: match f {
                Some(f) => f.age_entries().iter().map(|e| e.enc.as_bytes()).collect(),
                None => vec![age.as_slice()],
            },
        })
        .collect();
    let results = ids.decrypt_batch(&batch);
    drop(batch);
    let mut builder = BundleBuilder::new();
    for ((path, file, _), plain) in files.iter().zip(results) {
        let plain = plain.unwrap();
        let Some(file) = file else {
            let s = sources.iter().find(|s| s.path == *path).unwrap();
            builder.add_key(s.role.clone(), plain, None).unwrap();
            continue;
        };
        let key = DataKey::from_bytes(plain.expose_secret()).unwrap();
        drop(plain);
        let dec = file.decrypt(&key).unwrap();
        for s in sources.iter().filter(|s| s.path == *path) {
            let private = match &s.extract {
                Extract::DocumentField { field, .. } => dec.field(field),
                _ => dec.binary_data(),
            };
            let Some(private) = private else {
                assert!(!s.required);
                continue;
            };
            let public = match &s.public {
                Some(PublicSource::Field(f)) => dec
                    .field(f)
                    .map(|v| String::from_utf8(v.expose_secret().to_vec()).unwrap()),
                Some(PublicSource::File(p)) => {
                    Some(String::from_utf8(repo.read_file(p).unwrap()).unwrap())
                }
                None => None,
            };
            builder
                .add_key(s.role.clone(), private, public.as_deref())
                .unwrap();
        }
    }
    if let Some(p) = passphrase {
        builder.seal_with_passphrase_work_factor(p, 12);
    }
    builder.seal(0).unwrap()
}

/// The sops data keys of the repository's files (learned before arming).
fn data_keys(root: &Path, identity: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let ids = IdentitySet::from_file(identity).unwrap();
    for p in files_under(root) {
        let bytes = std::fs::read(&p).unwrap();
        let format = match p.extension().and_then(|e| e.to_str()) {
            Some("yaml") => Format::Yaml,
            Some("json") => Format::Json,
            Some("pub") => continue,
            _ => Format::Json, // bob's binary envelope is JSON
        };
        let Ok(f) =
            SopsFile::parse(&bytes, format).or_else(|_| SopsFile::parse(&bytes, Format::Binary))
        else {
            continue;
        };
        let batch = [AgeFile {
            label: String::new(),
            alternatives: f.age_entries().iter().map(|e| e.enc.as_bytes()).collect(),
        }];
        if let Some(Ok(k)) = ids.decrypt_batch(&batch).pop() {
            out.push(k.expose_secret().to_vec());
        }
    }
    out
}

#[test]
fn assurance_heap_freed_blocks_hold_no_secret_except_known_library_sites() {
    let test = "assurance_heap_freed_blocks_hold_no_secret_except_known_library_sites";
    if !ventoy_prereqs(test) {
        return;
    }
    if !have("age") {
        return skip(
            test,
            "age is not installed (the `age` package): carol's .age file needs it",
        );
    }
    let repo = standard_repo();
    let scratch = repo.scratch();
    let vdir = ventoy_dir(&scratch);
    let iso = scratch.join("keypack-nixos.iso");
    fake_iso(&iso, 256 << 10);
    let (kernel, initrd) = fake_kernel_and_initrd(&scratch);
    let out = repo.out_dir("heap");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700)).unwrap();
    let identity = Path::new(AGE_KEY);
    let carol = add_age_file_user(&repo.root(), &scratch, &[yk::OTHER_RECIPIENT], &scratch);

    let mut needles = Vec::new();
    key_needles("carol (.age file)", &carol, &mut needles);
    for (name, pem) in repo_keys(&repo) {
        let secrets = Secrets::from_pems(&[(name, pem)]);
        for n in secrets.needles {
            if n.label.contains("PEM line") || n.label.ends_with("(raw)") {
                needles.push((n.label, n.bytes));
            }
        }
    }
    let dks = data_keys(&repo.root(), identity);
    assert_eq!(dks.len(), 3, "three sops files, three data keys");
    for (i, k) in dks.into_iter().enumerate() {
        assert_eq!(k.len(), 32);
        needles.push((format!("sops data key {i}"), k));
    }
    // The sealed archive and the initrd's keys.cpio.gz are secrets too (a gunzip away from the
    // keys): learn them from a dry run (both are deterministic) and take windows of each.
    {
        let bundle = pack(&repo.root(), identity);
        let gz = keypack_media_initrd::keys_cpio_gz(&bundle).unwrap();
        let raw = keypack_media_initrd::keys_cpio(&bundle).unwrap();
        for (what, bytes) in [
            ("keys.tar.gz", bundle.expose_archive()),
            ("keys.cpio.gz", gz.as_slice()),
            ("keys.cpio", raw.as_slice()),
        ] {
            for q in 1..4 {
                let at = bytes.len() * q / 4;
                needles.push((format!("{what} bytes at {at}"), bytes[at..at + 32].to_vec()));
            }
        }
    }
    let table = table_for(&needles);
    assert!(
        SCANNER
            .set(Scanner {
                needles,
                table,
                short: Vec::new(),
            })
            .is_ok()
    );
    WHICH.store(1, Ordering::SeqCst);
    REPORTS.lock().unwrap().reserve(64);

    // Positive control: a secret in a plain Vec, freed, is caught.
    ARMED.store(true, Ordering::SeqCst);
    let leak = repo.host.private.as_bytes().to_vec();
    drop(leak);
    ARMED.store(false, Ordering::SeqCst);
    assert_eq!(
        HITS.swap(0, Ordering::SeqCst),
        1,
        "the checker missed a planted leak"
    );
    REPORTS.lock().unwrap().clear();

    ARMED.store(true, Ordering::SeqCst);
    {
        let bundle = pack(&repo.root(), identity);
        let vargs = keypack_media_ventoy::VentoyArgs {
            ventoy_dir: Some(vdir.clone()),
            ..Default::default()
        };
        let opts = keypack_media_ventoy::BuildOptions {
            args: &vargs,
            iso: &iso,
            output: &out.join("ventoy.img"),
            state_dir: None,
            seed: Some(1),
            ignore_cache: true,
        };
        keypack_media_ventoy::build_image(bundle.expose_archive(), &opts).unwrap();
        let iargs = keypack_media_initrd::InitrdArgs {
            kernel: Some(kernel.clone()),
            initrd: Some(initrd.clone()),
            append: None,
        };
        keypack_media_initrd::build(&bundle, &iargs, "web1", &out.join("keys.cpio.gz")).unwrap();
        drop(bundle);
    }
    ARMED.store(false, Ordering::SeqCst);

    check_hits("X25519 identity: pack + Ventoy + initrd");
    sealed_scenario(&repo.root(), identity, &kernel, &initrd, &out);
    yubikey_scenario();
    lifecycle_scenario();
}

/// Prints and checks the hits of the last armed run against [`KNOWN`], then resets them.
fn check_hits(what: &str) {
    let hits = HITS.swap(0, Ordering::SeqCst);
    let reports = std::mem::take(&mut *REPORTS.lock().unwrap());
    REPORTS.lock().unwrap().reserve(64);
    eprintln!(
        "{what}: scanned {} MiB of freed blocks; {hits} held a secret",
        FREED_BYTES.swap(0, Ordering::SeqCst) >> 20
    );
    for r in &reports {
        eprintln!("  {r}");
    }
    let unknown: Vec<&String> = reports
        .iter()
        .filter(|r| !KNOWN.iter().any(|(site, _)| r.contains(site)))
        .collect();
    for (site, why) in KNOWN {
        if !reports.iter().any(|r| r.contains(site)) {
            eprintln!("  (known site {site} did not leak in this run: {why})");
        }
    }
    assert!(
        unknown.is_empty(),
        "{what}: {} freed block(s) held a secret at sites not wiped by their owner:\n{}",
        unknown.len(),
        unknown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn table_for(needles: &[(String, Vec<u8>)]) -> HashMap<u64, Vec<(usize, usize)>> {
    let mut table: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
    for (ni, (_, n)) in needles.iter().enumerate() {
        for shift in 0..8 {
            let w = u64::from_le_bytes(n[shift..shift + 8].try_into().unwrap());
            table.entry(w).or_default().push((ni, shift));
        }
    }
    table
}

/// The same pipeline with the YubiKey identity: the mock `age-plugin-yubikey` child (real
/// identity-v1 protocol, PIN asked once, answered from a descriptor as `KEYPACK_PIN_FD`
/// allows). Needles: the keys, the card's private scalar and the PIN.
fn yubikey_scenario() {
    use std::os::fd::AsRawFd;
    let mut mock = MockPlugin::new("pin");
    mock.pin = "73915284".to_owned();
    mock.set_script("pin");
    let repo = yk::Repo::new(&mock.card.recipient_string(), mock.bin_dir());
    let identity = mock.identity_file();
    let carol = add_age_file_user(
        &repo.root(),
        &repo.tmp.path().join("scratch"),
        &[&mock.card.recipient_string(), yk::OTHER_RECIPIENT],
        mock.bin_dir(),
    );
    let mut needles = Vec::new();
    key_needles("carol (.age file)", &carol, &mut needles);
    // Every file is also encrypted to the test X25519 key: learn the sops data keys with it
    // (before arming, without the card) so the YubiKey run is checked for them too.
    let dks = data_keys(&repo.root(), Path::new(AGE_KEY));
    assert_eq!(dks.len(), 3, "three sops files, three data keys");
    for (i, k) in dks.into_iter().enumerate() {
        needles.push((format!("sops data key {i}"), k));
    }
    for (name, pem) in [
        ("host", &repo.host.private),
        ("deploy", &repo.deploy.private),
        ("alice", &repo.alice.private),
        ("bob", &repo.bob.private),
    ] {
        for n in Secrets::from_pems(&[(name, pem.as_str())]).needles {
            if n.label.contains("PEM line") || n.label.ends_with("(raw)") {
                needles.push((n.label, n.bytes));
            }
        }
    }
    let hex = mock.card.secret_hex();
    let card: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    needles.push(("card private scalar".into(), card));
    let table = table_for(&needles);
    assert!(
        SCANNER_YK
            .set(Scanner {
                needles,
                table,
                short: vec![
                    mock.pin.as_bytes().to_vec(),
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .encode(mock.pin.as_bytes())
                        .into_bytes(),
                ],
            })
            .is_ok()
    );
    let answers_path = repo.tmp.path().join("scratch/answers");
    std::fs::write(&answers_path, format!("{}\n", mock.pin)).unwrap();
    let answers = std::fs::File::open(&answers_path).unwrap();
    // SAFETY: this binary has one test, which runs no other thread that reads the environment
    // while these are set.
    unsafe {
        std::env::set_var("PATH", yk::path_with(mock.bin_dir()));
        std::env::set_var("KEYPACK_PIN_FD", answers.as_raw_fd().to_string());
    }
    WHICH.store(2, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    {
        let bundle = pack(&repo.root(), &identity);
        drop(bundle);
    }
    ARMED.store(false, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { std::env::remove_var("KEYPACK_PIN_FD") };
    drop(answers);
    assert_eq!(
        mock.count("pin-request"),
        1,
        "the PIN was asked: {:?}",
        mock.log()
    );
    assert_eq!(
        mock.count("unwrap"),
        4,
        "three sops files and one age file unwrapped by the card"
    );
    check_hits("YubiKey identity (mock plugin, PIN): pack");
}

/// `--seal passphrase`: the passphrase asked twice (the prompt code, answers one per line as
/// `KEYPACK_PIN_FD` gives them), the bundle sealed, the initrd medium built from it, the
/// passphrase checked against the blob as `keypack run` does, and the blob opened as
/// `load-keys` does. Needles: the keys and the passphrase (short needle).
fn sealed_scenario(root: &Path, identity: &Path, kernel: &Path, initrd: &Path, out: &Path) {
    const PASSPHRASE: &str = "heap-scan sealing passphrase 4711";
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (label, bytes) in &SCANNER.get().unwrap().needles {
        if label.contains("PEM line") || label.ends_with("(raw)") {
            needles.push((label.clone(), bytes.clone()));
        }
    }
    let table = table_for(&needles);
    assert!(
        SCANNER_SEAL
            .set(Scanner {
                needles,
                table,
                short: vec![PASSPHRASE.as_bytes().to_vec()],
            })
            .is_ok()
    );
    let answers = format!("{PASSPHRASE}\n{PASSPHRASE}\n");
    WHICH.store(3, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    {
        // The answers are wiped by their owner too, like a descriptor's line buffer.
        let reader: Box<dyn std::io::Read + Send> = Box::new(WipedAnswers(
            zeroize::Zeroizing::new(answers.into_bytes()),
            0,
        ));
        let passphrase =
            keypack_identity::new_passphrase_with_answers(reader, "heap test").unwrap();
        let bundle = pack_sealed(root, identity, Some(passphrase));
        assert!(bundle.manifest().sealed.is_some());
        let iargs = keypack_media_initrd::InitrdArgs {
            kernel: Some(kernel.to_path_buf()),
            initrd: Some(initrd.to_path_buf()),
            append: None,
        };
        let cpio = out.join("sealed.cpio.gz");
        keypack_media_initrd::build(&bundle, &iargs, "web1", &cpio).unwrap();
        let blob = keypack_media_initrd::sealed_blob_in_initrd(&cpio)
            .unwrap()
            .expect("the sealed blob in the initrd medium");
        let check = secrecy::SecretString::from(PASSPHRASE.to_owned());
        keypack_bundle::check_passphrase(&blob, check).unwrap();
        let open = secrecy::SecretString::from(PASSPHRASE.to_owned());
        let tar = keypack_bundle::unseal(&blob, open).unwrap();
        assert!(!tar.is_empty());
        drop(tar);
        drop(bundle);
    }
    ARMED.store(false, Ordering::SeqCst);
    check_hits("--seal passphrase: ask twice + seal + initrd + run's check + unseal");
}

/// Answers for the prompt in a buffer that is wiped when dropped.
struct WipedAnswers(zeroize::Zeroizing<Vec<u8>>, usize);

impl std::io::Read for WipedAnswers {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len() - self.1);
        buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
        self.1 += n;
        Ok(n)
    }
}

/// Adds carol as a plain age file, `users/carol/id_ed25519.age` (armored, encrypted with the
/// real `age` to `recipients`; `plugin_dir` on PATH for a plugin recipient), and returns her
/// private key (PEM).
fn add_age_file_user(
    root: &Path,
    scratch: &Path,
    recipients: &[&str],
    plugin_dir: &Path,
) -> String {
    use std::io::Write as _;
    let key = yk::ssh_keygen(scratch, "carol");
    let dir = root.join("users/carol");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = std::process::Command::new("age");
    cmd.env("PATH", yk::path_with(plugin_dir)).arg("-a");
    for r in recipients {
        cmd.args(["-r", r]);
    }
    let mut child = cmd
        .arg("-o")
        .arg(dir.join("id_ed25519.age"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("age runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(key.private.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "age encrypted carol's key");
    key.private.clone()
}

/// The PEM and raw-seed needles of one key.
fn key_needles(name: &str, pem: &str, needles: &mut Vec<(String, Vec<u8>)>) {
    for n in Secrets::from_pems(&[(name, pem)]).needles {
        if n.label.contains("PEM line") || n.label.ends_with("(raw)") {
            needles.push((n.label, n.bytes));
        }
    }
}

/// The lifecycle verbs' in-memory work, condensed from `crates/keypack/src/cmd/host.rs`:
/// `host rotate web1` (one `decrypt_batch` unwraps web1's document and a file listing web1,
/// the current keys are read for their public halves, new host and deploy keys are generated,
/// `keypack_sops::encrypt_document` makes the new document, `keypack_sops::rewrap` gives the
/// file the new recipient) and `host new web9 --deploy-key` (generate + encrypt), every key,
/// copy, data key and plaintext then dropped. The new keys and the new documents' data keys
/// are random, so every block freed meanwhile is recorded and searched afterwards, with the
/// needles learned from the ciphertext the run kept: the new keys' seeds and PEM lines (their
/// own drop included), the new and old data keys, web1's old keys and the rewrapped file's
/// value.
fn lifecycle_scenario() {
    use keypack_lifecycle::{Entity, NewKey, document_fields, generate, public_of};
    use keypack_sops::SopsRecipient;
    let repo = standard_repo();
    let root = repo.root();
    let admin = common::RECIPIENT;
    let old_recipient = age_recipient_of(&repo.host.public);
    let db_secret = "db-password-3f9a0c27e18b4d65c1";
    let db_plain = format!("password: {db_secret}\n");
    let db = sops_encrypt_yaml_to(
        &db_plain,
        &format!("{admin},{old_recipient}"),
        &repo.scratch(),
        None,
    );
    repo.write("secrets/web1/db.yaml", &db);
    let web1_bytes = std::fs::read(root.join("hosts/web1.yaml")).unwrap();
    let db_bytes = std::fs::read(root.join("secrets/web1/db.yaml")).unwrap();
    let identity = Path::new(AGE_KEY);
    let old_data_keys = data_keys(&root, identity);
    assert_eq!(old_data_keys.len(), 4, "web1, alice, bob and db.yaml");
    {
        let mut r = RECORDED.lock().unwrap();
        r.bytes.reserve(256 << 20);
        r.blocks.reserve(1 << 17);
    }

    // Positive control: a block freed while recording is searched with needles known later.
    RECORDING.store(true, Ordering::SeqCst);
    let leak = repo.deploy.private.as_bytes().to_vec();
    drop(leak);
    RECORDING.store(false, Ordering::SeqCst);
    let mut control = Vec::new();
    key_needles("deploy", &repo.deploy.private, &mut control);
    let control = Scanner {
        table: table_for(&control),
        needles: control,
        short: Vec::new(),
    };
    assert!(
        search_recorded(&control) > 0,
        "the recording missed a planted leak"
    );
    HITS.store(0, Ordering::SeqCst);
    REPORTS.lock().unwrap().clear();

    RECORDING.store(true, Ordering::SeqCst);
    let (web1_doc, rewrapped, web9_doc, old_public) = {
        let ids = IdentitySet::from_file(identity).unwrap();
        let doc = SopsFile::parse(&web1_bytes, Format::Yaml).unwrap();
        let dbf = SopsFile::parse(&db_bytes, Format::Yaml).unwrap();
        let batch: Vec<AgeFile> = [&doc, &dbf]
            .iter()
            .map(|f| AgeFile {
                label: String::new(),
                alternatives: f.age_entries().iter().map(|e| e.enc.as_bytes()).collect(),
            })
            .collect();
        // Borrowed, not moved out: a `DataKey` moved out of a Vec (`pop`, `remove`) leaves
        // its bytes in the Vec's buffer, which is then freed unwiped (see the report on
        // `host.rs`'s `data_keys.remove(0)`).
        let keys: Vec<DataKey> = ids
            .decrypt_batch(&batch)
            .into_iter()
            .map(|r| DataKey::from_bytes(r.unwrap().expose_secret()).unwrap())
            .collect();
        drop(batch);
        let (doc_key, db_key) = (&keys[0], &keys[1]);
        let current = doc.decrypt(doc_key).unwrap();
        let entity = Entity::Host {
            name: HostName::new("web1").unwrap(),
            deploy: current.field(keypack_layout::DEPLOY_KEY_NAME).is_some(),
        };
        let slots = entity.slots().unwrap();
        let old_public: Vec<_> = slots
            .iter()
            .map(|s| public_of(&current.encrypted_field(s.field).unwrap()).unwrap())
            .collect();
        drop(current);
        let recipients = |list: &[&str]| -> Vec<SopsRecipient> {
            list.iter()
                .map(|r| SopsRecipient::parse(r).unwrap())
                .collect()
        };
        let encrypt = |keys: &[NewKey], recipients: &[SopsRecipient]| -> Vec<u8> {
            let (private, public) = document_fields(keys);
            let public: Vec<(&str, &str)> = public
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            keypack_sops::encrypt_document(
                &private,
                &public,
                Format::Yaml,
                recipients,
                std::time::SystemTime::now(),
            )
            .unwrap()
            .to_vec()
        };
        let new_keys: Vec<NewKey> = slots.iter().map(|s| generate(s).unwrap()).collect();
        let new_recipient = new_keys[0].public.age_recipient().unwrap();
        let web1_doc = encrypt(&new_keys, &recipients(&[admin]));
        let rewrapped = keypack_sops::rewrap(
            &db_bytes,
            Format::Yaml,
            db_key,
            &recipients(&[admin, &new_recipient]),
        )
        .unwrap();
        drop(keys);
        drop(new_keys);
        // host new web9 --deploy-key
        let slots = Entity::Host {
            name: HostName::new("web9").unwrap(),
            deploy: true,
        }
        .slots()
        .unwrap();
        let keys9: Vec<NewKey> = slots.iter().map(|s| generate(s).unwrap()).collect();
        let web9_doc = encrypt(&keys9, &recipients(&[admin]));
        drop(keys9);
        (web1_doc, rewrapped, web9_doc, old_public)
    };
    RECORDING.store(false, Ordering::SeqCst);
    assert_eq!(
        old_public[0],
        keypack_pins::PublicKey::parse_openssh(&repo.host.public).unwrap()
    );

    // The needles, learned now from the ciphertext the run produced.
    let mut needles = Vec::new();
    key_needles("web1 old host", &repo.host.private, &mut needles);
    key_needles("web1 old deploy", &repo.deploy.private, &mut needles);
    for (i, k) in old_data_keys.into_iter().enumerate() {
        needles.push((format!("old sops data key {i}"), k));
    }
    needles.push(("db.yaml's password".into(), db_secret.as_bytes().to_vec()));
    let ids = IdentitySet::from_file(identity).unwrap();
    let mut new_pems = Vec::new();
    for (what, bytes) in [("web1 new", &web1_doc), ("web9", &web9_doc)] {
        let f = SopsFile::parse(bytes, Format::Yaml).unwrap();
        let batch = [AgeFile {
            label: String::new(),
            alternatives: f.age_entries().iter().map(|e| e.enc.as_bytes()).collect(),
        }];
        let k = ids.decrypt_batch(&batch).pop().unwrap().unwrap();
        needles.push((
            format!("{what} document's data key"),
            k.expose_secret().to_vec(),
        ));
        let dec = f
            .decrypt(&DataKey::from_bytes(k.expose_secret()).unwrap())
            .unwrap();
        for field in ["ssh_host_ed25519_key", "deploy_key_ed25519"] {
            let pem =
                String::from_utf8(dec.field(field).unwrap().expose_secret().to_vec()).unwrap();
            key_needles(&format!("{what} {field}"), &pem, &mut needles);
            new_pems.push(pem);
        }
    }
    // The rewrapped file: same data key (an old-key needle), now for the new recipient too.
    let r = SopsFile::parse(&rewrapped, Format::Yaml).unwrap();
    assert_eq!(r.recipients().len(), 2);
    let scanner = Scanner {
        table: table_for(&needles),
        needles,
        short: Vec::new(),
    };
    for pem in &new_pems {
        assert!(
            scanner.find(pem.as_bytes()).is_some(),
            "the needles match the new keys"
        );
    }
    let missed = RECORDED.lock().unwrap().missed;
    assert_eq!(missed, 0, "freed blocks did not fit in the recording");
    let blocks = RECORDED.lock().unwrap().blocks.len();
    search_recorded(&scanner);
    check_hits(&format!(
        "lifecycle: host rotate + host new (generate, encrypt_document, rewrap; {blocks} freed blocks recorded)"
    ));
}

/// Searches the recorded freed blocks with `scanner`, adds each hit to [`HITS`] and
/// [`REPORTS`] (with where the block was freed), clears the recording; returns the hits.
fn search_recorded(scanner: &Scanner) -> usize {
    let mut r = RECORDED.lock().unwrap();
    let mut hits = 0;
    for (start, len, bt) in &r.blocks {
        if let Some(ni) = scanner.find(&r.bytes[*start..start + len]) {
            hits += 1;
            HITS.fetch_add(1, Ordering::SeqCst);
            let mut reports = REPORTS.lock().unwrap();
            if reports.len() < 40 {
                reports.push(format!(
                    "{} ({len} bytes) freed from: {}",
                    scanner.needles[ni].0,
                    interesting_frames(&bt.to_string())
                ));
            }
        }
    }
    r.bytes.clear();
    r.blocks.clear();
    hits
}
