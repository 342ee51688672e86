//! An xz (LZMA2) decoder whose dictionary is the output itself: the last [`WINDOW`] bytes in
//! memory, anything farther back read again from where it was written (the image file).
//!
//! Why: an LZMA2 match may reach back as far as the stream's dictionary size, so an ordinary
//! decoder holds that much in memory — for a 32 MiB VTOYEFI image compressed with `xz -9`, a
//! 64 MiB dictionary of which 32 MiB get touched (55 MiB peak RSS for a whole build, measured
//! with `benches/ventoy.sh`'s real-size blob). Here the peak is [`WINDOW`] plus one LZMA2 chunk
//! (at most 64 KiB) for any dictionary size.
//!
//! Supports: `.xz` files of one or more blocks with the LZMA2 filter only (what `xz` writes by
//! default and what Ventoy ships), checks None, CRC32 and CRC64 (verified). Stops at the first
//! stream's index; the caller checks the total length. Does not support: BCJ or delta filters,
//! SHA-256 checks, LZMA1 `.lzma` files.
//! Reference: "The .xz File Format" 1.2.1 (tukaani.org), §2–§3; LZMA as in the LZMA SDK's
//! `LzmaSpec.cpp`; LZMA2 chunk headers as in liblzma's `lzma2_decoder.c`.

use std::io::{self, Read, Write};

/// Bytes of recent output kept in memory; matches reaching farther read the output again.
pub const WINDOW: usize = 1 << 20;

/// Longest LZMA match.
const MATCH_MAX: usize = 273;

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Decompresses the xz stream `input`, writing the output in order to `out` and reading back
/// output bytes at `back(pos, buf)` (`pos` counted from the output's first byte, always a range
/// `out` has already received). Returns the number of bytes written; stops with an error after
/// `limit` bytes.
pub fn decompress(
    input: &mut dyn Read,
    out: &mut dyn Write,
    back: &dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    limit: u64,
) -> io::Result<u64> {
    let mut header = [0u8; 12];
    input.read_exact(&mut header)?;
    if header[..6] != [0xFD, b'7', b'z', b'X', b'Z', 0] {
        return Err(bad("not an xz file (no stream header)"));
    }
    if crc32fast::hash(&header[6..8]).to_le_bytes() != header[8..12] || header[6] != 0 {
        return Err(bad("damaged stream header"));
    }
    let check = header[7] & 0x0F;
    let check_len = match check {
        0 => 0,
        1 => 4,
        4 => 8,
        _ => return Err(bad("unsupported integrity check (only none, CRC32, CRC64)")),
    };
    let mut dict = Dict::new(out, back, limit);
    loop {
        let mut size = [0u8; 1];
        input.read_exact(&mut size)?;
        if size[0] == 0 {
            // The index: the blocks are done.
            break;
        }
        let len = (usize::from(size[0]) + 1) * 4;
        let mut h = vec![0u8; len];
        h[0] = size[0];
        input.read_exact(&mut h[1..])?;
        if crc32fast::hash(&h[..len - 4]).to_le_bytes() != h[len - 4..] {
            return Err(bad("damaged block header"));
        }
        block_filters(&h[..len - 4])?;
        // Each block has its own check; every earlier byte has been flushed (and hashed).
        dict.crc32 = crc32fast::Hasher::new();
        dict.crc64 = !0;
        let packed = lzma2(input, &mut dict)?;
        dict.flush()?;
        // Block padding: header + data to a multiple of four, zero bytes.
        let pad = (4 - (len as u64 + packed) % 4) % 4;
        let mut p = [0u8; 3];
        input.read_exact(&mut p[..pad as usize])?;
        if p.iter().any(|&b| b != 0) {
            return Err(bad("non-zero block padding"));
        }
        let mut want = [0u8; 8];
        input.read_exact(&mut want[..check_len])?;
        let ok = match check {
            1 => dict.crc32.clone().finalize().to_le_bytes()[..] == want[..4],
            4 => (!dict.crc64).to_le_bytes() == want,
            _ => true,
        };
        if !ok {
            return Err(bad("integrity check failed (the file is damaged)"));
        }
    }
    dict.flush()?;
    Ok(dict.pos)
}

