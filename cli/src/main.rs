//! `missive`: run the whole app in one process (`missive dev`, the default), prepare a
//! database (`missive migrate`), or publish messages as an event producer would
//! (`missive publish`).

use std::io::Read;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use missive::dispatcher::{self, Delivery, Sink};
use missive::registry;
use missive_adapters::events::kafka::{self, KafkaConnection, KafkaPublisher};
use missive_adapters::events::{EventPublisher, HttpSink};
use missive_adapters::sql::Db;
use missive_app::config::Config;
use missive_app::{AppState, Topic};
use missive_core::event::{
    AttributesReader as _, EventBuilder as _, EventBuilderV10, EventKind, JSON,
    MessageSubmittedData, TRACEPARENT,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Where `missive dev` keeps its data when `DATABASE_URL` is unset.
const DEV_DATABASE_URL: &str = "sqlite://.missive/missive.db";

/// Partitions of the topics `missive dev` creates.
const DEV_PARTITIONS: i32 = 4;

#[derive(Parser)]
#[command(version, about = "Missive: a messaging app made of Knative functions")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
    #[command(flatten)]
    dispatch: DispatchArgs,
}

/// How `missive dev` delivers Kafka records to event functions.
#[derive(Args)]
struct DispatchArgs {
    /// Attempts per event before it goes to the dead-letter topic.
    #[arg(long, env = "DISPATCH_MAX_ATTEMPTS", default_value_t = 5)]
    dispatch_max_attempts: u32,
    /// First retry delay in milliseconds; doubles on each retry.
    #[arg(long, env = "DISPATCH_BACKOFF_MS", default_value_t = 200)]
    dispatch_backoff_ms: u64,
    /// The built web app `missive dev` serves at `/`.
    #[arg(long, env = "FRONTEND_DIR", default_value = "frontend/dist")]
    frontend_dir: std::path::PathBuf,
    /// Port of the event endpoints (`/_events/<function>`, on 127.0.0.1): apart from the
    /// public port, so a web page cannot post events.
    #[arg(long, env = "DEV_EVENTS_PORT", default_value_t = 8081)]
    events_port: u16,
    /// Host names `missive dev` answers to (comma-separated, any port); other `Host`
    /// headers get 403, which stops DNS rebinding.
    #[arg(long, env = "DEV_ALLOWED_HOSTS", value_delimiter = ',', default_value = missive::local_only::DEFAULT_HOSTS)]
    allowed_hosts: Vec<String>,
    /// The web app's security headers (`CSP_CONNECT_SRC`; HSTS with `COOKIE_SECURE`).
    #[command(flatten)]
    site: web::SiteOptions,
}

#[derive(Subcommand)]
enum Command {
    /// Run every function in this process on one port (the default). With nothing set it
    /// uses a SQLite file under ./.missive/ and in-process stores; set DATABASE_URL and
    /// REDIS_URL to run on MariaDB and Redis, and KAFKA_BROKERS to move events to Kafka
    /// (with a dispatcher doing KafkaSource's job).
    Dev,
    /// Create the database named by DATABASE_URL if missing and apply the migrations.
    Migrate,
    /// Print the OpenAPI document of the HTTP API (what `GET /api/openapi.json` serves);
    /// the web app's API types are generated from it (frontend/scripts/api-types.sh).
    Openapi,
    /// Publish `io.missive.message.submitted.v1` events to the inbox topic (KAFKA_BROKERS),
    /// or as HTTP CloudEvents with --http.
    Publish(PublishArgs),
}

