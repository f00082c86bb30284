//! Criterion benchmarks of the same workloads as the comparison program:
//! isolated calls, warm calls, throughput and loading, per host.

#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;
use warden_bench::{ExtismHost, RawHost, SHORT_INPUT, WardenHost, native, text};

fn cache_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("warden-criterion-cache");
    std::fs::create_dir_all(&dir).expect("a cache directory");
    dir
}

fn isolated(c: &mut Criterion) {
    let warden = WardenHost::new(&cache_dir());
    let extism = ExtismHost::new();
    let raw = RawHost::new();
    let mut group = c.benchmark_group("isolated call");
    group.bench_function("warden", |b| b.iter(|| warden.isolated(SHORT_INPUT, 1)));
    group.bench_function("extism", |b| b.iter(|| extism.isolated(SHORT_INPUT, 1)));
    group.bench_function("raw-pointer", |b| b.iter(|| raw.isolated(SHORT_INPUT, 1)));
    group.finish();
}

fn warm(c: &mut Criterion) {
    let warden = WardenHost::new(&cache_dir());
    let extism = ExtismHost::new();
    let raw = RawHost::new();
    let mut instance = warden.instance();
    let mut plugin = extism.plugin();
    let mut raw_instance = raw.instance();
    let mut group = c.benchmark_group("warm call");
    for size in [13usize, 4 << 10, 1 << 20] {
        let input = if size == 13 {
            SHORT_INPUT.to_vec()
        } else {
            text(size)
        };
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("warden", size), &input, |b, input| {
            b.iter(|| warden.warm(&mut instance, input, 1))
        });
        group.bench_with_input(BenchmarkId::new("extism", size), &input, |b, input| {
            b.iter(|| ExtismHost::call(&mut plugin, input))
        });
        group.bench_with_input(BenchmarkId::new("raw-pointer", size), &input, |b, input| {
            b.iter(|| raw_instance.call(input))
        });
        group.bench_with_input(BenchmarkId::new("native", size), &input, |b, input| {
            b.iter(|| native(input))
        });
    }
    group.finish();
}

fn loading(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let bytes = std::fs::read(warden_bench::guests::HELLO).expect("hello");
    let uncached = warden::Runtime::builder()
        .no_compile_cache()
        .build()
        .expect("a runtime");
    let cached = warden::Runtime::builder()
        .compile_cache(cache_dir())
        .build()
        .expect("a runtime");
    let load = |runtime: &warden::Runtime| {
        tokio
            .block_on(runtime.compile(
                warden::Source::new("hello", bytes.clone()),
                warden::Sandbox::default(),
            ))
            .expect("compiling")
    };
    load(&cached);
    let mut group = c.benchmark_group("load hello");
    group.bench_function("compile", |b| b.iter(|| load(&uncached)));
    group.bench_function("from cache", |b| b.iter(|| load(&cached)));
    group.finish();
}

criterion_group! {
    name = hosts;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = isolated, warm, loading
}
criterion_main!(hosts);
