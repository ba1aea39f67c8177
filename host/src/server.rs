//! `pitboss serve`: opens the database, starts the bus consumers, the delivery workers and the HTTP
//! API, and shuts down gracefully on SIGTERM/SIGINT — stops accepting, finishes the requests in flight,
//! lets the consumers finish their batch and the workers the deliveries in hand. The background tasks
//! live in one set that is dropped with `run`: if `run` is cancelled (a crash, as far as the tasks can
//! tell), they stop where they are.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::config::{ServeArgs, ServeOptions};
use crate::core::Core;
use crate::store::Db;
use crate::store::contacts::ContactsKey;

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let contacts_key = match (&args.contacts_key, args.dev) {
        (Some(k), _) => ContactsKey::from_hex(k)?,
        (None, true) => {
            // Kept beside the data, so that a restart reads what the last run wrote.
            let path = args.options.data_dir.join("dev-contacts.key");
            let key = ContactsKey::dev(&path)?;
            eprintln!("--dev: contacts are encrypted with the development key in {}", path.display());
            key
        }
        (None, false) => anyhow::bail!(
            "no contacts key: set PITBOSS_CONTACTS_KEY (64 hex characters, e.g. `openssl rand -hex 32`) or run with --dev"
        ),
    };
    let mut options = args.options;
    if let Some(path) = &options.config {
        options.settings = crate::config::Settings::load(path)?;
    }
    let db = Db::open(&args.db.database_url).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!(
        "pitboss listening on http://{} ({})",
        listener.local_addr()?,
        crate::store::redact(&args.db.database_url)
    );
    run(db, contacts_key, &options, listener, shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` completes, then finishes what is in flight.
pub async fn run(
    db: Db,
    contacts_key: ContactsKey,
    options: &ServeOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let core = Arc::new(Core::open(db, contacts_key, options).await?);
    let worker = Arc::new(crate::delivery::worker::Worker::new(
        core.db.clone(),
        core.contacts_key.clone(),
        core.delivery.clone(),
    )?);
    let state = AppState { core: core.clone(), principals: crate::auth::new_principal_cache() };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    // Binding and pack changes made by other processes sharing the database arrive within a second.
    {
        let core = core.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let (mut seen, mut seen_packs) = (None, None);
            loop {
                if let Err(e) = core.registry.refresh_if_changed(&mut seen).await {
                    tracing::error!(error = %e, "refreshing bindings");
                }
                if let Err(e) = core.policies.packs.refresh_if_changed(&mut seen_packs).await {
                    tracing::error!(error = %format!("{e:#}"), "refreshing policy packs");
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
    // The capabilities built on the core: their bus consumers (on SQLite, a group's transaction takes
    // them in this order: the triggers' decisions first) and background jobs.
    let engage = crate::engage::Engage::new(core.clone());
    let offers = crate::offers::Offers::new(core.clone());
    let consumers = core
        .consumers()
        .into_iter()
        .chain(crate::engage::consumers(&engage))
        .chain(crate::segments::consumers(&core))
        .chain(crate::offers::consumers(&offers))
        .collect();
    for task in crate::bus::start(consumers, &core.bus, &stop_rx) {
        tasks.spawn(task);
    }
    tasks.spawn(crate::segments::sweep::scheduler(core.clone(), stop_rx.clone()));
    tasks.spawn(crate::engage::scheduler(engage, stop_rx.clone()));
    tasks.spawn(crate::offers::worker(offers, stop_rx.clone()));
    tasks.spawn(worker.run(stop_rx));
    axum::serve(listener, api::app(state)).with_graceful_shutdown(shutdown).await?;
    let _ = stop_tx.send(true);
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("pitboss: shutting down");
}