/// Checks a block header's flags and filter list: LZMA2 alone.
fn block_filters(h: &[u8]) -> io::Result<()> {
    let flags = h[1];
    if flags & 0x3C != 0 {
        return Err(bad("reserved block flags set"));
    }
    if flags & 0x03 != 0 {
        return Err(bad("unsupported filter chain (only LZMA2 alone)"));
    }
    let mut i = 2;
    let varint = |i: &mut usize| -> io::Result<u64> {
        let mut v = 0u64;
        for k in 0..9 {
            let b = *h.get(*i).ok_or_else(|| bad("truncated block header"))?;
            *i += 1;
            v |= u64::from(b & 0x7F) << (7 * k);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("bad number in block header"))
    };
    if flags & 0x40 != 0 {
        varint(&mut i)?;
    }
    if flags & 0x80 != 0 {
        varint(&mut i)?;
    }
    let id = varint(&mut i)?;
    let props = varint(&mut i)?;
    if id != 0x21 || props != 1 {
        return Err(bad("unsupported filter (only LZMA2)"));
    }
    let dict_byte = *h.get(i).ok_or_else(|| bad("truncated block header"))?;
    if dict_byte > 40 {
        return Err(bad("bad LZMA2 dictionary size"));
    }
    if h[i + 1..].iter().any(|&b| b != 0) {
        return Err(bad("non-zero block header padding"));
    }
    Ok(())
}

/// The output so far: the last bytes in memory (`buf` holds positions `base..pos`), the rest
/// written to `out` and read back through `back`.
struct Dict<'a> {
    out: &'a mut dyn Write,
    back: &'a dyn Fn(u64, &mut [u8]) -> io::Result<()>,
    buf: Vec<u8>,
    base: u64,
    pos: u64,
    flushed: u64,
    /// Position of the last dictionary reset: no match reaches before it.
    start: u64,
    limit: u64,
    crc32: crc32fast::Hasher,
    crc64: u64,
    /// A block of output read back (`far_at..far_at + far.len()`): matches at one distance
    /// come in runs, so one read serves many. Written output never changes: always valid.
    far: Vec<u8>,
    far_at: u64,
}

/// Bytes read back at once for matches beyond the window.
const FAR_BLOCK: u64 = 64 << 10;

impl<'a> Dict<'a> {
    fn new(
        out: &'a mut dyn Write,
        back: &'a dyn Fn(u64, &mut [u8]) -> io::Result<()>,
        limit: u64,
    ) -> Self {
        Dict {
            out,
            back,
            buf: Vec::with_capacity(2 * WINDOW),
            base: 0,
            pos: 0,
            flushed: 0,
            start: 0,
            limit,
            crc32: crc32fast::Hasher::new(),
            crc64: !0,
            far: Vec::with_capacity(FAR_BLOCK as usize),
            far_at: 0,
        }
    }

    /// Output bytes `at..at + buf.len()`, all before `base` (so already written), through the
    /// read-back block.
    fn read_far(&mut self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = at + buf.len() as u64;
        let cached = at >= self.far_at && end <= self.far_at + self.far.len() as u64;
        if !cached {
            let start = at - at % FAR_BLOCK;
            let stop = (start + FAR_BLOCK).min(self.flushed).max(end);
            self.far.resize((stop - start) as usize, 0);
            (self.back)(start, &mut self.far)?;
            self.far_at = start;
        }
        let o = (at - self.far_at) as usize;
        buf.copy_from_slice(&self.far[o..o + buf.len()]);
        Ok(())
    }

    /// Writes what `out` has not received yet.
    fn flush(&mut self) -> io::Result<()> {
        let from = (self.flushed - self.base) as usize;
        let new = &self.buf[from..];
        self.crc32.update(new);
        self.crc64 = crc64(self.crc64, new);
        self.out.write_all(new)?;
        self.flushed = self.pos;
        Ok(())
    }

    /// Makes room for `n` more bytes: when the buffer is full, flushes it and keeps only the
    /// last [`WINDOW`] bytes.
    fn room(&mut self, n: usize) -> io::Result<()> {
        if self.pos + n as u64 > self.limit {
            return Err(bad("decompresses to more bytes than expected"));
        }
        if self.buf.len() + n > 2 * WINDOW {
            self.flush()?;
            let drop = self.buf.len() - WINDOW;
            self.buf.drain(..drop);
            self.base += drop as u64;
        }
        Ok(())
    }

    fn put(&mut self, b: u8) -> io::Result<()> {
        self.room(1)?;
        self.buf.push(b);
        self.pos += 1;
        Ok(())
    }

