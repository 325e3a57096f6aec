//! `GET /v1/events`: the node's event bus (`crate::events`) streamed to the dashboard and `xov events`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast;

use crate::api::AppState;
use crate::events::Event;

/// `GET /v1/events`: the bus as server-sent events, one JSON object per event, named by its `type`.
pub async fn stream(
    State(st): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = st.events.subscribe();
    let s = futures::stream::unfold(rx, |mut rx| async move {
        let e = match rx.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(missed)) => Event::Lagged { missed },
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        let data = serde_json::to_string(&e).unwrap_or_default();
        Some((Ok(SseEvent::default().event(e.kind()).data(data)), rx))
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
