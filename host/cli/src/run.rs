//! `warden run`: one action in a fresh instance.

use std::io::IsTerminal;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use warden::{
    Error, ErrorKind, Outcome, OutputStream, Plugin, PluginError, Registry, Reload, Report,
    STREAM_BUFFER_BYTES,
};

use crate::args::{RunArgs, SandboxedComponent};
use crate::load;
use crate::output::{self, Failure};

/// `warden run`: opens the input, loads the plugin and calls the action
/// once (or, with `--watch`, again after every change). A plugin that
/// streams is fed stdin or `--input-file` as it is read (see [`stream`]);
/// otherwise the whole input is read first. Every failure is reported like
/// a failed call: with `--json`, as its one JSON object.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let target = match args.sandbox.resolve(&args.plugin) {
        Ok(target) => target,
        Err(err) => {
            let name = args.plugin_name();
            return finish(&args, &name, Err(Failure::before_loading(&err)), None);
        }
    };
    let limit = target.sandbox.limits.max_input_bytes;
    // What is wrong with the input (`--input` past the limit, a file that
    // cannot be opened) is said before the plugin is loaded.
    let source = match open_input(&args, limit).await {
        Ok(source) => source,
        Err(failure) => return finish(&args, &target.name, Err(failure), None),
    };
    if args.watch {
        return match source.read_whole(limit).await {
            Ok(input) => watch(args, target, input).await,
            Err(failure) => finish(&args, &target.name, Err(failure), None),
        };
    }
    let plugin = match load::plugin(&target, &args.sandbox).await {
        Ok(plugin) => plugin,
        Err(err) => return finish(&args, &target.name, Err((&err).into()), None),
    };
    let input = match source {
        InputSource::Reader(reader) if plugin.streams() && !args.no_stream => {
            return stream(&args, &plugin, reader).await;
        }
        source => match source.read_whole(limit).await {
            Ok(input) => input,
            Err(failure) => return finish(&args, &target.name, Err(failure), None),
        },
    };
    let Outcome { result, report } = plugin.execute(args.action(), &input).await;
    let result = explained(&args, Some(&plugin), result).await;
    finish(&args, plugin.name(), result, Some(&report))
}

/// `warden run` of a plugin that streams, on stdin or `--input-file`: the
/// input goes to `execute-stream` as the plugin reads it, and the output to
/// stdout as it comes, so memory stays flat whatever their sizes (the
/// stream limits bound them, not `--max-input`). With `--json` the output
/// is collected, up to `--max-output`, into the usual report.
async fn stream(args: &RunArgs, plugin: &Plugin, input: InputReader) -> anyhow::Result<ExitCode> {
    let (output, outcome) = plugin.execute_stream(args.action(), input.reader);
    if args.json {
        let limit = plugin.sandbox().limits.max_output_bytes;
        let collected = collect_output(output, limit).await;
        let Outcome { result, report } = outcome.await;
        // Past --max-output the output was cut off, which explains whatever
        // the plugin did next.
        let result = match collected.context("reading the output")? {
            Ok(bytes) => result.map(|_| bytes),
            Err(too_large) => Err(too_large),
        };
        let result = explained(args, Some(plugin), result).await;
        return finish(args, plugin.name(), result, Some(&report));
    }
    let idle_timeout = plugin.sandbox().limits.stream_idle_timeout;
    let mut outcome = outcome;
    let mut copy = std::pin::pin!(copy_to_stdout(output));
    let (copied, Outcome { result, report }) = tokio::select! {
        copied = &mut copy => (Some(copied), (&mut outcome).await),
        ended = &mut outcome => {
            // What the plugin wrote before the call ended is written out;
            // after a failure, only while stdout takes it (a reader that
            // stopped reading may be why the call failed).
            let copied = if ended.result.is_ok() {
                Some(copy.await)
            } else {
                tokio::time::timeout(idle_timeout, copy).await.ok()
            };
            (copied, ended)
        }
    };
    if let Some(copied) = copied {
        copied.context("writing the output")?;
    }
    let result = explained(args, Some(plugin), result).await;
    report_on_stderr(&result, Some(&report));
    Ok(exit_code(&result))
}

/// A streaming call's output, read to its end or until it goes past
/// `limit`: then reading stops (so the plugin's writes do) and the output
/// is refused as too large, its size being what was read by then.
async fn collect_output(
    output: OutputStream,
    limit: usize,
) -> std::io::Result<Result<Vec<u8>, Error>> {
    let mut bytes = Vec::new();
    output
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)
        .await?;
    Ok(if bytes.len() > limit {
        Err(Error::OutputTooLarge {
            size: bytes.len(),
            limit,
        })
    } else {
        Ok(bytes)
    })
}