    /// The byte `dist + 1` back (`dist` 0 is the last byte).
    fn get(&mut self, dist: u32) -> io::Result<u8> {
        let at = self
            .pos
            .checked_sub(u64::from(dist) + 1)
            .filter(|&a| a >= self.start)
            .ok_or_else(|| bad("match before the start of the dictionary"))?;
        if at >= self.base {
            Ok(self.buf[(at - self.base) as usize])
        } else {
            let mut b = [0u8; 1];
            self.read_far(at, &mut b)?;
            Ok(b[0])
        }
    }

    /// Copies `len` bytes from `dist + 1` back (the ranges may overlap).
    fn copy(&mut self, dist: u32, len: usize) -> io::Result<()> {
        self.room(len)?;
        let from = self
            .pos
            .checked_sub(u64::from(dist) + 1)
            .filter(|&a| a >= self.start)
            .ok_or_else(|| bad("match before the start of the dictionary"))?;
        let mut done = 0usize;
        if from < self.base {
            // Far back: already written (everything before `base` was flushed).
            let n = ((self.base - from) as usize).min(len);
            let mut tmp = [0u8; MATCH_MAX];
            self.read_far(from, &mut tmp[..n])?;
            self.buf.extend_from_slice(&tmp[..n]);
            done = n;
        }
        if done < len {
            // From here on the source is in memory (`from + done >= base`).
            let mut src = (from + done as u64 - self.base) as usize;
            while done < len {
                let b = self.buf[src];
                self.buf.push(b);
                src += 1;
                done += 1;
            }
        }
        self.pos += len as u64;
        Ok(())
    }

    fn uncompressed(&mut self, input: &mut dyn Read, n: usize) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            input.read_exact(&mut chunk[..k])?;
            self.room(k)?;
            self.buf.extend_from_slice(&chunk[..k]);
            self.pos += k as u64;
            left -= k;
        }
        Ok(())
    }
}

static CRC64_TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();

