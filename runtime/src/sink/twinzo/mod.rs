//! The Twinzo sink: the HTTP API as it behaves on the wire ([`api`]), and a device poster that
//! owns one device's token (cached, refreshed before expiry, renewed on 401, backed off on failure).

pub mod api;
mod device;
mod preflight;

pub use api::{ApiError, TwinzoApi};
pub use device::TwinzoDevice;
pub use preflight::{Preflight, check_devices};
