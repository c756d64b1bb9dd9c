//! A plugin that waits in a WASI host call where it must not: its describe() sleeps for a
//! minute. For the host's tests that a plugin load cannot hang edge; never deploy it.

use edge_plugin_sdk::{Message, Plugin, PluginInfo, Translation};

struct Sleepy;

impl Plugin for Sleepy {
    fn describe() -> PluginInfo {
        std::thread::sleep(std::time::Duration::from_secs(60));
        PluginInfo {
            name: "sleepy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "edge test suite".into(),
            description: "sleeps in describe(), to test that loads end at their deadline".into(),
            default_topics: vec!["sleepy/#".into()],
            options: vec![],
        }
    }

    fn configure(_options: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn translate(_msg: Message) -> Translation {
        Ok(vec![])
    }
}

edge_plugin_sdk::export!(Sleepy);
