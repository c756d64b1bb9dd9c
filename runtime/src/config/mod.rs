//! The typed `edge.yaml`: sources (MQTT + plugin + transform), plants (Twinzo or dry-run,
//! devices, motion, batching), the embedded broker, the simulator, the HTTP endpoint, and
//! health and alerting.
//!
//! Loading collects every problem with its key path (`plants[1].devices["tug-133"].sector`)
//! instead of stopping at the first; see [`load`]. `edge check` prints the result.

mod alerts;
mod interpolate;
mod secret;
mod text;
mod validate;

pub use alerts::{AlertsConfig, HealthConfig, RuleConfig, WebhookConfig, WebhookFormat};
pub use secret::Secret;

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A whole, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where spool and compiled-plugin cache live (relative paths resolve against the
    /// config file's folder, as do all paths).
    pub state_dir: PathBuf,
    /// A folder of plugin components that sources may name their plugin from (`plugin.name`);
    /// edge lists every component in it (`/readyz`, the live page, `edge plugin list`).
    pub plugins_dir: Option<PathBuf>,
    pub http: HttpConfig,
    /// How often the one-line summary is logged.
    pub summary_interval: Duration,
    pub sandbox: SandboxConfig,
    pub spool: SpoolConfig,
    pub health: HealthConfig,
    pub alerts: AlertsConfig,
    pub embedded_broker: Option<EmbeddedBrokerConfig>,
    pub simulator: Option<SimulatorConfig>,
    pub sources: Vec<SourceConfig>,
    pub plants: Vec<PlantConfig>,
}

impl Config {
    pub fn plant(&self, name: &str) -> Option<&PlantConfig> {
        self.plants.iter().find(|p| p.name == name)
    }

    /// `host:port` the simulator publishes to: its own `broker`, else the embedded broker.
    pub fn simulator_broker(&self) -> Option<String> {
        let sim = self.simulator.as_ref()?;
        sim.broker.clone().or_else(|| {
            let listen = self.embedded_broker.as_ref()?.listen;
            let host = if listen.ip().is_unspecified() { "127.0.0.1".to_string() } else { listen.ip().to_string() };
            Some(format!("{host}:{}", listen.port()))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    #[serde(default = "defaults::state_dir")]
    state_dir: PathBuf,
    plugins_dir: Option<PathBuf>,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default = "defaults::summary_interval_s")]
    summary_interval_s: u64,
    #[serde(default)]
    sandbox: SandboxConfig,
    #[serde(default)]
    spool: SpoolConfig,
    embedded_broker: Option<EmbeddedBrokerConfig>,
    simulator: Option<SimulatorConfig>,
    #[serde(default)]
    sources: Vec<Value>,
    #[serde(default)]
    plants: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of /healthz, /readyz and /metrics; localhost unless you mean otherwise.
    #[serde(default = "defaults::http_listen")]
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: defaults::http_listen() }
    }
}

/// Limits for every plugin instance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    #[serde(default = "defaults::memory_mb")]
    pub memory_mb: usize,
    #[serde(default = "defaults::call_timeout_ms")]
    pub call_timeout_ms: u64,
    #[serde(default = "defaults::max_positions")]
    pub max_positions_per_message: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            memory_mb: defaults::memory_mb(),
            call_timeout_ms: defaults::call_timeout_ms(),
            max_positions_per_message: defaults::max_positions(),
        }
    }
}

/// The durable spool of every plant (`state_dir/spool/<plant>.sqlite`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Above this, the oldest history is dropped (each device's latest position stays).
    #[serde(default = "defaults::spool_max_mb")]
    pub max_mb: u64,
    /// Positions queued longer than this are dropped (each device's latest stays).
    #[serde(default = "defaults::spool_max_age_h")]
    pub max_age_h: u64,
    /// A hard ceiling on the spool file, beyond which writes fail as on a full disk and intake
    /// waits. Unset: the disk is the limit.
    pub hard_cap_mb: Option<u64>,
    /// Free space to leave on the spool's filesystem: below it the spool takes no new
    /// positions (intake waits) but goes on delivering, so it can drain.
    #[serde(default = "defaults::spool_min_free_mb")]
    pub min_free_mb: u64,
    /// How fast one device's backlog is replayed after an outage, positions per second.
    #[serde(default = "defaults::replay_per_second")]
    pub replay_per_second: u32,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_mb: defaults::spool_max_mb(),
            max_age_h: defaults::spool_max_age_h(),
            hard_cap_mb: None,
            min_free_mb: defaults::spool_min_free_mb(),
            replay_per_second: defaults::replay_per_second(),
        }
    }
}

