//! Reading the conflict inbox a page at a time, and finding a record by its id.

use shoal_store::{ConflictStatus, InboxFilter, InboxQuery, Resolution, Side, StoreError};
use shoal_testkit::{World, exec};

use super::{NOTES, sync};

#[test]
fn the_inbox_is_read_a_page_at_a_time_and_a_record_by_a_hex_prefix() {
    let w = World::new();
    let mut a = w.replica("a", NOTES, &["notes"]);
    let mut b = w.replica("b", NOTES, &["notes"]);
    // Seventeen rows edited on both sides: seventeen records, so two ids surely
    // start with the same digit.
    let ids: Vec<String> = (0..17).map(|i| format!("n{i:02}")).collect();
    for id in &ids {
        exec(
            &a,
            &format!("INSERT INTO notes VALUES ('{id}', 't', 'base', 0);"),
        );
    }
    sync(&mut a, &mut b);
    exec(&a, "UPDATE notes SET body = 'from a';");
    a.seal().expect("seal");
    w.tick(5);
    exec(&b, "UPDATE notes SET body = 'from b';");
    b.seal().expect("seal");
    sync(&mut a, &mut b);
    let every = a.conflicts(false).expect("conflicts");
    assert_eq!(every.len(), 17);
    a.resolve(&every[0].id, Resolution::Keep(Side::Local))
        .expect("resolve");

    let query = |filter, offset, limit| InboxQuery {
        table: None,
        filter,
        offset,
        limit,
    };
    let first = a.inbox(&query(InboxFilter::Open, 0, 10)).expect("page");
    assert_eq!((first.items.len(), first.total), (10, 16));
    assert_eq!(first.open_by_table, [("notes".to_owned(), 16)]);
    let rest = a.inbox(&query(InboxFilter::Open, 10, 10)).expect("page");
    assert_eq!((rest.items.len(), rest.total), (6, 16));
    let mut seen: Vec<&str> = first
        .items
        .iter()
        .chain(&rest.items)
        .map(|c| c.id.as_str())
        .collect();
    let listed: Vec<&str> = every[1..].iter().map(|c| c.id.as_str()).collect();
    assert_eq!(seen, listed, "pages are the list, newest first, in order");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 16, "no record on two pages");
    let resolved = a
        .inbox(&query(InboxFilter::Only(ConflictStatus::Resolved), 0, 100))
        .expect("page");
    assert_eq!(
        resolved.items.iter().map(|c| &c.id).collect::<Vec<_>>(),
        [&every[0].id]
    );
    assert_eq!(
        a.inbox(&query(InboxFilter::All, 0, 100))
            .expect("page")
            .total,
        17
    );
    let by_table = |table: &str| {
        a.inbox(&InboxQuery {
            table: Some(table.into()),
            ..query(InboxFilter::All, 0, 100)
        })
        .expect("page")
        .total
    };
    assert_eq!((by_table("NOTES"), by_table("other")), (17, 0));

    // An id is found by a prefix in either case; what is not hex finds nothing, and a
    // prefix two ids share is named as such.
    let id = &every[3].id;
    assert_eq!(
        &a.conflict(&id[..6].to_uppercase()).expect("by prefix").id,
        id
    );
    for not_an_id in ["", "%", "_", &format!("{}%", &id[..4]), "zz"] {
        assert!(
            matches!(
                a.conflict(not_an_id),
                Err(StoreError::NoSuchConflict { .. })
            ),
            "{not_an_id:?} found a record"
        );
    }
    let mut firsts: Vec<char> = every.iter().filter_map(|c| c.id.chars().next()).collect();
    firsts.sort();
    let shared = firsts
        .windows(2)
        .find(|p| p[0] == p[1])
        .map(|p| p[0].to_string())
        .expect("two ids start alike");
    assert!(matches!(
        a.conflict(&shared),
        Err(StoreError::AmbiguousConflict { .. })
    ));
}
