//! From plugin positions to Twinzo locations, per plant: device map, coordinate transform,
//! motion detection, update cadence and battery rules. No I/O here; the runtime feeds it.

mod admit;
mod device_state;
mod plant;
mod transform;

pub use admit::{Inadmissible, admit};
pub use device_state::DeviceState;
pub use plant::{Outcome, PlantPipeline};
pub use transform::Transform;
