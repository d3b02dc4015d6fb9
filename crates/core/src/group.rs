//! Groups: what is shared with whom, decided by signed operations in the group's log.
//!
//! A group is created by an operation in its creator's first commit in that group; its
//! id is derived from the creator and a random nonce, so no one else can claim to have
//! made it. Later operations, each in a commit signed by an admin, set roles, revoke
//! devices and choose the tables (and columns) the group carries.
//!
//! Every right is given *from a point in the device's own chain*: `SetRole { from }`
//! applies to the device's commits after seq `from`, and `Revoke { after }` refuses
//! its commits after seq `after`, for good. The admin fills in the seq it has seen,
//! so a device's commits are judged the same way on every member, whatever order the
//! operations arrived in. The state is a pure function of the set of operations:
//! [`Group::evaluate`] orders them by version and accepts each one whose author was an
//! admin at that point.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Hlc;
use crate::error::CoreError;
use crate::identity::{BadId, DeviceId, GroupId, Seq};
use crate::version::Version;

/// The longest table or column name accepted.
pub const MAX_NAME_BYTES: usize = 512;
/// The longest group name accepted.
pub const MAX_GROUP_NAME_BYTES: usize = 256;
/// The most group operations one commit may carry.
pub const MAX_OPS_PER_COMMIT: usize = 1024;
/// The most columns one share may leave out.
pub const MAX_EXCLUDED_COLUMNS: usize = 256;
const GROUP_ID_CONTEXT: &[u8] = b"shoal group id v1\0";

/// What a member may do. Its name in JSON is [`Role::as_str`]; on the wire, its index.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Receives the group's data; its own commits are refused.
    Reader,
    /// Reads and writes the group's tables.
    Member,
    /// Writes, and changes membership and what the group carries.
    Admin,
}

impl Role {
    /// Whether commits with row changes are accepted from this role.
    pub fn may_write(self) -> bool {
        self >= Role::Member
    }

    /// Whether group operations are accepted from this role.
    pub fn may_admin(self) -> bool {
        self == Role::Admin
    }

    /// The name people type and read.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "reader" => Ok(Role::Reader),
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            _ => Err(CoreError::BadId(BadId {
                what: "role",
                input: s.to_owned(),
                expected: "admin, member or reader",
            })),
        }
    }
}

/// One operation in a group's log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum GroupOp {
    /// Starts the group. Only valid in its creator's first commit in the group, whose
    /// group id must be [`GroupId::derive`] of the creator and `nonce`.
    Create {
        /// A name for people; not unique.
        name: String,
        /// Random bytes that make the id unique.
        nonce: [u8; 16],
    },
    /// Gives `device` `role` for its commits after seq `from` in this group.
    SetRole {
        /// The device.
        device: DeviceId,
        /// Its role from then on.
        role: Role,
        /// The last of its commits judged by its earlier role (0: from the start).
        from: Seq,
    },
    /// Refuses `device`'s commits after seq `after` in this group, for good.
    Revoke {
        /// The device.
        device: DeviceId,
        /// The last of its commits still accepted.
        after: Seq,
    },
    /// Carries `table` in the group, without the `excluded` columns.
    Share {
        /// The table.
        table: String,
        /// Columns that never leave a device through this group.
        excluded: Vec<String>,
    },
    /// Stops carrying `table`.
    Unshare {
        /// The table.
        table: String,
    },
    /// Withdraws the author's own commits at seqs `from..=upto` stamped at or after
    /// `since`, which its clock stamped too far ahead, in favour of the commit that
    /// carries this and its successors: the same changes, stamped again. Valid only
    /// at seq `from`, by any author, in any group. A member drops the withdrawn
    /// commits it holds unapplied; one that applied them holds a fork.
    Withdraw {
        /// The first seq withdrawn: the seq of the commit that carries this.
        from: Seq,
        /// The last seq withdrawn.
        upto: Seq,
        /// The clock of the first commit withdrawn.
        since: Hlc,
    },
}

impl GroupId {
    /// The id of a group made by `creator` with `nonce`.
    pub fn derive(creator: &DeviceId, nonce: &[u8; 16]) -> GroupId {
        let mut h = blake3::Hasher::new();
        h.update(GROUP_ID_CONTEXT);
        h.update(&creator.0);
        h.update(nonce);
        GroupId(*h.finalize().as_bytes())
    }
}