#[derive(Args)]
struct PublishArgs {
    /// Author of the message (with --text).
    #[arg(long, requires = "text")]
    user: Option<String>,
    /// Text of the message (with --user).
    #[arg(long, requires = "user")]
    text: Option<String>,
    /// A file of messages, `-` for stdin: JSON lines or a JSON array of
    /// `{"username": ..., "text": ...}`.
    #[arg(long, conflicts_with = "text")]
    file: Option<String>,
    /// POST each event to this URL (binary mode) instead of Kafka, e.g. a Broker ingress
    /// or `missive dev`'s `http://127.0.0.1:8081/_events/message-ingest`.
    #[arg(long)]
    http: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        // No runtime, no telemetry: a build step, not a server.
        #[allow(clippy::print_stdout)]
        {
            print!("{}", missive::openapi::json());
        }
        return ExitCode::SUCCESS;
    }
    let telemetry = missive_telemetry::init("missive", &cli.config.log_level);
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
            Command::Dev => dev(cli.config, cli.dispatch).await,
            Command::Migrate => migrate(cli.config).await,
            Command::Publish(args) => publish(cli.config, args).await,
            // Printed above, before the runtime and telemetry start.
            Command::Openapi => Ok(()),
        }
    });
    // Out of the runtime: flush spans and logs before exiting.
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("missive: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn prepare_database(config: &Config) -> anyhow::Result<()> {
    let mut url = config.database_url()?;
    if let Some(source) = config.database_credentials()? {
        // One short run: the secret's password is read once, into the URL.
        let credentials = missive_adapters::credentials::CredentialCache::new(source)
            .get()
            .await?;
        url = missive_adapters::sql::url_with_credentials(url.expose_secret(), &credentials)?;
    }
    let url = url.expose_secret();
    Db::create_if_missing(url).await?;
    // One connection; migrations may wait on locks a running release holds, so only
    // requests get the short bounds.
    let db = Db::connect_lazy(
        url,
        missive_adapters::sql::PoolSettings {
            max_connections: 1,
            acquire_timeout: std::time::Duration::from_secs(30),
            statement_timeout: None,
            ..config.pool_settings()
        },
    )?;
    db.migrate().await?;
    // Data the migrations cannot fix in SQL: search tokens of an older tokenizer.
    missive_app::messages::store::reindex_search(&db).await?;
    db.close().await;
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    prepare_database(&config).await?;
    tracing::info!("database is migrated");
    Ok(())
}

async fn dev(mut config: Config, mut dispatch: DispatchArgs) -> anyhow::Result<()> {
    dispatch.site.hsts = config.cookie_secure;
    config
        .database_url
        .get_or_insert_with(|| SecretString::from(DEV_DATABASE_URL));
    // Built before any I/O (its pools connect lazily), so a setting that cannot work
    // (Kafka's, say) stops the process before the database is touched.
    let state = AppState::build(config)?;
    prepare_database(&state.config).await?;
    if !web::is_built(&dispatch.frontend_dir) {
        tracing::warn!(
            dir = %dispatch.frontend_dir.display(),
            build = web::BUILD_HINT,
            "the web app is not built; serving the API only"
        );
    }
    let app = missive::local_only::only_hosts(
        missive::frontend::with_site(
            missive::app(state.clone()),
            web::site(dispatch.frontend_dir.clone(), &dispatch.site),
        ),
        dispatch.allowed_hosts.clone(),
    );
    let events_app = missive::local_only::only_hosts(
        missive::events_app(state.clone()),
        dispatch.allowed_hosts.clone(),
    );
    let db = state.db.clone();
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(kafka) = state.config.kafka()? {
        start_dispatchers(&state, &kafka, &dispatch, &mut tasks).await?;
    }
    tasks.spawn(relay_every_minute(state.clone()));
    // Loopback only: a development server should not be reachable from the network.
    let listener = missive_serve::bind_on(Ipv4Addr::LOCALHOST, state.config.port).await?;
    let addr = listener.local_addr()?;
    let events_listener = missive_serve::bind_on(Ipv4Addr::LOCALHOST, dispatch.events_port).await?;
    let events_addr = events_listener.local_addr()?;
    missive_serve::cancel_on_signal(state.shutdown.clone())?;
    let ready = missive_telemetry::metrics::record_ready();
    tracing::info!(%addr, %events_addr, start_to_ready_ms = ready.as_secs_f64() * 1e3, "serving");
    #[allow(clippy::print_stdout)]
    {
        println!("Missive is running at http://{addr}/ (API under /api, Ctrl-C to stop)");
        println!("Event endpoints: http://{events_addr}/_events/<function>");
    }
    tasks.spawn({
        let serving = missive_serve::Serving {
            listener: events_listener,
            app: events_app,
            shutdown: state.shutdown.clone(),
            grace: state.config.shutdown_grace(),
            on_stop: None,
            connections: state.config.connection_limits(),
        };
        async move {
            if let Err(err) = missive_serve::serve_until(serving).await {
                tracing::error!(error = format!("{err:#}"), "the event endpoints stopped");
            }
        }
    });
    missive_serve::serve_until(missive_serve::Serving {
        listener,
        app,
        shutdown: state.shutdown.clone(),
        grace: state.config.shutdown_grace(),
        on_stop: Some(Box::pin(async move { db.close().await })),
        connections: state.config.connection_limits(),
    })
    .await?;
    tasks.shutdown().await;
    Ok(())
}

