//! The start-up check the field bridges never made: does each device sign in, belong to the
//! plant's branch, and post to a sector of that branch? Otherwise its positions never show.

use super::api::TwinzoApi;
use crate::config::PlantConfig;

/// What the check found.
#[derive(Debug, Default)]
pub struct Preflight {
    /// One line per problem; empty when all is well.
    pub problems: Vec<String>,
    /// Whether Twinzo answered at all (any device signed in).
    pub reached: bool,
    /// The branch's sectors with their size, (id, width mm, height mm), for the map.
    pub sectors: Vec<(i64, f64, f64)>,
}

/// Checks every device of a Twinzo plant.
pub async fn check_devices(api: &TwinzoApi, plant: &PlantConfig) -> Preflight {
    let Some(twinzo) = &plant.twinzo else { return Preflight { reached: true, ..Preflight::default() } };
    let mut problems = Vec::new();
    let mut reached = false;
    let mut sized = std::collections::BTreeMap::new();
    for (robot, device) in &plant.devices {
        let login = device.login.as_deref().unwrap_or(robot);
        let Some(password) = &device.password else { continue };
        let who = format!("device {robot:?} (login {login})");
        let token = match api.authenticate(login, password).await {
            Ok(token) => {
                reached = true;
                token
            }
            Err(e) => {
                problems.push(format!("{who}: cannot sign in: {e}"));
                continue;
            }
        };
        if token.branch != twinzo.branch {
            problems.push(format!(
                "{who} belongs to branch {}, not the plant's branch {}: Twinzo will refuse its positions",
                token.branch, twinzo.branch
            ));
            continue;
        }
        let sectors = api.sectors(&token).await;
        for s in sectors.iter().flatten() {
            if let (Some(w), Some(h)) = (s.sector_width, s.sector_height) {
                sized.insert(s.id, (w, h));
            }
        }
        match sectors {
            Ok(sectors) if sectors.iter().any(|s| s.id == device.sector) => {}
            Ok(sectors) => {
                let ids: Vec<String> = sectors.iter().map(|s| s.id.to_string()).collect();
                problems.push(format!(
                    "{who}: sector {} is not in branch {} (its sectors: {}); Twinzo accepts such positions but they never appear",
                    device.sector, twinzo.branch, if ids.is_empty() { "none".into() } else { ids.join(", ") }
                ));
            }
            Err(e) => problems.push(format!("{who}: cannot list sectors: {e}")),
        }
    }
    let sectors = sized.into_iter().map(|(id, (w, h))| (id, w, h)).collect();
    Preflight { problems, reached, sectors }
}
