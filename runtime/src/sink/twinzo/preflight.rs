//! The start-up check the field bridges never made: does each device sign in, belong to the
//! plant's branch, and post to a sector of that branch? Otherwise its positions never show.

use super::api::TwinzoApi;
use crate::config::PlantConfig;

/// Checks every device of a Twinzo plant: one line per problem (empty when all is well), and
/// whether Twinzo answered at all (any device signed in).
pub async fn check_devices(api: &TwinzoApi, plant: &PlantConfig) -> (Vec<String>, bool) {
    let Some(twinzo) = &plant.twinzo else { return (Vec::new(), true) };
    let mut problems = Vec::new();
    let mut reached = false;
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
        match api.sectors(&token).await {
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
    (problems, reached)
}
