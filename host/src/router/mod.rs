//! Where a published message goes.
//!
//! Topic bindings (patterns → queues, optionally through filter plugins) are a later step. Until
//! then a topic delivers to the queue of the same name, so `publish` from a plugin and
//! `POST /v1/topics/{topic}/messages` behave predictably: a topic with no queue of that name is
//! an error the publisher sees, never a message silently dropped.

pub mod index;
pub mod pattern;

use std::sync::Arc;

use crate::model::{Enqueued, NewMessage, validate_name};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    InvalidTopic(String),
    #[error(
        "topic {0:?} has no destination: no queue named {0:?} exists (create it with `spool queue create {0}`)"
    )]
    NoDestination(String),
    #[error(transparent)]
    Store(StoreError),
}

/// Routes published messages into queues.
#[derive(Clone)]
pub struct Router {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Router { store }
    }

    /// Publishes `messages` to `topic`; returns one entry per delivery.
    pub async fn publish(
        &self,
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Enqueued>, RouteError> {
        validate_name("topic", topic).map_err(RouteError::InvalidTopic)?;
        let messages = messages
            .into_iter()
            .map(|mut m| {
                m.topic.get_or_insert_with(|| topic.to_owned());
                m
            })
            .collect();
        match self.store.enqueue(topic, messages).await {
            Ok(ids) => Ok(ids),
            Err(StoreError::QueueNotFound(_)) => Err(RouteError::NoDestination(topic.to_owned())),
            Err(e) => Err(RouteError::Store(e)),
        }
    }
}