async fn start_dispatchers(
    state: &AppState,
    kafka: &KafkaConnection,
    dispatch: &DispatchArgs,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    let c = &state.config;
    kafka::ensure_topics(
        kafka,
        &[
            &c.kafka_events_topic,
            &c.kafka_inbox_topic,
            &c.kafka_dlq_topic,
        ],
        DEV_PARTITIONS,
    )
    .await?;
    let delivery = Arc::new(Delivery {
        kafka: kafka.clone(),
        dlq_topic: c.kafka_dlq_topic.clone(),
        max_attempts: dispatch.dispatch_max_attempts.max(1),
        backoff: Duration::from_millis(dispatch.dispatch_backoff_ms),
    });
    let dlq = Arc::new(KafkaPublisher::new(kafka, &c.kafka_dlq_topic)?);
    // Each sink gets the layers its Knative service has (HTTP span, limits, timeout), so
    // a delivery here looks like a delivery there.
    let sinks = [Topic::Events, Topic::Inbox].into_iter().flat_map(|topic| {
        let topic_name = topic.name(c).to_owned();
        registry::consumers_of(topic).map(move |function| Sink {
            name: function.name,
            topic: topic_name.clone(),
            group: format!("{topic_name}-{}", function.name),
            router: state.serve((function.router)(state.clone())),
        })
    });
    for sink in sinks {
        let (delivery, dlq, shutdown) = (delivery.clone(), dlq.clone(), state.shutdown.clone());
        tasks.spawn(async move {
            let name = sink.name;
            if let Err(err) = dispatcher::run(sink, delivery, dlq, shutdown).await {
                tracing::error!(sink = name, error = format!("{err:#}"), "dispatcher failed");
            }
        });
    }
    Ok(())
}

/// What Knative's PingSource does for `outbox-relay`: run it every minute.
async fn relay_every_minute(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let min_age = Duration::from_secs(state.config.outbox_relay_min_age_secs);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.shutdown.cancelled() => return,
        }
        match state.outbox.relay("missive-dev", min_age).await {
            Ok(report) if report.published > 0 => {
                tracing::info!(published = report.published, "relayed outbox rows");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = format!("{err:#}"), "outbox relay failed"),
        }
    }
}

#[derive(Deserialize)]
struct Submission {
    username: String,
    text: String,
}

async fn publish(config: Config, args: PublishArgs) -> anyhow::Result<()> {
    let submissions = match (&args.file, &args.user, &args.text) {
        (Some(file), _, _) => read_submissions(file)?,
        (None, Some(user), Some(text)) => vec![Submission {
            username: user.clone(),
            text: text.clone(),
        }],
        _ => anyhow::bail!("give --user and --text, or --file"),
    };
    let publisher: Box<dyn EventPublisher> = match (&args.http, config.kafka()?) {
        (Some(url), _) => Box::new(HttpSink::new(url)?),
        (None, Some(kafka)) => Box::new(KafkaPublisher::new(&kafka, &config.kafka_inbox_topic)?),
        (None, None) => anyhow::bail!("set KAFKA_BROKERS, or give --http URL"),
    };
    let traceparent = missive_core::trace_context::new_traceparent();
    for submission in &submissions {
        let event = EventBuilderV10::new()
            .id(uuid::Uuid::new_v4().to_string())
            .source("/cli/missive-publish")
            .ty(EventKind::MessageSubmitted.type_name())
            .subject(submission.username.clone())
            .time(chrono::Utc::now())
            .extension(TRACEPARENT, traceparent.clone())
            .data(
                JSON,
                serde_json::to_value(MessageSubmittedData {
                    username: submission.username.clone(),
                    text: submission.text.clone(),
                })?,
            )
            .build()?;
        publisher
            .publish(&event)
            .await
            .with_context(|| format!("publishing event {}", event.id()))?;
    }
    tracing::info!(count = submissions.len(), "published");
    Ok(())
}

fn read_submissions(file: &str) -> anyhow::Result<Vec<Submission>> {
    let mut raw = String::new();
    if file == "-" {
        std::io::stdin().read_to_string(&mut raw)?;
    } else {
        raw = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    }
    if raw.trim_start().starts_with('[') {
        return serde_json::from_str(&raw).context("parsing the JSON array");
    }
    raw.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).with_context(|| format!("line {}: not a submission", n + 1))
        })
        .collect()
}