/// An MQTT broker inside the edge process (rumqttd), for the default config and demos.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBrokerConfig {
    /// MQTT 3.1.1 listener.
    #[serde(default = "defaults::broker_listen")]
    pub listen: SocketAddr,
    /// Optional MQTT 5 listener.
    pub listen_v5: Option<SocketAddr>,
}

/// The built-in fleet simulator, publishing to an MQTT broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// `host:port` of the broker to publish to (default: the embedded broker).
    pub broker: Option<String>,
    /// Fleet name in the simulator's topics (`edge-sim/{fleet}/{robot}/state`).
    #[serde(default = "defaults::fleet")]
    pub fleet: String,
    /// Messages per second per robot.
    #[serde(default = "defaults::rate_hz")]
    pub rate_hz: f64,
    /// Which formats to publish: `edge-sim` and/or `ati` (to `ati/amr/{robot}/status`).
    #[serde(default = "defaults::sim_formats")]
    pub formats: Vec<SimFormat>,
    #[serde(default = "defaults::sim_robots")]
    pub robots: Vec<SimRobot>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimFormat {
    EdgeSim,
    Ati,
}

/// One simulated robot driving a closed path.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRobot {
    pub name: String,
    /// Battery at start, percent; it drains slowly.
    pub battery: f64,
    /// Metres per second along the path.
    #[serde(default = "defaults::sim_speed")]
    pub speed_mps: f64,
    pub path: SimPath,
}

/// A closed path in the simulator's frame, metres.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SimPath {
    Loop { center: [f64; 2], radius: f64 },
    Rectangle { corner: [f64; 2], width: f64, height: f64 },
    Line { from: [f64; 2], to: [f64; 2] },
}

/// One MQTT connection, the plugin that reads it, and the plant it feeds.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub name: String,
    pub mqtt: MqttConfig,
    pub plugin: PluginRef,
    /// The plant (by name) its positions go to.
    pub plant: String,
    /// Vendor map metres to the plant's sector millimetres.
    pub transform: TransformConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    #[serde(default = "defaults::localhost")]
    pub host: String,
    /// Default 1883, or 8883 with TLS.
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// Default `edge-{source name}`. Some brokers (ATI) require it to equal the username.
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "text::optional_string_or_number")]
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: Option<TlsConfig>,
    /// Subscription QoS; 1 unless the broker needs otherwise (ATI refuses 0).
    #[serde(default = "defaults::qos")]
    pub qos: u8,
    /// Topic filters; default: the plugin's own default topics.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Share the topics with the other edge instances of this group (`$share/<group>/<filter>`):
    /// the broker hands each message to one of them (docs/operations.md, scaling out).
    pub share_group: Option<String>,
    #[serde(default = "defaults::keep_alive_s")]
    pub keep_alive_s: u64,
    /// Largest MQTT packet accepted (VDA 5050 orders can be large).
    #[serde(default = "defaults::max_packet_bytes")]
    pub max_packet_bytes: usize,
    /// Start a new session at every connect, discarding what the broker kept for us. The
    /// default (false) keeps a persistent session: the broker holds QoS 1 messages while
    /// edge is restarting or away, and delivers them when it is back.
    #[serde(default)]
    pub clean_start: bool,
    /// MQTT 5: how long the broker keeps the session after the connection ends; long
    /// enough by default for a reboot, an upgrade or a weekend without the edge box.
    #[serde(default = "defaults::session_expiry_s")]
    pub session_expiry_s: u32,
    /// MQTT 5 Receive Maximum: QoS 1 messages the broker may send before edge acknowledged
    /// them. Edge never holds more unacknowledged messages than this.
    #[serde(default = "defaults::receive_maximum")]
    pub receive_maximum: u16,
}

