//! Test-only PIV card emulator for pcscd + vsmartcard-vpcd: looks enough like a YubiKey 5
//! with one P-256 key in a retired slot for the real `age-plugin-yubikey` to use it.
//!
//! Where it sits: started by keypack's T2 tests; connects to vpcd (listen mode) on
//! `127.0.0.1:<port>` and serves APDUs until killed. Killing it = unplugging the card;
//! starting it again = plugging it back in.
//!
//! Does not: implement key generation, management-key auth, attestation, PUK, touch
//! (a `--touch-ms` delay stands in for it), or any slot but one. Never prints key bytes.
//!
//! Reference: iqlusioninc/yubikey.rs (APDUs the `yubikey` crate sends: SELECT PIV AID,
//! GET VERSION FD, GET SERIAL F8, GET DATA CB + GET RESPONSE C0 chaining, VERIFY 20,
//! GENERAL AUTHENTICATE 87 for ECDH); behaviour per shared/notes/yubikey-and-secrets.md §5.2:
//! re-selecting PIV keeps the PIN state, selecting another AID drops it; `VERIFY` with
//! empty data says whether the PIN is verified; PIN policy "always" drops it after each
//! private-key operation.
//!
//! Usage: `keypack-test-piv-card --port P --key KEY.pem --cert CERT.der --serial N
//! [--slot 0x82] [--pin 123456] [--pin-always] [--touch-ms MS] [--exit-after-ops N]
//! [--tries-file PATH]`

#![forbid(unsafe_code)]

use std::io;
use std::time::Duration;

use p256::pkcs8::DecodePrivateKey;

const PIV_AID: &[u8] = &[0xA0, 0x00, 0x00, 0x03, 0x08];
const ATR: &[u8] = &[
    0x3b, 0xfd, 0x13, 0x00, 0x00, 0x81, 0x31, 0xfe, 0x15, 0x80, 0x73, 0xc0, 0x21, 0xc0, 0x57, 0x59,
    0x75, 0x62, 0x69, 0x4b, 0x65, 0x79, 0x40,
];

struct Card {
    secret: p256::SecretKey,
    cert: Vec<u8>,
    serial: u32,
    slot: u8,
    pin: Vec<u8>,
    pin_always: bool,
    touch: Duration,
    exit_after_ops: Option<u32>,
    tries_file: Option<std::path::PathBuf>,
    // state
    piv_selected: bool,
    verified: bool,
    tries: u8,
    ops: u32,
    pending: Vec<u8>,
}

fn sw(mut data: Vec<u8>, sw1: u8, sw2: u8) -> Vec<u8> {
    data.push(sw1);
    data.push(sw2);
    data
}

fn ok(data: Vec<u8>) -> Vec<u8> {
    sw(data, 0x90, 0x00)
}

fn tlv_len(len: usize) -> Vec<u8> {
    match len {
        0..=0x7f => vec![len as u8],
        0x80..=0xff => vec![0x81, len as u8],
        _ => vec![0x82, (len >> 8) as u8, len as u8],
    }
}

fn tlv(tag: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = tag.to_vec();
    out.extend(tlv_len(value.len()));
    out.extend_from_slice(value);
    out
}

impl Card {
    fn object_id(&self) -> [u8; 3] {
        // Retired key management slots 0x82..=0x95 ↔ objects 5FC10D..=5FC120.
        [0x5f, 0xc1, 0x0d + (self.slot - 0x82)]
    }

    fn save_tries(&self) {
        if let Some(p) = &self.tries_file {
            let _ = std::fs::write(p, self.tries.to_string());
        }
    }

    /// Send `data` with GET RESPONSE chaining for anything over 256 bytes.
    fn respond_chained(&mut self, data: Vec<u8>) -> Vec<u8> {
        self.pending = data;
        self.next_chunk()
    }

    fn next_chunk(&mut self) -> Vec<u8> {
        if self.pending.len() <= 256 {
            return ok(std::mem::take(&mut self.pending));
        }
        let rest = self.pending.split_off(256);
        let chunk = std::mem::replace(&mut self.pending, rest);
        let left = self.pending.len().min(256);
        sw(chunk, 0x61, if left >= 256 { 0 } else { left as u8 })
    }

