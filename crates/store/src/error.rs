//! The errors of the storage layer, each saying what went wrong and what to do.

use std::path::PathBuf;

use shoal_core::{CoreError, DeviceId};

/// What went wrong in the store. Its [`StoreError::code`] is the variant's name in
/// snake_case, stable for programs.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum StoreError {
    /// SQLite reported an error. (Its message is this error's own, not a source to
    /// print again after it.)
    #[error("SQLite: {0}")]
    Sqlite(rusqlite::Error),
    /// The database file cannot be used as it is.
    #[error("{path} {problem}", path = .path.display())]
    File {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        problem: FileProblem,
    },
    /// Commit or record data was bad.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A file in the data directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The database has no Shoal tables yet.
    #[error("{path} is not a Shoal database yet: run `shoal init {path}` first", path = .path.display())]
    NotInitialised {
        /// The database file.
        path: PathBuf,
    },
    /// `init` was run on a database that already has a device.
    #[error("{path} is already initialised as device {device}", path = .path.display())]
    AlreadyInitialised {
        /// The database file.
        path: PathBuf,
        /// The device it belongs to.
        device: DeviceId,
    },
    /// The database is a copy of another file of the same device, whose key is in
    /// reach: it must not sign as that device.
    #[error(
        "{path} is a copy of {original}, which is device {device}: a copy that went on signing as the original would fork its history; run `shoal adopt {path}` to make the copy a device of its own",
        path = .path.display(),
        original = .original.display()
    )]
    Copied {
        /// The copy.
        path: PathBuf,
        /// The file the device lives in.
        original: PathBuf,
        /// The device both files name.
        device: DeviceId,
    },
    /// The database's device key is not in the data directory: it is a copy.
    #[error(
        "{path} belongs to device {device}, whose key is not in {data_dir}; if this file is a copy, run `shoal adopt {path}` to make it a new device (or point --data-dir at the original device's data directory)",
        path = .path.display(),
        data_dir = .data_dir.display()
    )]
    KeyMissing {
        /// The database file.
        path: PathBuf,
        /// The device recorded in it.
        device: DeviceId,
        /// Where its key was looked for.
        data_dir: PathBuf,
    },
    /// A key file is readable by other users.
    #[error("key file {path} can be read by other users: run `chmod 600 {path}`", path = .path.display())]
    KeyExposed {
        /// The key file.
        path: PathBuf,
    },
    /// A key file does not hold a key.
    #[error("key file {path} is damaged: it must hold 64 hexadecimal digits", path = .path.display())]
    KeyDamaged {
        /// The key file.
        path: PathBuf,
    },
    /// The database was made by an older, incompatible version of Shoal.
    #[error(
        "the database uses Shoal schema {found}, older than this program's {supported}, and cannot be upgraded in place: export the app's tables, or keep using the older shoal"
    )]
    SchemaTooOld {
        /// The schema version in the file.
        found: i64,
        /// The version this program writes.
        supported: i64,
    },
    /// The database was made by a newer version of Shoal.
    #[error(
        "the database uses Shoal schema {found}, newer than this program's {supported}: upgrade shoal"
    )]
    SchemaTooNew {
        /// The schema version in the file.
        found: i64,
        /// The newest this program knows.
        supported: i64,
    },
    /// A table cannot be tracked.
    #[error("cannot track {table:?}: {reason}")]
    Untrackable {
        /// The table named.
        table: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A table named in a command is not tracked.
    #[error("{table:?} is not tracked: run `shoal track DB {table}` first")]
    NotTracked {
        /// The table named.
        table: String,
    },
    /// No group matches what was named.
    #[error(
        "this database knows no group {which:?}: `shoal group DB list` shows the groups it knows"
    )]
    NoSuchGroup {
        /// The name or id asked for.
        which: String,
    },
    /// Several groups match what was named.
    #[error("{count} groups match {which:?}: name the group by its id (`shoal group DB list`)")]
    AmbiguousGroup {
        /// The name or id prefix asked for.
        which: String,
        /// How many matched.
        count: usize,
    },
    /// A change to a group was asked of a device that is not its admin.
    #[error(
        "this device is not an admin of group {group:?}: ask one of its admins (`shoal members DB --group {group}`)"
    )]
    NotAdmin {
        /// The group's name.
        group: String,
    },
    /// An invite was asked for that could never be used.
    #[error(
        "an invite that would {what} is of no use: give it at least one use and some time (`--uses 1 --expires 24h`)"
    )]
    EmptyInvite {
        /// What it would do.
        what: &'static str,
    },
    /// An invite was not accepted.
    #[error("invite not accepted: {0}")]
    Invite(shoal_core::invite::InviteProblem),
    /// A revoked device asked to join again.
    #[error("device {device} was revoked from group {group:?} and cannot join it again")]
    Revoked {
        /// The device.
        device: DeviceId,
        /// The group's name.
        group: String,
    },
    /// A device named in a group command is not in the group.
    #[error("device {device} is not a member of group {group:?}")]
    NotAMember {
        /// The device.
        device: DeviceId,
        /// The group's name.
        group: String,
    },
    /// A column named in a command is not a synced column of the table.
    #[error("table {table:?} has no synced column {column:?}")]
    NoSuchColumn {
        /// The table.
        table: String,
        /// The column asked for.
        column: String,
    },
    /// No conflict has the given id.
    #[error("no conflict has the id {id:?}: `shoal conflicts DB list` shows them")]
    NoSuchConflict {
        /// The id asked for.
        id: String,
    },
    /// More than one conflict's id starts with what was given.
    #[error("more than one conflict's id starts with {id:?}: give more of it")]
    AmbiguousConflict {
        /// The id asked for.
        id: String,
    },
    /// A device was asked to revoke itself from a group.
    #[error(
        "this device cannot revoke itself from group {group:?}: another admin of the group can, with `shoal revoke DB DEVICE` on their device"
    )]
    RevokingItself {
        /// The group's name.
        group: String,
    },
    /// A change of role would leave a group with no admin.
    #[error(
        "group {group:?} would have no admin left: make another member an admin first (`shoal group DB add {group} DEVICE --role admin`)"
    )]
    LastAdmin {
        /// The group's name.
        group: String,
    },
    /// A conflict that is resolved or closed already: there is nothing to resolve.
    #[error("cannot resolve conflict {id}: it is {status} already ({how})")]
    AlreadySettled {
        /// The conflict.
        id: String,
        /// `resolved` or `closed`.
        status: String,
        /// How it was settled.
        how: String,
    },
    /// A conflict resolution could not be carried out.
    #[error("cannot resolve conflict {id}: {reason}")]
    CannotResolve {
        /// The conflict.
        id: String,
        /// Why.
        reason: String,
    },
    /// Something Shoal stored in the file cannot be read back.
    #[error(
        "{what} in this file cannot be read ({detail}): the file was changed outside Shoal or is damaged; run `PRAGMA integrity_check`, and restore it from a backup or another device"
    )]
    Damaged {
        /// What it is: a stored primary key, a held change, a table's column list.
        what: String,
        /// What reading it said.
        detail: String,
    },
    /// The merge state Shoal keeps for a row cannot be read.
    #[error(
        "Shoal's merge state for a row in this file is damaged ({0}): run `PRAGMA integrity_check`, and restore the file from a backup or another device"
    )]
    RowStateDamaged(#[from] postcard::Error),
    /// Row changes waiting to be applied could not be written to, or read back from,
    /// a temporary file.
    #[error(
        "could not keep row changes waiting to be applied in a temporary file ({0}): check that the temporary directory (TMPDIR) exists, is writable and has room"
    )]
    Spill(std::io::Error),
}

