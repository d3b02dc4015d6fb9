//! Which group a command means: the one named, or the only one there is.

use shoal_store::Store;

/// The group named, or the only one there is.
pub(crate) fn one_group(store: &Store, which: Option<&str>) -> anyhow::Result<shoal_core::Group> {
    if let Some(which) = which {
        return Ok(store.group(which)?);
    }
    let mut all = store.groups()?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => anyhow::bail!(
            "this database knows no group yet: `shoal group DB create NAME --table TABLE` makes one"
        ),
        n => anyhow::bail!(
            "this database knows {n} groups: name one with --group (`shoal group DB list`)"
        ),
    }
}
