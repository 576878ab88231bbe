//! The server's lifecycle: build the shared state ([`AppState`]), serve, shut down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::AppState;
use crate::auth::{Verifier, random_string};
use crate::backends::Backend;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::notifications::Notifications;
use crate::outbox::Outbox;
use crate::room::{Registry, RegistryParts, keepalive};
use crate::store::Store;
use crate::tickets::Tickets;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Development mode may only listen on loopback.
    #[error(
        "no [auth] jwt_secret, public_key_path or jwks_url is configured (development mode), so \
         onair only listens on loopback, not {0}; set ONAIR_AUTH__JWT_SECRET to listen elsewhere"
    )]
    DevModeNotLoopback(std::net::SocketAddr),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// `[cluster] redis_url` is not a usable Redis URL.
    #[error("[cluster] redis_url: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// `[auth] public_key_path` could not be loaded.
    #[error(transparent)]
    Auth(#[from] crate::auth::KeyError),
    /// `[storage]` could not be set up.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// Binding or serving failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl AppState {
    /// Builds the state (opening the store); without any token key, sets up development mode.
    pub fn new(config: Config, shutdown: CancellationToken) -> Result<Self, ServerError> {
        // Development mode: no token key at all (no secret, PEM key or JWKS).
        let dev_mode = !config.auth.has_token_keys();
        let secret = config
            .auth
            .jwt_secret
            .clone()
            .unwrap_or_else(|| random_string(48));
        let admin_key = config
            .auth
            .admin_key
            .clone()
            .or_else(|| dev_mode.then(|| random_string(32)));
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("onair/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend initializes");
        let backend = Arc::new(Backend::from_config(&config, http.clone()));
        let store = Arc::new(Store::open(&config.store.path)?);
        let cluster = crate::cluster::Cluster::from_config(&config.cluster)?;
        // The catalog and what hangs on it: in Redis with `[cluster]`, so
        // that every node serves the same (SPEC §7).
        let records = crate::store::CatalogStore::new(store.clone(), cluster.clone());
        if let (Backend::Nextcloud(nextcloud), Some(cluster)) = (backend.as_ref(), &cluster) {
            nextcloud.attach_cluster(cluster.clone());
        }
        if let Backend::Livekit(livekit) = backend.as_ref() {
            livekit.attach_store(store.clone());
            if let Some(cluster) = &cluster {
                livekit.attach_cluster(cluster.clone());
            }
        }
        let outbox = Arc::new(Outbox::new(
            &config.webhooks,
            store.clone(),
            cluster.clone(),
        ));
        let rooms = Arc::new(Registry::new(RegistryParts {
            policy: backend.policy(
                config.recording.enabled,
                config.recording.empty_room_grace_s > 0,
            ),
            backend,
            waits: crate::room::Waits {
                start: Duration::from_secs(config.recording.start_timeout_s),
                stop: Duration::from_secs(config.recording.stop_timeout_s),
                empty_room: Duration::from_secs(config.recording.empty_room_grace_s),
            },
            store: store.clone(),
            facts: records.clone(),
            outbox: outbox.clone(),
            cluster,
            room_fanout_per_second: config.server.room_fanout_per_second,
            large_room_threshold: config.server.large_room_threshold,
        }));
        // Media URLs must verify after a restart and on every node, so their
        // key derives from a configured secret: the token secret, else the
        // admin key (public-key deployments); random only in development mode.
        let media_key = {
            use sha2::Digest;
            let base = match (&config.auth.jwt_secret, &config.auth.admin_key) {
                (Some(secret), _) => format!("token secret\n{secret}"),
                (None, Some(admin)) => format!("admin key\n{admin}"),
                (None, None) => format!("random\n{secret}"),
            };
            sha2::Sha256::digest(format!("onair media URLs\n{base}")).into()
        };
        let links = crate::catalog::Links::from_config(&config, media_key);
        let storage = Arc::new(crate::storage::Storage::from_config(
            &config,
            records.clone(),
            shutdown.clone(),
        )?);
        let notifications = Arc::new(Notifications::new(
            &config,
            store.clone(),
            records.clone(),
            links.clone(),
            Some(storage.clone()),
        ));
        let mut limits = crate::limits::Limits::new(&config.server);
        let open_files = raise_open_files();
        let websockets = limits.fit_open_files(open_files);
        tracing::info!(
            open_files,
            max_connections = websockets,
            max_http_connections = config.server.max_http_connections,
            "connection limits (WebSockets and HTTP connections fit in the open-file limit)"
        );
        Ok(Self {
            limits: Arc::new(limits),
            // HS256 with the configured secret (or development mode's); public
            // keys only, when only those are configured.
            verifier: Verifier::from_config(
                &config.auth,
                (config.auth.jwt_secret.is_some() || dev_mode).then_some(secret.as_str()),
                http.clone(),
            )?,
            tickets: Tickets::new(
                Duration::from_secs(config.auth.ticket_ttl_s),
                rooms.cluster().cloned(),
            ),
            joins: crate::limits::JoinRate::new(&config.server),
            rooms,
            catalog: Arc::new(
                Catalog::new(records, outbox.clone(), notifications.clone(), links)
                    .with_storage(storage),
            ),
            store,
            outbox,
            notifications,
            http,
            admin_key,
            dev_mode,
            shutdown,
            sessions: TaskTracker::new(),
            config,
        })
    }
}

