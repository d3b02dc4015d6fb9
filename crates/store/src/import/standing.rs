//! A commit's standing in its group: whether its author may make it, at its place in
//! the author's chain, by the group's membership.

use shoal_core::{CommitHead, Group};

/// A commit's standing in its group: accepted, refused (and why), or `None` while its
/// author has no role the group knows of.
/// `writes` says whether it changes any row: a reader's commit may only change the
/// group itself.
pub(crate) fn judge(
    group: &Group,
    body: &CommitHead,
    writes: bool,
) -> Option<std::result::Result<(), String>> {
    let who = || {
        format!(
            "commit {} by {} in group {}",
            body.seq, body.author, group.name
        )
    };
    if group
        .revoked_after(&body.author)
        .is_some_and(|after| body.seq > after)
    {
        return Some(Err(format!("{}: its author was revoked before it", who())));
    }
    match group.role_at(&body.author, body.seq) {
        Some(role) if role.may_write() || !writes => Some(Ok(())),
        Some(_) => Some(Err(format!("{}: its author may only read", who()))),
        None => None,
    }
}
