//! The hosts being compared, each running the same count-vowels code:
//! Warden, Extism, a raw-pointer core-module host (the style Warden
//! replaces), and native Rust. Shared by the criterion benches and the
//! comparison program.

use std::path::Path;
use std::time::{Duration, Instant};

/// Paths of the baseline guests, built by `build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
    pub use warden_tests::guests::{C_HELLO, HELLO, HELLO_V2, JS_HELLO, PYTHON_HELLO};
}

/// The 13-byte input of the call benchmarks.
pub const SHORT_INPUT: &[u8] = b"hello, world!";

/// `len` bytes of text with vowels in it.
pub fn text(len: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// Warden: the hello plugin in a runtime with the default configuration
/// (pooling, epoch interruption, no fuel) and a compile cache.
pub struct WardenHost {
    /// The async runtime calls run on.
    pub tokio: tokio::runtime::Runtime,
    /// The Warden runtime.
    pub runtime: warden::Runtime,
    /// The hello plugin.
    pub plugin: warden::Plugin,
}

impl WardenHost {
    /// Loads the hello plugin, with the compile cache in `cache_dir`.
    pub fn new(cache_dir: &Path) -> Self {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let runtime = warden::Runtime::builder()
            .compile_cache(cache_dir)
            .build()
            .expect("a Warden runtime");
        let plugin = tokio
            .block_on(runtime.load(
                warden::Source::new("hello", read(guests::HELLO)),
                warden::Sandbox::default(),
            ))
            .expect("loading hello");
        WardenHost {
            tokio,
            runtime,
            plugin,
        }
    }

    /// `calls` isolated calls: each a fresh instance, `init` and `execute`.
    pub fn isolated(&self, input: &[u8], calls: u32) -> usize {
        self.tokio.block_on(async {
            let mut total = 0;
            for _ in 0..calls {
                total += parse_count(
                    &self
                        .plugin
                        .execute("count-vowels", input)
                        .await
                        .result
                        .expect("a call"),
                );
            }
            total
        })
    }

    /// A live instance, `init` already run.
    pub fn instance(&self) -> warden::Instance {
        self.tokio
            .block_on(self.plugin.instantiate())
            .result
            .expect("an instance")
    }

    /// `calls` calls on a live instance.
    pub fn warm(&self, instance: &mut warden::Instance, input: &[u8], calls: u32) -> usize {
        self.tokio.block_on(async {
            let mut total = 0;
            for _ in 0..calls {
                total += parse_count(
                    &instance
                        .execute("count-vowels", input)
                        .await
                        .result
                        .expect("a call"),
                );
            }
            total
        })
    }
}

/// Extism 1.30: the same counting code built with `extism-pdk`, compiled
/// once with a pooling-allocator configuration, WASI off.
pub struct ExtismHost {
    /// The compiled plugin, from which fresh plugins are made.
    pub compiled: extism::CompiledPlugin,
}

impl ExtismHost {
    /// Compiles the Extism plugin (with Extism's disk cache off).
    pub fn new() -> Self {
        ExtismHost {
            compiled: Self::compile(),
        }
    }

    /// Compiles the plugin from scratch.
    pub fn compile() -> extism::CompiledPlugin {
        let manifest = extism::Manifest::new([extism::Wasm::data(read(guests::EXTISM_VOWELS))]);
        let mut config = wasmtime43::Config::new();
        config.allocation_strategy(wasmtime43::InstanceAllocationStrategy::pooling());
        extism::PluginBuilder::new(manifest)
            .with_wasi(false)
            .with_cache_disabled()
            .with_wasmtime_config(config)
            .compile()
            .expect("compiling the Extism plugin")
    }

    /// A fresh plugin instance, Extism's cheapest.
    pub fn plugin(&self) -> extism::Plugin {
        extism::Plugin::new_from_compiled(&self.compiled).expect("an Extism plugin")
    }

    /// `calls` isolated calls: each a fresh plugin and one call.
    pub fn isolated(&self, input: &[u8], calls: u32) -> usize {
        (0..calls)
            .map(|_| Self::call(&mut self.plugin(), input))
            .sum()
    }

    /// One call on a plugin.
    pub fn call(plugin: &mut extism::Plugin, input: &[u8]) -> usize {
        let output: &[u8] = plugin.call("count_vowels", input).expect("an Extism call");
        parse_count(output)
    }
}

impl Default for ExtismHost {
    fn default() -> Self {
        Self::new()
    }
}

/// A hand-written wasmtime 48 host for a core module with `alloc`/`dealloc`
/// exports, packed pointer/length results and JSON: what Warden replaces.
/// It gets wasmtime's pooling allocator and epoch interruption too.
pub struct RawHost {
    engine: wasmtime::Engine,
    pre: wasmtime::InstancePre<()>,
}

/// A live instance of the raw-pointer module.
pub struct RawInstance {
    store: wasmtime::Store<()>,
    alloc: wasmtime::TypedFunc<u32, u32>,
    dealloc: wasmtime::TypedFunc<(u32, u32), ()>,
    count: wasmtime::TypedFunc<(u32, u32), u64>,
    memory: wasmtime::Memory,
}

impl RawHost {
    /// Compiles the module and pre-instantiates it.
    pub fn new() -> Self {
        let mut config = wasmtime::Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::pooling());
        let engine = wasmtime::Engine::new(&config).expect("an engine");
        let module = wasmtime::Module::new(&engine, read(guests::RAW_VOWELS)).expect("the module");
        let pre = wasmtime::Linker::new(&engine)
            .instantiate_pre(&module)
            .expect("pre-instantiation");
        RawHost { engine, pre }
    }

    /// A fresh instance.
    pub fn instance(&self) -> RawInstance {
        let mut store = wasmtime::Store::new(&self.engine, ());
        store.set_epoch_deadline(1 << 40);
        let instance = self.pre.instantiate(&mut store).expect("an instance");
        RawInstance {
            alloc: instance
                .get_typed_func(&mut store, "guest_alloc")
                .expect("guest_alloc"),
            dealloc: instance
                .get_typed_func(&mut store, "guest_dealloc")
                .expect("guest_dealloc"),
            count: instance
                .get_typed_func(&mut store, "count_vowels")
                .expect("count_vowels"),
            memory: instance.get_memory(&mut store, "memory").expect("memory"),
            store,
        }
    }

    /// `calls` isolated calls: each a fresh instance and one call.
    pub fn isolated(&self, input: &[u8], calls: u32) -> usize {
        (0..calls).map(|_| self.instance().call(input)).sum()
    }
}

