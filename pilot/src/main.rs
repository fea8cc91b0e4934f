//! `pilot-discovery`: istiod's command line.

use clap::{Parser, Subcommand};
use pilot::app::App;
use pilot::args::DiscoveryArgs;
use pilot::settings::{Env, Settings};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "pilot-discovery", args_override_self = true, about = "Istio Pilot: service discovery, traffic management and certificates for the mesh", version = pilot::version::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the xDS discovery service.
    Discovery(Box<DiscoveryArgs>),
    /// Validate Istio configuration files; exits 1 when any resource is invalid.
    Validate {
        /// A manifest file or a folder of them (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Print version information.
    Version {
        /// Print only the version number.
        #[arg(short, long)]
        short: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = parse_tolerating_unknown_flags(std::env::args().collect());
    match cli.command {
        Command::Version { short } => {
            if short {
                println!("{}", pilot::version::VERSION);
            } else {
                println!("{}", pilot::version::build_info());
            }
            Ok(())
        }
        Command::Validate { files } => {
            let summary = pilot::validation::files::validate_paths(&files);
            for finding in &summary.findings {
                println!("{finding}");
            }
            eprintln!(
                "{} Istio resources checked, {} invalid, {} other documents skipped",
                summary.resources, summary.invalid, summary.skipped
            );
            std::process::exit(if summary.is_valid() { 0 } else { 1 });
        }
        Command::Discovery(args) => {
            init_logging(&args.log_output_level, args.log_as_json);
            #[cfg(feature = "jemalloc")]
            if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
                tracing::warn!(error = %e, "jemalloc's background thread is off: freed memory returns to the system later");
            }
            let settings = Settings::from_env(&Env::process())?;
            let app = App::start(*args, settings).await?;
            let stop = app.shutdown_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("received shutdown signal; draining");
                stop.cancel();
            });
            app.wait().await
        }
    }
}

const SUBCOMMANDS: [&str; 3] = ["discovery", "version", "validate"];

/// Parses the command line; like upstream istiod, unknown `--flags` are ignored (with a
/// warning) so that args written for a newer or older istiod still start this one, except
/// `discovery` flags naming a TLS, certificate, CA or authentication setting, which stop it
/// (`args::unknown_security_flag`).
fn parse_tolerating_unknown_flags(mut args: Vec<String>) -> Cli {
    let mut ignored = Vec::new();
    loop {
        match Cli::try_parse_from(&args) {
            Ok(cli) => {
                for flag in ignored {
                    eprintln!("warning: ignoring unknown flag {flag}");
                }
                return cli;
            }
            Err(e) if e.kind() == clap::error::ErrorKind::UnknownArgument => {
                let Some(clap::error::ContextValue::String(flag)) =
                    e.get(clap::error::ContextKind::InvalidArg)
                else {
                    e.exit()
                };
                let name = flag.split('=').next().unwrap_or(flag).to_owned();
                // Security flags of `discovery` are never ignored.
                let discovery = args
                    .iter()
                    .skip(1)
                    .find(|a| SUBCOMMANDS.contains(&a.as_str()))
                    .is_some_and(|a| a == "discovery");
                if discovery {
                    if let Some(error) = pilot::args::unknown_security_flag(flag) {
                        eprintln!("error: {error}");
                        std::process::exit(2);
                    }
                }
                let Some(pos) = args
                    .iter()
                    .position(|a| a == &name || a.starts_with(&format!("{name}=")))
                else {
                    e.exit()
                };
                let removed = args.remove(pos);
                // `--flag value`: the value goes too, unless it is a flag or a subcommand.
                let takes_next = !removed.contains('=')
                    && args
                        .get(pos)
                        .is_some_and(|v| !v.starts_with('-') && !SUBCOMMANDS.contains(&v.as_str()));
                if takes_next {
                    args.remove(pos);
                }
                ignored.push(removed);
            }
            Err(e) => e.exit(),
        }
    }
}

/// Maps istio's `--log_output_level=scope:level,...` to a tracing filter; `default` is the
/// level for everything.
fn init_logging(levels: &str, json: bool) {
    let mut directives = Vec::new();
    for part in levels.split(',').filter(|p| !p.is_empty()) {
        let (scope, level) = part.split_once(':').unwrap_or(("default", part));
        let level = match level {
            "none" => "off",
            "fatal" => "error",
            other => other,
        };
        if scope == "default" {
            directives.insert(0, level.to_owned());
        } else {
            directives.push(format!("pilot::{scope}={level}"));
        }
    }
    let filter =
        EnvFilter::try_new(directives.join(",")).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn unknown_flags_are_ignored() {
        let cli = parse_tolerating_unknown_flags(args(
            "pilot-discovery discovery --futureFlag=1 --otherFlag x --domain a.org --domain example.org --boolFlag",
        ));
        let Command::Discovery(d) = cli.command else {
            panic!("want discovery")
        };
        assert_eq!(d.domain, "example.org");
    }
}
