//! Encoding and decoding the messages, and the checks on every field of what a peer
//! sends.

use serde::{Deserialize, Serialize};
use shoal_core::commit::{MAX_COMMIT_BYTES, SignedCommit};
use shoal_core::vv::VersionVector;

use crate::error::ProtoError;
use crate::message::{BATCH_HEADER, Heads, MAX_BATCH_BYTES, MAX_VECTOR_AUTHORS};

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap_or_default()
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(
    what: &'static str,
    body: &'a [u8],
) -> Result<T, ProtoError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(ProtoError::Malformed {
            what,
            reason: format!("{} bytes left over", rest.len()),
        }),
        Err(postcard::Error::DeserializeUnexpectedEnd) => Err(ProtoError::Malformed {
            what,
            reason: "truncated".into(),
        }),
        Err(e) => Err(ProtoError::Malformed {
            what,
            reason: e.to_string(),
        }),
    }
}

/// Reads the version that leads a hello or welcome, whatever follows it.
pub(crate) fn leading_version(what: &'static str, body: &[u8]) -> Result<u16, ProtoError> {
    postcard::take_from_bytes::<u16>(body)
        .map(|(v, _)| v)
        .map_err(|e| ProtoError::Malformed {
            what,
            reason: e.to_string(),
        })
}

/// Checks that `heads` has one tag per author of `vv`.
pub(crate) fn check_heads(
    what: &'static str,
    vv: &VersionVector,
    heads: &Heads,
) -> Result<(), ProtoError> {
    if heads.0.len() != vv.0.len() {
        return Err(ProtoError::Malformed {
            what,
            reason: format!(
                "{} head tags for a version vector of {} authors",
                heads.0.len(),
                vv.0.len()
            ),
        });
    }
    Ok(())
}

pub(crate) fn check_vector(what: &'static str, vv: &VersionVector) -> Result<(), ProtoError> {
    if vv.0.len() > MAX_VECTOR_AUTHORS {
        return Err(ProtoError::Malformed {
            what,
            reason: format!(
                "version vector names {} authors; the limit is {MAX_VECTOR_AUTHORS}",
                vv.0.len()
            ),
        });
    }
    if vv.0.values().any(|s| s.0 > i64::MAX as u64) {
        return Err(ProtoError::Malformed {
            what,
            reason: "sequence number out of range".into(),
        });
    }
    Ok(())
}

/// Packs commits into a batch body: each as a little-endian `u32` length and its bytes.
pub fn pack_commits(commits: &[SignedCommit]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in commits {
        pack_one(&mut out, c);
    }
    out
}

pub(crate) fn pack_one(out: &mut Vec<u8>, c: &SignedCommit) {
    let bytes = c.to_bytes();
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes);
}

/// Unpacks a batch body of exactly `count` commits.
pub fn unpack_commits(raw: &[u8], count: usize) -> Result<Vec<SignedCommit>, ProtoError> {
    let bad = |reason: String| ProtoError::Malformed {
        what: "batch",
        reason,
    };
    let mut out = Vec::with_capacity(count.min(raw.len() / 100 + 1));
    let mut rest = raw;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(bad("truncated commit length".into()));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > MAX_COMMIT_BYTES {
            return Err(bad(format!(
                "a commit of {len} bytes; the limit is {MAX_COMMIT_BYTES}"
            )));
        }
        if rest.len() < 4 + len {
            return Err(bad("truncated commit".into()));
        }
        let commit = SignedCommit::from_bytes(&rest[4..4 + len])
            .map_err(|e| bad(format!("commit {}: {e}", out.len())))?;
        out.push(commit);
        rest = &rest[4 + len..];
        if out.len() > count {
            break;
        }
    }
    if out.len() != count {
        return Err(bad(format!(
            "announced {count} commits, holds {}",
            out.len()
        )));
    }
    Ok(out)
}

/// A batch's body: its number, commit count, raw size, then the zstd frame.
pub(crate) fn encode_batch(id: u64, count: u32, raw: &[u8]) -> Vec<u8> {
    let compressed = zstd::bulk::compress(raw, 1).unwrap_or_default();
    let mut out = Vec::with_capacity(BATCH_HEADER + compressed.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    out.extend_from_slice(&compressed);
    out
}

/// Decodes a batch body, refusing one that decompresses past what it announced.
pub(crate) fn decode_batch(body: &[u8]) -> Result<(u64, Vec<SignedCommit>), ProtoError> {
    if body.len() < BATCH_HEADER {
        return Err(ProtoError::Malformed {
            what: "batch",
            reason: "truncated".into(),
        });
    }
    let id = u64::from_be_bytes(body[0..8].try_into().unwrap_or_default());
    let count = u32::from_be_bytes(body[8..12].try_into().unwrap_or_default()) as usize;
    let raw_len = u32::from_be_bytes(body[12..16].try_into().unwrap_or_default()) as usize;
    if count == 0 {
        return Err(ProtoError::Malformed {
            what: "batch",
            reason: "no commits".into(),
        });
    }
    if raw_len > MAX_BATCH_BYTES {
        return Err(ProtoError::Bomb {
            limit: MAX_BATCH_BYTES,
        });
    }
    let raw = zstd::bulk::decompress(&body[BATCH_HEADER..], raw_len).map_err(|e| {
        if e.to_string().contains("too small") {
            ProtoError::Bomb { limit: raw_len }
        } else {
            ProtoError::Malformed {
                what: "batch",
                reason: format!("not a zstd frame: {e}"),
            }
        }
    })?;
    if raw.len() != raw_len {
        return Err(ProtoError::Malformed {
            what: "batch",
            reason: format!("announced {raw_len} bytes, holds {}", raw.len()),
        });
    }
    Ok((id, unpack_commits(&raw, count)?))
}
