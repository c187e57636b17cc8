//! `POST /api/backup {"path"}`: a consistent copy of the running server's data directory (see
//! `crate::backup`), written on a thread of its own so no shard waits for it; answered once
//! complete. One at a time, server-wide.

use std::path::PathBuf;

use serde::Serialize;

use crate::api::body::JsonObject;
use crate::api::context::Ctx;
use crate::api::error::ApiError;
use crate::backup::{self, Error};
use crate::http::response::Response;

#[derive(Serialize)]
struct Written {
    path: String,
    bytes: u64,
}

pub async fn create(cx: &Ctx<'_>) -> Result<Response, ApiError> {
    let body = JsonObject::from_request(cx.req)?;
    let path = body.string(
        "path",
        "`path` is required: an absolute directory on the server, new or empty",
    )?;
    if let Some(k) = body.unknown_key(&["path"]) {
        return Err(ApiError::invalid_field(format!(
            "`{k}` is not a backup setting; the body is {{\"path\"}}"
        )));
    }
    let target = PathBuf::from(path);
    let running = cx.backups.begin().ok_or_else(|| {
        ApiError::new(
            409,
            "backup_running",
            "another backup is running; retry once it has finished",
        )
    })?;
    let who = cx.principal()?.name.clone();
    let store = cx.local.fleet().store.clone();
    let data_dir = cx.data_dir.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tracing::info!(target = %target.display(), by = %who, "backup started");
    std::thread::Builder::new()
        .name("fg-backup".to_string())
        .spawn(move || {
            let result = backup::write(&store, &data_dir, &target);
            // Free before answering, so the caller may start the next one at once; and held until
            // the backup ends even if the request that started it has gone away.
            drop(running);
            let _ = tx.send(result);
        })
        .map_err(|e| failed(format!("could not start the backup thread: {e}")))?;
    let written = rx
        .await
        .map_err(|_| failed("the backup thread ended without an answer".to_string()))?
        .map_err(|e| {
            tracing::warn!(error = %e, "backup failed");
            answer(e)
        })?;
    tracing::info!(path = %written.path.display(), bytes = written.bytes, "backup written");
    Ok(Response::json_value(
        201,
        &Written {
            path: written.path.display().to_string(),
            bytes: written.bytes,
        },
    ))
}

fn failed(message: String) -> ApiError {
    ApiError::new(500, "backup_failed", message)
}

/// A backup's failure, told to the admin who asked: the path and the OS error are theirs to act on.
fn answer(e: Error) -> ApiError {
    match e {
        Error::BadPath(_) => ApiError::new(400, "invalid_path", e.to_string()),
        Error::NotEmpty(_) => ApiError::new(409, "target_not_empty", e.to_string()),
        Error::InUse { .. } | Error::Invalid(_) | Error::Io(..) | Error::Store(_) => {
            failed(e.to_string())
        }
    }
}
