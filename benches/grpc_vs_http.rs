//! One round trip over gRPC beside the same call over HTTP, against the app
//! `serve` runs (built by `Application::build`, HTTP and gRPC on port 0, the
//! embedded ledger, the orders projection): N sequential `SubmitOrder` (a
//! MARKET buy) and N sequential `GetOrderStatus` on each transport, each
//! timed from the client's send to its decoded answer, one client and one
//! connection per transport, so the figures are latency, not capacity.
//!
//! ```text
//! cargo bench --bench grpc_vs_http -- [--calls N] [--sqlite]
//! ```
//!
//! PostgreSQL from DATABASE_URL (a fresh database, dropped afterwards), or a
//! temporary SQLite file with `--sqlite`. Prints one JSON object.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use order_engine::app::Application;
use order_engine::auth::{mint_dev_token, JwtConfig};
use order_engine::config::Settings;
use order_engine::grpc::pb::order_service_client::OrderServiceClient;
use order_engine::grpc::pb::{GetOrderStatusRequest, SubmitOrderRequest};
use order_engine::loadgen::LatencySummary;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::Request;
use uuid::Uuid;

struct Options {
    calls: usize,
    sqlite: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        calls: 2_000,
        sqlite: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--calls" => {
                options.calls = args
                    .next()
                    .context("--calls needs a number")?
                    .parse()
                    .context("--calls needs a whole number")?
            }
            "--sqlite" => options.sqlite = true,
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    // As `serve` runs: actix's system on a multi-threaded Tokio runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    actix_rt::System::with_tokio_rt(move || runtime).block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let admin_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db_name = format!("oe_bench_grpc_{}", Uuid::new_v4().simple());
    let dir = tempfile::tempdir()?;
    let database_url = if options.sqlite {
        format!("sqlite:{}", dir.path().join("log.db").display())
    } else {
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("PostgreSQL is required at {admin_url}"))?;
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .await?;
        let (base, _) = admin_url
            .rsplit_once('/')
            .context("DATABASE_URL has no database part")?;
        format!("{base}/{db_name}")
    };
    let mut settings = Settings::from_lookup(|_| None)?;
    settings.database_url = database_url;
    settings.http_addr = "127.0.0.1:0".parse()?;
    settings.grpc_addr = "127.0.0.1:0".parse()?;
    settings.demo_balance = Decimal::from(1_000_000_000);
    let app = Application::builder(settings).frozen_market().build().await?;
    let (http_port, grpc_port) = (app.port(), app.grpc_port());
    actix_rt::spawn(app.run_until(std::future::pending()));
    let result = measure(&options, http_port, grpc_port).await;
    if !options.sqlite {
        let mut admin = PgConnection::connect(&admin_url).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    result
}

/// `message` with the user's `authorization` metadata.
fn authorized<T>(authorization: &MetadataValue<Ascii>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", authorization.clone());
    request
}

/// Times `calls` sequential runs of `call`.
async fn timed<F, Fut>(calls: usize, mut call: F) -> anyhow::Result<Value>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut latencies = Vec::with_capacity(calls);
    let started = Instant::now();
    for i in 0..calls {
        let sent = Instant::now();
        call(i).await?;
        latencies.push(sent.elapsed());
    }
    let elapsed = started.elapsed();
    let summary = LatencySummary::from_latencies(latencies).context("no calls")?;
    Ok(json!({
        "calls": calls,
        "calls_per_s": (calls as f64 / elapsed.as_secs_f64()).round(),
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "max_ms": summary.max_ms,
    }))
}

async fn measure(options: &Options, http_port: u16, grpc_port: u16) -> anyhow::Result<()> {
    let user = Uuid::new_v4();
    let token = mint_dev_token(&JwtConfig::development(None), user, Duration::from_secs(3600))?;
    let bearer = format!("Bearer {token}");
    let http = reqwest::Client::new();
    let orders = format!("http://127.0.0.1:{http_port}/api/v1/orders");
    let mut grpc = OrderServiceClient::connect(format!("http://127.0.0.1:{grpc_port}")).await?;
    let submit = SubmitOrderRequest {
        user_id: user.to_string(),
        symbol: "AAPL".into(),
        order_type: "MARKET".into(),
        order_side: "BUY".into(),
        quantity: 1.0,
        price: None,
        stop_price: None,
    };
    let authorization: MetadataValue<Ascii> = bearer.parse()?;
    let with_auth = |message| authorized(&authorization, message);
    // Warm both paths (connections, the user's account, the order actor's thread).
    let warm = grpc.submit_order(with_auth(submit.clone())).await?.into_inner();
    let body = json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 1});
    http.post(&orders)
        .header("authorization", &bearer)
        .json(&body)
        .send()
        .await?;

    let calls = options.calls;
    let grpc_submit = timed(calls, |_| {
        let request = with_auth(submit.clone());
        let mut grpc = grpc.clone();
        async move {
            grpc.submit_order(request).await?;
            Ok(())
        }
    })
    .await?;
    let http_submit = timed(calls, |_| {
        let request = http.post(&orders).header("authorization", &bearer).json(&body);
        async move {
            let response = request.send().await?;
            if response.status() != 202 {
                bail!("HTTP submit answered {}", response.status());
            }
            response.bytes().await?;
            Ok(())
        }
    })
    .await?;
    let status = GetOrderStatusRequest {
        order_id: warm.order_id.clone(),
        user_id: user.to_string(),
    };
    let grpc_status = timed(calls, |_| {
        let request = authorized(&authorization, status.clone());
        let mut grpc = grpc.clone();
        async move {
            grpc.get_order_status(request).await?;
            Ok(())
        }
    })
    .await?;
    let status_url = format!("{orders}/{}/status", warm.order_id);
    let http_status = timed(calls, |_| {
        let request = http.get(&status_url).header("authorization", &bearer);
        async move {
            let response = request.send().await?;
            if response.status() != 200 {
                bail!("HTTP status answered {}", response.status());
            }
            response.bytes().await?;
            Ok(())
        }
    })
    .await?;
    println!(
        "{}",
        json!({
            "backend": if options.sqlite { "sqlite" } else { "postgres" },
            "SubmitOrder": {"grpc": grpc_submit, "http": http_submit},
            "GetOrderStatus": {"grpc": grpc_status, "http": http_status},
        })
    );
    Ok(())
}
