//! Local images named by image jobs are uploaded to `inputs/<batch_id>/<sha256>.<ext>`: the key
//! comes from the content, never from the user's path, and the format from the bytes, never
//! from the file name (RELIABILITY.md #19, #20). `s3://` and `data:` images pass through.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Largest image file the producer uploads.
pub const MAX_IMAGE_BYTES: u64 = 32 << 20;

/// The format of an image from its first bytes; only these are accepted.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

/// Reads a local image (relative to the job file's folder) and returns its object key and bytes.
pub fn prepare(
    image: &str,
    job_file: &Path,
    batch_id: uuid::Uuid,
) -> Result<Option<(String, Vec<u8>)>, String> {
    if image.starts_with("s3://") || image.starts_with("data:") {
        return Ok(None);
    }
    let path = job_file.parent().unwrap_or(Path::new(".")).join(image);
    let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read {image:?}: {e}"))?;
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(format!(
            "{image:?} is {} bytes, more than the {MAX_IMAGE_BYTES}-byte limit",
            meta.len()
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {image:?}: {e}"))?;
    let ext =
        sniff(&bytes).ok_or_else(|| format!("{image:?} is not a PNG, JPEG, GIF or WebP image"))?;
    let hash = Sha256::digest(&bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some((format!("inputs/{batch_id}/{hex}.{ext}"), bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_comes_from_the_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("png"));
        assert_eq!(sniff(b"GIF89a..."), Some("gif"));
        assert_eq!(sniff(b"<svg>"), None);
    }
}
