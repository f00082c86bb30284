//! Runs Warden calls in a loop, for profiling (`perf record`) and quick
//! timing: `cargo run --release --example profile -- isolated|warm`.

fn main() {
    let dir = std::env::temp_dir().join("warden-profile-cache");
    std::fs::create_dir_all(&dir).expect("a cache directory");
    let host = warden_bench::WardenHost::new(&dir);
    let warm = std::env::args().nth(1).as_deref() == Some("warm");
    let mut instance = host.instance();
    let batch = if warm { 1000 } else { 50 };
    let per_call = warden_bench::median_per_op(batch, std::time::Duration::from_secs(3), |calls| {
        if warm {
            host.warm(&mut instance, warden_bench::SHORT_INPUT, calls);
        } else {
            host.isolated(warden_bench::SHORT_INPUT, calls);
        }
    });
    let kind = if warm { "warm" } else { "isolated" };
    println!("{kind}: {per_call:?} per call");
}
