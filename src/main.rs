//! The `order-engine` binary: one executable for serving and for operators.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use order_engine::amqp::{AmqpConfig, DEFAULT_AMQP_URL};
use order_engine::app::{jwt_config, AppError, Application, LiveInputs};
use order_engine::auth::jwt::mint_dev_token;
use order_engine::config::source::{self, Loaded, StartOptions};
use order_engine::config::{validate, MigrationMode, Settings};
use order_engine::configsvc::flags::{FeatureFlags, FLAG_TTL_DEFAULT};
use order_engine::configsvc::{HealthEndpoint, Refresher, Registration, SelfRegistration, HEARTBEAT_INTERVAL};
use order_engine::loadgen::{LoadConfig, Rate, Transport, DEFAULT_SYMBOLS};
use order_engine::ops;
use order_engine::store::{redact_url, EventStore, StoreConfig};

/// mimalloc instead of glibc's malloc: allocation and free were about a fifth
/// of the engine's CPU under load (docs/BENCHMARKS.md, issue 12's profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "order-engine",
    version,
    about = "An event-sourced order engine for trading platforms"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "LOG_FORMAT_JSON", default_value_t = false, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// List the members (live and lapsed), each one's partitions and leader roles, and unowned work.
    Status,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine: HTTP API, order actors, saga, market, until Ctrl-C or SIGTERM.
    Serve,
    /// Print an order's whole story from the log: its events, its saga's steps and the ledger entries it caused.
    Audit {
        order_id: uuid::Uuid,
        #[arg(long, value_enum, default_value_t = AuditFormat::Table)]
        format: AuditFormat,
    },
    /// Rebuild read models from the log into fresh tables and swap them in; prints events per second.
    Replay {
        /// The read model to rebuild (known: orders).
        #[arg(long, value_name = "NAME", conflicts_with = "all", required_unless_present = "all")]
        projection: Option<String>,
        /// Rebuild every read model.
        #[arg(long)]
        all: bool,
        /// Keep the live rows of orders untouched after POSITION and rebuild the others
        /// from their streams (the live model must have reached POSITION).
        #[arg(long, value_name = "POSITION")]
        from: Option<u64>,
    },
    /// Check the log's invariants; prints each violation. Exit 0 healthy, 1 violations, 2 could not check.
    Verify,
    /// The processes sharing this PostgreSQL and the work each owns.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Write the log as JSON lines: one event per line, every field and both hashes.
    Export {
        /// First position to write (default 1).
        #[arg(long, value_name = "POSITION")]
        from: Option<u64>,
        /// Last position to write (default: the head).
        #[arg(long, value_name = "POSITION")]
        to: Option<u64>,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
    /// Load an export into an empty log, or into the log the file continues exactly.
    Import {
        /// Read this file instead of standard input.
        #[arg(long, value_name = "FILE")]
        input: Option<std::path::PathBuf>,
    },
    /// Print a development token (HS256) for a user, accepted by `serve` with the same secret.
    Token {
        /// The user the token speaks for.
        #[arg(long)]
        user: uuid::Uuid,
        /// How long it stays valid.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
    },
    /// Offer orders to a running engine (over RabbitMQ or HTTP) and measure end to end, up to the position update.
    Loadgen(LoadgenArgs),
    /// The configuration: where each setting comes from, and whether the config service agrees with the environment.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// A user's pre-trade controls as the log says: today's count, anomalies and hold; lift a hold.
    #[command(subcommand)]
    Controls(ControlsCommand),
}

