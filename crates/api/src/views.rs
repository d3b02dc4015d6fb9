//! What the API answers with: version 1's JSON, its own types so that it stays what
//! it is documented as whatever changes inside, each with its schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_core::Value;
use shoal_daemon::{DaemonStatus, GroupStatus, PeerStatus};
use shoal_store::{CommitSummary, Conflict, Side, TrackedTable};
use utoipa::ToSchema;

/// `GET /v1/health`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always true: the daemon answers.
    pub ok: bool,
    /// Shoal's version.
    pub version: String,
}

/// Where sync stands, over every member.
#[derive(Serialize, Deserialize, ToSchema, PartialEq, Eq, Debug, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Every member is connected, and neither side lacks anything of the other's.
    UpToDate,
    /// Commits are pending with a connected member.
    Syncing,
    /// No member is connected (or none is known).
    Offline,
}

/// `GET /v1/status`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct StatusView {
    /// This device's id.
    pub device: String,
    /// What to call it: the configuration's `name`, or else the machine's name.
    pub name: Option<String>,
    /// Where others reach it (an endpoint ticket).
    pub addr: String,
    /// The daemon's process.
    pub pid: u32,
    /// How long the daemon has run, in milliseconds.
    pub uptime_ms: u64,
    /// Where sync stands.
    pub sync: SyncState,
    /// Members connected now.
    pub peers_connected: u64,
    /// Members known.
    pub peers: u64,
    /// Commits this device holds that connected members lack, as of the last rounds.
    pub pending_out: u64,
    /// Commits members hold that this device lacks, as of the last rounds.
    pub pending_in: u64,
    /// Members connected with nothing pending either way: `syncing n of m` is
    /// this of `peers`.
    pub peers_up_to_date: u64,
    /// The groups this device is in.
    pub groups: Vec<GroupView>,
    /// The tables this device tracks.
    pub tables: Vec<TableView>,
    /// The number of the latest event (`GET /v1/events?since=` it to follow on).
    pub latest_event: u64,
}

impl StatusView {
    pub(crate) fn of(s: DaemonStatus, tables: Vec<TrackedTable>, latest_event: u64) -> StatusView {
        let connected = s.peers.iter().filter(|p| p.connected).count() as u64;
        let live = || s.peers.iter().filter(|p| p.connected);
        let pending_out = live().map(|p| p.pending_out).sum();
        let pending_in = live().map(|p| p.pending_in).sum();
        let sync = if connected == 0 {
            SyncState::Offline
        } else if pending_out + pending_in > 0 || connected < s.peers.len() as u64 {
            SyncState::Syncing
        } else {
            SyncState::UpToDate
        };
        StatusView {
            device: s.device.to_string(),
            name: s.name,
            addr: s.addr,
            pid: s.pid,
            uptime_ms: s.uptime_ms,
            sync,
            peers_connected: connected,
            peers: s.peers.len() as u64,
            pending_out,
            pending_in,
            peers_up_to_date: live().filter(|p| p.pending_out + p.pending_in == 0).count() as u64,
            groups: s.groups.into_iter().map(GroupView::of).collect(),
            tables: tables
                .into_iter()
                .map(|t| TableView {
                    name: t.name,
                    key_columns: t.key_columns,
                    columns: t.columns,
                    policy: t.policy.as_str().to_owned(),
                })
                .collect(),
            latest_event,
        }
    }
}

/// A table this device tracks.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TableView {
    /// Its name.
    pub name: String,
    /// Its primary key's columns.
    pub key_columns: Vec<String>,
    /// The other columns synced.
    pub columns: Vec<String>,
    /// `review` (conflicts wait for a person) or `lww` (kept for audit only).
    pub policy: String,
}

/// One group this device is in.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its members.
    pub members: Vec<MemberView>,
    /// Conflicts in its tables waiting for a person.
    pub pending_conflicts: u64,
    /// Remote changes to its tables held until they can be applied.
    pub held_changes: u64,
}

