//! `pilot-discovery`: istiod's command line.

use clap::{Parser, Subcommand};
use pilot::app::App;
use pilot::config::args::{DiscoveryArgs, Features};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "pilot-discovery", about = "Istio Pilot: service discovery, traffic management and certificates for the mesh", version = pilot::version::VERSION)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the xDS discovery service.
    Discovery(Box<DiscoveryArgs>),
    /// Print version information.
    Version {
        /// Print only the version number.
        #[arg(short, long)]
        short: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version { short } => {
            if short {
                println!("{}", pilot::version::VERSION);
            } else {
                println!("{}", pilot::version::build_info());
            }
            Ok(())
        }
        Command::Discovery(args) => {
            init_logging(&args.log_output_level, args.log_as_json);
            let features = Features::from_env()?;
            let app = App::start(*args, features).await?;
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