/// Raises this process's open-file limit to its hard limit, logs what it
/// got, and returns it.
fn raise_open_files() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::info!(open_files = limit, "open-file limit");
            limit
        }
        Err(e) => {
            let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
            tracing::warn!(error = %e, open_files = limit, "could not raise the open-file limit");
            limit
        }
    }
}

/// Serves onair on `listener` until `shutdown` completes, then closes every
/// socket with 1001 and waits (at most `[server] shutdown_grace_s`) for them.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let local = listener.local_addr()?;
    if !config.auth.has_token_keys() && !local.ip().is_loopback() {
        return Err(ServerError::DevModeNotLoopback(local));
    }
    let token = CancellationToken::new();
    let app = Arc::new(AppState::new(config, token.clone())?);
    if app.dev_mode {
        tracing::warn!(
            "DEVELOPMENT MODE: no [auth] jwt_secret configured. A random secret was generated, \
             tokens are handed out by POST /v1/dev/token, and onair listens on loopback only. \
             Do not use this in production."
        );
        if app.config.auth.admin_key.is_none()
            && let Some(key) = &app.admin_key
        {
            tracing::warn!("DEVELOPMENT MODE: generated admin key for the REST API: {key}");
        }
    }
    let sweeper = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(app.tickets.ttl());
            loop {
                every.tick().await;
                app.tickets.sweep();
            }
        })
    };

    // [cluster]: connect, heartbeat and relay room events until shutdown.
    if let Some(cluster) = app.rooms.cluster().cloned() {
        tokio::spawn(cluster.run(app.rooms.clone(), app.shutdown.clone()));
    }
    let delivering = tokio::spawn(
        app.outbox
            .clone()
            .run(app.http.clone(), app.shutdown.clone()),
    );
    // [storage] s3: check the bucket, move files still on local disk.
    app.catalog.start_storage();
    // Keepalive: ping every joined socket, close the silent ones (a sweep in slices, no timer per socket).
    let ping_every = app.config.server.ping_interval_s;
    if ping_every > 0 {
        let rooms = app.rooms.clone();
        let stopped = app.shutdown.clone();
        // Sweeps a socket may miss: silent for more than ping_timeout_s.
        let limit = u8::try_from(app.config.server.ping_timeout_s.div_ceil(ping_every))
            .unwrap_or(u8::MAX - 1)
            .min(u8::MAX - 1);
        tokio::spawn(async move {
            // A slice of the sockets per tick (see `room::keepalive`).
            let tick = keepalive::tick(Duration::from_secs(ping_every));
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for slice in (0..keepalive::SLICES).cycle() {
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = every.tick() => rooms.sweep_silent(limit, slice),
                }
            }
        });
    }
    // Deadlines saved with their transitions (also those of a previous run).
    tokio::spawn(app.rooms.clone().enforce_deadlines(app.shutdown.clone()));
    // [storage] retention: expired recordings go, as DELETE would.
    tokio::spawn(crate::retention::run(app.clone(), app.shutdown.clone()));
    // [recording] reconcile_interval_s: rooms compared with the provider's list.
    tokio::spawn(crate::reconcile::run(app.clone(), app.shutdown.clone()));
    // 8x8 JaaS: recording downloads a previous run left pending.
    crate::webhooks::jaas::resume(&app);
    tracing::info!(%local, "onair listening");
    let mut router = crate::http::router(app.clone());
    // [auth] jwks_url: keys fetched at once and kept fresh; a token with an
    // unknown `kid` gets one (rate-limited) refetch before its handler runs.
    if let Some(jwks) = app.verifier.jwks() {
        tokio::spawn(jwks.clone().keep_fresh(app.shutdown.clone()));
        router = router.layer(axum::middleware::from_fn_with_state(
            jwks.clone(),
            crate::auth::fetch_unknown_keys,
        ));
    }
    let grace = Duration::from_secs(app.config.server.shutdown_grace_s);
    tokio::spawn(async move {
        shutdown.await;
        token.cancel();
    });
    let served = crate::http::serve(
        listener,
        router,
        app.limits.clone(),
        app.config.server.clone(),
        app.shutdown.clone(),
    );
    let mut serving = tokio::spawn(served);
    tokio::select! {
        // Shutdown first: graceful serving ends right after it, and the
        // sockets still have to be closed.
        biased;
        _ = app.shutdown.cancelled() => {}
        result = &mut serving => {
            sweeper.abort();
            result.map_err(std::io::Error::other)?;
            return Ok(());
        }
    }
    tracing::info!("shutting down: closing sockets with 1001");
    // Upgraded sockets are not tracked by the HTTP server: wait for them separately.
    app.sessions.close();
    let drained = tokio::time::timeout(grace, async {
        app.sessions.wait().await;
        let _ = serving.await;
    })
    .await;
    sweeper.abort();
    // Notifications in flight get a moment to finish.
    app.notifications.drain(Duration::from_secs(3)).await;
    // The outbox makes a last bounded pass on shutdown; what is left goes after a restart.
    let _ = tokio::time::timeout(Duration::from_secs(3), delivering).await;
    if drained.is_err() {
        tracing::warn!("shutdown grace period over; dropping the remaining connections");
    }
    tracing::info!("onair stopped");
    Ok(())
}