impl GroupView {
    pub(crate) fn of(g: GroupStatus) -> GroupView {
        GroupView {
            id: g.id.to_string(),
            name: g.name,
            members: g
                .members
                .into_iter()
                .map(|(device, role)| MemberView {
                    device: device.to_string(),
                    role: role.as_str().to_owned(),
                })
                .collect(),
            pending_conflicts: g.pending_conflicts,
            held_changes: g.held_changes,
        }
    }
}

/// A member of a group.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    /// Its device id.
    pub device: String,
    /// `reader`, `member` or `admin`.
    pub role: String,
}

/// One member, as this daemon sees it (`GET /v1/peers`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PeerView {
    /// Its device id.
    pub device: String,
    /// Whether a connection is up now.
    pub connected: bool,
    /// `direct` or `relay`, while connected.
    pub path: Option<String>,
    /// Round-trip time on the connection, in milliseconds, while connected.
    pub rtt_ms: Option<f64>,
    /// When a round of sync with it last succeeded (ms since the epoch).
    pub last_sync_ms: Option<u64>,
    /// Commits this device holds that it lacks, as of the last round.
    pub pending_out: u64,
    /// Commits it holds that this device lacks, as of the last round.
    pub pending_in: u64,
    /// Commits sent to it since the daemon started.
    pub commits_sent: u64,
    /// Commits received from it since the daemon started.
    pub commits_received: u64,
    /// Bytes sent to it.
    pub bytes_sent: u64,
    /// Bytes received from it.
    pub bytes_received: u64,
    /// Rounds of sync completed with it.
    pub rounds: u64,
    /// Where it is reached, if known.
    pub addr: Option<String>,
    /// When the next attempt to connect is due (ms since the epoch).
    pub next_attempt_ms: Option<u64>,
    /// The last error with it.
    pub last_error: Option<String>,
}

impl PeerView {
    pub(crate) fn of(p: PeerStatus) -> PeerView {
        PeerView {
            device: p.device.to_string(),
            connected: p.connected,
            path: p.path.map(|p| p.to_string()),
            rtt_ms: p.rtt_ms,
            last_sync_ms: p.last_sync_ms,
            pending_out: p.pending_out,
            pending_in: p.pending_in,
            commits_sent: p.commits_sent,
            commits_received: p.commits_received,
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            rounds: p.rounds,
            addr: p.addr,
            next_attempt_ms: p.next_attempt_ms,
            last_error: p.last_error,
        }
    }
}

/// One side of a conflict: who wrote it, when, and what.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SideView {
    /// The device that wrote it (absent for a side nobody wrote, such as a row
    /// deleted here).
    pub device: Option<String>,
    /// Its hybrid clock, as text.
    pub clock: Option<String>,
    /// When it was written, by its author's clock (ms since the epoch).
    pub at_ms: Option<u64>,
    /// The disputed columns' values (absent where the row was deleted): numbers,
    /// text, null, or `{"blob": HEX}`.
    #[schema(value_type = Option<Object>)]
    pub values: Option<BTreeMap<String, serde_json::Value>>,
}

/// A conflict record (`GET /v1/conflicts/{id}`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ConflictView {
    /// Its id, the same on every device.
    pub id: String,
    /// `concurrent_write`, `insert_collision`, `update_delete` or `constraint`.
    pub kind: String,
    /// The table.
    pub table: String,
    /// The row's key, as SQL literals.
    pub key: String,
    /// The columns in dispute.
    pub columns: Vec<String>,
    /// The columns whose values differ between the two sides.
    pub differing: Vec<String>,
    /// `local` or `remote`: the side the merge rules applied.
    pub winner: String,
    /// This device's side.
    pub local: SideView,
    /// The other device's side.
    pub remote: SideView,
    /// `pending`, `auto`, `resolved` or `closed`.
    pub status: String,
    /// How it was resolved or closed.
    pub resolution: Option<String>,
    /// What a constraint said, for a constraint conflict.
    pub detail: Option<String>,
}

