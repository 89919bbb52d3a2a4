//! Signed checkpoints of the audit chain head, written by the service
//! ([`stella_store::checkpoint`] has the format and the reasoning).
//!
//! At start the existing checkpoint is checked against the log's durable head — a log that is
//! behind its checkpoint (records cut off while the service was down, or the database
//! replaced) refuses to start rather than re-anchor — and a checkpoint of the current head is
//! written. A background task then writes one every `audit.checkpoint_interval_seconds` when
//! the head has moved, and `Running::finish` writes the last one after the log is closed at
//! shutdown. Checkpoint failures while serving are logged and counted, never fatal: the audit
//! records themselves are durable either way.

use std::sync::Arc;
use std::time::Duration;

use stella_store::checkpoint::Checkpointer;

use crate::app::AppState;
use crate::error::StartError;

/// The running checkpoint task.
pub(crate) struct Running {
    checkpointer: Arc<Checkpointer>,
    task: tokio::task::JoinHandle<()>,
}

async fn write(app: &AppState, cp: &Arc<Checkpointer>) -> Result<bool, StartError> {
    let Some(head) = app.audit.head().await? else {
        return Ok(false);
    };
    let cp = cp.clone();
    let written = tokio::task::spawn_blocking(move || cp.write(&head))
        .await
        .map_err(|e| StartError::Io(format!("audit checkpoint task: {e}")))??;
    Ok(written)
}

/// Check the existing checkpoint against the log's head without writing anything (for a
/// start-up check before the listener is announced); `start` checks again.
pub async fn check(app: &AppState) -> Result<(), StartError> {
    let (Some(key), Some(head)) = (app.audit_checkpoint_key.clone(), app.audit.head().await?)
    else {
        return Ok(());
    };
    let path = app.config.audit.checkpoint_file();
    let backend = app.audit.backend();
    tokio::task::spawn_blocking(move || Checkpointer::open(key, path, backend, &head))
        .await
        .map_err(|e| StartError::Io(format!("audit checkpoint task: {e}")))??;
    Ok(())
}

/// Check the existing checkpoint, write one of the current head, and start the periodic task.
/// `None` when no checkpoint key is configured or the audit backend cannot report its head.
pub(crate) async fn start(app: &AppState) -> Result<Option<Running>, StartError> {
    let Some(key) = app.audit_checkpoint_key.clone() else {
        return Ok(None);
    };
    let Some(head) = app.audit.head().await? else {
        tracing::warn!(
            backend = app.audit.backend(),
            "this audit backend reports no head: no checkpoints are written"
        );
        return Ok(None);
    };
    let path = app.config.audit.checkpoint_file();
    let backend = app.audit.backend();
    let checkpointer = tokio::task::spawn_blocking(move || {
        Checkpointer::open(key, path, backend, &head).map(Arc::new)
    })
    .await
    .map_err(|e| StartError::Io(format!("audit checkpoint task: {e}")))??;
    write(app, &checkpointer).await?;
    tracing::info!(path = %checkpointer.path().display(), "signed audit checkpoints");
    let every = Duration::from_secs(app.config.audit.checkpoint_interval_seconds.max(1));
    let task = {
        let app = app.clone();
        let cp = checkpointer.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = write(&app, &cp).await {
                    tracing::error!(error = %e, "writing the audit checkpoint failed");
                }
            }
        })
    };
    Ok(Some(Running { checkpointer, task }))
}

impl Running {
    /// Stop the periodic task and write the final checkpoint (call after the log is closed).
    pub(crate) async fn finish(self, app: &AppState) -> Result<(), StartError> {
        self.task.abort();
        let _ = self.task.await;
        write(app, &self.checkpointer).await?;
        tracing::info!("final audit checkpoint written");
        Ok(())
    }
}
