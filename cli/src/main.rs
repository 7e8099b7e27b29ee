//! `missive`: run the whole app in one process (`missive dev`, the default) or prepare a
//! database (`missive migrate`).

use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::AppState;
use common::config::Config;
use common::db::Db;
use secrecy::{ExposeSecret, SecretString};

/// Where `missive dev` keeps its data when `DATABASE_URL` is unset.
const DEV_DATABASE_URL: &str = "sqlite://.missive/missive.db";

#[derive(Parser)]
#[command(version, about = "Missive: a messaging app made of Knative functions")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run every function in this process on one port (the default). With nothing set it
    /// uses a SQLite file under ./.missive/ and in-process stores; set DATABASE_URL and
    /// REDIS_URL to run on MariaDB and Redis.
    Dev,
    /// Create the database named by DATABASE_URL if missing and apply the migrations.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::telemetry::init(&cli.config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("missive: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Dev) {
            Command::Dev => dev(cli.config).await,
            Command::Migrate => migrate(cli.config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("missive: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn prepare_database(url: &str, max_connections: u32) -> anyhow::Result<()> {
    Db::create_if_missing(url).await?;
    let db = Db::connect_lazy(url, max_connections)?;
    db.migrate().await?;
    db.close().await;
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let url = config.database_url.context("DATABASE_URL is required")?;
    prepare_database(url.expose_secret(), 1).await?;
    tracing::info!("database is migrated");
    Ok(())
}

async fn dev(mut config: Config) -> anyhow::Result<()> {
    let url = config
        .database_url
        .get_or_insert_with(|| SecretString::from(DEV_DATABASE_URL))
        .expose_secret()
        .to_owned();
    prepare_database(&url, 1).await?;
    let state = AppState::build(config)?;
    let app = missive::app(state.clone());
    // Loopback only: a development server should not be reachable from the network.
    let listener = common::serve::bind_on(Ipv4Addr::LOCALHOST, state.config.port).await?;
    let addr = listener.local_addr()?;
    #[allow(clippy::print_stdout)]
    {
        println!("Missive is running at http://{addr}/ (API under /api, Ctrl-C to stop)");
    }
    common::serve::serve(listener, app, state).await
}