impl ConflictView {
    pub(crate) fn of(c: Conflict) -> ConflictView {
        let values = |v: &Option<Vec<(String, Value)>>| {
            v.as_ref().map(|pairs| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), json_of(v)))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        let (local, remote) = (values(&c.local_values), values(&c.remote_values));
        let differing = c
            .columns
            .iter()
            .filter(|col| {
                let get = |side: &Option<BTreeMap<String, serde_json::Value>>| {
                    side.as_ref().and_then(|m| m.get(*col).cloned())
                };
                get(&local) != get(&remote)
            })
            .cloned()
            .collect();
        ConflictView {
            id: c.id,
            kind: c.kind.to_string(),
            table: c.table,
            key: c.key_text,
            columns: c.columns,
            differing,
            winner: side_name(c.winner).to_owned(),
            local: SideView {
                device: c.local.map(|(_, d)| d.to_string()),
                clock: c.local.map(|(h, _)| h.to_string()),
                at_ms: c.local.map(|(h, _)| h.physical_ms()),
                values: local,
            },
            remote: SideView {
                device: Some(c.remote.1.to_string()),
                clock: Some(c.remote.0.to_string()),
                at_ms: Some(c.remote.0.physical_ms()),
                values: remote,
            },
            status: c.status.to_string(),
            resolution: c.resolution,
            detail: c.detail,
        }
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Local => "local",
        Side::Remote => "remote",
    }
}

/// A value as JSON: integers and reals as numbers, text as a string, a blob as
/// `{"blob": HEX}`.
pub(crate) fn json_of(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => (*i).into(),
        Value::Real(r) => {
            serde_json::Number::from_f64(*r).map_or(serde_json::Value::Null, Into::into)
        }
        Value::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        Value::Blob(b) => serde_json::json!({ "blob": hex::encode(b) }),
    }
}

/// A value from JSON, the other way round; `None` for what no column can hold.
pub(crate) fn value_of(v: &serde_json::Value) -> Option<Value> {
    Some(match v {
        serde_json::Value::Null => Value::Null,
        // An integer past 64 bits would come back as another number.
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => Value::Integer(n.as_i64()?),
        serde_json::Value::Number(n) => Value::Real(n.as_f64()?),
        serde_json::Value::String(s) => Value::Text(s.as_bytes().to_vec()),
        serde_json::Value::Object(o) if o.len() == 1 => {
            Value::Blob(hex::decode(o.get("blob")?.as_str()?).ok()?)
        }
        _ => return None,
    })
}

/// A page of conflicts (`GET /v1/conflicts`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ConflictPage {
    /// The conflicts on this page.
    pub items: Vec<ConflictView>,
    /// How many match the filter, over every page.
    pub total: u64,
    /// Open conflicts by table, over every page.
    pub by_table: BTreeMap<String, u64>,
    /// Where the next page starts (`?offset=`), if there is one.
    pub next_offset: Option<u64>,
}

/// `POST /v1/conflicts/{id}/resolve`: keep one side, or write values.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum ResolveRequest {
    /// Keep one side's values.
    Keep {
        /// Which side.
        keep: Keep,
    },
    /// Write these values to the disputed columns (the others keep the winner's):
    /// numbers, text, null, or `{"blob": HEX}`.
    Set {
        /// Column to value.
        #[schema(value_type = Object)]
        set: BTreeMap<String, serde_json::Value>,
    },
}

/// Which side of a conflict to keep.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// This device's version ("keep mine").
    Local,
    /// The other device's version ("keep theirs").
    Remote,
}

/// One commit this device holds (`GET /v1/log`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CommitView {
    /// Its group: `local`, or the group's name.
    pub group: String,
    /// Its author's device id.
    pub author: String,
    /// Its place in the author's chain.
    pub seq: u64,
    /// The author's clock when sealing.
    pub clock: String,
    /// Row changes carried.
    pub changes: u64,
    /// `applied`, `waiting`, `future` or `refused`.
    pub state: String,
    /// Its hash.
    pub hash: String,
}

impl CommitView {
    pub(crate) fn of(c: CommitSummary) -> CommitView {
        CommitView {
            group: c.group,
            author: c.author,
            seq: c.seq,
            clock: c.clock,
            changes: c.changes,
            state: c.state.to_owned(),
            hash: c.hash,
        }
    }
}
