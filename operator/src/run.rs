//! The operator process: logging, the health/metrics server, leader election, the controllers,
//! and a graceful stop on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{watcher, Controller};
use kube::Api;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::crd::CairnCluster;
use crate::leader::{LeaderElector, LeaseConfig};
use crate::members::GrpcStoreView;
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile, Context};
use crate::server::{self, AppState};

#[derive(Debug, Clone)]
pub struct Config {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    pub listen: SocketAddr,
    /// `None` disables leader election (a single replica).
    pub lease: Option<LeaseConfig>,
    pub instance: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("health server: {0}")]
    Server(#[source] std::io::Error),
    #[error(transparent)]
    Leader(#[from] crate::leader::LeaderError),
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub async fn run(cfg: Config) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested");
        let _ = stop_tx.send(true);
    });

    let state = AppState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let server = tokio::spawn(server::serve(cfg.listen, state, stopped()));

    let client = kube::Client::try_default()
        .await
        .map_err(RunError::Client)?;
    // Standby replicas are ready too: they are healthy and waiting for the lease.
    ready.store(true, Ordering::Relaxed);

    let elector = cfg
        .lease
        .clone()
        .map(|l| LeaderElector::new(client.clone(), l));
    if let Some(elector) = &elector {
        tokio::select! {
            r = elector.acquire() => r?,
            _ = stopped() => return finish(server).await,
        }
        metrics.set_leader(true);
    }

    let reporter = Reporter {
        controller: "cairn-operator".into(),
        instance: cfg.instance.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        store: Arc::new(GrpcStoreView::default()),
        metrics: metrics.clone(),
    });

    let scopes: Vec<Option<String>> = if cfg.namespaces.is_empty() {
        vec![None]
    } else {
        cfg.namespaces.iter().cloned().map(Some).collect()
    };
    let controllers = futures::future::join_all(scopes.into_iter().map(|ns| {
        let (clusters, sets): (Api<CairnCluster>, Api<StatefulSet>) = match &ns {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let managed =
            watcher::Config::default().labels("app.kubernetes.io/managed-by=cairn-operator");
        info!(
            namespace = ns.as_deref().unwrap_or("<all>"),
            "starting controller"
        );
        Controller::new(clusters, watcher::Config::default())
            .owns(sets, managed)
            .graceful_shutdown_on(stopped())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    // Reconcile errors are already logged by error_policy; these are watch errors.
                    warn!(error = %e, "controller event");
                }
            })
    }));

    match &elector {
        Some(elector) => {
            tokio::select! {
                _ = controllers => {}
                lost = elector.keep() => {
                    metrics.set_leader(false);
                    error!(error = %lost, "stopping: leadership lost");
                    return Err(lost.into());
                }
            }
        }
        None => controllers.await.into_iter().for_each(drop),
    }
    finish(server).await
}

async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> Result<(), RunError> {
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => Err(RunError::Server(e)),
        _ => Ok(()),
    }
}
