//! What a plugin upload must be, and which worlds its users need: checked the same way by both
//! backends.

use spool_model::{RouteId, validate_name};

use crate::{StoreError, StoreResult};

/// The world a queue's handler must have.
pub const HANDLER_WORLD: &str = "handler";
/// The world a route's filter must have.
pub const FILTER_WORLD: &str = "filter";

/// Checks an upload's name, world, digest and size before anything is written.
pub fn validate_upload(name: &str, world: &str, sha256: &str, wasm: &[u8]) -> StoreResult<()> {
    validate_name("plugin", name).map_err(StoreError::Invalid)?;
    let world_ok = !world.is_empty()
        && world.len() <= 64
        && world.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    if !world_ok {
        return Err(StoreError::Invalid(format!(
            "plugin {name:?}: world {world:?} must be 1 to 64 characters of a-z and -"
        )));
    }
    let sha_ok = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !sha_ok {
        return Err(StoreError::Invalid(format!(
            "plugin {name:?}: sha256 must be 64 lowercase hex digits"
        )));
    }
    if wasm.is_empty() {
        return Err(StoreError::Invalid(format!(
            "plugin {name:?}: the component is empty"
        )));
    }
    Ok(())
}

/// Refuses to make `version` (of `world`) of `name` active while something needs `name` in
/// another world: the `queues` naming it as their handler need a `handler`, the `routes` naming
/// it as their filter a `filter`.
pub fn check_users_world(
    name: &str,
    version: &str,
    world: &str,
    queues: &[String],
    routes: &[RouteId],
) -> StoreResult<()> {
    if world != FILTER_WORLD && !routes.is_empty() {
        let routes: Vec<String> = routes.iter().map(RouteId::to_string).collect();
        return Err(StoreError::WrongWorld(format!(
            "plugin {name:?} {version} is a {world} plugin, but route(s) {} use {name:?} as \
             their filter, which needs the `filter` world; deploy it under another name, or \
             delete those routes first",
            routes.join(", ")
        )));
    }
    if world == HANDLER_WORLD || queues.is_empty() {
        return Ok(());
    }
    Err(StoreError::WrongWorld(format!(
        "plugin {name:?} {version} is a {world} plugin, but queue(s) {} use {name:?} as their \
         handler, which needs the `handler` world; deploy it under another name, or change \
         those queues' handler first",
        queues.join(", ")
    )))
}