#[derive(Debug, Subcommand)]
enum ControlsCommand {
    /// The user's trading day so far: orders counted, the last minute, the symbols, the anomalies fired, the hold.
    Show {
        #[arg(long)]
        user: uuid::Uuid,
    },
    /// Lift the hold an anomaly put on the user's orders; recorded in the log with who lifted it and why.
    Lift {
        #[arg(long)]
        user: uuid::Uuid,
        /// Who lifts it (recorded as `operator:<by>`).
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// For every key, the environment's value beside the config service's (masked): MATCH, MISMATCH or ERROR. Exit 0 only when all match.
    Validate,
    /// The effective settings as `serve` would load them, each with its source (env, config service, default); secrets masked.
    Show,
}

#[derive(Debug, clap::Args)]
struct LoadgenArgs {
    /// How orders reach the engine: seed 004 messages on orders.submit, or POST /api/v1/orders.
    #[arg(long, value_enum, default_value_t = TransportArg::Amqp)]
    transport: TransportArg,
    /// Orders per second offered on a fixed schedule (open loop), or `max`: as fast as --in-flight allows.
    #[arg(long, default_value = "100")]
    rate: Rate,
    /// Orders to send (the run ends at the first of --orders and --duration; 1000 when neither is given).
    #[arg(long)]
    orders: Option<u64>,
    /// How long to send, e.g. 30s.
    #[arg(long, value_parser = parse_ttl)]
    duration: Option<std::time::Duration>,
    /// Distinct users (new accounts, funded by the embedded ledger on first use).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Symbols, round-robin.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_SYMBOLS.map(String::from))]
    symbols: Vec<String>,
    /// Shares per MARKET BUY.
    #[arg(long, default_value_t = 1)]
    quantity: u32,
    /// With --rate max: orders sent and not yet completed; with a fixed rate: sends outstanding at once.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// An order with no position update this long after it was due is a timeout.
    #[arg(long, default_value = "30s", value_parser = parse_ttl)]
    timeout: std::time::Duration,
    /// The engine's process id: its VmRSS and VmHWM are sampled every 100 ms.
    #[arg(long)]
    engine_pid: Option<u32>,
    /// Where to write the JSON result (default: stdout).
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// The engine's HTTP address (default: http:// + ORDER_ENGINE_HTTP_ADDR).
    #[arg(long)]
    http_url: Option<String>,
    /// The prefix the engine's queues and exchange carry, if any.
    #[arg(long, default_value = "")]
    queue_prefix: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TransportArg {
    Amqp,
    Http,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AuditFormat {
    Table,
    Json,
}

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    order_engine::config::parse_duration(text)
}

/// The engine runs on every core: actix's system sits on a multi-threaded
/// Tokio runtime, so everything the engine spawns with `tokio::spawn` (the
/// reactor, saga tasks, the group-commit writer, log tails, the AMQP consumer
/// and publishers) is spread over one worker per core instead of sharing
/// actix's one thread, and the order actors are spread over arbiters of
/// their own (ORDER_ENGINE_ACTOR_THREADS, one per core by default). The HTTP
/// workers keep their own threads, as actix-web runs them.
fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("order-engine")
        .build()
        .context("starting the engine's runtime")?;
    actix_web::rt::System::with_tokio_rt(move || runtime).block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Traces only when OTEL_EXPORTER_OTLP_ENDPOINT is set; read here, at the
    // binary's edge, like the rest of the environment.
    let traces = order_engine::telemetry::TraceConfig::from_lookup(|name| std::env::var(name).ok());
    let traces = order_engine::telemetry::init(cli.log_json, traces.as_ref())?;
    let result = command(cli).await;
    if let Some(traces) = traces {
        // The last batch of spans goes out before the process ends.
        if let Err(error) = traces.shutdown() {
            tracing::warn!(%error, "could not send the last spans");
        }
    }
    result
}

/// The process environment as the settings read it: an empty variable is unset.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The settings from the sources the environment chooses (the config
/// service in production), or a message naming the key or URL and the cause.
async fn load() -> anyhow::Result<Loaded> {
    Ok(source::load(&process_env, &StartOptions::default()).await?)
}

async fn command(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => serve(load().await?).await,
        Command::Config(ConfigCommand::Show) => {
            let loaded = load().await?;
            // The CLI's output is the report.
            #[allow(clippy::print_stdout)]
            {
                println!("mode = {}", loaded.mode);
                println!("environment = {}", loaded.environment.as_deref().unwrap_or("(unset)"));
                for line in loaded.provenance.lines(&loaded.settings) {
                    println!("{line}");
                }
            }
            Ok(())
        }
        Command::Config(ConfigCommand::Validate) => {
            let report = validate::validate(&process_env).await?;
            // The CLI's output is the report; the exit code is the verdict for scripts.
            #[allow(clippy::print_stdout)]
            {
                print!("{}", report.render());
            }
            if !report.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Audit { order_id, format } => audit(&load().await?.settings, order_id, format).await,
        Command::Cluster {
            action: ClusterAction::Status,
        } => cluster_status(&load().await?.settings).await,
        Command::Controls(command) => controls(&load().await?.settings, command).await,
        Command::Replay { projection, all, from } => {
            let projections = match (projection, all) {
                (Some(name), _) => vec![ops::Projection::parse(&name)?],
                (None, _) => ops::Projection::ALL.to_vec(),
            };
            replay(&load().await?.settings, &projections, from).await
        }
        Command::Verify => {
            // Exit codes are the contract for scripts: 1 = violations found, 2 = could not check.
            let code = match verify(&load().await?.settings).await {
                Ok(true) => 0,
                Ok(false) => 1,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    2
                }
            };
            std::process::exit(code)
        }
        Command::Export { from, to, output } => {
            export(&load().await?.settings, ops::ExportRange { from, to }, output).await
        }
        Command::Import { input } => import(&load().await?.settings, input).await,
        Command::Token { user, ttl } => {
            let settings = load().await?.settings;
            let token = mint_dev_token(&jwt_config(&settings)?, user, ttl)?;
            // The CLI's output is the token itself, for `TOKEN=$(order-engine token …)`.
            #[allow(clippy::print_stdout)]
            {
                println!("{token}");
            }
            Ok(())
        }
        Command::Loadgen(args) => loadgen(&load().await?.settings, args).await,
    }
}