/// CRC-64/XZ (ECMA-182, reflected), as the xz check: start with `!0`, finish with `!`.
fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    let table = CRC64_TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xC96C_5795_D787_0F42
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    for &b in data {
        crc = table[((crc ^ u64::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// Decodes one block's LZMA2 data into `dict`; returns the compressed bytes read.
fn lzma2(input: &mut dyn Read, dict: &mut Dict<'_>) -> io::Result<u64> {
    let mut read = 0u64;
    let mut lzma: Option<Lzma> = None;
    let mut need_dict_reset = true;
    let mut packed = vec![0u8; 1 << 16];
    loop {
        let mut c = [0u8; 1];
        input.read_exact(&mut c)?;
        read += 1;
        let control = c[0];
        if control == 0 {
            return Ok(read);
        }
        let mut sz = [0u8; 2];
        input.read_exact(&mut sz)?;
        read += 2;
        let low = usize::from(u16::from_be_bytes(sz)) + 1;
        if control == 1 || control == 2 {
            if control == 1 {
                dict.start = dict.pos;
                need_dict_reset = false;
            } else if need_dict_reset {
                return Err(bad("LZMA2 data without a dictionary reset"));
            }
            dict.uncompressed(input, low)?;
            read += low as u64;
            continue;
        }
        if control < 0x80 {
            return Err(bad("bad LZMA2 control byte"));
        }
        let unpacked = (usize::from(control & 0x1F) << 16) + low;
        input.read_exact(&mut sz)?;
        read += 2;
        let packed_len = usize::from(u16::from_be_bytes(sz)) + 1;
        let reset = (control >> 5) & 3;
        if reset == 3 {
            dict.start = dict.pos;
            need_dict_reset = false;
        } else if need_dict_reset {
            return Err(bad("LZMA2 data without a dictionary reset"));
        }
        if reset >= 2 {
            let mut p = [0u8; 1];
            input.read_exact(&mut p)?;
            read += 1;
            lzma = Some(Lzma::new(p[0])?);
        } else if reset == 1 {
            let props = lzma
                .as_ref()
                .ok_or_else(|| bad("LZMA2 state reset without properties"))?
                .props;
            lzma = Some(Lzma::with(props));
        }
        let l = lzma
            .as_mut()
            .ok_or_else(|| bad("LZMA2 chunk without properties"))?;
        let chunk = &mut packed[..packed_len];
        input.read_exact(chunk)?;
        read += packed_len as u64;
        let mut rc = Range::new(chunk)?;
        l.chunk(&mut rc, dict, unpacked)?;
        if rc.at != chunk.len() {
            return Err(bad("LZMA2 chunk size mismatch"));
        }
    }
}

/// The range decoder over one LZMA2 chunk.
struct Range<'b> {
    data: &'b [u8],
    at: usize,
    range: u32,
    code: u32,
}

impl<'b> Range<'b> {
    fn new(data: &'b [u8]) -> io::Result<Self> {
        if data.len() < 5 || data[0] != 0 {
            return Err(bad("bad LZMA range coder start"));
        }
        let code = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        Ok(Range {
            data,
            at: 5,
            range: 0xFFFF_FFFF,
            code,
        })
    }

    fn next(&mut self) -> io::Result<u8> {
        let b = *self
            .data
            .get(self.at)
            .ok_or_else(|| bad("LZMA2 chunk ends early"))?;
        self.at += 1;
        Ok(b)
    }

    fn normalize(&mut self) -> io::Result<()> {
        if self.range < 1 << 24 {
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(self.next()?);
        }
        Ok(())
    }

    fn bit(&mut self, p: &mut u16) -> io::Result<u32> {
        let bound = (self.range >> 11) * u32::from(*p);
        let bit = if self.code < bound {
            *p += (2048 - *p) >> 5;
            self.range = bound;
            0
        } else {
            *p -= *p >> 5;
            self.code -= bound;
            self.range -= bound;
            1
        };
        self.normalize()?;
        Ok(bit)
    }

    fn tree(&mut self, probs: &mut [u16], bits: u32) -> io::Result<u32> {
        let mut m = 1usize;
        for _ in 0..bits {
            m = (m << 1) + self.bit(&mut probs[m])? as usize;
        }
        Ok(m as u32 - (1 << bits))
    }

    fn reverse(&mut self, probs: &mut [u16], bits: u32) -> io::Result<u32> {
        let mut m = 1usize;
        let mut sym = 0u32;
        for i in 0..bits {
            let b = self.bit(&mut probs[m])?;
            m = (m << 1) + b as usize;
            sym |= b << i;
        }
        Ok(sym)
    }

    fn direct(&mut self, bits: u32) -> io::Result<u32> {
        let mut res = 0u32;
        for _ in 0..bits {
            self.range >>= 1;
            self.code = self.code.wrapping_sub(self.range);
            let t = 0u32.wrapping_sub(self.code >> 31);
            self.code = self.code.wrapping_add(self.range & t);
            if self.code == self.range {
                return Err(bad("corrupt LZMA data"));
            }
            self.normalize()?;
            res = (res << 1).wrapping_add(t.wrapping_add(1));
        }
        Ok(res)
    }
}

const INIT: u16 = 1024;

#[derive(Clone)]
struct LenDecoder {
    choice: u16,
    choice2: u16,
    low: [[u16; 8]; 16],
    mid: [[u16; 8]; 16],
    high: [u16; 256],
}

impl LenDecoder {
    fn new() -> Self {
        LenDecoder {
            choice: INIT,
            choice2: INIT,
            low: [[INIT; 8]; 16],
            mid: [[INIT; 8]; 16],
            high: [INIT; 256],
        }
    }

    fn decode(&mut self, rc: &mut Range<'_>, pos_state: usize) -> io::Result<u32> {
        if rc.bit(&mut self.choice)? == 0 {
            return rc.tree(&mut self.low[pos_state], 3);
        }
        if rc.bit(&mut self.choice2)? == 0 {
            return Ok(8 + rc.tree(&mut self.mid[pos_state], 3)?);
        }
        Ok(16 + rc.tree(&mut self.high, 8)?)
    }
}

/// LZMA state: properties, probabilities, the last four distances, and a match cut by the end
/// of the previous chunk.
struct Lzma {
    props: (u32, u32, u32),
    literal: Vec<u16>,
    is_match: [u16; 192],
    is_rep: [u16; 12],
    is_rep_g0: [u16; 12],
    is_rep_g1: [u16; 12],
    is_rep_g2: [u16; 12],
    is_rep0_long: [u16; 192],
    pos_slot: [[u16; 64]; 4],
    pos: [u16; 115],
    align: [u16; 16],
    len: LenDecoder,
    rep_len: LenDecoder,
    state: usize,
    reps: [u32; 4],
    pending: usize,
}

impl Lzma {
    fn new(props: u8) -> io::Result<Self> {
        let d = u32::from(props);
        if d >= 9 * 5 * 5 {
            return Err(bad("bad LZMA properties"));
        }
        let (lc, lp, pb) = (d % 9, (d / 9) % 5, d / 45);
        if lc + lp > 4 {
            return Err(bad("bad LZMA2 properties (lc + lp > 4)"));
        }
        Ok(Lzma::with((lc, lp, pb)))
    }

    fn with(props: (u32, u32, u32)) -> Self {
        let (lc, lp, _) = props;
        Lzma {
            props,
            literal: vec![INIT; 0x300 << (lc + lp)],
            is_match: [INIT; 192],
            is_rep: [INIT; 12],
            is_rep_g0: [INIT; 12],
            is_rep_g1: [INIT; 12],
            is_rep_g2: [INIT; 12],
            is_rep0_long: [INIT; 192],
            pos_slot: [[INIT; 64]; 4],
            pos: [INIT; 115],
            align: [INIT; 16],
            len: LenDecoder::new(),
            rep_len: LenDecoder::new(),
            state: 0,
            reps: [0; 4],
            pending: 0,
        }
    }

    /// Decodes `unpacked` bytes of one chunk.
    fn chunk(
        &mut self,
        rc: &mut Range<'_>,
        dict: &mut Dict<'_>,
        unpacked: usize,
    ) -> io::Result<()> {
        let (lc, lp, pb) = self.props;
        let end = dict.pos + unpacked as u64;
        if self.pending > 0 {
            let n = self.pending.min(unpacked);
            dict.copy(self.reps[0], n)?;
            self.pending -= n;
        }
        while dict.pos < end {
            let pos_state = (dict.pos & ((1 << pb) - 1)) as usize;
            let s = self.state;
            if rc.bit(&mut self.is_match[(s << 4) + pos_state])? == 0 {
                let prev = if dict.pos > dict.start {
                    dict.get(0)?
                } else {
                    0
                };
                let lit_state = (((dict.pos & ((1 << lp) - 1)) as usize) << lc)
                    + (usize::from(prev) >> (8 - lc));
                let probs = &mut self.literal[0x300 * lit_state..0x300 * (lit_state + 1)];
                let mut sym = 1usize;
                if s >= 7 {
                    let mut match_byte = usize::from(dict.get(self.reps[0])?);
                    while sym < 0x100 {
                        let match_bit = (match_byte >> 7) & 1;
                        match_byte <<= 1;
                        let bit = rc.bit(&mut probs[((1 + match_bit) << 8) + sym])? as usize;
                        sym = (sym << 1) | bit;
                        if match_bit != bit {
                            break;
                        }
                    }
                }
                while sym < 0x100 {
                    sym = (sym << 1) | rc.bit(&mut probs[sym])? as usize;
                }
                dict.put((sym - 0x100) as u8)?;
                self.state = if s < 4 {
                    0
                } else if s < 10 {
                    s - 3
                } else {
                    s - 6
                };
                continue;
            }
            let len;
            if rc.bit(&mut self.is_rep[s])? == 0 {
                self.reps = [0, self.reps[0], self.reps[1], self.reps[2]];
                len = self.len.decode(rc, pos_state)?;
                self.state = if s < 7 { 7 } else { 10 };
                let dist = self.distance(rc, len)?;
                if dist == 0xFFFF_FFFF {
                    return Err(bad("end marker inside LZMA2 data"));
                }
                self.reps[0] = dist;
            } else {
                if rc.bit(&mut self.is_rep_g0[s])? == 0 {
                    if rc.bit(&mut self.is_rep0_long[(s << 4) + pos_state])? == 0 {
                        self.state = if s < 7 { 9 } else { 11 };
                        let b = dict.get(self.reps[0])?;
                        dict.put(b)?;
                        continue;
                    }
                } else {
                    let dist;
                    if rc.bit(&mut self.is_rep_g1[s])? == 0 {
                        dist = self.reps[1];
                    } else {
                        if rc.bit(&mut self.is_rep_g2[s])? == 0 {
                            dist = self.reps[2];
                        } else {
                            dist = self.reps[3];
                            self.reps[3] = self.reps[2];
                        }
                        self.reps[2] = self.reps[1];
                    }
                    self.reps[1] = self.reps[0];
                    self.reps[0] = dist;
                }
                len = self.rep_len.decode(rc, pos_state)?;
                self.state = if s < 7 { 8 } else { 11 };
            }
            let len = len as usize + 2;
            let room = (end - dict.pos) as usize;
            let n = len.min(room);
            dict.copy(self.reps[0], n)?;
            self.pending = len - n;
        }
        Ok(())
    }

    fn distance(&mut self, rc: &mut Range<'_>, len: u32) -> io::Result<u32> {
        let len_state = len.min(3) as usize;
        let slot = rc.tree(&mut self.pos_slot[len_state], 6)?;
        if slot < 4 {
            return Ok(slot);
        }
        let direct = (slot >> 1) - 1;
        let mut dist = (2 | (slot & 1)) << direct;
        if slot < 14 {
            let base = (dist - slot) as usize;
            dist += rc.reverse(&mut self.pos[base..], direct)?;
        } else {
            dist += rc.direct(direct - 4)? << 4;
            dist += rc.reverse(&mut self.align, 4)?;
        }
        Ok(dist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output into a `Vec`, read back from it (what the image file does for the build).
    fn unxz(xz: &[u8], limit: u64) -> io::Result<Vec<u8>> {
        unxz_counting(xz, limit).map(|(v, _)| v)
    }

    /// [`unxz`], and how many times output was read back.
    fn unxz_counting(xz: &[u8], limit: u64) -> io::Result<(Vec<u8>, usize)> {
        let reads = std::cell::Cell::new(0usize);
        let out = std::cell::RefCell::new(Vec::new());
        struct W<'a>(&'a std::cell::RefCell<Vec<u8>>);
        impl Write for W<'_> {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.borrow_mut().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let back = |pos: u64, buf: &mut [u8]| {
            reads.set(reads.get() + 1);
            let o = out.borrow();
            buf.copy_from_slice(&o[pos as usize..pos as usize + buf.len()]);
            Ok(())
        };
        decompress(&mut &xz[..], &mut W(&out), &back, limit)?;
        Ok((out.into_inner(), reads.get()))
    }

    /// Data with matches far back (a repeated random 1.5 MiB block: distances past [`WINDOW`]),
    /// runs of zeros and text.
    fn sample() -> Vec<u8> {
        let mut x: u64 = 0x1234_5678_9ABC_DEF1;
        let mut rnd = vec![0u8; 3 << 19];
        for b in rnd.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let mut v = Vec::new();
        v.extend_from_slice(&rnd);
        v.extend(std::iter::repeat_n(0u8, 1 << 19));
        for i in 0..5000 {
            v.extend_from_slice(format!("line {i} of some text {}\n", i % 7).as_bytes());
        }
        v.extend_from_slice(&rnd);
        v
    }

    fn xz_cli(data: &[u8], args: &[&str]) -> Vec<u8> {
        let mut child = std::process::Command::new("xz")
            .args(args)
            .args(["-c", "-T1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("xz (xz-utils) is needed for this test");
        let mut stdin = child.stdin.take().unwrap();
        let d = data.to_vec();
        let t = std::thread::spawn(move || stdin.write_all(&d));
        let out = child.wait_with_output().unwrap();
        t.join().unwrap().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn decodes_what_xz_writes_at_every_level_and_check() {
        let data = sample();
        for args in [
            &["-0"][..],
            &["-6"],
            &["-9e"],
            &["-1", "--check=crc32"],
            &["-3", "--check=none"],
            &["--lzma2=preset=6,lc=1,lp=3,pb=0"],
            &["-6", "--block-size=1MiB"],
        ] {
            let xz = xz_cli(&data, args);
            let (got, reads) =
                unxz_counting(&xz, data.len() as u64).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(got == data, "{args:?}: output differs");
            // An 8 MiB dictionary finds the repeated block 2 MiB back: past the window, so
            // it is read back from the output.
            if args == ["-6"] {
                assert!(reads > 0, "no match reached past the window");
            }
        }
    }

    #[test]
    fn refuses_damage_and_overlong_output() {
        let data = sample();
        let xz = xz_cli(&data, &["-6"]);
        assert!(unxz(&xz, data.len() as u64 - 1).is_err());
        // A flipped bit in the compressed data: corrupt data or a failed CRC64, never success.
        let mut bad = xz.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x10;
        assert!(unxz(&bad, data.len() as u64).is_err());
        assert!(unxz(&xz[..xz.len() / 2], data.len() as u64).is_err());
    }
}
