//! Host-side bindings generated from `wit/plugin.wit` (the `vendor-plugin` world).
//! Everything the rest of the host needs from them is re-exported by `plugin::*` modules.

wasmtime::component::bindgen!({
    world: "vendor-plugin",
    path: "../wit",
});

pub use self::edge::plugin::host::Level;
pub use self::edge::plugin::types::{Message, Position, TranslateError};
