use super::*;
use crate::capabilities::kv::KvQuotas;

fn database() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open(&dir.path().join("kv.sqlite")).unwrap();
    (dir, database)
}

const A: Place<'static> = Place {
    namespace: "a",
    bucket: "default",
};
const B: Place<'static> = Place {
    namespace: "b",
    bucket: "default",
};

fn scope<'a>(place: Place<'a>, quotas: &'a KvQuotas, interrupt: &'a Interrupt) -> Scope<'a> {
    Scope {
        place,
        quotas,
        interrupt,
    }
}

fn set(
    database: &Database,
    place: Place<'_>,
    key: &str,
    value: &[u8],
    quotas: &KvQuotas,
) -> Result<(), StoreError> {
    database.set_many(
        scope(place, quotas, &Interrupt::never()),
        &[(key.to_owned(), value.to_vec())],
    )
}

#[test]
fn a_new_file_is_private_and_one_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, database) = database();
    drop(database);
    let path = dir.path().join("kv.sqlite");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    for writable in [0o666, 0o660, 0o646] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(writable)).unwrap();
        let err = Database::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Exposed(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("chmod go-w"), "{message}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    Database::open(&path).expect("readable by the group is the operator's choice");
}

#[test]
fn a_store_created_through_a_planted_link_is_private() {
    use std::os::unix::fs::PermissionsExt;
    // Someone who can write the store's directory links its name to a
    // place of their choosing before the store exists.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    let target = dir.path().join("elsewhere/stolen.sqlite");
    let path = dir.path().join("kv.sqlite");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let database = Database::open(&path).unwrap();
    set(&database, A, "token", b"secret", &KvQuotas::default()).unwrap();
    drop(database);
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the plugins' data is readable by its owner only"
    );
    for journal in ["stolen.sqlite-wal", "stolen.sqlite-shm"] {
        if let Ok(metadata) = std::fs::metadata(dir.path().join("elsewhere").join(journal)) {
            assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "{journal}");
        }
    }
}

#[test]
fn namespaces_are_separate() {
    let (_dir, database) = database();
    let quotas = KvQuotas::default();
    set(&database, A, "k", b"from a", &quotas).unwrap();
    assert_eq!(database.get(A, "k").unwrap().unwrap(), b"from a");
    assert_eq!(database.get(B, "k").unwrap(), None);
    assert!(!database.exists(B, "k").unwrap());
}

#[test]
fn quotas_hold_and_failed_writes_leave_nothing_behind() {
    let (_dir, database) = database();
    // Bucket names count: `default` is 7 bytes per entry.
    let quotas = KvQuotas {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_total_bytes: 40 + 3 * 7,
        max_keys: 3,
        ..KvQuotas::default()
    };
    assert!(matches!(
        set(&database, A, "a-long-key", b"v", &quotas),
        Err(StoreError::Quota(_))
    ));
    assert!(matches!(
        set(&database, A, "k", &[0; 17], &quotas),
        Err(StoreError::Quota(_))
    ));
    set(&database, A, "k1", &[1; 16], &quotas).unwrap();
    set(&database, A, "k2", &[2; 16], &quotas).unwrap();
    // 36 bytes so far; 18 more would pass 40.
    let batch = [
        ("k3".to_owned(), vec![3; 1]),
        ("k4".to_owned(), vec![4; 16]),
    ];
    assert!(matches!(
        database.set_many(scope(A, &quotas, &Interrupt::never()), &batch),
        Err(StoreError::Quota(_))
    ));
    assert_eq!(
        database.get(A, "k3").unwrap(),
        None,
        "the batch was all or nothing"
    );
    // Overwriting frees the old value's bytes first.
    set(&database, A, "k1", &[9; 4], &quotas).unwrap();
    database
        .delete_many(
            scope(A, &quotas, &Interrupt::never()),
            &["k1".to_owned(), "missing".to_owned()],
        )
        .unwrap();
    set(&database, A, "k3", &[3; 16], &quotas).unwrap();
    set(&database, A, "k4", &[4; 1], &quotas).unwrap();
    assert!(
        matches!(
            set(&database, A, "k5", b"", &quotas),
            Err(StoreError::Quota(_))
        ),
        "three keys at most"
    );
}

