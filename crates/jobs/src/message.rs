//! What travels on the queue: one job, self-contained, so a worker needs no database read to
//! run it. The database row stays the source of truth for its status.

use serde::{Deserialize, Serialize};

use crate::line::JobInput;
use crate::params::JobParams;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    /// The job's row id (a uuid, as text).
    pub job_id: String,
    pub batch_id: String,
    pub custom_id: String,
    /// Catalog name of the model; also the queue lane.
    pub model: String,
    pub input: JobInput,
    pub params: JobParams,
    pub priority: i32,
}

/// Where a job stands; the `jobs.status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Filtered,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Filtered => "filtered",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// A final status never changes again; a redelivered job in one is acked without running.
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "filtered" => JobStatus::Filtered,
            "cancelled" => JobStatus::Cancelled,
            other => return Err(format!("unknown job status {other:?}")),
        })
    }
}