impl MqttConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls.is_some() { 8883 } else { 1883 })
    }

    /// The client id of source `source`: as configured, else stable across restarts (so that
    /// the broker finds the session again): `edge-<source>`, and in a share group also the host
    /// name, so that the group's instances on different boxes do not take each other's session.
    pub fn client_id_for(&self, source: &str) -> String {
        match (&self.client_id, &self.share_group) {
            (Some(id), _) => id.clone(),
            (None, None) => format!("edge-{source}"),
            (None, Some(_)) => format!("edge-{source}-{}", hostname()),
        }
    }

    /// How many messages the broker sends edge before it waits for their acknowledgements, as
    /// far as edge can tell: MQTT 5 tells the broker `receive_maximum`; over 3.1.1 the broker
    /// decides, and brokers commonly allow 20 (mosquitto's `max_inflight_messages`).
    pub fn unacknowledged_limit(&self) -> usize {
        match self.protocol {
            MqttProtocol::V5 => usize::from(self.receive_maximum.max(1)),
            MqttProtocol::V311 => 20,
        }
    }

    /// The filters to subscribe to: `topics` (or the plugin's `defaults`), in the share group
    /// when there is one.
    pub fn subscriptions(&self, defaults: &[String]) -> Vec<String> {
        let topics = if self.topics.is_empty() { defaults } else { &self.topics };
        match &self.share_group {
            Some(group) => topics.iter().map(|t| format!("$share/{group}/{t}")).collect(),
            None => topics.to_vec(),
        }
    }
}

/// This machine's name (`localhost` when the system cannot tell).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: a buffer of the length given; the name comes back NUL-terminated when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 { buf.split(|b| *b == 0).next().unwrap_or(&[]) } else { &[] };
    let name = String::from_utf8_lossy(name).into_owned();
    if name.is_empty() { "localhost".into() } else { name }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum MqttProtocol {
    #[default]
    #[serde(rename = "3.1.1", alias = "v3.1.1", alias = "4")]
    V311,
    #[serde(rename = "5", alias = "v5", alias = "5.0")]
    V5,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA bundle (PEM) to verify the broker; default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for brokers that want them.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate. Only for brokers whose certificate cannot be
    /// verified (logged loudly at every connect).
    #[serde(default)]
    pub insecure: bool,
}

