//! Host-side bindings generated from `wit/plugin.wit` (the `vendor-plugin` world).
//! Everything the rest of the host needs from them is re-exported by `plugin::*` modules.

wasmtime::component::bindgen!({
    world: "vendor-plugin",
    path: "../wit",
    // Calls into a plugin are async so that a call waiting in a host function (a WASI sleep)
    // can be cut off at its deadline (see `deadline`). Our own imports stay synchronous.
    exports: { default: async },
});

pub use self::edge::plugin::host::Level;
pub use self::edge::plugin::types::{Message, Position, TranslateError};
