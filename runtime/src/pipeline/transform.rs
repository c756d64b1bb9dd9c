//! The affine map from a vendor's map frame (metres) to a Twinzo sector (millimetres):
//! `X = a·x + b·y + tx`, `Y = c·x + d·y + ty`, `Z = z_scale·z`.

use crate::config::TransformConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub d: f64,
    pub tx: f64,
    pub ty: f64,
    pub z_scale: f64,
}

impl Transform {
    pub fn apply(&self, x: f64, y: f64, z: f64) -> (f64, f64, f64) {
        (self.a * x + self.b * y + self.tx, self.c * x + self.d * y + self.ty, self.z_scale * z)
    }
}

impl From<&TransformConfig> for Transform {
    fn from(t: &TransformConfig) -> Self {
        let [a, b, c, d, tx, ty] = t.affine;
        Transform { a, b, c, d, tx, ty, z_scale: t.z_scale }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_plant_transform_maps_a_station() {
        // The fitted similarity of the older plant (docs: vendor-payloads, Coordinates).
        let t = Transform::from(&TransformConfig {
            affine: [999.738230, 22.879501, 22.879501, -999.738230, 95598.77, 167357.60],
            z_scale: 1000.0,
        });
        let (x, y, z) = t.apply(110.943, 62.396, 0.0);
        assert!((x - (999.738230 * 110.943 + 22.879501 * 62.396 + 95598.77)).abs() < 1e-6);
        assert!((y - (22.879501 * 110.943 - 999.738230 * 62.396 + 167357.60)).abs() < 1e-6);
        assert_eq!(z, 0.0);
        // Y is mirrored: moving +1 m in vendor y moves about -1000 mm in sector Y.
        let (_, y2, _) = t.apply(110.943, 63.396, 0.0);
        assert!((y2 - y + 999.738230).abs() < 1e-6);
    }
}