/// The plugin a source runs: a file, or a component of `plugins_dir` named by its own name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawPluginRef")]
pub struct PluginRef {
    pub location: PluginLocation,
    /// Run the component only if its sha256 is this (hex). With a name, it picks that build
    /// among the folder's components of that name.
    pub sha256: Option<String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PluginLocation {
    /// `path:` a component file.
    File(PathBuf),
    /// `name:` the component of `plugins_dir` whose `describe()` gives this name (the highest
    /// version when there are several).
    Named(String),
}

impl PluginRef {
    pub fn options(&self) -> Vec<(String, String)> {
        self.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The component file, when the source names one.
    pub fn file(&self) -> Option<&Path> {
        match &self.location {
            PluginLocation::File(path) => Some(path),
            PluginLocation::Named(_) => None,
        }
    }
}

impl fmt::Display for PluginLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginLocation::File(path) => write!(f, "{}", path.display()),
            PluginLocation::Named(name) => write!(f, "plugin `{name}` of plugins_dir"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPluginRef {
    path: Option<PathBuf>,
    name: Option<String>,
    sha256: Option<String>,
    #[serde(default, deserialize_with = "text::string_map")]
    options: BTreeMap<String, String>,
}

impl TryFrom<RawPluginRef> for PluginRef {
    type Error = &'static str;
    fn try_from(raw: RawPluginRef) -> Result<Self, Self::Error> {
        let location = match (raw.path, raw.name) {
            (Some(path), None) => PluginLocation::File(path),
            (None, Some(name)) if !name.trim().is_empty() => PluginLocation::Named(name),
            (None, Some(_)) => return Err("`name` must not be empty"),
            (Some(_), Some(_)) => {
                return Err("give either `path` (a component file) or `name` (in plugins_dir), not both");
            }
            (None, None) => return Err("needs `path` (a component file) or `name` (a plugin in plugins_dir)"),
        };
        Ok(PluginRef { location, sha256: raw.sha256, options: raw.options })
    }
}

/// `X = a·x + b·y + tx`, `Y = c·x + d·y + ty` (metres in, millimetres out); `Z = z_scale·z`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// `[a, b, c, d, tx, ty]`
    pub affine: [f64; 6],
    #[serde(default = "defaults::z_scale")]
    pub z_scale: f64,
}

/// One Twinzo branch (or a dry run) and the devices posted to it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantConfig {
    pub name: String,
    pub twinzo: Option<TwinzoConfig>,
    /// Log what would be posted instead of posting.
    pub dry_run: bool,
    /// Vendor robot id → Twinzo device.
    pub devices: BTreeMap<String, DeviceConfig>,
    pub motion: MotionConfig,
    pub batching: BatchingConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinzoConfig {
    #[serde(default = "defaults::twinzo_url")]
    pub base_url: String,
    /// Tenant name (`client` in the authenticate call).
    pub client: String,
    pub api_key: Secret,
    /// The branch GUID every device of this plant must belong to.
    pub branch: String,
    #[serde(default = "defaults::request_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Twinzo device login (default: the robot id).
    #[serde(default, deserialize_with = "text::optional_string_or_number")]
    pub login: Option<String>,
    pub password: Option<Secret>,
    /// Twinzo's integer sector id (not its GUID).
    pub sector: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    /// Moving when the device moved more than this over the window.
    #[serde(default = "defaults::threshold_mm")]
    pub threshold_mm: f64,
    #[serde(default = "defaults::window_ms")]
    pub window_ms: u64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig { threshold_mm: defaults::threshold_mm(), window_ms: defaults::window_ms() }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Posts of one device start at least this far apart (0: a post starts as soon as the
    /// previous one ended): a device updating less often posts each position at once, a faster
    /// one in batches (a request per position would cost more than the position). Either way,
    /// what arrives while a post is in flight goes together in the next one.
    #[serde(default = "defaults::flush_interval_ms")]
    pub flush_interval_ms: u64,
    #[serde(default = "defaults::max_batch")]
    pub max_batch: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig { flush_interval_ms: defaults::flush_interval_ms(), max_batch: defaults::max_batch() }
    }
}

mod defaults {
    use super::*;
    pub fn state_dir() -> PathBuf {
        ".edge".into()
    }
    pub fn summary_interval_s() -> u64 {
        30
    }
    pub fn http_listen() -> SocketAddr {
        ([127, 0, 0, 1], 9464).into()
    }
    pub fn broker_listen() -> SocketAddr {
        ([127, 0, 0, 1], 1883).into()
    }
    pub fn memory_mb() -> usize {
        64
    }
    pub fn call_timeout_ms() -> u64 {
        100
    }
    pub fn max_positions() -> usize {
        1000
    }
    pub fn spool_max_mb() -> u64 {
        512
    }
    pub fn spool_min_free_mb() -> u64 {
        64
    }
    pub fn spool_max_age_h() -> u64 {
        7 * 24
    }
    pub fn replay_per_second() -> u32 {
        1000
    }
    pub fn fleet() -> String {
        "default".into()
    }
    pub fn rate_hz() -> f64 {
        10.0
    }
    pub fn sim_formats() -> Vec<SimFormat> {
        vec![SimFormat::EdgeSim, SimFormat::Ati]
    }
    pub fn sim_speed() -> f64 {
        1.2
    }
    pub fn sim_robots() -> Vec<SimRobot> {
        vec![
            SimRobot {
                name: "tugger-01".into(),
                battery: 79.0,
                speed_mps: 1.2,
                path: SimPath::Loop { center: [60.0, 60.0], radius: 25.0 },
            },
            SimRobot {
                name: "tugger-02".into(),
                battery: 77.0,
                speed_mps: 1.0,
                path: SimPath::Rectangle { corner: [120.0, 30.0], width: 60.0, height: 40.0 },
            },
            SimRobot {
                name: "tugger-03".into(),
                battery: 75.0,
                speed_mps: 1.5,
                path: SimPath::Line { from: [20.0, 150.0], to: [200.0, 150.0] },
            },
        ]
    }
    pub fn localhost() -> String {
        "localhost".into()
    }
    pub fn qos() -> u8 {
        1
    }
    pub fn keep_alive_s() -> u64 {
        30
    }
    pub fn max_packet_bytes() -> usize {
        1 << 20
    }
    pub fn session_expiry_s() -> u32 {
        7 * 24 * 3600
    }
    pub fn receive_maximum() -> u16 {
        1024
    }
    pub fn z_scale() -> f64 {
        1000.0
    }
    pub fn twinzo_url() -> String {
        "https://api.platform.twinzo.com/v3".into()
    }
    pub fn request_timeout_ms() -> u64 {
        10_000
    }
    pub fn threshold_mm() -> f64 {
        250.0
    }
    pub fn window_ms() -> u64 {
        2000
    }
    pub fn flush_interval_ms() -> u64 {
        50
    }
    pub fn max_batch() -> usize {
        100
    }
}

/// One problem in the configuration, at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "{} has {n} problem{}:", self.file.display(), if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// A loaded configuration and the things worth knowing that are not errors.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigError>,
    /// Key paths of secrets written in the file itself rather than taken from `${VAR}`.
    pub literal_secrets: Vec<String>,
}

/// Reads, interpolates and validates the configuration at `path`. A file that anyone may
/// write, or that anyone may read while it holds secrets in clear, is refused.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    load_with(path, &|name| std::env::var(name).ok())
}