/// Copies a streaming call's output to stdout piece by piece as it comes,
/// each piece written through before the next is read, so a reader of
/// stdout sees it at once and a slow one slows the plugin down. Returning
/// drops `output`, which stops the plugin's writes.
async fn copy_to_stdout(mut output: OutputStream) -> std::io::Result<()> {
    let mut stdout = tokio::io::stdout();
    let mut shown = output::StreamedOutput::new(std::io::stdout().is_terminal());
    let mut piece = vec![0; STREAM_BUFFER_BYTES];
    loop {
        let read = output.read(&mut piece).await?;
        if read == 0 {
            break;
        }
        stdout.write_all(&shown.piece(&piece[..read])).await?;
        stdout.flush().await?;
    }
    stdout.write_all(&shown.end()).await?;
    stdout.flush().await
}

/// A call's result as the command line reports it. A call of an action the
/// plugin does not have lists the actions it has; a call that named no
/// action, of a plugin that lists actions, is a usage error (exit 2).
async fn explained<T>(
    args: &RunArgs,
    plugin: Option<&Plugin>,
    result: Result<T, Error>,
) -> Result<T, Failure> {
    let err = match result {
        Ok(output) => return Ok(output),
        Err(err) => err,
    };
    let mut failure = Failure::from(&err);
    if let (Error::Plugin(PluginError::UnknownAction(_)), Some(plugin)) = (&err, plugin) {
        // The call ran `init`, so the metadata is known: no instance is
        // created to ask for it.
        if let Ok(metadata) = plugin.metadata().await {
            let actions = &metadata.actions;
            let message = warden::unknown_action_message(args.action(), actions);
            failure = if args.action.is_none() && !actions.is_empty() {
                Failure {
                    kind: ErrorKind::InvalidConfig,
                    message: format!("{message}; name one after the plugin"),
                    plugin_error: None,
                }
            } else {
                Failure {
                    message: format!("plugin error: {message}"),
                    ..failure
                }
            };
        }
    }
    Err(failure)
}

/// How often `--watch` looks at the plugin file and the manifest.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// How long a call in flight may finish after an interrupt in `--watch` mode.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// `warden run --watch`: runs the action, then again after every change to
/// the plugin file (or, with --manifest, to the manifest), until SIGINT or
/// SIGTERM. Exits with the code of the last run.
async fn watch(
    args: RunArgs,
    target: SandboxedComponent,
    input: Vec<u8>,
) -> anyhow::Result<ExitCode> {
    let runtime = match args.sandbox.runtime(&target.sandbox) {
        Ok(runtime) => runtime,
        Err(err) => return finish(&args, &target.name, Err((&err).into()), None),
    };
    // A derived kv namespace comes from the version first loaded, and stays
    // the same across reloads: they are new versions of the same plugin.
    let sandbox = match args.sandbox.trust.keys.source(&target.path).await {
        Ok(source) => target.sandbox_for(&source, &runtime),
        Err(err) => Err(err),
    };
    let sandbox = match sandbox {
        Ok(sandbox) => sandbox,
        Err(err) => return finish(&args, &target.name, Err((&err).into()), None),
    };
    // Listening before the plugin loads: its warning may be the cue to
    // interrupt, and a long compile can be interrupted too.
    let mut interrupted = std::pin::pin!(interrupted());
    let registry = Registry::new(runtime);
    let loaded = tokio::select! {
        loaded = registry.load_file(&target.name, &target.path, sandbox) => loaded,
        () = &mut interrupted => Err(Error::Cancelled {
            reason: "interrupted while the plugin was loading".into(),
        }),
    };
    if let Err(err) = loaded {
        return finish(&args, &target.name, Err((&err).into()), None);
    }
    if let Some(plugin) = registry.get(&target.name) {
        output::warn_if_unverified(plugin.info(), plugin.sandbox());
    }
    let args = Arc::new(args);
    let input: Arc<[u8]> = input.into();
    let mut manifest = args.sandbox.manifest.as_deref().map(FileVersion::of);
    let mut reloads = registry.watch(WATCH_INTERVAL);
    let mut ticks = tokio::time::interval(WATCH_INTERVAL);
    let mut code = ExitCode::SUCCESS;
    let mut run = Some(spawn_run(&registry, &args, &target.name, &input));
    loop {
        tokio::select! {
            finished = async { run.as_mut().expect("guarded").await }, if run.is_some() => {
                run = None;
                code = finished.context("the run failed")??;
            }
            reload = reloads.next() => match reload {
                Some(Reload::Replaced { name, from, to }) => {
                    eprintln!("warden: {name} changed ({} → {}); running `{}` again", short(&from), short(&to), args.action());
                    if let Some(previous) = run.take() {
                        code = previous.await.context("the run failed")??;
                    }
                    run = Some(spawn_run(&registry, &args, &name, &input));
                }
                Some(Reload::Failed { name, error }) => {
                    output::print_guest_line(&format!("warden: the new version of {name} was refused; the previous one keeps serving: {error}"));
                }
                Some(_) => {}
                None => break,
            },
            _ = ticks.tick(), if manifest.is_some() => {
                let Some(seen) = &manifest else { continue };
                let now = FileVersion::of(&seen.path);
                if now != *seen {
                    manifest = Some(now);
                    if let Some(name) = reload_manifest(&registry, &args).await {
                        eprintln!("warden: the manifest changed; running `{}` again", args.action());
                        if let Some(previous) = run.take() {
                            code = previous.await.context("the run failed")??;
                        }
                        run = Some(spawn_run(&registry, &args, &name, &input));
                    }
                }
            }
            () = &mut interrupted => {
                let stopped = registry.shutdown(SHUTDOWN_GRACE).await;
                if let Some(last) = run.take() {
                    code = last.await.context("the run failed")??;
                }
                if stopped.cancelled > 0 {
                    eprintln!("warden: interrupted; cancelled the call in flight");
                }
                break;
            }
        }
    }
    Ok(code)
}

