//! Scale-out (issue 13): several engines on one PostgreSQL share the work,
//! each piece with one owner, handed over when its owner dies or stops.
//!
//! - membership, in-process with short leases: the split, the hand-over of a
//!   silent member's share within the lease time, a restart taking its
//!   predecessor's leases at once, a partition count that disagrees;
//! - two engines in one database: each order projected once, both ready
//!   (standalone, the second process's projection used to stop on a unique
//!   violation of the orders table); an order taken by one read and
//!   cancelled at the other at once (read-your-writes across processes);
//! - `serve` processes: three under AMQP load with the projection's leader
//!   killed (-9); one stopped (SIGSTOP) past its lease, which must write
//!   nothing when it resumes until it has claimed work again; two forwarding
//!   each submission to its partition's owner, one of them killed (-9).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/chaos.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::amqp::TestBroker;
use common::engine::{eventually, fast_config};
use common::http::{resting_limit, spawn_app_custom, token, Custom, TestApp};
use common::TestDb;
use harness::{assert_common, figures, publish_all, setting, settle, workload, Observer, Producer, Serve, Workload};
use order_engine::app::leader_roles;
use order_engine::cluster::{Cluster, ClusterError, MembershipConfig, Partitioning};
use order_engine::config::ClusterMode;
use serde_json::{json, Value};
use sqlx::postgres::PgPool;
use sqlx::Row;
use uuid::Uuid;

const PARTITIONS: u16 = 4;
const LEASE_TTL: Duration = Duration::from_millis(1_500);
const HEARTBEAT: Duration = Duration::from_millis(300);

fn membership(node: &str, partitions: u16) -> MembershipConfig {
    MembershipConfig {
        node: node.to_owned(),
        partitioning: Partitioning::new(partitions),
        roles: leader_roles(),
        lease_ttl: LEASE_TTL,
        heartbeat: HEARTBEAT,
    }
}

/// A database with the engine's tables (the store's migrations ran) and a pool on it.
async fn cluster_db(test: &str) -> Option<(TestDb, PgPool)> {
    let db = TestDb::postgres(test).await?;
    drop(db.open(None).await);
    let pool = PgPool::connect(db.url()).await.unwrap();
    Some((db, pool))
}

fn items() -> usize {
    usize::from(PARTITIONS) + leader_roles().len()
}

fn owned(cluster: &Cluster) -> (usize, usize) {
    let ownership = cluster.view().current();
    (
        ownership.partitions().map_or(0, BTreeSet::len),
        ownership.roles().map_or(0, BTreeSet::len),
    )
}

/// Live leases per node, as the database says.
async fn live_leases(pool: &PgPool) -> Vec<(String, String, i64)> {
    sqlx::query("SELECT name, node, token FROM cluster_leases WHERE expires_at > now() ORDER BY name")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("name"), r.get("node"), r.get("token")))
        .collect()
}

#[tokio::test]
async fn a_lone_member_owns_every_partition_and_role_as_soon_as_it_joins() {
    // Proves a process alone on its database owns all the work when `join` returns (no wait for a heartbeat).
    let Some((_db, pool)) = cluster_db("a_lone_member_owns_every_partition_and_role_as_soon_as_it_joins").await else {
        return;
    };
    let a = Cluster::join(pool.clone(), membership("a", PARTITIONS)).await.unwrap();
    assert_eq!(owned(&a), (usize::from(PARTITIONS), leader_roles().len()));
    assert_eq!(live_leases(&pool).await.len(), items());
    a.leave().await;
    assert!(live_leases(&pool).await.is_empty(), "leave hands every lease back");
}

