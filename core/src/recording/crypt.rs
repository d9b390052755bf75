//! Encryption at rest of recordings (`[recording] encrypt = true`): AES-256-GCM frames
//! written as the session runs.
//!
//! Threat: a copy of the recordings directory (a backup, a stolen disk) shows what staff
//! typed and saw on production; a crash must not make a recording unreadable; frames must
//! not be reordered, moved between recordings, or dropped unnoticed. Mitigation: each
//! recording has its own key, HMAC-SHA256 of its id under a key derived from the secret key
//! (`gatehouse/recording-key/v1`); the file is a header (magic, id, content) and frames
//! `[u32 length][u8 flags][ciphertext+tag]`, each sealed with the frame's index as nonce and
//! the header, index and flags as associated data; a clean end writes a frame flagged final.
//! A crash leaves every frame written before it readable (a cut last frame is dropped); a
//! missing final frame is reported as an incomplete recording, a frame that does not
//! authenticate is an error.

use std::io::{self, Read, Write};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::RecordingId;
use crate::secret::SecretKey;

/// Label of the recordings key derived from the secret key.
const KEY_LABEL: &str = "gatehouse/recording-key/v1";
/// First bytes of an encrypted recording.
pub const MAGIC: &[u8; 8] = b"GHREC\x00\x01\n";
/// Header: magic, the recording id (32 hex digits), the content byte.
pub const HEADER_LEN: usize = 8 + 32 + 1;
/// Largest frame (ciphertext and tag) a reader accepts: a hostile file cannot make it
/// allocate more.
pub const MAX_FRAME: usize = 16 * 1024 * 1024 + TAG_LEN;
const TAG_LEN: usize = 16;
/// Flag of the frame a clean end writes.
const FINAL: u8 = 1;

/// What the frames hold once decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// asciicast text.
    Cast,
    /// asciicast text in gzip members (one per frame).
    Gzip,
}

impl Content {
    fn byte(self) -> u8 {
        match self {
            Content::Cast => b'c',
            Content::Gzip => b'z',
        }
    }

    fn from_byte(b: u8) -> Option<Content> {
        match b {
            b'c' => Some(Content::Cast),
            b'z' => Some(Content::Gzip),
            _ => None,
        }
    }
}

/// The key all recording keys are derived from. Never printed.
#[derive(Clone)]
pub struct RecordingKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for RecordingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordingKey(..)")
    }
}

impl RecordingKey {
    pub fn new(master: &SecretKey) -> RecordingKey {
        RecordingKey(Zeroizing::new(master.derive(KEY_LABEL)))
    }

    /// The AEAD key of one recording.
    fn for_recording(&self, id: &RecordingId) -> io::Result<LessSafeKey> {
        let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.0.as_slice());
        let tag = aws_lc_rs::hmac::sign(&mac_key, id.as_str().as_bytes());
        let unbound = UnboundKey::new(&AES_256_GCM, tag.as_ref())
            .map_err(|_| io::Error::other("cannot make the recording key"))?;
        Ok(LessSafeKey::new(unbound))
    }
}

fn header(id: &RecordingId, content: Content) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(id.as_str().as_bytes());
    h.push(content.byte());
    h
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    if let Some(tail) = n.get_mut(NONCE_LEN - 8..) {
        tail.copy_from_slice(&index.to_be_bytes());
    }
    Nonce::assume_unique_for_key(n)
}

fn aad(header: &[u8], index: u64, flags: u8) -> Vec<u8> {
    let mut a = Vec::with_capacity(header.len() + 9);
    a.extend_from_slice(header);
    a.extend_from_slice(&index.to_be_bytes());
    a.push(flags);
    a
}

/// Seals frames for one recording (the writer side).
pub struct Sealer {
    key: LessSafeKey,
    header: Vec<u8>,
    next: u64,
}

impl Sealer {
    pub fn new(key: &RecordingKey, id: &RecordingId, content: Content) -> io::Result<Sealer> {
        Ok(Sealer {
            key: key.for_recording(id)?,
            header: header(id, content),
            next: 0,
        })
    }

    /// The file header, written first.
    pub fn file_header(&self) -> &[u8] {
        &self.header
    }

    /// One frame holding `plain`, appended to `out`.
    pub fn seal(&mut self, plain: &[u8], last: bool, out: &mut Vec<u8>) -> io::Result<()> {
        let flags = if last { FINAL } else { 0 };
        let index = self.next;
        self.next += 1;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                nonce(index),
                Aad::from(aad(&self.header, index, flags)),
                &mut buf,
            )
            .map_err(|_| io::Error::other("cannot seal a recording frame"))?;
        let len = u32::try_from(buf.len())
            .ok()
            .filter(|l| (*l as usize) <= MAX_FRAME)
            .ok_or_else(|| io::Error::other("recording frame too large"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&buf);
        Ok(())
    }
}

