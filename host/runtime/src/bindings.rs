//! Host-side bindings generated from `wit/spool.wit`, one module per world.
//!
//! Imports and exports are async so a plugin's host calls (publish, kv) can await the store and
//! a running plugin can yield at epoch ticks.

/// The `handler` world: imports `host`, exports `handle`.
pub mod handler {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "spool:plugin/handler",
        imports: { default: async },
        exports: { default: async },
    });
}

/// The `filter` world: imports `host`, exports `route`.
pub mod filter {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "spool:plugin/filter",
        imports: { default: async },
        exports: { default: async },
        // Both worlds import the same interfaces: share one set of types and one host
        // implementation, linked once.
        with: {
            "spool:plugin/types": super::handler::spool::plugin::types,
            "spool:plugin/host": super::handler::spool::plugin::host,
        },
    });
}

pub use handler::spool::plugin::host as wit_host;
pub use handler::spool::plugin::types as wit_types;
