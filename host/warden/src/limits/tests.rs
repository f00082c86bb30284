use super::*;
use wasmtime::ResourceLimiter;

const PAGE: usize = 64 << 10;

#[test]
fn memory_growth_is_counted_across_memories_and_refused_past_the_limit() {
    let limits = Limits {
        memory_bytes: 4 * PAGE as u64,
        ..Limits::default()
    };
    let mut limiter = StoreLimiter::new(&limits);
    assert!(limiter.memory_growing(0, 2 * PAGE, None).unwrap());
    assert!(limiter.memory_growing(0, 2 * PAGE, None).unwrap());
    assert_eq!(limiter.peak_memory_bytes(), 4 * PAGE as u64);
    assert!(!limiter.memory_growing(2 * PAGE, 3 * PAGE, None).unwrap());
    let refusal = limiter.take_refusal().unwrap();
    assert_eq!(refusal.resource, LimitedResource::LinearMemory);
    assert_eq!(refusal.requested, Some(5 * PAGE as u64));
    assert_eq!(limiter.take_refusal(), None);
}

#[test]
fn growth_past_the_declared_maximum_is_not_a_host_refusal() {
    let mut limiter = StoreLimiter::new(&Limits::default());
    assert!(
        !limiter
            .memory_growing(PAGE, 3 * PAGE, Some(2 * PAGE))
            .unwrap()
    );
    assert_eq!(limiter.take_refusal(), None);
    assert_eq!(limiter.peak_memory_bytes(), 0);
}

#[test]
fn failed_growth_is_not_counted() {
    let mut limiter = StoreLimiter::new(&Limits::default());
    assert!(limiter.memory_growing(0, PAGE, None).unwrap());
    assert!(limiter.memory_growing(PAGE, 3 * PAGE, None).unwrap());
    limiter
        .memory_grow_failed(wasmtime::format_err!("out of address space"))
        .unwrap();
    assert_eq!(limiter.peak_memory_bytes(), PAGE as u64);
}

#[test]
fn tables_are_limited_per_table() {
    let limits = Limits {
        table_elements: 10,
        ..Limits::default()
    };
    let mut limiter = StoreLimiter::new(&limits);
    assert!(limiter.table_growing(0, 10, None).unwrap());
    assert!(!limiter.table_growing(10, 11, None).unwrap());
    assert_eq!(
        limiter.take_refusal().map(|r| r.resource),
        Some(LimitedResource::TableElements)
    );
}