#[tokio::test]
async fn members_split_the_work_and_a_silent_members_share_moves_within_the_lease_time() {
    // Proves two members split the work evenly, each lease held by one, and a member that stops beating (dies) loses all of it to the other within the lease time plus a few beats, with higher fencing tokens.
    let Some((_db, pool)) =
        cluster_db("members_split_the_work_and_a_silent_members_share_moves_within_the_lease_time").await
    else {
        return;
    };
    let a = Cluster::join(pool.clone(), membership("a", PARTITIONS)).await.unwrap();
    let b = Cluster::join(pool.clone(), membership("b", PARTITIONS)).await.unwrap();
    eventually(
        "the work split in two, shares within one",
        Duration::from_secs(10),
        || async {
            let leases = live_leases(&pool).await;
            let by_a = leases.iter().filter(|(_, node, _)| node == "a").count();
            let by_b = leases.iter().filter(|(_, node, _)| node == "b").count();
            let (pa, ra) = owned(&a);
            let (pb, rb) = owned(&b);
            by_a + by_b == items() && by_a.abs_diff(by_b) <= 1 && pa + ra == by_a && pb + rb == by_b
        },
    )
    .await;
    let (pa, _) = owned(&a);
    let (pb, _) = owned(&b);
    assert_eq!(pa + pb, usize::from(PARTITIONS), "every partition has one owner");
    let before = live_leases(&pool).await;

    a.abandon().await;
    let died = Instant::now();
    eventually("b owns everything", Duration::from_secs(10), || async {
        owned(&b) == (usize::from(PARTITIONS), leader_roles().len())
    })
    .await;
    let takeover = died.elapsed();
    figures(&format!(
        "cluster takeover (in-process): lease_ttl_ms={} heartbeat_ms={} takeover_ms={}",
        LEASE_TTL.as_millis(),
        HEARTBEAT.as_millis(),
        takeover.as_millis()
    ));
    assert!(
        takeover <= LEASE_TTL + HEARTBEAT * 3 + Duration::from_secs(1),
        "took {takeover:?} to take a dead member's share over"
    );
    for (name, node, token) in live_leases(&pool).await {
        assert_eq!(node, "b");
        let (_, was, old) = before.iter().find(|(n, _, _)| *n == name).unwrap();
        if was == "a" {
            assert!(token > *old, "{name} changed hands without a new fencing token");
        }
    }
    b.leave().await;
}

#[tokio::test]
async fn a_restart_under_the_same_node_name_takes_the_leases_at_once_and_the_old_incarnation_stops() {
    // Proves a process restarted under its node name owns its work on join (no wait for expiry) and the older incarnation, still running, finds it was replaced and owns nothing.
    let Some((_db, pool)) =
        cluster_db("a_restart_under_the_same_node_name_takes_the_leases_at_once_and_the_old_incarnation_stops").await
    else {
        return;
    };
    let old = Cluster::join(pool.clone(), membership("n", PARTITIONS)).await.unwrap();
    let new = Cluster::join(pool.clone(), membership("n", PARTITIONS)).await.unwrap();
    assert_eq!(owned(&new), (usize::from(PARTITIONS), leader_roles().len()));
    eventually("the old incarnation stands down", Duration::from_secs(5), || async {
        old.status().replaced && owned(&old) == (0, 0)
    })
    .await;
    assert!(!old.view().is_valid() || owned(&old) == (0, 0));
    new.leave().await;
}