    fn apdu(&mut self, apdu: &[u8]) -> Vec<u8> {
        if apdu.len() < 4 {
            return sw(vec![], 0x67, 0x00);
        }
        let (ins, p1, p2) = (apdu[1], apdu[2], apdu[3]);
        let data: &[u8] = if apdu.len() > 5 {
            let lc = apdu[4] as usize;
            apdu.get(5..5 + lc).unwrap_or(&[])
        } else {
            &[]
        };
        if ins != 0xC0 {
            self.pending.clear();
        }
        match ins {
            0xA4 => {
                if data.starts_with(PIV_AID) {
                    self.piv_selected = true;
                    // Re-selecting PIV keeps the PIN state (YubiKey behaviour).
                    ok(vec![])
                } else {
                    self.piv_selected = false;
                    self.verified = false;
                    sw(vec![], 0x6A, 0x82)
                }
            }
            _ if !self.piv_selected => sw(vec![], 0x69, 0x85),
            0xFD => ok(vec![5, 4, 3]),
            0xF8 => ok(self.serial.to_be_bytes().to_vec()),
            0xC0 => self.next_chunk(),
            0xCB => {
                // data = 5C 03 <object id>
                if data.len() == 5 && data[0] == 0x5c && data[2..] == self.object_id() {
                    let mut inner = tlv(&[0x70], &self.cert);
                    inner.extend(tlv(&[0x71], &[0]));
                    inner.extend(tlv(&[0xfe], &[]));
                    let obj = tlv(&[0x53], &inner);
                    self.respond_chained(obj)
                } else {
                    sw(vec![], 0x6A, 0x82)
                }
            }
            0x20 if p2 == 0x80 => {
                if p1 == 0xFF {
                    self.verified = false;
                    return ok(vec![]);
                }
                if data.is_empty() {
                    return if self.verified {
                        ok(vec![])
                    } else {
                        sw(vec![], 0x63, 0xC0 | self.tries)
                    };
                }
                if self.tries == 0 {
                    return sw(vec![], 0x69, 0x83);
                }
                let given: Vec<u8> = data.iter().copied().take_while(|b| *b != 0xff).collect();
                if given == self.pin {
                    self.verified = true;
                    self.tries = 3;
                    self.save_tries();
                    ok(vec![])
                } else {
                    self.verified = false;
                    self.tries -= 1;
                    self.save_tries();
                    if self.tries == 0 {
                        sw(vec![], 0x69, 0x83)
                    } else {
                        sw(vec![], 0x63, 0xC0 | self.tries)
                    }
                }
            }
            0x87 if p1 == 0x11 && p2 == self.slot => self.ecdh(data),
            0x87 => sw(vec![], 0x6A, 0x86),
            _ => sw(vec![], 0x6D, 0x00),
        }
    }

    fn ecdh(&mut self, data: &[u8]) -> Vec<u8> {
        if !self.verified {
            return sw(vec![], 0x69, 0x82);
        }
        // 7C L 82 00 85 41 04‖X‖Y
        let Some(pos) = data.windows(2).position(|w| w == [0x85, 0x41]) else {
            return sw(vec![], 0x6A, 0x80);
        };
        let Some(point) = data.get(pos + 2..pos + 2 + 65) else {
            return sw(vec![], 0x6A, 0x80);
        };
        let Ok(pk) = p256::PublicKey::from_sec1_bytes(point) else {
            return sw(vec![], 0x6A, 0x80);
        };
        if !self.touch.is_zero() {
            std::thread::sleep(self.touch);
        }
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), pk.as_affine());
        let out = tlv(&[0x7c], &tlv(&[0x82], shared.raw_secret_bytes().as_slice()));
        if self.pin_always {
            self.verified = false;
        }
        self.ops += 1;
        if self.exit_after_ops.is_some_and(|n| self.ops >= n) {
            // Answer, then "unplug" right after (see main loop).
            eprintln!(
                "keypack-test-piv-card: unplugging after {} operation(s)",
                self.ops
            );
        }
        ok(out)
    }
}

impl vpicc::VSmartCard for Card {
    fn atr(&self) -> &[u8] {
        ATR
    }

    fn power_off(&mut self) {
        // pcscd powers an idle card down after a grace period and up again on the next
        // connect. A YubiKey's PIV applet keeps its PIN state through that (it is powered by
        // USB), so only a reset or an unplug forgets the PIN here.
        self.piv_selected = false;
    }

    fn reset(&mut self) {
        self.verified = false;
        self.piv_selected = false;
    }

    fn execute(&mut self, msg: &[u8]) -> Vec<u8> {
        self.apdu(msg)
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let need = |n: &str| arg(&args, n).ok_or_else(|| io::Error::other(format!("missing {n}")));
    let port: u16 = need("--port")?.parse().map_err(io::Error::other)?;
    let key_pem = std::fs::read_to_string(need("--key")?)?;
    let secret = p256::SecretKey::from_pkcs8_pem(&key_pem)
        .map_err(|_| io::Error::other("--key is not a PKCS#8 P-256 key"))?;
    let cert = std::fs::read(need("--cert")?)?;
    let serial: u32 = need("--serial")?.parse().map_err(io::Error::other)?;
    let slot = arg(&args, "--slot")
        .map(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16))
        .transpose()
        .map_err(io::Error::other)?
        .unwrap_or(0x82);
    let tries_file = arg(&args, "--tries-file").map(std::path::PathBuf::from);
    let tries = tries_file
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(3u8);
    let mut card = Card {
        secret,
        cert,
        serial,
        slot,
        pin: arg(&args, "--pin")
            .unwrap_or_else(|| "123456".into())
            .into_bytes(),
        pin_always: args.iter().any(|a| a == "--pin-always"),
        touch: Duration::from_millis(
            arg(&args, "--touch-ms")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        ),
        exit_after_ops: arg(&args, "--exit-after-ops").and_then(|s| s.parse().ok()),
        tries_file,
        piv_selected: false,
        verified: false,
        tries,
        ops: 0,
        pending: Vec::new(),
    };
    let mut conn = vpicc::connect_socket(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    eprintln!("keypack-test-piv-card: connected to vpcd on 127.0.0.1:{port}");
    loop {
        conn.poll(&mut card)?;
        if card.exit_after_ops.is_some_and(|n| card.ops >= n) {
            return Ok(());
        }
    }
}