/// Runs the load generator on a multi-threaded runtime of its own (apart
/// from the engine's, should both run in one process), then writes the JSON
/// result and a summary on stderr.
async fn loadgen(settings: &Settings, args: LoadgenArgs) -> anyhow::Result<()> {
    let config = LoadConfig {
        transport: match args.transport {
            TransportArg::Amqp => Transport::Amqp,
            TransportArg::Http => Transport::Http,
        },
        amqp: AmqpConfig {
            queue_prefix: args.queue_prefix,
            ..AmqpConfig::new(settings.amqp_url.clone().unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned()))
        },
        http_url: args
            .http_url
            .unwrap_or_else(|| format!("http://{}", settings.http_addr)),
        jwt: jwt_config(settings)?,
        rate: args.rate,
        orders: args.orders.or(args.duration.is_none().then_some(1_000)),
        duration: args.duration,
        users: args.users,
        symbols: args.symbols,
        quantity: args.quantity,
        in_flight: args.in_flight,
        timeout: args.timeout,
        engine_pid: args.engine_pid,
    };
    let report = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map(|runtime| runtime.block_on(order_engine::loadgen::run(config)))
    })
    .await
    .context("the load generator's thread")?
    .context("starting the load generator's runtime")??;
    let json = serde_json::to_string_pretty(&report)? + "\n";
    match &args.output {
        Some(path) => std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?,
        None => {
            // The JSON result is the command's output.
            #[allow(clippy::print_stdout)]
            {
                print!("{json}");
            }
        }
    }
    eprint!("{}", order_engine::loadgen::summary(&report));
    Ok(())
}

/// Prints an order's story; an unknown order is an error naming the id and the database.
async fn audit(settings: &Settings, order_id: uuid::Uuid, format: AuditFormat) -> anyhow::Result<()> {
    let store = StoreConfig::from_url(&settings.database_url)?
        .open()
        .await
        .with_context(|| format!("opening the event log at {}", redact_url(&settings.database_url)))?;
    let story = order_engine::audit::order_story(store.as_ref(), order_id)
        .await?
        .with_context(|| {
            format!(
                "no order {order_id} in the log at {} (check the id and DATABASE_URL)",
                redact_url(&settings.database_url)
            )
        })?;
    let text = match format {
        AuditFormat::Table => order_engine::audit::render_table(order_id, &story),
        AuditFormat::Json => serde_json::to_string_pretty(&story)? + "\n",
    };
    // The report is the command's output.
    #[allow(clippy::print_stdout)]
    {
        print!("{text}");
    }
    Ok(())
}

/// Shows a user's trading day, or lifts the hold on their orders.
async fn controls(settings: &Settings, command: ControlsCommand) -> anyhow::Result<()> {
    let store = StoreConfig::from_url(&settings.database_url)?
        .open()
        .await
        .with_context(|| format!("opening the event log at {}", redact_url(&settings.database_url)))?;
    let controls = order_engine::controls::trading_day::UserControls::new(
        Arc::clone(&store),
        settings.pretrade.clone(),
        tokio::sync::watch::channel(settings.runtime.clone()).1,
        None,
        Arc::new(order_engine::clock::SystemClock),
        &prometheus::Registry::new(),
    )?;
    let text = match command {
        ControlsCommand::Show { user } => {
            let now = chrono::Utc::now();
            let day = controls.calendar().trading_day(now);
            let hydrated = order_engine::controls::trading_day::read_day(store.as_ref(), user, day).await?;
            order_engine::controls::trading_day::render_day(user, day, &hydrated.state, now)
        }
        ControlsCommand::Lift { user, by, reason } => {
            let until = controls.lift_hold(user, &format!("operator:{by}"), &reason).await?;
            format!("the hold on user {user}'s orders (until {until}) is lifted\n")
        }
    };
    // The report is the command's output.
    #[allow(clippy::print_stdout)]
    {
        print!("{text}");
    }
    Ok(())
}

