//! Rate-limit decisions per second and their latency, for the in-memory limiter and the Redis
//! limiter (one request in flight; 64 tasks on one connection; 64 tasks over 8 connections).
//!
//! Criterion reports the mean time per batch; before it, this bench measures every single
//! decision itself and prints p50/p99 and decisions per second, which criterion does not give.
//!
//! ```text
//! cargo bench -p fab-redis --bench limiter
//! ```
//!
//! Redis is `FAB_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/0`); the bench writes only
//! under its own `fab_bench_<pid>:` namespace and deletes it at the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark code: a failure is the benchmark failing, and criterion's macros generate undocumented items"
)]

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fab_core::Secret;
use fab_core::clock::SystemClock;
use fab_core::ratelimit::memory::MemoryRateLimiter;
use fab_core::ratelimit::{Rate, RateKey, RateLimiter};
use fab_redis::{RedisConnection, RedisOptions, RedisRateLimiter};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// The limiters one case spreads its tasks over.
type Limiters = [Arc<dyn RateLimiter>];

/// Distinct keys the decisions rotate over (as many clients would).
const KEYS: usize = 10_000;
/// Tasks deciding at once in the concurrent cases.
const TASKS: usize = 64;

fn redis_url() -> String {
    std::env::var("FAB_TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".to_owned())
}

fn namespace() -> String {
    format!("fab_bench_{}:", std::process::id())
}

fn keys() -> Arc<Vec<RateKey>> {
    static CELL: OnceLock<Arc<Vec<RateKey>>> = OnceLock::new();
    CELL.get_or_init(|| {
        Arc::new(
            (0..KEYS)
                .map(|n| RateKey::custom("bench", "ip", &format!("10.0.{}.{}", n / 256, n % 256)))
                .collect(),
        )
    })
    .clone()
}

/// One decision on the next key in turn, for criterion's one-at-a-time cases.
async fn one_decision(limiter: &Arc<dyn RateLimiter>, keys: &[RateKey], rate: &Rate) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let key = &keys[NEXT.fetch_add(1, Ordering::Relaxed) % keys.len()];
    limiter.check(key, rate).await.unwrap();
}

/// A rate high enough that nearly every decision is an allowed one (the write path).
fn rate() -> Rate {
    "1000/second".parse().unwrap()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn redis_limiters(connections: usize) -> Vec<Arc<dyn RateLimiter>> {
    (0..connections)
        .map(|_| {
            let connection =
                RedisConnection::open(&Secret::new(redis_url()), &RedisOptions::default()).unwrap();
            Arc::new(RedisRateLimiter::new(connection).with_key_namespace(namespace()))
                as Arc<dyn RateLimiter>
        })
        .collect()
}

fn memory_limiter() -> Arc<dyn RateLimiter> {
    Arc::new(MemoryRateLimiter::new(Arc::new(SystemClock)))
}

/// `calls` decisions from each of `tasks` tasks (task `t` on limiter `t % limiters.len()`),
/// returning every decision's latency and the wall time of the whole run.
async fn timed_run(
    limiters: &[Arc<dyn RateLimiter>],
    tasks: usize,
    calls: usize,
) -> (Vec<Duration>, Duration) {
    let keys = keys();
    let rate = rate();
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let limiter = limiters[task % limiters.len()].clone();
        let keys = keys.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(calls);
            for call in 0..calls {
                let key = &keys[(task * 7_919 + call) % keys.len()];
                let before = Instant::now();
                limiter.check(key, &rate).await.unwrap();
                latencies.push(before.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(tasks * calls);
    for handle in handles {
        latencies.extend(handle.await.unwrap());
    }
    (latencies, started.elapsed())
}

fn report(name: &str, mut latencies: Vec<Duration>, wall: Duration) {
    latencies.sort();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[index]
    };
    let per_second = latencies.len() as f64 / wall.as_secs_f64();
    println!(
        "{name:<36} {:>9} decisions  {:>10.0} decisions/s  p50 {:>9.1} µs  p99 {:>9.1} µs",
        latencies.len(),
        per_second,
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
    );
}

/// The percentile table, measured call by call.
fn percentiles(runtime: &Runtime) {
    println!(
        "\nrate-limit decisions ({KEYS} keys, rate {}, {}):",
        rate(),
        Utc::now().format("%Y-%m-%d")
    );
    let memory = vec![memory_limiter()];
    let one = redis_limiters(1);
    let eight = redis_limiters(8);
    let cases: [(&str, &Limiters, usize, usize); 5] = [
        ("memory, 1 task", &memory, 1, 200_000),
        ("memory, 64 tasks", &memory, TASKS, 5_000),
        ("redis, 1 connection, 1 task", &one, 1, 20_000),
        ("redis, 1 connection, 64 tasks", &one, TASKS, 1_000),
        ("redis, 8 connections, 64 tasks", &eight, TASKS, 1_000),
    ];
    for (name, limiters, tasks, calls) in cases {
        // Warm up: connect, load the script, fill the keys.
        runtime.block_on(timed_run(limiters, tasks, calls / 10 + 1));
        let (latencies, wall) = runtime.block_on(timed_run(limiters, tasks, calls));
        report(name, latencies, wall);
    }
    println!();
}

fn cleanup(runtime: &Runtime) {
    runtime.block_on(async {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let pattern = format!("{}*", namespace());
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1_000)
                .query_async(&mut connection)
                .await
                .unwrap();
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(&keys)
                    .exec_async(&mut connection)
                    .await
                    .unwrap();
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    });
}

fn limiter_benches(c: &mut Criterion) {
    let runtime = runtime();
    // The Redis client is opened inside the runtime it will run on.
    let _inside = runtime.enter();
    percentiles(&runtime);

    let mut group = c.benchmark_group("ratelimit");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let memory = vec![memory_limiter()];
    let one = redis_limiters(1);
    let eight = redis_limiters(8);
    group.throughput(Throughput::Elements(1));
    let (keys, rate) = (keys(), rate());
    group.bench_function("memory/1 task", |b| {
        b.to_async(&runtime)
            .iter(|| one_decision(&memory[0], &keys, &rate))
    });
    group.bench_function("redis/1 connection/1 task", |b| {
        b.to_async(&runtime)
            .iter(|| one_decision(&one[0], &keys, &rate))
    });
    group.throughput(Throughput::Elements(TASKS as u64));
    group.bench_function("memory/64 tasks", |b| {
        b.to_async(&runtime)
            .iter(|| async { timed_run(&memory, TASKS, 1).await })
    });
    group.bench_function("redis/1 connection/64 tasks", |b| {
        b.to_async(&runtime)
            .iter(|| async { timed_run(&one, TASKS, 1).await })
    });
    group.bench_function("redis/8 connections/64 tasks", |b| {
        b.to_async(&runtime)
            .iter(|| async { timed_run(&eight, TASKS, 1).await })
    });
    group.finish();
    cleanup(&runtime);
}

criterion_group!(benches, limiter_benches);
criterion_main!(benches);
