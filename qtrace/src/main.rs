//! `qtrace`: see `qtrace --help`. The work happens in the library.
use std::process::ExitCode;

use clap::Parser as _;
use qtrace::cli::{Cli, Command, UsageError};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print as usual.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line, not clap's three: the reason is in the first.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("qtrace: {first}");
            return ExitCode::from(2);
        }
    };
    if cli.verbose {
        qtrace::cli::log_to_stderr();
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qtrace: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Watch(args) => qtrace::cli::watch::run(args).await,
            Command::Listeners(args) => qtrace::cli::listeners::run(args),
            Command::Doctor(args) => qtrace::cli::doctor::run(args).await,
            Command::Demo(args) => qtrace::cli::demo::run(args).await,
            Command::DemoScenario(args) => qtrace::cli::demo::scenario::scenario(args.phase.as_secs().max(1)),
            Command::Completions(args) => qtrace::cli::generate::completions(args.shell),
            Command::Manpage(args) => qtrace::cli::generate::manpage(args.dir.as_deref()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qtrace: error: {e:#}");
            ExitCode::from(if e.is::<UsageError>() { 2 } else { 1 })
        }
    }
}