impl GroupOp {
    /// Checks what one operation can prove about itself, in a commit of `group` at
    /// seq `seq` by `author`.
    pub(crate) fn check(&self, group: &GroupId, author: &DeviceId, seq: Seq) -> Result<(), String> {
        match self {
            GroupOp::Create { name, nonce } => {
                if seq != Seq(1) || GroupId::derive(author, nonce) != *group {
                    return Err(
                        "a group can only be created in its creator's first commit, under the id derived from the creator"
                            .into(),
                    );
                }
                if name.is_empty() || name.len() > MAX_GROUP_NAME_BYTES || name.contains('\0') {
                    return Err("a group name must be 1 to 256 bytes, without NUL".into());
                }
            }
            GroupOp::SetRole { .. } | GroupOp::Revoke { .. } => {}
            GroupOp::Share { table, excluded } => {
                check_table_name(table)?;
                if excluded.len() > MAX_EXCLUDED_COLUMNS {
                    return Err("a share leaves out too many columns".into());
                }
                for c in excluded {
                    check_plain_name(c)?;
                }
            }
            GroupOp::Unshare { table } => check_table_name(table)?,
            GroupOp::Withdraw { from, upto, .. } => {
                if *from != seq || upto < from {
                    return Err(
                        "a withdrawal must start at the seq of the commit that carries it".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// A table name an app may sync: not one of Shoal's or SQLite's own.
pub(crate) fn check_table_name(name: &str) -> Result<(), String> {
    check_plain_name(name)?;
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("shoal_") || lower.starts_with("sqlite_") {
        return Err(format!(
            "table {name:?} belongs to Shoal or SQLite, not to an app"
        ));
    }
    Ok(())
}

/// A table or column name of sane size.
pub(crate) fn check_plain_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains('\0') {
        return Err(format!("name {name:?} is empty, too long or holds a NUL"));
    }
    Ok(())
}

/// A group operation as found in an applied commit.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OpRecord {
    /// The commit's author.
    pub author: DeviceId,
    /// The commit's place in its author's chain in this group.
    pub seq: Seq,
    /// The commit's clock.
    pub hlc: Hlc,
    /// The operation.
    pub op: GroupOp,
}

impl OpRecord {
    /// The version of the commit that carried the operation.
    pub fn version(&self) -> Version {
        Version {
            hlc: self.hlc,
            author: self.author,
        }
    }
}

/// A role given to a device from a point in its chain.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
struct Grant {
    from: Seq,
    role: Role,
    by: Version,
}

/// A table the group carries.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Share {
    /// The table, as the admin named it.
    pub table: String,
    /// Columns left out.
    pub excluded: Vec<String>,
}

impl Share {
    /// Whether `column` is carried.
    pub fn carries(&self, column: &str) -> bool {
        !self.excluded.iter().any(|c| c.eq_ignore_ascii_case(column))
    }
}

/// A member as people see it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Member {
    /// The device.
    pub device: DeviceId,
    /// Its role for new commits; `None` once revoked.
    pub role: Option<Role>,
    /// For a revoked device: its last accepted seq.
    pub revoked_after: Option<Seq>,
}

/// A group's state: a pure function of the set of its operations.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Group {
    /// The group's id.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// The device that created it.
    pub creator: DeviceId,
    grants: BTreeMap<DeviceId, Vec<Grant>>,
    revoked: BTreeMap<DeviceId, Seq>,
    tables: BTreeMap<String, Share>,
    /// Operations that did not count, and why: their author lacked the right.
    pub ignored: Vec<(OpRecord, String)>,
}

impl Group {
    /// The state that a set of operations gives, or `None` without a valid `Create`.
    /// The order of `ops` does not matter, except that the operations of one commit
    /// must stay in the order the commit lists them.
    pub fn evaluate(id: GroupId, ops: impl IntoIterator<Item = OpRecord>) -> Option<Group> {
        let mut ops: Vec<OpRecord> = ops.into_iter().collect();
        // One commit per (hlc, author) in a chain; the stable sort keeps each commit's
        // operations in their order.
        ops.sort_by_key(|o| o.version());
        let genesis = ops.iter().position(|o| match &o.op {
            GroupOp::Create { nonce, .. } => {
                o.seq == Seq(1) && GroupId::derive(&o.author, nonce) == id
            }
            _ => false,
        })?;
        let first = ops.remove(genesis);
        let GroupOp::Create { name, .. } = &first.op else {
            return None;
        };
        let mut g = Group {
            id,
            name: name.clone(),
            creator: first.author,
            grants: BTreeMap::from([(
                first.author,
                vec![Grant {
                    from: Seq(0),
                    role: Role::Admin,
                    by: first.version(),
                }],
            )]),
            revoked: BTreeMap::new(),
            tables: BTreeMap::new(),
            ignored: Vec::new(),
        };
        // The creator's first commit may carry more than the `Create`.
        for o in ops {
            if !g.role_at(&o.author, o.seq).is_some_and(Role::may_admin) {
                g.ignored
                    .push((o, "its author was not an admin at that point".into()));
                continue;
            }
            let by = o.version();
            match &o.op {
                GroupOp::Create { .. } => {
                    g.ignored.push((o, "the group was already created".into()));
                }
                GroupOp::SetRole { device, role, from } => {
                    g.grants.entry(*device).or_default().push(Grant {
                        from: *from,
                        role: *role,
                        by,
                    });
                }
                GroupOp::Revoke { device, after } => {
                    let cut = g.revoked.entry(*device).or_insert(*after);
                    *cut = (*cut).min(*after);
                }
                GroupOp::Share { table, excluded } => {
                    g.tables.insert(
                        table.to_lowercase(),
                        Share {
                            table: table.clone(),
                            excluded: excluded.clone(),
                        },
                    );
                }
                GroupOp::Unshare { table } => {
                    g.tables.remove(&table.to_lowercase());
                }
                // A step in its author's chain, not in the group's membership.
                GroupOp::Withdraw { .. } => {}
            }
        }
        Some(g)
    }

