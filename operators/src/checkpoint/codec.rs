//! Typed checkpoint payloads: a serde value as bincode behind a header that names the job kind and
//! the format, so a checkpoint of another job or another millrace version is refused clearly.

use serde::Serialize;

use crate::{Error, Result};

/// First bytes of an [`encode`]d payload.
const MAGIC: &[u8; 8] = b"MILLCKPT";

/// Encodes `value` with bincode behind a header: magic `MILLCKPT`, the job `kind` (e.g.
/// `batch-train`) and the `format` number of the value's layout. Bump `format` whenever the type
/// changes incompatibly.
pub fn encode<T: Serialize>(kind: &str, format: u32, value: &T) -> Result<Vec<u8>> {
    let kind_len = u16::try_from(kind.len()).map_err(|_| {
        Error::Internal(format!(
            "checkpoint kind `{kind}` is too long ({} bytes)",
            kind.len()
        ))
    })?;
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + kind.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&kind_len.to_le_bytes());
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(&format.to_le_bytes());
    bincode::serialize_into(&mut out, value).map_err(|e| {
        Error::Internal(format!(
            "cannot encode the state of a {kind} checkpoint: {e}"
        ))
    })?;
    Ok(out)
}

/// Decodes a payload made by [`encode`], checking its header against the `kind` and `format` this
/// job expects; `url` names the checkpoint in errors.
pub fn decode<T: serde::de::DeserializeOwned>(
    kind: &str,
    format: u32,
    bytes: &[u8],
    url: &str,
) -> Result<T> {
    let not_ours = || {
        Error::Checkpoint(format!(
            "{url} is not a millrace checkpoint (it does not start with a MILLCKPT header); \
             point the job at a checkpoint location written by millrace, or delete {url}"
        ))
    };
    let rest = bytes.strip_prefix(MAGIC).ok_or_else(not_ours)?;
    let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(not_ours)?;
    let len = usize::from(u16::from_le_bytes(*len));
    if rest.len() < len {
        return Err(not_ours());
    }
    let (found, rest) = rest.split_at(len);
    let found = std::str::from_utf8(found).map_err(|_| not_ours())?;
    let (found_format, body) = rest.split_first_chunk::<4>().ok_or_else(not_ours)?;
    let found_format = u32::from_le_bytes(*found_format);
    if found != kind {
        return Err(Error::Checkpoint(format!(
            "checkpoint {url} was written by a {found} job, not a {kind} job; give each job its \
             own checkpoint location, or delete {url} to start over"
        )));
    }
    if found_format != format {
        return Err(Error::Checkpoint(format!(
            "checkpoint {url}: format {found_format} is not {format}: written by another millrace \
             version; resume it with that version, or delete {url} to start over"
        )));
    }
    bincode::deserialize(body).map_err(|e| {
        Error::Checkpoint(format!(
            "checkpoint {url} ({kind}, format {format}) does not decode: {e}; it is damaged or was \
             written by an incompatible millrace build: delete {url} to start over"
        ))
    })
}
