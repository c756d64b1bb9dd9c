//! The built-in fleet simulator: robots driving closed paths, published over MQTT in the
//! simulator's own format (`edge-sim/1`, docs/simulator.md) and in ATI sherpa format; and the
//! load generator that measures edge at a plant's scale (`load`).

mod fleet;
pub mod load;
mod publisher;

pub use fleet::{Fleet, RobotState};
pub use publisher::run;