/// How a framed recording ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameEnd {
    /// The last frame was cut short (the writer was killed) and was dropped.
    pub torn: bool,
    /// No final frame: the session did not end cleanly (a crash), or the file was cut at a
    /// frame boundary.
    pub incomplete: bool,
}

/// Decrypts a framed recording as a stream of its plaintext (the reader side).
pub struct FrameReader<R> {
    inner: R,
    key: LessSafeKey,
    header: Vec<u8>,
    content: Content,
    index: u64,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
    end: FrameEnd,
}

/// Reads as much of `buf` as the input holds; the count read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl<R: Read> FrameReader<R> {
    /// Reads and checks the header: the file must be an encrypted recording of `id`.
    pub fn new(mut inner: R, key: &RecordingKey, id: &RecordingId) -> io::Result<FrameReader<R>> {
        let mut h = [0u8; HEADER_LEN];
        if read_full(&mut inner, &mut h)? != HEADER_LEN || !h.starts_with(MAGIC) {
            return Err(invalid("not an encrypted gatehouse recording".into()));
        }
        if h.get(8..40) != Some(id.as_str().as_bytes()) {
            return Err(invalid(
                "the encrypted recording belongs to another id".into(),
            ));
        }
        let content = h
            .get(40)
            .copied()
            .and_then(Content::from_byte)
            .ok_or_else(|| invalid("unknown content in an encrypted recording".into()))?;
        Ok(FrameReader {
            inner,
            key: key.for_recording(id)?,
            header: h.to_vec(),
            content,
            index: 0,
            plain: Vec::new(),
            pos: 0,
            done: false,
            end: FrameEnd::default(),
        })
    }

    pub fn content(&self) -> Content {
        self.content
    }

    /// How the file ended (meaningful once the stream is read to its end).
    pub fn end(&self) -> FrameEnd {
        self.end
    }

    fn next_frame(&mut self) -> io::Result<bool> {
        let mut head = [0u8; 5];
        let n = read_full(&mut self.inner, &mut head)?;
        if n == 0 {
            self.end.incomplete = true;
            return Ok(false);
        }
        if n < head.len() {
            self.end.torn = true;
            self.end.incomplete = true;
            return Ok(false);
        }
        let [a, b, c, d, flags] = head;
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if !(TAG_LEN..=MAX_FRAME).contains(&len) {
            return Err(invalid(format!("frame {} has a bad length", self.index)));
        }
        let mut buf = vec![0u8; len];
        if read_full(&mut self.inner, &mut buf)? < len {
            self.end.torn = true;
            self.end.incomplete = true;
            return Ok(false);
        }
        let index = self.index;
        let plain = self
            .key
            .open_in_place(
                nonce(index),
                Aad::from(aad(&self.header, index, flags)),
                &mut buf,
            )
            .map_err(|_| {
                invalid(format!(
                    "frame {index} does not authenticate: the recording was changed, or the secret key is not the one that wrote it"
                ))
            })?;
        let plain_len = plain.len();
        buf.truncate(plain_len);
        self.plain = buf;
        self.pos = 0;
        self.index += 1;
        if flags & FINAL != 0 {
            self.done = true;
            let mut probe = [0u8; 1];
            if read_full(&mut self.inner, &mut probe)? != 0 {
                return Err(invalid("data after the final frame".into()));
            }
        }
        Ok(true)
    }
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.plain.len() {
                let rest = self.plain.get(self.pos..).unwrap_or_default();
                let n = rest.len().min(out.len());
                if let (Some(dst), Some(src)) = (out.get_mut(..n), rest.get(..n)) {
                    dst.copy_from_slice(src);
                }
                self.pos += n;
                return Ok(n);
            }
            if self.done || !self.next_frame()? {
                self.done = true;
                return Ok(0);
            }
        }
    }
}

/// A gzip member stream read to the end of its last complete member: a member cut short by
/// a crash ends the stream instead of failing it (`torn` says so).
pub struct TolerantGz<R: Read> {
    inner: flate2::read::MultiGzDecoder<R>,
    torn: bool,
}

impl<R: Read> TolerantGz<R> {
    pub fn new(inner: R) -> TolerantGz<R> {
        TolerantGz {
            inner: flate2::read::MultiGzDecoder::new(inner),
            torn: false,
        }
    }

