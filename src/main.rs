//! The `breakwater` binary: parse the command line, set up logging, build
//! the runtime, and hand over to the library. `anyhow` lives only here.

use std::process::ExitCode;

use anyhow::Context;
use breakwater::cli::{Cli, Command, RunArgs};
use breakwater::config::{self, Overrides};
use breakwater::reload::ConfigSource;
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    breakwater::telemetry::init(cli.log_format);
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
        Command::Check { config } => Ok(check(&config)),
        Command::Run(args) => run(args),
        Command::Demo => {
            runtime(None)?.block_on(breakwater::demo::run())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim(args) => {
            runtime(None)?.block_on(breakwater::sim::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load_file(path, &Overrides::default()) {
        Ok(config) => {
            print!("{}", config.to_yaml());
            eprintln!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        listen: args.listen,
        upstream: args.upstream,
        admin: args.admin,
        threads: args.threads,
        command: args.command,
    };
    let (loaded, source) = match &args.config {
        Some(path) => (
            config::load_file(path, &overrides),
            ConfigSource::File(path.clone()),
        ),
        None => (
            config::load_str(config::DEFAULT_CONFIG, "<embedded default>", &overrides),
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
/// process may use (affinity and cgroup quota). Always the multi-thread
/// scheduler: the current-thread one was tried for a single thread (see
/// docs/BENCHMARKS.md) and its open-loop tail latency was worse.
fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    builder.build().context("cannot start the tokio runtime")
}
