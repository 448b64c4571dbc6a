//! # am-api
//!
//! What the daemon shows of itself: a serializable [`Snapshot`] of its state, the shared [`Board`]
//! the daemon loop writes it to after each supervisor step, the HTTP API that serves it
//! ([`serve`]), the text statistics of `am-daemon stats` ([`render_stats`], [`watch`]) and a small
//! client for them ([`fetch_status`], [`fetch_alarms`], [`fetch_events`], [`ack_alarm`]).
//!
//! ## Endpoints
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | `200 ok`: the process is alive |
//! | GET | `/readyz` | `200` once the first inventory was seen, else `503` |
//! | GET | `/metrics` | Prometheus text 0.0.4, or OpenMetrics when `Accept` asks for it (see [`metrics`]) |
//! | GET | `/api/v1/status` | the [`Snapshot`] as JSON |
//! | GET | `/api/v1/events?limit=N` | `{"events": [LogEntry...]}`, the latest N audit lines (default 100) |
//! | GET | `/api/v1/alarms` | `{"alarms": [AlarmView...]}` |
//! | POST | `/api/v1/alarms/{kind}/{subject}/ack[?by=NAME]` | `{"acknowledged": AlarmView}`; needs the token |
//! | POST | `/api/v1/hosts/{id}/evacuate[?reason=R&enter_maintenance=true]` | 202 `{"accepted": "..."}`; needs the token |
//! | POST | `/api/v1/hosts/{id}/maintenance/enter`, `.../exit` | 202 `{"accepted": "..."}`; needs the token |
//!
//! `{kind}` is an alarm kind as serialized (`host_unreachable`), `{subject}` is `host:ID`,
//! `vm:ID`, `cluster` or `manager`. Errors are JSON, `{"error": "not_found", "status": 404,
//! "message": "..."}`: 400 malformed, 401 missing or wrong token, 403 no token configured, 404
//! unknown path or no such active alarm, 405 wrong method (with `Allow`), 503 not ready.
//!
//! ## Security
//!
//! Reads are open to whoever reaches the listener, so the daemon binds to loopback unless told
//! otherwise ([`serve`] warns when it is not loopback). Anything that changes state needs
//! `Authorization: Bearer <token>`; without a configured token every change is refused. The token
//! is a [`Secret`]: never in `Debug` output, logs or errors, compared in constant time.
//!
//! ## Why hyper and not axum
//!
//! Seven routes with fixed paths do not need a router, extractors or tower middleware: a `match`
//! over the path segments is shorter than axum's setup and shows every route in one place. hyper 1
//! with `hyper-util` (server connection, graceful shutdown, tokio glue) and only the `http1`,
//! `server` and `client` features is what axum would pull in anyway, minus `tower`, `matchit`,
//! `serde_urlencoded` and friends; the same hyper also gives the client its HTTP/1.1 without
//! reqwest's pool and TLS. Metrics use the maintained `prometheus-client`, filled from the
//! snapshot at each scrape.
//!
//! ## Wiring into the daemon
//!
//! ```text
//! let board = am_api::Board::with_options(am_api::BoardOptions {
//!     capacity_model: Some("memory reservation + overhead".into()),
//!     ..Default::default()
//! });
//! let exec = engine.executor().clone();
//! let b = board.clone();
//! engine.set_observer(Box::new(move |now, out, sup| b.observe(now, out, sup, Some(&exec.status()))));
//! let listener = tokio::net::TcpListener::bind(cfg.api.listen /* default am_api::DEFAULT_LISTEN */).await?;
//! tokio::spawn(am_api::serve(listener, board, cfg.api.token /* Option<Secret> */, shutdown_signal));
//! ```
//!
//! and for `am-daemon stats|status|alarms --url URL [--watch SECS]`: [`fetch_status`] then
//! [`render_stats`] (or [`watch`]), `serde_json` of [`fetch_status`] for `status`,
//! [`fetch_alarms`] for `alarms`, inside a current-thread tokio runtime.
//!
//! ## Cost
//!
//! [`Board::observe`] captures a whole snapshot on every step: one pass over hosts, VMs and
//! incidents (a debug build takes about 16 ms for 2,000 VMs and 35 ms for 5,000; an optimized one a
//! fraction of that). Admission control is the supervisor's own (from the plans it keeps), never
//! planned here. Readers clone the snapshot and never block the daemon loop for long.
//!
//! ## Example
//!
//! ```
//! use am_api::{Board, Snapshot, fetch_status, render_stats, serve};
//! use am_core::{Host, Inventory, InventoryDelta, Observation, Resources, Time, Vm};
//! use supervisor::{Config, Supervisor};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // The daemon: a supervisor, and a board updated after each step.
//!     let mut inv = Inventory::default();
//!     inv.apply(&InventoryDelta::HostUpsert(Host::new("h1", Resources::new(8_000, 16_384))));
//!     inv.apply(&InventoryDelta::VmUpsert(Vm::new("web", Resources::new(1_000, 2_048), "h1")));
//!     let mut sup = Supervisor::new(Config::default());
//!     let board = Board::new();
//!     let out = sup.step(Time::ZERO, Observation::Inventory(inv));
//!     board.observe(Time::ZERO, &out, &sup, None);
//!     assert!(board.is_ready());
//!
//!     // The API on loopback, stopped by a oneshot.
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let url = format!("http://{}", listener.local_addr()?);
//!     let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//!     let server = tokio::spawn(serve(listener, board.clone(), None, async {
//!         let _ = stopped.await;
//!     }));
//!
//!     // `am-daemon stats --url ...`
//!     let snap: Snapshot = fetch_status(&url).await?;
//!     assert_eq!(snap.cluster.protected_vms, 1);
//!     let text = render_stats(&snap, 100);
//!     assert!(text.contains("web"));
//!
//!     let _ = stop.send(());
//!     server.await??;
//!     Ok(())
//! }
//! ```

mod board;
mod client;
mod error;
mod ha;
pub mod metrics;
mod operator;
mod secret;
mod server;
mod snapshot;
mod stats;

pub use board::{AckError, Board, BoardOptions};
pub use client::{
    MAX_BODY, REQUEST_TIMEOUT, ack_alarm, fetch_alarms, fetch_events, fetch_ready, fetch_status,
    operator_request,
};
pub use error::{ApiError, Result};
pub use ha::HaView;
pub use metrics::{render_openmetrics, render_prometheus};
pub use secret::Secret;
pub use server::{DEFAULT_EVENTS, HEADER_TIMEOUT, MAX_CONNECTIONS, ROUTES, SHUTDOWN_GRACE, serve};
pub use snapshot::{
    ALARM_KINDS, Ack, AlarmView, ClusterStats, ExecutorView, HOST_STATES, HostRow, InFlightAction,
    OpCounters, Phase, Snapshot, VmClass, VmRow, alarm_kind_name, parse_alarm_kind, parse_subject,
    subject_path,
};
pub use stats::{
    CLEAR_SCREEN, DEFAULT_WIDTH, WatchOptions, human_duration, render_stats, terminal_width, watch,
};

/// The address the daemon should listen on by default: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";
