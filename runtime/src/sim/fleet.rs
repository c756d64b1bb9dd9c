//! Simulated robots: position along a closed path as a function of time, heading along the
//! path, a slowly draining battery. Pure and deterministic, so it is easy to test.

use crate::config::{SimPath, SimRobot};
use std::f64::consts::{PI, TAU};

/// Battery drain per hour of driving, percent.
const DRAIN_PER_HOUR: f64 = 6.0;

pub struct Fleet {
    robots: Vec<SimRobot>,
}

/// One robot at one moment, in the simulator's frame (metres, radians from +x, counter-clockwise).
#[derive(Debug, Clone, PartialEq)]
pub struct RobotState {
    pub name: String,
    pub x: f64,
    pub y: f64,
    pub heading: f64,
    pub speed_mps: f64,
    pub battery: f64,
}

impl Fleet {
    pub fn new(robots: Vec<SimRobot>) -> Self {
        Fleet { robots }
    }

    /// Every robot `elapsed_s` seconds after the start.
    pub fn at(&self, elapsed_s: f64) -> Vec<RobotState> {
        self.robots.iter().map(|r| state(r, elapsed_s)).collect()
    }
}

fn state(robot: &SimRobot, elapsed_s: f64) -> RobotState {
    let distance = robot.speed_mps * elapsed_s;
    let (x, y, heading) = along(&robot.path, distance);
    RobotState {
        name: robot.name.clone(),
        x,
        y,
        heading,
        speed_mps: robot.speed_mps,
        battery: (robot.battery - DRAIN_PER_HOUR * elapsed_s / 3600.0).max(5.0),
    }
}

/// The point `distance` metres along a closed path, and the heading there.
fn along(path: &SimPath, distance: f64) -> (f64, f64, f64) {
    match *path {
        SimPath::Loop { center: [cx, cy], radius } => {
            let angle = distance / radius.max(0.1);
            (cx + radius * angle.cos(), cy + radius * angle.sin(), wrap(angle + PI / 2.0))
        }
        SimPath::Line { from: [x0, y0], to: [x1, y1] } => {
            // There and back again.
            let length = (x1 - x0).hypot(y1 - y0).max(0.1);
            let s = distance.rem_euclid(2.0 * length);
            let (t, forward) = if s <= length { (s / length, true) } else { (2.0 - s / length, false) };
            let heading = (y1 - y0).atan2(x1 - x0) + if forward { 0.0 } else { PI };
            (x0 + t * (x1 - x0), y0 + t * (y1 - y0), wrap(heading))
        }
        SimPath::Rectangle { corner: [x0, y0], width, height } => {
            let (w, h) = (width.max(0.1), height.max(0.1));
            let s = distance.rem_euclid(2.0 * (w + h));
            if s < w {
                (x0 + s, y0, 0.0)
            } else if s < w + h {
                (x0 + w, y0 + (s - w), PI / 2.0)
            } else if s < 2.0 * w + h {
                (x0 + w - (s - w - h), y0 + h, PI)
            } else {
                (x0, y0 + h - (s - 2.0 * w - h), wrap(3.0 * PI / 2.0))
            }
        }
    }
}

fn wrap(angle: f64) -> f64 {
    angle.rem_euclid(TAU)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn robot(path: SimPath) -> SimRobot {
        SimRobot { name: "r".into(), battery: 79.0, speed_mps: 1.0, path }
    }

    #[test]
    fn paths_are_closed_and_continuous() {
        for path in [
            SimPath::Loop { center: [0.0, 0.0], radius: 10.0 },
            SimPath::Rectangle { corner: [0.0, 0.0], width: 6.0, height: 4.0 },
            SimPath::Line { from: [0.0, 0.0], to: [10.0, 0.0] },
        ] {
            let r = robot(path);
            let mut previous = state(&r, 0.0);
            for step in 1..2000 {
                let now = state(&r, step as f64 * 0.1);
                let jump = (now.x - previous.x).hypot(now.y - previous.y);
                assert!(jump <= 0.1 + 1e-9, "{:?} jumped {jump} m at step {step}", r.path);
                previous = now;
            }
        }
    }

    #[test]
    fn battery_drains_slowly_from_its_own_level() {
        let r = robot(SimPath::Loop { center: [0.0, 0.0], radius: 1.0 });
        assert_eq!(state(&r, 0.0).battery, 79.0);
        assert!((state(&r, 3600.0).battery - 73.0).abs() < 1e-9);
    }
}