#[tokio::test]
async fn a_member_with_another_partition_count_is_refused() {
    // Proves a process configured with another ORDER_ENGINE_PARTITIONS cannot join a live cluster (its checkpoints and users' owners would disagree).
    let Some((_db, pool)) = cluster_db("a_member_with_another_partition_count_is_refused").await else {
        return;
    };
    let a = Cluster::join(pool.clone(), membership("a", PARTITIONS)).await.unwrap();
    let refused = Cluster::join(pool.clone(), membership("b", PARTITIONS * 2)).await;
    match refused {
        Err(ClusterError::PartitionsDisagree { mine, node, theirs }) => {
            assert_eq!(
                (mine, node.as_str(), theirs),
                (PARTITIONS * 2, "a", i32::from(PARTITIONS))
            );
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    a.leave().await;
}

// ---------------------------------------------------------------- two engines, one database

async fn submit_market_buy(app: &TestApp, user: Uuid) -> String {
    let response = app
        .submit(
            &token(user),
            &json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 1}),
            None,
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["order_id"].as_str().unwrap().to_owned()
}

/// An engine on `db` with HTTP, in cluster `mode` (the test settings run standalone).
async fn spawn_in_mode(db: &TestDb, mode: ClusterMode) -> TestApp {
    let custom = Custom {
        settings: Some(Box::new(move |s: &mut order_engine::config::Settings| {
            s.cluster.mode = mode
        })),
        ..Custom::default()
    };
    spawn_app_custom(db, fast_config(), None, custom).await
}

async fn ready(app: &TestApp) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[actix_rt::test]
async fn two_engines_on_one_database_project_each_order_once_and_both_stay_ready() {
    // Proves two engines on one database, standalone or clustered, both stay ready and project each order exactly once (standalone, the second's projection used to stop on a unique violation of `orders` and turn /health/ready 503).
    for mode in [ClusterMode::Off, ClusterMode::Auto] {
        let Some(db) =
            TestDb::postgres("two_engines_on_one_database_project_each_order_once_and_both_stay_ready").await
        else {
            return;
        };
        let (a, b) = (spawn_in_mode(&db, mode).await, spawn_in_mode(&db, mode).await);
        let mut orders = Vec::new();
        for i in 0..20 {
            let app = if i % 2 == 0 { &a } else { &b };
            orders.push(submit_market_buy(app, Uuid::new_v4()).await);
        }
        let pool = PgPool::connect(db.url()).await.unwrap();
        let count = |sql: &'static str| {
            let pool = pool.clone();
            async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
        };
        eventually("every order projected as executed", Duration::from_secs(30), || async {
            count("SELECT count(*) FROM orders WHERE status = 'EXECUTED'").await == 20
        })
        .await;
        assert_eq!(count("SELECT count(*) FROM orders").await, 20, "{mode:?}");
        for app in [&a, &b] {
            let (status, body) = ready(app).await;
            assert_eq!(status, 200, "{mode:?}: {body}");
        }
        if mode == ClusterMode::Auto {
            let leads = |body: &Value| {
                body["checks"]["cluster"]["leases"]
                    .as_array()
                    .is_some_and(|leases| leases.iter().any(|l| l["name"] == "leader.projection.orders"))
            };
            // The role may be between holders for a heartbeat while the two split the work.
            eventually("exactly one leads the projection", Duration::from_secs(10), || async {
                let ((_, body_a), (_, body_b)) = (ready(&a).await, ready(&b).await);
                leads(&body_a) ^ leads(&body_b)
            })
            .await;
        }
        assert_eq!(orders.iter().collect::<BTreeSet<_>>().len(), 20);
    }
}

