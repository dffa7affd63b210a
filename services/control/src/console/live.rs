//! Live updates: `GET /console/events` is a stream of server-sent events,
//! one `change` each time the read model changes (an incident opened, was
//! decided, healed). A page fetches its live parts again when told; the
//! watch channel coalesces a burst of changes into one event.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use super::session::Signed;
use crate::Api;

pub(crate) async fn events(
    State(api): State<Arc<Api>>,
    Signed(_): Signed,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut changes = api.model().changes.subscribe();
    changes.mark_unchanged();
    let stream = futures::stream::unfold(changes, |mut changes| async move {
        // The sender lives as long as the read model: an error ends the stream.
        changes.changed().await.ok()?;
        let version = *changes.borrow_and_update();
        Some((Ok(Event::default().event("change").data(version.to_string())), changes))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
