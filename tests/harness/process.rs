//! Producer, worker and tool processes under test: output drained as it comes, and every wait
//! bounded, so a stuck process fails its test with its stderr instead of hanging the run.

use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one producer or worker run may take in a test. Past it the process is killed and
/// the test fails with its stderr, instead of hanging the whole test run.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(240);

/// A producer or worker process. Its output is drained as it comes, so a chatty process never
/// blocks on a full pipe while the test is busy elsewhere.
pub struct Process {
    what: &'static str,
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Process {
    pub fn start(mut command: Command, what: &'static str) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(drain);
        Process {
            what,
            child,
            stdout,
            stderr,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for the exit, at most [`PROCESS_DEADLINE`].
    pub fn finish(mut self) -> Output {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for a process") {
                break status;
            }
            if Instant::now() > deadline {
                self.kill();
                let _ = self.child.wait();
                let stderr = joined(self.stderr.take());
                let tail = &stderr[stderr.len().saturating_sub(4000)..];
                panic!(
                    "{} still running after {} s; killed. Its stderr ends:\n{}",
                    self.what,
                    PROCESS_DEADLINE.as_secs(),
                    String::from_utf8_lossy(tail)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: joined(self.stdout.take()),
            stderr: joined(self.stderr.take()),
        }
    }
}

impl Drop for Process {
    /// A test that fails half-way leaves no worker behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

fn drain(mut pipe: impl std::io::Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

fn joined(reader: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    reader.and_then(|r| r.join().ok()).unwrap_or_default()
}
