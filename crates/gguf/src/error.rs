//! The one error type of the crate.
//!
//! Every variant carries the path of the file it is about, and the tensor or
//! metadata key where there is one, so that a message read in a worker log
//! says which model file is at fault and where, without any further context.

use std::path::PathBuf;

/// Everything that can go wrong while opening or reading a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, inspected or mapped.
    #[error("{}: cannot read file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file does not start with the GGUF magic bytes.
    #[error("{}: not a GGUF file (it does not start with the magic bytes \"GGUF\")", path.display())]
    NotGguf { path: PathBuf },

    /// The header carries a format version this reader does not handle.
    #[error("{}: GGUF version {version} is not supported (supported: 2, 3){}", path.display(), endian_hint(*version))]
    UnsupportedVersion { path: PathBuf, version: u32 },

    /// The file ends (or a declared length runs) past the end of the file.
    #[error("{}: file is truncated: {what}", path.display())]
    Truncated { path: PathBuf, what: String },

    /// The header is structurally invalid (bad value type, invalid UTF-8,
    /// duplicate key, too many dimensions, sizes that overflow, ...).
    #[error("{}: corrupt GGUF header: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },

    /// A tensor's data does not lie entirely inside the file.
    #[error("{}: tensor '{tensor}' lies outside the file: {detail}", path.display())]
    TensorOutOfBounds {
        path: PathBuf,
        tensor: String,
        detail: String,
    },

    /// A tensor's data offset is not a multiple of the file's alignment.
    #[error("{}: tensor '{tensor}' has data offset {offset}, which is not a multiple of the alignment {alignment}", path.display())]
    Misaligned {
        path: PathBuf,
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    /// A tensor's shape does not fit its type (row length not a multiple of
    /// the block size, zero-sized or overflowing dimensions).
    #[error("{}: tensor '{tensor}' has an invalid shape: {detail}", path.display())]
    BadShape {
        path: PathBuf,
        tensor: String,
        detail: String,
    },

    /// A tensor uses a ggml type id this reader does not know at all, so
    /// even its size cannot be computed.
    #[error("{}: tensor '{tensor}' has unknown ggml type id {type_id}", path.display())]
    UnknownType {
        path: PathBuf,
        tensor: String,
        type_id: u32,
    },

    /// A tensor's type is known but the requested operation does not
    /// support it.
    #[error("{}: tensor '{tensor}' has type {ggml_type}, which beamline does not support{}", path.display(), supported_hint(supported))]
    UnsupportedType {
        path: PathBuf,
        tensor: String,
        ggml_type: String,
        /// The types that would have been accepted, for the message.
        supported: &'static str,
    },

    /// No tensor of that name exists in the file.
    #[error("{}: no tensor named '{tensor}'", path.display())]
    MissingTensor { path: PathBuf, tensor: String },

    /// No metadata entry of that key exists in the file.
    #[error("{}: metadata key '{key}' is missing", path.display())]
    MissingKey { path: PathBuf, key: String },

    /// A metadata entry exists but holds a value of another kind.
    #[error("{}: metadata key '{key}' should be {expected}, but holds {found}", path.display())]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },
}

fn supported_hint(supported: &str) -> String {
    if supported.is_empty() {
        String::new()
    } else {
        format!(" (supported: {supported})")
    }
}

/// A big-endian GGUF file has its version bytes swapped; say so instead of
/// printing a meaningless huge version number alone.
fn endian_hint(version: u32) -> &'static str {
    match version.swap_bytes() {
        1..=3 => "; this looks like a big-endian GGUF file, only little-endian files are supported",
        _ => "",
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