/// As [`load`], for commands that only read this machine's state (`edge spool`, `edge
/// status`): a secret whose environment variable is unset is left empty instead of refused,
/// so an operator needs no Twinzo password to look at the spool.
pub fn load_local(path: &Path) -> Result<Loaded, ConfigErrors> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let root: Value = serde_saphyr::from_str(&text).unwrap_or_default();
    let mut unset = std::collections::HashSet::new();
    secret_variables(&root, "", &mut |name| {
        if std::env::var_os(name).is_none() {
            unset.insert(name.to_string());
        }
    });
    load_with(path, &|name| std::env::var(name).ok().or_else(|| unset.contains(name).then(String::new)))
}

fn load_with(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigErrors> {
    let fail = |message: String| ConfigErrors { file: path.into(), errors: vec![ConfigError::new("", message)] };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let loaded = parse(&text, base, env).map_err(|errors| ConfigErrors { file: path.into(), errors })?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.permissions(),
    );
    if mode & 0o002 != 0 {
        return Err(fail(
            "every user may write this file, and so redirect positions or credentials: chmod o-w it".into(),
        ));
    }
    if mode & 0o004 != 0 && !loaded.literal_secrets.is_empty() {
        return Err(fail(format!(
            "every user may read this file, and it holds secrets in clear ({}): chmod 600 it, or take them from the environment (${{VAR}})",
            loaded.literal_secrets.join(", ")
        )));
    }
    Ok(loaded)
}