/// Prints the cluster's members and owners as the database says now.
async fn cluster_status(settings: &Settings) -> anyhow::Result<()> {
    let url = &settings.database_url;
    anyhow::ensure!(
        url.starts_with("postgres://") || url.starts_with("postgresql://"),
        "a cluster runs on PostgreSQL; DATABASE_URL={} is not PostgreSQL (a SQLite engine is one process)",
        redact_url(url)
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await
        .with_context(|| format!("connecting to {}", redact_url(url)))?;
    let leases = order_engine::cluster::Leases::new(pool, order_engine::config::DEFAULT_LEASE_TTL);
    let (members, held) = (leases.members().await?, leases.leases().await?);
    let text = order_engine::cluster::render_status(&members, &held, chrono::Utc::now());
    // The report is the command's output.
    #[allow(clippy::print_stdout)]
    {
        print!("{text}");
    }
    Ok(())
}

async fn open_ops(settings: &Settings) -> anyhow::Result<(Arc<dyn EventStore>, ops::OpsDb)> {
    ops::open(&StoreConfig::from_url(&settings.database_url)?)
        .await
        .with_context(|| format!("opening the event log at {}", redact_url(&settings.database_url)))
}

async fn replay(settings: &Settings, projections: &[ops::Projection], from: Option<u64>) -> anyhow::Result<()> {
    let (store, db) = open_ops(settings).await?;
    let options = ops::ReplayOptions {
        from,
        ..ops::ReplayOptions::default()
    };
    for projection in projections {
        let bar = ops::progress::events_bar(projection.name());
        let report = ops::replay(Arc::clone(&store), &db, *projection, &options, &bar)
            .await
            .with_context(|| format!("replaying {}", projection.name()))?;
        bar.finish_and_clear();
        // The figure is the command's output.
        #[allow(clippy::print_stdout)]
        {
            println!(
                "replayed {}: {} events in {:.2} s ({:.0} events/s); swapped in at position {}{}",
                report.projection,
                report.events,
                report.elapsed.as_secs_f64(),
                report.events_per_second(),
                report.position,
                if report.orders_reread > 0 {
                    format!(", {} orders re-read from their streams", report.orders_reread)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(())
}

async fn export(
    settings: &Settings,
    range: ops::ExportRange,
    output: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let (store, _) = open_ops(settings).await?;
    let mut out: Box<dyn std::io::Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = ops::progress::events_bar("export");
    let written = ops::export(store.as_ref(), range, &mut out, &bar).await?;
    bar.finish_and_clear();
    // Standard output may be the export itself: the summary goes to stderr.
    eprintln!("exported {written} events");
    Ok(())
}

async fn import(settings: &Settings, input: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let (store, _) = open_ops(settings).await?;
    let mut reader: Box<dyn std::io::BufRead> = match &input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin().lock())),
    };
    let bar = ops::progress::events_bar("import");
    let source = input
        .as_ref()
        .map_or("standard input".to_owned(), |p| p.display().to_string());
    let imported = ops::import(store.as_ref(), &mut reader, &bar)
        .await
        .with_context(|| format!("importing {source}"))?;
    bar.finish_and_clear();
    let head = store.head_position().await?;
    // The summary is the command's output.
    #[allow(clippy::print_stdout)]
    {
        println!("imported {imported} events; the log's head is now position {head}");
    }
    Ok(())
}

/// Prints every violation and a summary; true when the log is healthy.
async fn verify(settings: &Settings) -> anyhow::Result<bool> {
    let (store, db) = open_ops(settings).await?;
    let options = ops::VerifyOptions {
        publication: settings.amqp_url.is_some(),
    };
    let bar = ops::progress::events_bar("verify");
    let report = ops::verify(store, &db, &options, &bar).await?;
    bar.finish_and_clear();
    let models: Vec<String> = report
        .models_compared
        .iter()
        .map(|(model, at)| format!("{model} at {at}"))
        .collect();
    // The findings are the command's output.
    #[allow(clippy::print_stdout)]
    {
        for violation in &report.violations {
            println!("{violation}");
        }
        if let Some(chain) = &report.chain {
            println!(
                "chain: {} events, {} before the chain existed, head {} log hash {}",
                chain.events,
                chain.unhashed_prefix,
                chain.head_position,
                chain.head_log_hash.map_or("none".to_owned(), |h| h.to_string())
            );
        }
        println!(
            "verify: {} events up to position {}, read models compared: {}; publishers {}; {}",
            report.events,
            report.head,
            if models.is_empty() {
                "none".to_owned()
            } else {
                models.join(", ")
            },
            if options.publication {
                "checked"
            } else {
                "not checked (no AMQP_URL)"
            },
            if report.is_healthy() {
                "no violations".to_owned()
            } else {
                format!("{} violations", report.violations.len())
            }
        );
    }
    Ok(report.is_healthy())
}

/// Builds the application through the library's composition root and
/// serves until SIGTERM or SIGINT.
async fn serve(loaded: Loaded) -> anyhow::Result<()> {
    let Loaded {
        settings,
        service,
        metrics: config_metrics,
        mode,
        ..
    } = loaded;
    // With the config service: flags from it, run-time values reloaded every TTL.
    let flags = Arc::new(FeatureFlags::new(
        service.as_ref().map(|cache| cache.client().clone()),
        FLAG_TTL_DEFAULT,
        config_metrics.clone(),
    ));
    let refresher = service.as_ref().map(|cache| {
        let env: order_engine::configsvc::refresh::Env = Arc::new(process_env);
        Arc::new(Refresher::new(
            Arc::clone(cache),
            env,
            mode == MigrationMode::NewWithFallback,
            settings.runtime.clone(),
        ))
    });
    let runtime = match &refresher {
        Some(refresher) => refresher.subscribe(),
        // From the environment: the values never change while the process runs.
        None => tokio::sync::watch::channel(settings.runtime.clone()).1,
    };
    let mut builder = Application::builder(settings.clone()).live(LiveInputs { runtime, flags });
    if let Some(cache) = &service {
        builder = builder.registry(cache.client().clone());
    }
    let app = builder.build().await?;
    for collector in config_metrics.collectors() {
        app.metrics().register(collector)?;
    }
    let refreshing = match (&refresher, &service) {
        (Some(refresher), Some(cache)) => Some(Arc::clone(refresher).spawn(cache.ttl())),
        _ => None,
    };
    // Registered with heartbeats until the stop signal.
    let mut registration = None;
    if let Some(cache) = &service {
        let service_url = settings.public_url.clone().unwrap_or_else(|| {
            let ip = settings.http_addr.ip();
            let host = if ip.is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                ip.to_string()
            };
            format!("http://{host}:{}", app.port())
        });
        let readiness = HealthEndpoint::new(format!("http://127.0.0.1:{}/health/ready", app.port()))?;
        registration = Some(
            SelfRegistration::start(
                Arc::new(cache.client().clone()),
                Arc::new(readiness),
                Registration {
                    health_check_url: format!("{}/health/ready", service_url.trim_end_matches('/')),
                    service_url,
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    region: settings.region.clone(),
                },
                HEARTBEAT_INTERVAL,
                config_metrics.clone(),
            )
            .await,
        );
    }
    // Leave the registry first: callers stop being sent here while requests drain.
    let stop = async move {
        let signal = order_engine::app::stop_signal().await;
        if let Some(registration) = registration {
            registration.stop().await;
        }
        signal
    };
    let result = app.run_until(stop).await;
    if let Some(refreshing) = refreshing {
        refreshing.abort();
    }
    match result {
        Err(AppError::ShutdownTimedOut { step, timeout }) => {
            // A step still stopping at the deadline (a database that never
            // answers, a broker that never closes) may hold the runtime: exit
            // now. A supervisor restarts the process, and the log is the source
            // of truth, so nothing acknowledged is lost.
            tracing::error!(
                step,
                timeout_ms = timeout.as_millis() as u64,
                "shutdown did not finish within ORDER_ENGINE_SHUTDOWN_TIMEOUT: {step} was still stopping; exiting with status 1"
            );
            std::process::exit(1)
        }
        result => Ok(result?),
    }
}