/// Loads the changed manifest's entry (plus the flags, as at start) into
/// `registry` and returns the plugin's name; `None`, said on stderr, when
/// it was refused and the previous version keeps serving. The next watch
/// tick reports the reload (or its failure).
async fn reload_manifest(registry: &Registry, args: &RunArgs) -> Option<String> {
    let refused = "warden: the changed manifest was refused; the previous version keeps serving";
    let target = match args.sandbox.resolve(&args.plugin) {
        Ok(target) => target,
        Err(err) => {
            output::print_guest_line(&format!("{refused}: {err:#}"));
            return None;
        }
    };
    if let Err(err) = registry
        .load_file(&target.name, &target.path, target.sandbox)
        .await
    {
        // A load error may quote the plugin's own text (its import names).
        output::print_guest_line(&format!("{refused}: {err}"));
        return None;
    }
    Some(target.name)
}

/// Runs the action once on the registry's current version, in the background.
fn spawn_run(
    registry: &Registry,
    args: &Arc<RunArgs>,
    name: &str,
    input: &Arc<[u8]>,
) -> tokio::task::JoinHandle<anyhow::Result<ExitCode>> {
    let (registry, args, name, input) = (
        registry.clone(),
        args.clone(),
        name.to_owned(),
        input.clone(),
    );
    tokio::spawn(async move {
        let Outcome { result, report } = registry.execute(&name, args.action(), &input).await;
        let report = (!matches!(result, Err(Error::Cancelled { .. }))).then_some(report);
        let result = explained(&args, registry.get(&name).as_ref(), result).await;
        finish(&args, &name, result, report.as_ref())
    })
}

/// The first characters of a SHA-256, enough to tell versions apart.
fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(12)]
}

/// A file's modification time and size, to notice that it changed.
#[derive(PartialEq, Eq)]
struct FileVersion {
    path: std::path::PathBuf,
    modified: Option<std::time::SystemTime>,
    len: Option<u64>,
}