    /// The role that judges `device`'s commit at `seq`; `None` when it has none.
    pub fn role_at(&self, device: &DeviceId, seq: Seq) -> Option<Role> {
        if self.revoked.get(device).is_some_and(|after| seq > *after) {
            return None;
        }
        self.grants
            .get(device)?
            .iter()
            .filter(|g| g.from < seq)
            .max_by_key(|g| (g.from, g.by))
            .map(|g| g.role)
    }

    /// Whether `device`'s commit at `seq` may change rows.
    pub fn may_write(&self, device: &DeviceId, seq: Seq) -> bool {
        self.role_at(device, seq).is_some_and(Role::may_write)
    }

    /// The role `device` has for its next commits, if it is a member.
    pub fn role(&self, device: &DeviceId) -> Option<Role> {
        self.role_at(device, Seq(u64::MAX))
    }

    /// The last accepted seq of a revoked device.
    pub fn revoked_after(&self, device: &DeviceId) -> Option<Seq> {
        self.revoked.get(device).copied()
    }

    /// Every device that was ever given a role, with its standing now.
    pub fn members(&self) -> Vec<Member> {
        self.grants
            .keys()
            .map(|d| Member {
                device: *d,
                role: self.role(d),
                revoked_after: self.revoked_after(d),
            })
            .collect()
    }

    /// How the group carries `table`, if it does.
    pub fn share(&self, table: &str) -> Option<&Share> {
        self.tables.get(&table.to_lowercase())
    }

