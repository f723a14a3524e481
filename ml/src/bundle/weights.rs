//! `weights.bin`: a flat `f32` vector with a header and a checksum.
//!
//! ```text
//! offset  size  field
//! 0       4     magic b"MLRW"
//! 4       4     format version (u32 LE) = 1
//! 8       8     value count n (u64 LE)
//! 16      4n    values (f32 LE)
//! 16+4n   8     FNV-1a 64 checksum of the value bytes (u64 LE)
//! ```

use std::path::Path;

use crate::error::{Error, Result};

/// File magic.
pub const MAGIC: &[u8; 4] = b"MLRW";
/// Current format version.
pub const FORMAT_VERSION: u32 = 1;

/// 64-bit FNV-1a hash.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Encodes `values` in the `weights.bin` format.
pub fn encode(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + values.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(values.len() as u64).to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let checksum = fnv1a64(&out[16..]);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// Decodes a `weights.bin` file's bytes; `path` is only used in error messages.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Vec<f32>> {
    let bad = |message: String| Error::Bundle {
        path: path.to_path_buf(),
        message,
    };
    let header: &[u8; 16] = bytes
        .get(..16)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| {
            bad(format!(
                "file is {} bytes, too short for the 16-byte header",
                bytes.len()
            ))
        })?;
    if &header[..4] != MAGIC {
        return Err(bad(format!(
            "not a millrace weights file (magic {:?}, expected \"MLRW\")",
            &header[..4]
        )));
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "weights format version {version} is not supported (this build reads {FORMAT_VERSION})"
        )));
    }
    let mut count_bytes = [0u8; 8];
    count_bytes.copy_from_slice(&header[8..16]);
    let count = u64::from_le_bytes(count_bytes);
    let expected_len = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(4))
        .and_then(|b| b.checked_add(24));
    if expected_len != Some(bytes.len()) {
        return Err(bad(format!(
            "header says {count} values, which needs {} bytes, but the file has {} (truncated or corrupt)",
            expected_len.map_or_else(|| "too many".to_string(), |l| l.to_string()),
            bytes.len()
        )));
    }
    let body = &bytes[16..bytes.len() - 8];
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&bytes[bytes.len() - 8..]);
    let stored = u64::from_le_bytes(stored);
    let actual = fnv1a64(body);
    if stored != actual {
        return Err(bad(format!(
            "checksum mismatch (stored {stored:016x}, computed {actual:016x}): the file is corrupt"
        )));
    }
    Ok(body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_exact() {
        let values = vec![0.0, -0.0, 1.5, f32::MIN_POSITIVE, f32::MAX, -3.25e-7];
        let bytes = encode(&values);
        assert_eq!(&bytes[..4], b"MLRW");
        assert_eq!(bytes.len(), 24 + 4 * values.len());
        let back = decode(&bytes, Path::new("w.bin")).unwrap();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn detects_damage() {
        let mut bytes = encode(&[1.0, 2.0]);
        bytes[17] ^= 1;
        let err = decode(&bytes, Path::new("m/weights.bin"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("checksum mismatch") && err.contains("m/weights.bin"),
            "{err}"
        );
        let bytes = encode(&[1.0, 2.0]);
        assert!(
            decode(&bytes[..bytes.len() - 1], Path::new("w"))
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        assert!(decode(b"NOPE", Path::new("w")).is_err());
        // FNV-1a test vector.
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
