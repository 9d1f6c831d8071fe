//! What a run records: every client operation with its call/return times and outcome, and
//! every watch response, one JSON object per line so a post-mortem can grep and replay it.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What a client asked for, on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Input {
    /// Linearizable Range of one key.
    Get,
    Put {
        value: String,
    },
    /// Put bound to a lease granted just before (each lease is used for one put).
    PutLease {
        value: String,
        lease: i64,
    },
    /// Txn: if the key's value is `expect` (`None`: the key is absent) then put `value`.
    Cas {
        expect: Option<String>,
        value: String,
    },
    Delete,
    /// LeaseRevoke of the lease `PutLease` attached to this key.
    Revoke {
        lease: i64,
    },
    /// Put bound to a short-TTL lease that nobody keeps alive: the store deletes the key when
    /// the lease expires (the checker adds that deletion as an operation of unknown time).
    PutExpiring {
        value: String,
        lease: i64,
        ttl: i64,
    },
}

impl Input {
    pub fn is_read(&self) -> bool {
        matches!(self, Input::Get)
    }
}

/// What the cluster answered. `revision` is the response header's revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "out", rename_all = "snake_case")]
pub enum Output {
    Get {
        value: Option<String>,
        mod_revision: i64,
        revision: i64,
    },
    Put {
        revision: i64,
    },
    Cas {
        succeeded: bool,
        revision: i64,
    },
    Delete {
        deleted: i64,
        revision: i64,
    },
    Revoke {
        revision: i64,
    },
    /// The request failed or timed out: it may or may not have taken effect.
    Unknown {
        error: String,
    },
}

/// One operation as recorded. Times are nanoseconds since the run started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpRecord {
    pub id: u64,
    pub client: usize,
    /// The member the request went to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    pub key: String,
    pub input: Input,
    pub output: Output,
    pub call: u64,
    pub ret: u64,
    /// Operations recorded from one multi-key txn share this id (and their call, return and
    /// revision): the pair writes and pair reads of the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<u64>,
}

impl OpRecord {
    /// The revision a successful write created, when it created one.
    pub fn write_revision(&self) -> Option<i64> {
        match (&self.input, &self.output) {
            (
                Input::Put { .. } | Input::PutLease { .. } | Input::PutExpiring { .. },
                Output::Put { revision },
            ) => Some(*revision),
            (
                Input::Cas { .. },
                Output::Cas {
                    succeeded: true,
                    revision,
                },
            ) => Some(*revision),
            (Input::Delete, Output::Delete { deleted, revision }) if *deleted > 0 => {
                Some(*revision)
            }
            _ => None,
        }
    }

    /// The value this operation writes, if it writes one.
    pub fn written_value(&self) -> Option<&str> {
        match &self.input {
            Input::Put { value }
            | Input::PutLease { value, .. }
            | Input::PutExpiring { value, .. }
            | Input::Cas { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// The two keys a pair txn writes and reads together: `<prefix>pa<i>` and `<prefix>pb<i>`.
/// Returns the partner of a pair key.
pub fn pair_partner(key: &str) -> Option<String> {
    let (head, tail) = key.rsplit_once('/')?;
    let other = if let Some(i) = tail.strip_prefix("pa") {
        format!("pb{i}")
    } else {
        format!("pa{}", tail.strip_prefix("pb")?)
    };
    Some(format!("{head}/{other}"))
}

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Put,
    Delete,
}

/// One event as a watcher received it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WatchEvent {
    pub key: String,
    pub kind: EventKind,
    pub value: Option<String>,
    pub mod_revision: i64,
}

/// What one watcher saw, in order: created, events (one entry per response), progress notices.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "w", rename_all = "snake_case")]
pub enum WatchRecord {
    /// A (re)created watch from `start_revision` on `endpoint`.
    Created {
        watcher: usize,
        start_revision: i64,
        endpoint: String,
    },
    /// One response's events (a response is atomic: a revision is never split across two).
    Events {
        watcher: usize,
        events: Vec<WatchEvent>,
    },
    /// A progress notification: every event up to `revision` has been delivered.
    Progress { watcher: usize, revision: i64 },
}

/// Writes records as JSON lines.
pub fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in records {
        serde_json::to_writer(&mut f, r)?;
        f.write_all(b"\n")?;
    }
    f.flush()
}

/// Reads what `write_jsonl` wrote.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}