    pub fn torn(&self) -> bool {
        self.torn
    }
}

impl<R: Read> Read for TolerantGz<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.torn {
            return Ok(0);
        }
        match self.inner.read(out) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.torn = true;
                Ok(0)
            }
            other => other,
        }
    }
}

/// One gzip member holding `plain` (fast compression: the recorder keeps up with a bulk
/// stream).
pub fn gzip_member(plain: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(plain.len() / 3 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(plain)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RecordingKey {
        RecordingKey::new(&SecretKey::from_bytes([9; 32]))
    }

    fn sealed(id: &RecordingId, frames: &[&[u8]], last: bool) -> Vec<u8> {
        let mut s = Sealer::new(&key(), id, Content::Cast).unwrap();
        let mut out = s.file_header().to_vec();
        for (i, f) in frames.iter().enumerate() {
            s.seal(f, last && i + 1 == frames.len(), &mut out).unwrap();
        }
        out
    }

    fn read_all(
        bytes: &[u8],
        id: &RecordingId,
        k: &RecordingKey,
    ) -> io::Result<(Vec<u8>, FrameEnd)> {
        let mut r = FrameReader::new(bytes, k, id)?;
        let mut plain = Vec::new();
        r.read_to_end(&mut plain)?;
        Ok((plain, r.end()))
    }

    #[test]
    fn frames_round_trip_and_a_cut_keeps_the_finished_ones() {
        let id = RecordingId::generate().unwrap();
        let file = sealed(&id, &[b"hello ", b"world", b""], true);
        let (plain, end) = read_all(&file, &id, &key()).unwrap();
        assert_eq!(plain, b"hello world");
        assert_eq!(end, FrameEnd::default());
        assert!(!file.windows(5).any(|w| w == b"hello"), "ciphertext only");
        // Cut anywhere inside the second frame: the first is still there.
        let first_end = HEADER_LEN + 5 + 6 + TAG_LEN;
        for cut in first_end..first_end + 5 + 5 + TAG_LEN {
            let (plain, end) = read_all(&file[..cut], &id, &key()).unwrap();
            assert_eq!(plain, b"hello ", "cut at {cut}");
            assert!(end.incomplete);
            assert_eq!(end.torn, cut > first_end, "cut at {cut}");
        }
        // Without its final frame (a crash at a frame boundary): readable, incomplete.
        let open = sealed(&id, &[b"a", b"b"], false);
        let (plain, end) = read_all(&open, &id, &key()).unwrap();
        assert_eq!(
            (plain.as_slice(), end.incomplete, end.torn),
            (&b"ab"[..], true, false)
        );
    }

    #[test]
    fn changed_moved_reordered_or_foreign_frames_are_refused() {
        let id = RecordingId::generate().unwrap();
        let file = sealed(&id, &[b"one", b"two", b""], true);
        let other = RecordingKey::new(&SecretKey::from_bytes([8; 32]));
        assert!(read_all(&file, &id, &other).is_err(), "wrong key");
        let other_id = RecordingId::generate().unwrap();
        assert!(
            read_all(&file, &other_id, &key()).is_err(),
            "another recording's id"
        );
        let mut flipped = file.clone();
        let i = HEADER_LEN + 5 + 1;
        flipped[i] ^= 1;
        assert!(read_all(&flipped, &id, &key()).is_err(), "changed byte");
        // Swap the first two frames (same length).
        let f = 5 + 3 + TAG_LEN;
        let mut swapped = file.clone();
        let (a, b) = (HEADER_LEN, HEADER_LEN + f);
        let first = file[a..a + f].to_vec();
        swapped[a..a + f].copy_from_slice(&file[b..b + f]);
        swapped[b..b + f].copy_from_slice(&first);
        assert!(read_all(&swapped, &id, &key()).is_err(), "reordered");
        let mut longer = file.clone();
        longer.extend_from_slice(b"x");
        assert!(
            read_all(&longer, &id, &key()).is_err(),
            "data after the end"
        );
        assert!(read_all(b"plain text\n", &id, &key()).is_err());
        let mut huge = sealed(&id, &[], false);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.push(0);
        assert!(read_all(&huge, &id, &key()).is_err(), "oversized frame");
    }

    #[test]
    fn gzip_members_read_to_the_last_complete_one() {
        let mut file = gzip_member(b"first\n").unwrap();
        file.extend(gzip_member(b"second\n").unwrap());
        let full = file.len();
        file.extend(gzip_member(b"third\n").unwrap());
        let mut r = TolerantGz::new(&file[..full + 12]);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("first\nsecond\n"), "{out:?}");
        assert!(r.torn());
    }
}