/// Parses configuration text; relative paths resolve against `base`, `${VAR}` through `env`.
pub fn parse(text: &str, base: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, Vec<ConfigError>> {
    let mut root: Value = serde_saphyr::from_str(text).map_err(|e| vec![yaml_syntax_error(&e)])?;
    if root.is_null() {
        root = Value::Object(Default::default());
    }
    let mut errors = Vec::new();
    let mut literal_secrets = Vec::new();
    find_literal_secrets(&root, "", &mut literal_secrets);
    interpolate::interpolate(&mut root, "", env, &mut errors);
    let config = validate::build(root, base, &mut errors);
    match config {
        Some(config) if errors.is_empty() => {
            let warnings = validate::warnings(&config);
            Ok(Loaded { config, warnings, literal_secrets })
        }
        _ => Err(errors),
    }
}

/// A YAML syntax error by position and kind, never quoting the file: the line at fault may
/// hold a password (the parser's own rendering shows the source around it).
fn yaml_syntax_error(e: &serde_saphyr::Error) -> ConfigError {
    let options = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    // The plain rendering names the place ("at line 3, column 24").
    ConfigError::new("", format!("not valid YAML: {}", elide_quoted(&e.render_with_options(options))))
}

/// `text` with whatever stands between quotes or backticks replaced by `…`.
fn elide_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open: Option<char> = None;
    for c in text.chars() {
        match open {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if matches!(c, '"' | '\'' | '`') {
                    open = Some(c);
                }
            }
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out
}

/// Whether `key` under `parent` holds a secret: a password, an API key, a webhook URL (which
/// carries its token).
fn is_secret_key(parent: &str, key: &str) -> bool {
    matches!(key, "password" | "api_key") || (key == "url" && parent.starts_with("alerts.webhooks"))
}

/// Calls `found` with each environment variable a secret-bearing key refers to.
fn secret_variables(value: &Value, path: &str, found: &mut dyn FnMut(&str)) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match item {
                    Value::String(text) if is_secret_key(path, key) => {
                        for reference in text.split("${").skip(1) {
                            let name = reference.split(['}', ':']).next().unwrap_or("");
                            found(name);
                        }
                    }
                    _ => secret_variables(item, &join_key(path, key), found),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                secret_variables(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// Secret-bearing keys whose value is written out rather than taken from the environment.
fn find_literal_secrets(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                let at = join_key(path, key);
                let secret_key = is_secret_key(path, key);
                match item {
                    Value::String(s) if secret_key && !s.is_empty() && !s.contains("${") => found.push(at),
                    Value::Number(_) if secret_key => found.push(at),
                    _ => find_literal_secrets(item, &at, found),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                find_literal_secrets(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// `parent.key`, or `parent["key"]` when the key is not a plain identifier.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mqtt(yaml: &str) -> MqttConfig {
        let text = format!(
            "sources:\n  - {{ name: s, mqtt: {yaml}, plugin: {{ path: p.wasm }}, plant: p, transform: {{ affine: [1, 0, 0, 1, 0, 0] }} }}\nplants:\n  - {{ name: p, dry_run: true }}\n"
        );
        let loaded = parse(&text, Path::new("/x"), &|_| None).unwrap_or_else(|e| panic!("{e:?}"));
        loaded.config.sources[0].mqtt.clone()
    }

    #[test]
    fn a_share_group_shares_every_filter_and_keeps_client_ids_apart() {
        let plain = mqtt("{}");
        assert_eq!(plain.subscriptions(&["a/+/b".into()]), vec!["a/+/b"]);
        assert_eq!(plain.client_id_for("s"), "edge-s");
        let shared = mqtt("{ share_group: plant-1, topics: [\"x/#\", \"y\"] }");
        assert_eq!(shared.subscriptions(&["ignored".into()]), vec!["$share/plant-1/x/#", "$share/plant-1/y"]);
        assert!(shared.client_id_for("s").starts_with("edge-s-"), "{}", shared.client_id_for("s"));
        assert_eq!(mqtt("{ share_group: g, client_id: mine }").client_id_for("s"), "mine");
        assert_eq!((plain.unacknowledged_limit(), mqtt("{ protocol: \"5\" }").unacknowledged_limit()), (20, 1024));
    }

    #[test]
    fn a_share_group_name_and_filters_are_checked() {
        let text = "sources:\n  - { name: s, mqtt: { share_group: \"a/b\", topics: [\"$share/g/x\"] }, plugin: { path: p.wasm }, plant: p, transform: { affine: [1, 0, 0, 1, 0, 0] } }\nplants:\n  - { name: p, dry_run: true }\n";
        let errors = parse(text, Path::new("/x"), &|_| None).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(
            paths.contains(&"sources[0].mqtt.share_group") && paths.contains(&"sources[0].mqtt.topics[0]"),
            "{errors:?}"
        );
    }
}
