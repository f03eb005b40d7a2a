//! rumqttc options from the config.

use rumqttc::{LastWill, MqttOptions, QoS};

use super::{SessionSpec, INFLIGHT, MAX_INCOMING_PACKET};
use crate::config::{Config, MqttVersion, Scheme};

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("mqtt.url: {0}:// is not supported by this build yet; use mqtt://")]
    UnsupportedScheme(&'static str),
    #[error("mqtt.version: MQTT 5 is not supported by this build yet; use version: 3")]
    UnsupportedVersion,
}

/// Options for one session: its client id, the will on its status topic
/// (retained, QoS 1, DESIGN §4 Availability), credentials, and limits chosen
/// around rumqttc's defaults (see `mod.rs`).
pub fn mqtt_options(
    config: &Config,
    spec: &SessionSpec,
    will: String,
) -> Result<MqttOptions, OptionsError> {
    let url = &config.mqtt.url;
    match url.scheme {
        Scheme::Mqtt => {}
        Scheme::Mqtts => return Err(OptionsError::UnsupportedScheme("mqtts")),
        Scheme::Ws => return Err(OptionsError::UnsupportedScheme("ws")),
        Scheme::Wss => return Err(OptionsError::UnsupportedScheme("wss")),
    }
    if config.mqtt.version == MqttVersion::V5 {
        return Err(OptionsError::UnsupportedVersion);
    }
    let mut options = MqttOptions::new(spec.client_id.clone(), url.host.clone(), url.port);
    options
        .set_keep_alive(config.mqtt.keep_alive)
        // A clean session: commands sent while the gateway is away are not
        // queued by the broker and executed late (the will has told the
        // business side the machine is offline); our own publishes survive
        // in the durable outbox instead of in the broker's session.
        .set_clean_session(true)
        .set_inflight(INFLIGHT)
        .set_max_packet_size(MAX_INCOMING_PACKET, 1024 * 1024)
        .set_last_will(LastWill::new(
            spec.status_topic.clone(),
            will,
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(user) = &config.mqtt.username {
        let password = config
            .mqtt
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        options.set_credentials(user.clone(), password);
    }
    Ok(options)
}