    /// The tables the group carries.
    pub fn shares(&self) -> impl Iterator<Item = &Share> {
        self.tables.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev(n: u8) -> DeviceId {
        DeviceId([n; 32])
    }

    fn genesis(creator: DeviceId) -> (GroupId, OpRecord) {
        let nonce = [7; 16];
        (
            GroupId::derive(&creator, &nonce),
            OpRecord {
                author: creator,
                seq: Seq(1),
                hlc: Hlc(100),
                op: GroupOp::Create {
                    name: "desk".into(),
                    nonce,
                },
            },
        )
    }

    fn op(author: DeviceId, seq: u64, hlc: u64, op: GroupOp) -> OpRecord {
        OpRecord {
            author,
            seq: Seq(seq),
            hlc: Hlc(hlc),
            op,
        }
    }

    #[test]
    fn only_the_derived_creator_can_start_a_group() {
        let (id, g) = genesis(dev(1));
        assert_eq!(
            Group::evaluate(id, [g.clone()]).map(|g| g.creator),
            Some(dev(1))
        );
        let forged = OpRecord {
            author: dev(2),
            ..g.clone()
        };
        assert!(Group::evaluate(id, [forged]).is_none());
        let late = OpRecord { seq: Seq(2), ..g };
        assert!(Group::evaluate(id, [late]).is_none());
    }

    #[test]
    fn roles_apply_from_the_named_point_and_revocation_is_final() {
        let (a, b) = (dev(1), dev(2));
        let (id, g) = genesis(a);
        let ops = [
            g,
            op(
                a,
                2,
                200,
                GroupOp::SetRole {
                    device: b,
                    role: Role::Member,
                    from: Seq(0),
                },
            ),
            op(
                a,
                3,
                300,
                GroupOp::SetRole {
                    device: b,
                    role: Role::Reader,
                    from: Seq(4),
                },
            ),
            op(
                a,
                4,
                400,
                GroupOp::Revoke {
                    device: b,
                    after: Seq(6),
                },
            ),
            op(
                a,
                5,
                500,
                GroupOp::SetRole {
                    device: b,
                    role: Role::Admin,
                    from: Seq(9),
                },
            ),
        ];
        let g = Group::evaluate(id, ops).expect("group");
        assert_eq!(g.role_at(&b, Seq(1)), Some(Role::Member));
        assert_eq!(g.role_at(&b, Seq(4)), Some(Role::Member));
        assert_eq!(g.role_at(&b, Seq(5)), Some(Role::Reader));
        assert_eq!(g.role_at(&b, Seq(7)), None);
        assert_eq!(g.role_at(&b, Seq(10)), None, "revocation is final");
        assert!(!g.may_write(&b, Seq(5)));
        assert_eq!(g.role(&b), None);
    }

    #[test]
    fn operations_by_non_admins_are_ignored() {
        let (a, b, c) = (dev(1), dev(2), dev(3));
        let (id, g) = genesis(a);
        let ops = [
            g,
            op(
                a,
                2,
                200,
                GroupOp::SetRole {
                    device: b,
                    role: Role::Member,
                    from: Seq(0),
                },
            ),
            op(
                b,
                1,
                300,
                GroupOp::SetRole {
                    device: c,
                    role: Role::Admin,
                    from: Seq(0),
                },
            ),
            op(
                c,
                1,
                400,
                GroupOp::Share {
                    table: "notes".into(),
                    excluded: vec![],
                },
            ),
        ];
        let g = Group::evaluate(id, ops).expect("group");
        assert_eq!(g.role(&c), None);
        assert!(g.share("notes").is_none());
        assert_eq!(g.ignored.len(), 2);
    }

    #[test]
    fn shares_follow_the_newest_operation() {
        let a = dev(1);
        let (id, g) = genesis(a);
        let share = |hlc, excluded: Vec<&str>| {
            op(
                a,
                hlc / 100,
                hlc,
                GroupOp::Share {
                    table: "Trades".into(),
                    excluded: excluded.into_iter().map(String::from).collect(),
                },
            )
        };
        let g =
            Group::evaluate(id, [share(300, vec!["note"]), g, share(200, vec![])]).expect("group");
        let s = g.share("trades").expect("shared");
        assert!(!s.carries("NOTE") && s.carries("qty"));
    }

    fn any_op(devices: u8) -> impl Strategy<Value = GroupOp> {
        let d = (1..=devices).prop_map(dev);
        let role = prop_oneof![Just(Role::Reader), Just(Role::Member), Just(Role::Admin)];
        prop_oneof![
            (d.clone(), role, 0..5u64).prop_map(|(device, role, from)| GroupOp::SetRole {
                device,
                role,
                from: Seq(from)
            }),
            (d, 0..5u64).prop_map(|(device, after)| GroupOp::Revoke {
                device,
                after: Seq(after)
            }),
            (0..3u8, any::<bool>()).prop_map(|(t, ex)| GroupOp::Share {
                table: format!("t{t}"),
                excluded: if ex { vec!["c".into()] } else { vec![] },
            }),
            (0..3u8).prop_map(|t| GroupOp::Unshare {
                table: format!("t{t}")
            }),
        ]
    }

    proptest! {
        /// The state depends on the set of operations, not on the order they came in.
        #[test]
        fn evaluation_ignores_arrival_order(
            ops in prop::collection::vec((1..=4u8, 1..10_000u64, any_op(4)), 0..24),
            seed in any::<u64>(),
        ) {
            let (id, g) = genesis(dev(1));
            // One operation per commit: each author's commits numbered in clock order.
            let mut ops = ops;
            ops.sort_by_key(|(author, hlc, _)| (*author, *hlc));
            let mut records = vec![g];
            let mut next = BTreeMap::new();
            for (i, (author, hlc, o)) in ops.into_iter().enumerate() {
                let seq = next.entry(author).or_insert(if author == 1 { 1 } else { 0 });
                *seq += 1;
                records.push(op(dev(author), *seq, 1_000 + hlc * 100 + i as u64, o));
            }
            let a = Group::evaluate(id, records.clone()).expect("group");
            // A deterministic shuffle, different for each seed.
            let mut shuffled = records;
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let b = Group::evaluate(id, shuffled).expect("group");
            prop_assert_eq!(a.members(), b.members());
            prop_assert_eq!(a.shares().collect::<Vec<_>>(), b.shares().collect::<Vec<_>>());
        }
    }
}