/// The result type of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

/// What can be wrong with a database file as such, whatever Shoal does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileProblem {
    /// It cannot be opened: a folder, a missing folder, no permission.
    CannotOpen,
    /// It is not an SQLite database (or is encrypted, or damaged at its start).
    NotADatabase,
    /// It may be read but not written.
    ReadOnly,
    /// The disk holding it is full.
    DiskFull,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileProblem::CannotOpen => {
                "cannot be opened as a database: check that it names a file (not a folder) in a folder that exists, and that this user may read and write both"
            }
            FileProblem::NotADatabase => {
                "is not an SQLite database (or it is encrypted, or damaged): check the path; `sqlite3 FILE 'PRAGMA integrity_check'` tells more"
            }
            FileProblem::ReadOnly => {
                "is read-only here: Shoal writes its log and commits into the file, so this user needs write access to it and to its folder; nothing was changed"
            }
            FileProblem::DiskFull => {
                "cannot grow: the disk holding it is full; free some space and try again (nothing was changed)"
            }
        })
    }
}

impl StoreError {
    /// A stable name for the kind of error, for programs: `no_such_conflict`,
    /// `not_admin`, `file`, ….
    pub fn code(&self) -> &'static str {
        self.into()
    }

    /// This error, told as a problem of the file at `path` when it is one.
    pub(crate) fn in_file(self, path: &std::path::Path) -> StoreError {
        use rusqlite::ErrorCode;
        let StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) = &self else {
            return self;
        };
        let problem = match e.code {
            ErrorCode::CannotOpen => FileProblem::CannotOpen,
            ErrorCode::NotADatabase => FileProblem::NotADatabase,
            ErrorCode::ReadOnly => FileProblem::ReadOnly,
            ErrorCode::DiskFull => FileProblem::DiskFull,
            _ => return self,
        };
        StoreError::File {
            path: path.to_owned(),
            problem,
        }
    }
}
