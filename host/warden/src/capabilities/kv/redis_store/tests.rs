use super::*;

#[test]
fn names_are_framed_so_places_never_share_redis_keys() {
    let split_one_way = Keys::new(Place {
        namespace: "a:1",
        bucket: "b",
    });
    let split_another = Keys::new(Place {
        namespace: "a",
        bucket: "1:b",
    });
    assert_ne!(split_one_way.values, split_another.values);
    assert_eq!(split_one_way.values, "warden:kv:values:3:a:1:1:b");
    assert_eq!(split_another.usage, "warden:kv:usage:1:a");
    assert_ne!(split_one_way.usage, split_another.usage);
}

#[test]
fn backoff_stays_under_its_ceiling() {
    for attempt in [1, 2, 10, 1000, u32::MAX] {
        assert!(backoff(attempt) < MAX_BACKOFF, "attempt {attempt}");
    }
}