#[actix_rt::test]
async fn an_order_taken_by_one_process_is_read_and_cancelled_at_another_at_once() {
    // Proves read-your-writes across clustered processes (issue 13 item 4): an order that got 202 from one engine is found at once by the other (order and status routes, no waiting), the other cancels it through the stream's expected version, and the first reads it cancelled at once.
    let Some(db) = TestDb::postgres("an_order_taken_by_one_process_is_read_and_cancelled_at_another_at_once").await
    else {
        return;
    };
    let (a, b) = (
        spawn_in_mode(&db, ClusterMode::Auto).await,
        spawn_in_mode(&db, ClusterMode::Auto).await,
    );
    let read = |app: &TestApp, path: String, user: Uuid| {
        let request = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(token(user));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    for round in 0..10 {
        // Users of every partition, so some orders are driven by the taker and some by the other.
        let user = Uuid::new_v4();
        let (taker, other) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let response = taker.submit(&token(user), &resting_limit(), None).await;
        assert_eq!(response.status(), 202);
        let id = response.json::<Value>().await.unwrap()["order_id"]
            .as_str()
            .unwrap()
            .to_owned();

        let (status, order) = read(other, format!("/api/v1/orders/{id}"), user).await;
        assert_eq!(status, 200, "round {round}: {order}");
        assert_eq!(order["order"]["order_id"], id.as_str(), "{order}");
        let (status, body) = read(other, format!("/api/v1/orders/{id}/status"), user).await;
        assert_eq!(status, 200, "round {round}: {body}");

        let cancel = other
            .client
            .put(format!("{}/api/v1/orders/{id}/cancel", other.address))
            .bearer_auth(token(user))
            .send()
            .await
            .unwrap();
        let cancel_status = cancel.status().as_u16();
        let cancelled: Value = cancel.json().await.unwrap();
        assert_eq!(cancel_status, 200, "round {round}: {cancelled}");
        assert_eq!(cancelled["status"], "CANCELLED", "{cancelled}");
        let (_, seen) = read(taker, format!("/api/v1/orders/{id}/status"), user).await;
        assert_eq!(
            seen["status"], "CANCELLED",
            "round {round}: the taker still sees {seen}"
        );
    }
}

// ---------------------------------------------------------------- serve processes

fn clustered(db: &TestDb, node: &str, extra: &[(&str, String)]) -> Serve {
    let mut env = vec![
        ("DATABASE_URL", db.url().to_owned()),
        ("ORDER_ENGINE_NODE_ID", node.to_owned()),
    ];
    env.extend(extra.iter().cloned());
    Serve::new(&env)
}

/// `count` clustered `serve` processes on `db` (nodes `node-0`…), ready and
/// each holding a share; with a pool on the database and the number of work items.
async fn start_members(db: &TestDb, count: usize, env: &[(&str, String)]) -> (Vec<Serve>, PgPool, usize) {
    let mut processes: Vec<Serve> = (0..count).map(|i| clustered(db, &format!("node-{i}"), env)).collect();
    for serve in &mut processes {
        serve.spawn();
    }
    for serve in &mut processes {
        serve.wait_ready(harness::SERVE_READY_TIMEOUT).await;
    }
    let pool = PgPool::connect(db.url()).await.unwrap();
    let work = usize::from(order_engine::config::DEFAULT_PARTITIONS) + leader_roles().len();
    eventually("every member owns a share", Duration::from_secs(20), || async {
        let (per, total) = holders(&pool).await;
        per.len() == count && total == work
    })
    .await;
    (processes, pool, work)
}

/// Publishes `load` to `orders.submit` at `rate` in a task of its own; the task returns the time it took.
fn publish_in_background(url: &str, load: &Arc<Workload>, rate: f64) -> tokio::task::JoinHandle<Duration> {
    let (url, load) = (url.to_owned(), Arc::clone(load));
    tokio::spawn(async move {
        let mut producer = Producer::new(&url);
        publish_all(&mut producer, &load, rate, Duration::from_secs(60)).await
    })
}

/// Live leases held per node, and whether all of the work is held.
async fn holders(pool: &PgPool) -> (Vec<(String, usize)>, usize) {
    let rows = sqlx::query(
        "SELECT node, count(*) AS n FROM cluster_leases WHERE expires_at > now() GROUP BY node ORDER BY node",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let per: Vec<(String, usize)> = rows
        .iter()
        .map(|r| (r.get::<String, _>("node"), r.get::<i64, _>("n") as usize))
        .collect();
    let total = per.iter().map(|(_, n)| n).sum();
    (per, total)
}

async fn leader_of(pool: &PgPool, role: &str) -> Option<String> {
    sqlx::query_scalar("SELECT node FROM cluster_leases WHERE name = $1 AND expires_at > now()")
        .bind(format!("leader.{role}"))
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Records who wrote each event in `event_writers`: the engine names its
/// sessions `order-engine@<node>`.
async fn note_writers(pool: &PgPool) {
    for statement in [
        "CREATE TABLE event_writers (global_position BIGINT, writer TEXT, at TIMESTAMPTZ DEFAULT clock_timestamp())",
        "CREATE FUNCTION note_writer() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         INSERT INTO event_writers (global_position, writer) VALUES (NEW.global_position, current_setting('application_name')); \
         RETURN NEW; END $$",
        "CREATE TRIGGER note_writer AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION note_writer()",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
}

/// Each partition's live holder (by partition number).
async fn partition_owners(pool: &PgPool) -> BTreeMap<u16, String> {
    sqlx::query("SELECT name, node FROM cluster_leases WHERE name LIKE 'partition.p%' AND expires_at > now()")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let name: String = r.get("name");
            (name.trim_start_matches("partition.p").parse().unwrap(), r.get("node"))
        })
        .collect()
}

/// The orders read model, row by row, as text.
async fn read_model(pool: &PgPool) -> Vec<String> {
    sqlx::query(
        "SELECT id::text || ' ' || status || ' ' || coalesce(execution_price::text, '-') || ' ' || \
         coalesce(failure_reason, '-') AS row FROM orders ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get("row"))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_share_the_work_and_lose_nothing_when_the_projection_leader_is_killed() {
    // Proves three serve processes on one database and vhost split the partitions and roles, and when the projection's leader is killed -9 mid-load the survivors take its share within the lease time: every order terminal, none executed twice, no money moved twice, every execution published, verify clean, and the read model equal to a rebuild.
    let test = "three_processes_share_the_work_and_lose_nothing_when_the_projection_leader_is_killed";
    let started = Instant::now();
    let Some(db) = TestDb::postgres(test).await else { return };
    let Some(broker) = TestBroker::new(test).await else {
        return;
    };
    let orders: usize = setting("CLUSTER_ORDERS", 600);
    let rate: f64 = setting("CLUSTER_RATE", 60.0);
    let seed = setting("CLUSTER_SEED", rand::random::<u32>() as u64);
    let load = Arc::new(workload(seed, orders, 60, 5, 5));
    let observer = Observer::start(&broker.url).await;
    let amqp = [("AMQP_URL", broker.url.clone())];
    let (mut processes, pool, work) = start_members(&db, 3, &amqp).await;

    let publisher = publish_in_background(&broker.url, &load, rate);
    tokio::time::sleep(Duration::from_secs_f64(orders as f64 / rate / 2.0)).await;
    let victim = leader_of(&pool, order_engine::projections::ORDERS_PROJECTION)
        .await
        .expect("someone leads the projection");
    let index: usize = victim.trim_start_matches("node-").parse().unwrap();
    processes[index].kill9();
    let killed = Instant::now();
    eventually("the survivors own all the work", Duration::from_secs(30), || async {
        let (per, total) = holders(&pool).await;
        total == work && per.iter().all(|(node, _)| *node != victim)
    })
    .await;
    let takeover = killed.elapsed();
    let new_leader = leader_of(&pool, order_engine::projections::ORDERS_PROJECTION).await;
    let send_time = publisher.await.unwrap();
    let (tally, drain) = settle(db.url(), &load, &observer, Duration::from_secs(60)).await;
    let (verify, verify_line) = processes[(index + 1) % 3].verify().await;
    let duplicates_per_1000 = tally.position_duplicate_message_ids as f64 * 1000.0 / tally.executed.max(1) as f64;
    figures(&format!(
        "cluster kill: seed={seed} orders={orders} rate={rate} killed={victim} new_projection_leader={new_leader:?} \
         takeover_ms={} send_s={:.1} drain_s={:.1} {tally} duplicates_per_1000_executions={duplicates_per_1000:.1} \
         verify={verify} ({verify_line}) elapsed_s={:.1}",
        takeover.as_millis(),
        send_time.as_secs_f64(),
        drain.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
    assert_common(test, &tally);
    assert_eq!(verify, 0, "verify found violations: {verify_line}");
    assert!(takeover <= Duration::from_secs(10), "takeover took {takeover:?}");
    assert_ne!(new_leader.as_deref(), Some(victim.as_str()));

    // The read model equals a rebuild from the log: no row lost or doubled by the hand-over.
    eventually("the projection reaches the head", Duration::from_secs(30), || async {
        let caught_up: bool = sqlx::query_scalar(
            "SELECT (SELECT position FROM checkpoints WHERE name = 'projection.orders') \
                    = (SELECT max(global_position) FROM events)",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(false);
        caught_up
    })
    .await;
    for serve in &mut processes {
        serve.kill9();
    }
    let live = read_model(&pool).await;
    let replay = processes[index]
        .run_command(&["replay", "--projection", "orders"])
        .await;
    assert_eq!(replay.0, 0, "replay failed: {}", replay.1);
    let rebuilt = read_model(&pool).await;
    assert_eq!(live.len(), rebuilt.len(), "rows lost or doubled");
    assert_eq!(live, rebuilt, "the live read model differs from a rebuild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_stopped_past_its_lease_writes_nothing_when_it_resumes() {
    // Proves a serve process stopped (SIGSTOP) past its lease loses its partitions to the other, which finishes its orders, and once resumed writes no event until it has claimed work again.
    let test = "a_process_stopped_past_its_lease_writes_nothing_when_it_resumes";
    let Some(db) = TestDb::postgres(test).await else { return };
    let pool = PgPool::connect(db.url()).await.unwrap();
    let short = [
        ("ORDER_ENGINE_LEASE_TTL", "3s".to_owned()),
        ("ORDER_ENGINE_HEARTBEAT", "500ms".to_owned()),
    ];
    let mut a = clustered(&db, "node-a", &short);
    let mut b = clustered(&db, "node-b", &short);
    a.spawn();
    a.wait_ready(harness::SERVE_READY_TIMEOUT).await;
    b.spawn();
    b.wait_ready(harness::SERVE_READY_TIMEOUT).await;
    note_writers(&pool).await;
    eventually("both own a share", Duration::from_secs(20), || async {
        holders(&pool).await.0.len() == 2
    })
    .await;

    // Orders over HTTP to a, for users of every partition, all along.
    let (stop_load, mut load_stopped) = tokio::sync::watch::channel(false);
    let address = a.http.clone();
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut submitted = 0u32;
        loop {
            let user = Uuid::new_v4();
            let response = client
                .post(format!("{address}/api/v1/orders"))
                .bearer_auth(token(user))
                .json(&json!({"symbol": "AAPL", "order_type": "MARKET", "order_side": "BUY", "quantity": 1}))
                .send()
                .await;
            if response.is_ok_and(|r| r.status() == 202) {
                submitted += 1;
            }
            tokio::select! {
                _ = load_stopped.changed() => return submitted,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let by_b_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_writers WHERE writer LIKE 'order-engine@node-b%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        by_b_before > 0,
        "b drove no saga before the pause: the test would prove nothing"
    );

    b.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    eventually("a takes b's share over", Duration::from_secs(10), || async {
        let (per, _) = holders(&pool).await;
        per.iter().all(|(node, _)| node == "node-a")
    })
    .await;
    // Past the lease, with b's stale work (sagas mid-step) waiting for it to run again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resumed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&pool)
        .await
        .unwrap();
    b.resume();
    eventually("b claims work again", Duration::from_secs(20), || async {
        holders(&pool).await.0.iter().any(|(node, _)| node == "node-b")
    })
    .await;
    let reclaimed_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT min(acquired_at) FROM cluster_leases WHERE node = 'node-b' AND acquired_at > $1")
            .bind(resumed_at)
            .fetch_one(&pool)
            .await
            .unwrap();
    let _ = stop_load.send(true);
    let submitted = load.await.unwrap();
    let stale_writes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_writers WHERE writer LIKE 'order-engine@node-b%' AND at > $1 AND at < $2",
    )
    .bind(resumed_at)
    .bind(reclaimed_at)
    .fetch_one(&pool)
    .await
    .unwrap();
    eventually("every order terminal", Duration::from_secs(30), || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT stream_id FROM events WHERE stream_id LIKE 'order-%' GROUP BY stream_id \
             HAVING bool_and(event_type NOT IN ('OrderExecuted', 'OrderFailed', 'OrderCancelled'))) AS o",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        open == 0
    })
    .await;
    let executed_twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT stream_id FROM events WHERE event_type = 'OrderExecuted' \
         GROUP BY stream_id HAVING count(*) > 1) AS twice",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (verify, verify_line) = a.verify().await;
    figures(&format!(
        "cluster sigstop: submitted={submitted} writes_by_b_before_pause={by_b_before} stale_writes_after_resume={stale_writes} \
         reclaim_after_resume_ms={} lapse_logged={} verify={verify}",
        (reclaimed_at - resumed_at).num_milliseconds(),
        b.log_count("leases lapsed")
    ));
    assert_eq!(stale_writes, 0, "b wrote after resuming, before claiming work again");
    assert_eq!(executed_twice, 0);
    assert_eq!(verify, 0, "verify found violations: {verify_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_submissions_are_recorded_by_their_partitions_owner_and_outlive_a_killed_owner() {
    // Proves ORDER_ENGINE_SUBMIT_ROUTING=forward: a submission taken from orders.submit by a process that does not own its user's partition is moved to the partition's queue and recorded by the owner; and when a process is killed -9 mid-load, what waited in its partitions' queues (or was in its hands) is taken by the survivor: nothing lost or done twice, verify clean.
    let test = "forwarded_submissions_are_recorded_by_their_partitions_owner_and_outlive_a_killed_owner";
    let Some(db) = TestDb::postgres(test).await else { return };
    let Some(broker) = TestBroker::new(test).await else {
        return;
    };
    let orders: usize = setting("FORWARD_ORDERS", 300);
    let rate: f64 = setting("FORWARD_RATE", 60.0);
    let seed = setting("FORWARD_SEED", rand::random::<u32>() as u64);
    let load = Arc::new(workload(seed, orders, 60, 5, 5));
    let observer = Observer::start(&broker.url).await;
    let env = [
        ("AMQP_URL", broker.url.clone()),
        ("ORDER_ENGINE_SUBMIT_ROUTING", "forward".to_owned()),
    ];
    let (mut processes, pool, _) = start_members(&db, 2, &env).await;
    note_writers(&pool).await;
    let owners_before = partition_owners(&pool).await;

    let publisher = publish_in_background(&broker.url, &load, rate);
    tokio::time::sleep(Duration::from_secs_f64(orders as f64 / rate / 2.0)).await;
    let owners_at_kill = partition_owners(&pool).await;
    let killed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&pool)
        .await
        .unwrap();
    processes[1].kill9();
    publisher.await.unwrap();
    let (tally, drain) = settle(db.url(), &load, &observer, Duration::from_secs(90)).await;
    let (verify, verify_line) = processes[0].verify().await;

    // Before the kill, each submission was written by its user's partition's
    // owner, whichever process the broker handed it to (a partition that
    // changed hands meanwhile proves nothing either way and is left out).
    let partitioning = Partitioning::new(order_engine::config::DEFAULT_PARTITIONS);
    let submitted = sqlx::query(
        "SELECT e.payload->>'user_id' AS user_id, w.writer FROM events e JOIN event_writers w USING (global_position) \
         WHERE e.event_type = 'OrderSubmitted' AND w.at < $1",
    )
    .bind(killed_at)
    .fetch_all(&pool)
    .await
    .unwrap();
    let (mut checked, mut by_other) = (0usize, Vec::new());
    for row in &submitted {
        let user: Uuid = row.get::<String, _>("user_id").parse().unwrap();
        let partition = partitioning.of_user(user).0;
        let (Some(before), Some(at_kill)) = (owners_before.get(&partition), owners_at_kill.get(&partition)) else {
            continue;
        };
        if before != at_kill {
            continue;
        }
        checked += 1;
        let writer: String = row.get("writer");
        if !writer.starts_with(&format!("order-engine@{before}")) {
            by_other.push(format!(
                "user {user} (partition {partition}, owner {before}) written by {writer}"
            ));
        }
    }
    let metrics = reqwest::get(format!("{}/metrics", processes[0].http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let forwarded: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("order_engine_forwarded_submissions_total{source=\"amqp\"} "))
        .map_or(0, |n| n.trim().parse().unwrap());
    figures(&format!(
        "cluster forward: seed={seed} orders={orders} rate={rate} drain_s={:.1} {tally} forwarded_by_survivor={forwarded} \
         submissions_checked={checked} written_by_a_non_owner={} verify={verify}",
        drain.as_secs_f64(),
        by_other.len()
    ));
    assert_common(test, &tally);
    assert_eq!(verify, 0, "verify found violations: {verify_line}");
    assert!(
        checked >= orders / 4,
        "too few submissions before the kill to tell: {checked}"
    );
    assert!(by_other.is_empty(), "submissions recorded by a non-owner: {by_other:?}");
    assert!(forwarded > 0, "the survivor forwarded nothing: {metrics}");
}
