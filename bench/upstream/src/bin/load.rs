//! A closed-loop HTTP/1.1 load generator that keeps answers apart by
//! status, for the overload benchmark: wrk reports one latency
//! distribution for every answer, so the latency of admitted requests
//! cannot be told from that of shed ones.
//!
//! Usage: `loom-bench-load URL CONNECTIONS SECONDS [BODY]`: each connection
//! sends the next request as soon as the last answer ended (a POST of
//! `BODY` with `Content-Type: application/json`, or a GET without it), for
//! SECONDS; then prints requests per second, the share by status and the
//! latency percentiles of the 200s and of the 503s.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// (status, latency in µs) of every answer one connection got.
type Samples = Vec<(u16, u32)>;

async fn connection(uri: hyper::Uri, body: Option<Bytes>, until: Instant) -> Samples {
    let mut out = Vec::new();
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    'reconnect: while Instant::now() < until {
        let Ok(tcp) = TcpStream::connect(&authority).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
        else {
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let builder = Request::builder()
                .uri(uri.clone())
                .header("host", &authority);
            let req = match &body {
                Some(b) => builder
                    .method("POST")
                    .header("content-type", "application/json")
                    .body(Full::new(b.clone())),
                None => builder.method("GET").body(Full::new(Bytes::new())),
            };
            let Ok(req) = req else { return out };
            let started = Instant::now();
            let Ok(resp) = send.send_request(req).await else {
                continue 'reconnect;
            };
            let status = resp.status().as_u16();
            let ended = resp.into_body().collect().await.is_ok();
            out.push((
                status,
                started.elapsed().as_micros().min(u32::MAX as u128) as u32,
            ));
            if !ended || send.ready().await.is_err() {
                continue 'reconnect;
            }
        }
    }
    out
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: loom-bench-load URL CONNECTIONS SECONDS [BODY]");
        std::process::exit(2);
    }
    let uri: hyper::Uri = args[1].parse().expect("a URL");
    let conns: usize = args[2].parse().expect("a number of connections");
    let secs: u64 = args[3].parse().expect("seconds");
    let body = args.get(4).map(|b| Bytes::from(b.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let samples: Samples = rt.block_on(async {
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(connection(uri.clone(), body.clone(), until)))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            if let Ok(s) = t.await {
                all.extend(s);
            }
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut ok: Vec<u32> = samples.iter().filter(|s| s.0 == 200).map(|s| s.1).collect();
    let mut shed: Vec<u32> = samples.iter().filter(|s| s.0 == 503).map(|s| s.1).collect();
    let other = samples.len() - ok.len() - shed.len();
    ok.sort_unstable();
    shed.sort_unstable();
    let n = samples.len().max(1) as f64;
    println!(
        "requests {} rps {:.0} ok {} ({:.1}%) shed {} ({:.1}%) other {} ok_rps {:.0}",
        samples.len(),
        samples.len() as f64 / elapsed,
        ok.len(),
        ok.len() as f64 / n * 100.0,
        shed.len(),
        shed.len() as f64 / n * 100.0,
        other,
        ok.len() as f64 / elapsed,
    );
    println!(
        "ok_ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} | shed_ms p50 {:.2} p99 {:.2}",
        percentile(&ok, 0.5),
        percentile(&ok, 0.99),
        percentile(&ok, 0.999),
        percentile(&ok, 1.0),
        percentile(&shed, 0.5),
        percentile(&shed, 0.99),
    );
}