#[test]
fn counters_increment_from_zero_and_refuse_non_numbers() {
    let (_dir, database) = database();
    let quotas = KvQuotas::default();
    assert_eq!(
        database
            .increment(scope(A, &quotas, &Interrupt::never()), "hits", 1)
            .unwrap(),
        1
    );
    assert_eq!(
        database
            .increment(scope(A, &quotas, &Interrupt::never()), "hits", 41)
            .unwrap(),
        42
    );
    assert_eq!(database.get(A, "hits").unwrap().unwrap(), b"42");
    set(&database, A, "text", b"hello", &quotas).unwrap();
    assert!(matches!(
        database.increment(scope(A, &quotas, &Interrupt::never()), "text", 1),
        Err(StoreError::NotACounter { .. })
    ));
    set(
        &database,
        A,
        "max",
        u64::MAX.to_string().as_bytes(),
        &quotas,
    )
    .unwrap();
    assert!(matches!(
        database.increment(scope(A, &quotas, &Interrupt::never()), "max", 1),
        Err(StoreError::Overflow { .. })
    ));
}

#[test]
fn keys_are_listed_in_pages() {
    let (_dir, database) = database();
    let pairs: Vec<(String, Vec<u8>)> = (0..LIST_PAGE + 5)
        .map(|index| (format!("key{index:05}"), vec![]))
        .collect();
    database
        .set_many(scope(A, &KvQuotas::default(), &Interrupt::never()), &pairs)
        .unwrap();
    let (first, next) = database.list_keys(A, 0).unwrap();
    assert_eq!(first.len(), LIST_PAGE);
    assert_eq!(first[0], "key00000");
    let (second, last) = database.list_keys(A, next.unwrap()).unwrap();
    assert_eq!(second.len(), 5);
    assert_eq!(last, None);
    assert_eq!(database.list_keys(A, u64::MAX).unwrap().0.len(), 0);
    assert_eq!(database.buckets("a").unwrap(), ["default"]);
}

#[test]
fn bucket_names_count_toward_the_total_bytes() {
    let (_dir, database) = database();
    let quotas = KvQuotas {
        max_total_bytes: 100,
        ..KvQuotas::default()
    };
    let long_bucket = "b".repeat(100);
    let place = Place {
        namespace: "a",
        bucket: &long_bucket,
    };
    assert!(matches!(
        set(&database, place, "k", b"", &quotas),
        Err(StoreError::Quota(_))
    ));
    let short = Place {
        namespace: "a",
        bucket: "b",
    };
    set(&database, short, "k", b"", &quotas).unwrap();
}

#[test]
fn an_interrupted_batch_writes_nothing() {
    let (_dir, database) = database();
    let pairs: Vec<Entry> = (0..100)
        .map(|index| (format!("key{index}"), vec![1]))
        .collect();
    let interrupt = Interrupt::never();
    interrupt.cancel();
    assert!(matches!(
        database.set_many(scope(A, &KvQuotas::default(), &interrupt), &pairs),
        Err(StoreError::Interrupted)
    ));
    assert!(matches!(
        database.delete_many(
            scope(A, &KvQuotas::default(), &interrupt),
            &["key1".to_owned()]
        ),
        Err(StoreError::Interrupted)
    ));
    assert_eq!(database.list_keys(A, 0).unwrap().0.len(), 0);
    // The store is not left locked: a write goes through at once.
    set(&database, A, "after", b"1", &KvQuotas::default()).unwrap();
    let past = Interrupt::at(Instant::now());
    assert!(matches!(
        database.get_many(scope(A, &KvQuotas::default(), &past), &["after".to_owned()]),
        Err(StoreError::Interrupted)
    ));
}

#[test]
fn a_lock_held_elsewhere_is_waited_for_only_until_the_interrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite");
    let holder = Database::open(&path).unwrap();
    let waiter = Database::open(&path).unwrap();
    let mut connection = holder.connection();
    let _held = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    let started = Instant::now();
    let interrupt = Interrupt::at(started + Duration::from_millis(200));
    let result = waiter.set_many(
        scope(A, &KvQuotas::default(), &interrupt),
        &[("k".to_owned(), b"v".to_vec())],
    );
    assert!(matches!(result, Err(StoreError::Interrupted)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn get_many_refuses_values_past_the_batch_bytes() {
    let (_dir, database) = database();
    let quotas = KvQuotas {
        max_batch_bytes: 100,
        ..KvQuotas::default()
    };
    set(&database, A, "a", &[0; 60], &quotas).unwrap();
    set(&database, A, "b", &[0; 60], &quotas).unwrap();
    let one = database
        .get_many(scope(A, &quotas, &Interrupt::never()), &["a".to_owned()])
        .unwrap();
    assert_eq!(one.len(), 1);
    assert!(matches!(
        database.get_many(
            scope(A, &quotas, &Interrupt::never()),
            &["a".to_owned(), "b".to_owned()],
        ),
        Err(StoreError::BatchTooLarge(_))
    ));
}
