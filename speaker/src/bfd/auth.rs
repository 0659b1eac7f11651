//! Keyed SHA1 and Meticulous Keyed SHA1 authentication (RFC 5880 §6.7.4), on the encoded
//! packet: the digest is the SHA1 of the whole packet with the key, zero-padded to 20 octets,
//! in the Auth Key/Digest field. The sequence-number rules are in `fsm`.

use std::fmt;
use std::path::Path;

use super::codec::{self, Authentication, ControlPacket, MANDATORY_LEN};

/// Offset of the 20-octet digest in a packet with a SHA1 section.
const DIGEST_AT: usize = MANDATORY_LEN + 8;

/// A keyed SHA1 key: 1 to 20 octets (§4.4). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Sha1Key {
    pub key_id: u8,
    pub meticulous: bool,
    key: [u8; 20],
}

impl fmt::Debug for Sha1Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha1Key")
            .field("key_id", &self.key_id)
            .field("meticulous", &self.meticulous)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read BFD key file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("BFD key in {0} must be 1 to 20 octets (RFC 5880 §4.4)")]
    Length(String),
}

impl Sha1Key {
    /// A key of 1 to 20 octets.
    pub fn new(key_id: u8, meticulous: bool, key: &[u8]) -> Option<Self> {
        if key.is_empty() || key.len() > 20 {
            return None;
        }
        let mut k = [0; 20];
        k[..key.len()].copy_from_slice(key);
        Some(Self {
            key_id,
            meticulous,
            key: k,
        })
    }

    /// The key is the file's content without a trailing newline.
    pub fn from_file(path: &Path, key_id: u8, meticulous: bool) -> Result<Self, KeyError> {
        let text = std::fs::read(path).map_err(|e| KeyError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let key = text.strip_suffix(b"\n").unwrap_or(&text);
        let key = key.strip_suffix(b"\r").unwrap_or(key);
        Self::new(key_id, meticulous, key)
            .ok_or_else(|| KeyError::Length(path.display().to_string()))
    }

    fn digest(&self, packet: &[u8]) -> [u8; 20] {
        let mut buf = packet.to_vec();
        buf[DIGEST_AT..DIGEST_AT + 20].copy_from_slice(&self.key);
        let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &buf);
        let mut out = [0; 20];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// Encodes `p` (whose authentication section is a SHA1 one with this key's id; the digest
    /// field is ignored) and fills in the digest.
    pub fn sign(&self, p: &ControlPacket, out: &mut Vec<u8>) -> Result<(), codec::EncodeError> {
        let start = out.len();
        codec::encode(p, out)?;
        let packet = &out[start..];
        if packet.len() == MANDATORY_LEN + 28 {
            let d = self.digest(packet);
            out[start + DIGEST_AT..start + DIGEST_AT + 20].copy_from_slice(&d);
        }
        Ok(())
    }

    /// Whether the received `bytes` (decoded as `p`) carry a valid digest from this key.
    pub fn verify(&self, p: &ControlPacket, bytes: &[u8]) -> bool {
        let Some(Authentication::Sha1 {
            meticulous,
            key_id,
            digest,
            ..
        }) = &p.authentication
        else {
            return false;
        };
        let len = p.encoded_len();
        if *key_id != self.key_id || *meticulous != self.meticulous || bytes.len() < len {
            return false;
        }
        // Constant time is not needed against a peer on the link, but costs nothing.
        let expected = self.digest(&bytes[..len]);
        expected
            .iter()
            .zip(digest)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bfd::codec::{Diagnostic, SessionState};

    fn packet(key_id: u8, sequence: u32) -> ControlPacket {
        ControlPacket {
            diagnostic: Diagnostic::None,
            state: SessionState::Up,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 1,
            your_discriminator: 2,
            desired_min_tx_interval: 300_000,
            required_min_rx_interval: 300_000,
            required_min_echo_rx_interval: 0,
            authentication: Some(Authentication::Sha1 {
                meticulous: false,
                key_id,
                sequence,
                digest: [0; 20],
            }),
        }
    }

    #[test]
    fn a_signed_packet_verifies_and_any_change_breaks_it() {
        let key = Sha1Key::new(1, false, b"s3cret").unwrap();
        let mut bytes = Vec::new();
        key.sign(&packet(1, 7), &mut bytes).unwrap();
        let p = codec::decode(&bytes).unwrap();
        assert!(key.verify(&p, &bytes));
        let other = Sha1Key::new(1, false, b"s3creT").unwrap();
        assert!(!other.verify(&p, &bytes));
        let mut tampered = bytes.clone();
        tampered[16] ^= 1;
        let tp = codec::decode(&tampered).unwrap();
        assert!(!key.verify(&tp, &tampered));
        let wrong_id = Sha1Key::new(2, false, b"s3cret").unwrap();
        assert!(!wrong_id.verify(&p, &bytes));
    }

    #[test]
    fn the_digest_is_sha1_over_the_packet_with_the_padded_key() {
        // The same computation written out: key "k" padded with 19 zeros in the digest field.
        let key = Sha1Key::new(5, false, b"k").unwrap();
        let mut bytes = Vec::new();
        key.sign(&packet(5, 1), &mut bytes).unwrap();
        let mut manual = bytes.clone();
        manual[DIGEST_AT..].fill(0);
        manual[DIGEST_AT] = b'k';
        let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &manual);
        assert_eq!(&bytes[DIGEST_AT..], d.as_ref());
    }

    #[test]
    fn keys_are_1_to_20_octets_and_never_printed() {
        assert!(Sha1Key::new(1, false, b"").is_none());
        assert!(Sha1Key::new(1, false, &[1; 21]).is_none());
        let k = Sha1Key::new(1, false, b"topsecret").unwrap();
        assert!(!format!("{k:?}").contains("topsecret"));
    }
}
