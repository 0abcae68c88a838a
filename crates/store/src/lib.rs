//! Where beamline keeps state. The database row is the source of truth for every job; the
//! object store holds result shards and manifests under keys built from ids, never from user
//! text (RELIABILITY.md: the commit order is object, then row, then ack).
//!
//! # Layout
//! - `db`: the database, Postgres or SQLite, with the same tables and the same operations;
//!   migrations from `migrations/` are applied at connect.
//! - `objects`: the object store, S3 (aws-sdk-s3) or a local folder.
//! - `manifest`: the end of a batch: shards reconciled with the rows, the manifest written.

pub mod db;
pub mod manifest;
pub mod objects;

/// The status a [`ResultRow`] carries.
pub use beamline_jobs::JobStatus;
pub use db::{
    job_id, parse_uuid, BatchRow, Database, ExportRow, NewJob, Outcome, Progress, RejectedLine,
    ResultRow, StartedJob, StoreError,
};
pub use manifest::{finish_batch, manifest_key, shard_prefix, write_manifest, Manifest};
pub use objects::{ObjectError, ObjectStore};