impl Default for RawHost {
    fn default() -> Self {
        Self::new()
    }
}

impl RawInstance {
    /// Copies the input in, calls, copies the JSON result out, frees both,
    /// parses the JSON.
    pub fn call(&mut self, input: &[u8]) -> usize {
        let store = &mut self.store;
        let len = input.len() as u32;
        let ptr = self.alloc.call(&mut *store, len).expect("alloc");
        self.memory
            .write(&mut *store, ptr as usize, input)
            .expect("writing the input");
        let packed = self
            .count
            .call(&mut *store, (ptr, len))
            .expect("count_vowels");
        let (result_ptr, result_len) = ((packed >> 32) as u32, packed as u32);
        let mut json = vec![0; result_len as usize];
        self.memory
            .read(&*store, result_ptr as usize, &mut json)
            .expect("reading the result");
        self.dealloc.call(&mut *store, (ptr, len)).expect("dealloc");
        self.dealloc
            .call(&mut *store, (result_ptr, result_len))
            .expect("dealloc");
        let value: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        value["count"].as_u64().expect("a count") as usize
    }
}

/// Native Rust: the counting function, called directly.
pub fn native(input: &[u8]) -> usize {
    vowels::count_vowels(std::hint::black_box(input))
}

fn parse_count(output: &[u8]) -> usize {
    std::str::from_utf8(output)
        .ok()
        .and_then(|text| text.parse().ok())
        .expect("a decimal count")
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("reading {path}: {err}"))
}

/// The fastest of several runs of a long computation: noise on a shared
/// machine only ever adds time.
pub fn best_of(runs: u32, mut run: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Median time per operation: `batch` operations per sample, samples taken
/// for about `duration` after a short warm-up.
pub fn median_per_op(batch: u32, duration: Duration, mut run: impl FnMut(u32)) -> Duration {
    let warm_up = Instant::now();
    while warm_up.elapsed() < duration / 5 {
        run(batch);
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration || samples.len() < 5 {
        let sample = Instant::now();
        run(batch);
        samples.push(sample.elapsed() / batch);
    }
    samples.sort();
    samples[samples.len() / 2]
}

/// The process's resident set size, in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let resident_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    resident_pages * 4096
}

/// The compute-bound module under four configurations of wasmtime 48:
/// nothing, epoch interruption (Warden's default), fuel, and both.
pub struct LimitsOverhead {
    /// The configuration's name.
    pub name: &'static str,
    engine: wasmtime::Engine,
    module: wasmtime::Module,
    epoch: bool,
    fuel: bool,
}

impl LimitsOverhead {
    /// The four configurations.
    pub fn all() -> Vec<LimitsOverhead> {
        [
            ("no limits", false, false),
            ("epoch (Warden's default)", true, false),
            ("fuel", false, true),
            ("epoch and fuel", true, true),
        ]
        .into_iter()
        .map(|(name, epoch, fuel)| {
            let mut config = wasmtime::Config::new();
            config.epoch_interruption(epoch).consume_fuel(fuel);
            let engine = wasmtime::Engine::new(&config).expect("an engine");
            let module = wasmtime::Module::new(&engine, read(guests::FIB)).expect("fib");
            LimitsOverhead {
                name,
                engine,
                module,
                epoch,
                fuel,
            }
        })
        .collect()
    }

    /// Runs the module's `function` (`fib` or `mix`) on `n` once.
    pub fn run(&self, function: &str, n: u32) -> u64 {
        let mut store = wasmtime::Store::new(&self.engine, ());
        if self.epoch {
            store.set_epoch_deadline(1 << 40);
        }
        if self.fuel {
            store.set_fuel(u64::MAX).expect("fuel is on");
        }
        let instance = wasmtime::Instance::new(&mut store, &self.module, &[]).expect("fib");
        let function = instance
            .get_typed_func::<u32, u64>(&mut store, function)
            .expect("the export");
        function.call(&mut store, n).expect("a call")
    }
}
