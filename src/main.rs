//! The `breakwater` binary: parse the command line, set up logging, build
//! the runtime, and hand over to the library. `anyhow` lives only here.

use std::process::ExitCode;

use anyhow::Context;
use breakwater::cli::{CheckArgs, Cli, Command, IptablesAction, RunArgs};
use breakwater::config;
use breakwater::reload::ConfigSource;
use breakwater::telemetry::Style;
use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's terminal is for the tour: short lines, no access log.
    let style = match cli.command {
        Command::Demo => Style::Demo,
        _ => Style::Standard,
    };
    breakwater::telemetry::init(cli.log_format, style);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("breakwater: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check(args) => Ok(check(args)),
        Command::Run(args) => run(args),
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&config::schema())?;
            print_out(&format!("{schema}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            runtime(None)?.block_on(breakwater::demo::run())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim(args) => {
            runtime(None)?.block_on(breakwater::sim::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "breakwater", &mut script);
            print_out(&String::from_utf8_lossy(&script))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .context("cannot render the manual page")?;
            print_out(&String::from_utf8_lossy(&page))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Iptables(args) => iptables(args.action),
    }
}

/// `breakwater iptables print|install|remove`.
fn iptables(action: IptablesAction) -> anyhow::Result<ExitCode> {
    use breakwater::intercept;
    let applied = match action {
        IptablesAction::Print(args) => {
            let script = intercept::print(
                &args.options(),
                args.backend.backend.backend(),
                args.backend.ipv6,
            )?;
            print_out(&script)?;
            return Ok(ExitCode::SUCCESS);
        }
        IptablesAction::Install(args) => intercept::install(
            &args.options(),
            args.backend.backend.backend(),
            args.backend.ipv6,
        )
        .context("cannot install the interception rules")?,
        IptablesAction::Remove(args) => intercept::remove(args.backend.backend(), args.ipv6)
            .context("cannot remove the interception rules")?,
    };
    eprintln!(
        "breakwater: iptables backend {} ({})",
        applied.backend.as_str(),
        applied.why
    );
    let mut out = String::new();
    for command in &applied.commands {
        out.push_str(command);
        out.push('\n');
    }
    print_out(&out)?;
    if applied.commands.is_empty() {
        eprintln!("breakwater: nothing to change");
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads the file, or the embedded default, with the flags applied; prints
/// the effective config, or every error.
fn check(args: CheckArgs) -> ExitCode {
    let overrides = args.overrides.into_overrides();
    let (loaded, source) = match &args.config {
        Some(path) => (
            config::load_file(path, &overrides),
            path.display().to_string(),
        ),
        None => (
            config::load_str(config::DEFAULT_CONFIG, EMBEDDED, &overrides),
            EMBEDDED.to_owned(),
        ),
    };
    match loaded {
        Ok(config) => {
            if let Err(error) = print_out(&config.to_yaml()) {
                eprintln!("breakwater: {error:#}");
                return ExitCode::FAILURE;
            }
            eprintln!("{source}: ok");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout. A reader that went away (`| head`) is not an
/// error: it has what it wanted.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// How errors name the embedded default.
const EMBEDDED: &str = "<embedded default>";

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let overrides = args.overrides.into_overrides();
    let (loaded, source) = match &args.config {
        Some(path) => (
            config::load_file(path, &overrides),
            ConfigSource::File(path.clone()),
        ),
        None => (
            config::load_str(config::DEFAULT_CONFIG, EMBEDDED, &overrides),
            ConfigSource::Embedded,
        ),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let threads = config.runtime.threads;
    runtime(threads)?.block_on(async move {
        let running = breakwater::run::start(config, source, overrides).await?;
        running.until_signal().await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The runtime: `threads` workers, by default as many as the CPUs this
/// process may use (affinity and cgroup quota). One worker runs tokio's
/// current-thread scheduler: its one FIFO run queue serves hundreds of
/// busy connections in turn, where the multi-thread scheduler's single
/// worker let tasks that overflowed its local queue wait in the global
/// queue — at 512 connections p99 was 78 ms against 15.5 ms on the
/// current-thread scheduler (nginx 18 ms), with 4 % more throughput and
/// 6 % less CPU per request (docs/BENCHMARKS.md).
fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}
