//! Deployed plugins: the versions kept in the store, which one is active, hot swap and rollback.
//!
//! The [`crate::runtime`] below compiles and runs components and knows nothing of the store;
//! this module decides *which* component a queue or route runs.

mod registry;
mod settings;

pub use registry::{PluginRegistry, RegistryError};
pub use settings::{Effective, FileSettings};
