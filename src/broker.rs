//! The embedded MQTT broker (rumqttd) for `vendgate demo` and for test runs
//! on a machine without Mosquitto. Behind the `embedded-broker` cargo
//! feature (on by default) so a board build can leave it out.

pub use imp::start;

#[cfg(feature = "embedded-broker")]
mod imp {
    /// Starts rumqttd on 127.0.0.1:`port` in its own thread.
    pub fn start(port: u16) -> Result<(), String> {
        let config = serde_json::json!({
            "id": 0,
            "router": {
                "max_connections": 1000,
                "max_outgoing_packet_count": 200,
                "max_segment_size": 104857600,
                "max_segment_count": 10
            },
            "v4": { "1": {
                "name": "v4-1",
                "listen": format!("127.0.0.1:{port}"),
                "next_connection_delay_ms": 1,
                "connections": {
                    "connection_timeout_ms": 60000,
                    "max_payload_size": 4194304,
                    "max_inflight_count": 200,
                    "dynamic_filters": true
                }
            }}
        });
        let config: rumqttd::Config =
            serde_json::from_value(config).map_err(|e| format!("embedded broker config: {e}"))?;
        let mut broker = rumqttd::Broker::new(config);
        std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    tracing::error!("embedded broker stopped: {e}");
                }
            })
            .map_err(|e| format!("cannot start the embedded broker: {e}"))?;
        Ok(())
    }
}

#[cfg(not(feature = "embedded-broker"))]
mod imp {
    pub fn start(_port: u16) -> Result<(), String> {
        Err("this build has no embedded broker (cargo feature `embedded-broker`); install Mosquitto and use `vendgate run`".into())
    }
}