impl FileVersion {
    fn of(path: &std::path::Path) -> Self {
        let metadata = std::fs::metadata(path).ok();
        FileVersion {
            path: path.to_owned(),
            modified: metadata.as_ref().and_then(|m| m.modified().ok()),
            len: metadata.map(|m| m.len()),
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM. On Unix the handlers
/// are installed when this is called, not when the future is first polled,
/// so a signal in between is not lost (and does not kill the process);
/// elsewhere Ctrl-C is caught from the first poll.
fn interrupted() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        /// The next delivery of `listener`; never, if it could not be
        /// installed.
        async fn delivered(listener: Option<&mut Signal>) {
            match listener {
                Some(listener) => {
                    listener.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        let mut terminate = signal(SignalKind::terminate()).ok();
        async move {
            tokio::select! {
                () = delivered(interrupt.as_mut()) => {}
                () = delivered(terminate.as_mut()) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        let interrupt = tokio::signal::ctrl_c();
        async move {
            let _ = interrupt.await;
        }
    }
}

/// Prints the result; `report` is `None` when the call never started.
fn finish(
    args: &RunArgs,
    plugin: &str,
    result: Result<Vec<u8>, Failure>,
    report: Option<&Report>,
) -> anyhow::Result<ExitCode> {
    if args.json {
        let report = report.cloned().unwrap_or_default();
        output::print_json(&output::call_json(plugin, args.action(), &result, &report))
            .context("writing the report")?;
    } else {
        if let Ok(bytes) = &result {
            output::print_output(bytes, args.watch).context("writing the output")?;
        }
        report_on_stderr(&result, report);
    }
    Ok(exit_code(&result))
}

/// What the guest wrote and logged and the one-line report, on stderr; for
/// a call that never started (`report` is `None`), its failure alone.
fn report_on_stderr<T>(result: &Result<T, Failure>, report: Option<&Report>) {
    let message = result
        .as_ref()
        .err()
        .map(|failure| failure.message.as_str());
    match (report, result) {
        (Some(report), _) => output::print_report_with(message, report),
        (None, Err(failure)) => output::print_failure(failure),
        (None, Ok(_)) => {}
    }
}

/// The exit code for a call's result.
fn exit_code<T>(result: &Result<T, Failure>) -> ExitCode {
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(failure) => failure.exit_code(),
    }
}

/// Input read within a limit.
pub enum Input {
    /// All of it.
    Bytes(Vec<u8>),
    /// More than the input limit: counted, not kept.
    TooLarge { size: usize },
}

/// Where `warden run`'s input comes from, before it is read.
enum InputSource {
    /// `--input`'s text, within the input limit.
    Whole(Vec<u8>),
    /// Stdin or `--input-file`, opened.
    Reader(InputReader),
}

impl InputSource {
    /// The whole input, read within `limit`, or the failure to report.
    async fn read_whole(self, limit: usize) -> Result<Vec<u8>, Failure> {
        match self {
            InputSource::Whole(bytes) => Ok(bytes),
            InputSource::Reader(reader) => bounded(reader.read_bounded(limit).await, limit),
        }
    }
}

/// Stdin or an input file, opened but not read yet.
struct InputReader {
    reader: Pin<Box<dyn AsyncRead + Send>>,
    /// What it is, for errors: `stdin` or ``--input-file `PATH` ``.
    name: String,
}

impl InputReader {
    /// Stdin, unless it is a terminal (a person would have to type the
    /// whole input before anything runs): then an empty input. It is read
    /// on Tokio's blocking thread, so that the call goes on while a read
    /// waits.
    fn stdin() -> Self {
        let reader: Pin<Box<dyn AsyncRead + Send>> = if std::io::stdin().is_terminal() {
            Box::pin(tokio::io::empty())
        } else {
            Box::pin(tokio::io::stdin())
        };
        InputReader {
            reader,
            name: "stdin".to_owned(),
        }
    }

    /// Reads it to its end, keeping at most `limit` bytes in memory.
    async fn read_bounded(self, limit: usize) -> anyhow::Result<Input> {
        let InputReader { mut reader, name } = self;
        let mut bytes = Vec::new();
        let read = async {
            (&mut reader)
                .take(u64::try_from(limit).unwrap_or(u64::MAX))
                .read_to_end(&mut bytes)
                .await?;
            tokio::io::copy(&mut reader, &mut tokio::io::sink()).await
        };
        let rest = read.await.with_context(|| format!("cannot read {name}"))?;
        Ok(if rest == 0 {
            Input::Bytes(bytes)
        } else {
            Input::TooLarge {
                size: bytes
                    .len()
                    .saturating_add(usize::try_from(rest).unwrap_or(usize::MAX)),
            }
        })
    }
}

/// Opens the input: `--input`'s text is checked against `limit` at once;
/// `--input-file` is opened and stdin taken, neither read yet.
async fn open_input(args: &RunArgs, limit: usize) -> Result<InputSource, Failure> {
    if let Some(text) = &args.input {
        let input = if text.len() > limit {
            Input::TooLarge { size: text.len() }
        } else {
            Input::Bytes(text.clone().into_bytes())
        };
        return bounded(Ok(input), limit).map(InputSource::Whole);
    }
    let Some(path) = &args.input_file else {
        return Ok(InputSource::Reader(InputReader::stdin()));
    };
    let name = format!("--input-file `{}`", path.display());
    match tokio::fs::File::open(path).await {
        Ok(file) => Ok(InputSource::Reader(InputReader {
            reader: Box::pin(file),
            name,
        })),
        Err(err) => {
            let err = anyhow::Error::new(err).context(format!("cannot read {name}"));
            Err(Failure::before_loading(&err))
        }
    }
}

/// Reads stdin to its end (empty when it is a terminal), keeping at most
/// `limit` bytes in memory.
pub async fn read_stdin(limit: usize) -> anyhow::Result<Input> {
    InputReader::stdin().read_bounded(limit).await
}

/// The bytes of `input`, read within `limit`, or the failure to report:
/// the limit it went past, or why it could not be read.
pub fn bounded(input: anyhow::Result<Input>, limit: usize) -> Result<Vec<u8>, Failure> {
    match input {
        Ok(Input::Bytes(bytes)) => Ok(bytes),
        Ok(Input::TooLarge { size }) => Err((&Error::InputTooLarge { size, limit }).into()),
        Err(err) => Err(Failure::before_loading(&err)),
    }
}
