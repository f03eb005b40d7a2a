//! rumqttc options from the config: the transport (TCP, TLS, websockets) and
//! the per-session settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{v5, TlsConfiguration, Transport};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::client::{Client, EventLoop};
use super::{SessionSpec, INFLIGHT, MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET, REQUEST_CAPACITY};
use crate::config::{Config, MqttVersion, Scheme, TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// A file of `mqtt.tls` cannot be read or used. `problem` never quotes
    /// the file's content (it may be a private key).
    #[error("mqtt.tls.{key}: {}: {problem}", path.display())]
    TlsFile {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "mqtt.url: {scheme}:// without mqtt.tls.ca_file needs the system's trusted root \
         certificates, and none were found{detail}; set mqtt.tls.ca_file"
    )]
    NoSystemRoots {
        scheme: &'static str,
        detail: String,
    },
}

/// How every session reaches the brokers. Built once per run: the TLS files
/// and the system's roots are read at start, so a bad file is a start error
/// (exit code 2) rather than a connection that fails forever.
#[derive(Clone)]
pub struct Connection {
    /// One per `mqtt.url`, in the order to try them.
    targets: Vec<Target>,
}

/// One broker address.
#[derive(Clone)]
struct Target {
    transport: Transport,
    /// What rumqttc takes as the broker address: the host for TCP and TLS
    /// (also the name the server certificate is checked against), the whole
    /// URL for websockets (rumqttc takes host, port and path from it, and
    /// for wss:// the name to check).
    broker_addr: String,
    port: u16,
    /// For the logs: the URL as `MqttUrl` displays it.
    url: String,
}

impl Connection {
    pub fn from_config(config: &Config) -> Result<Connection, OptionsError> {
        let mut targets = Vec::new();
        for url in &config.mqtt.urls {
            // The same `mqtt.tls` files for every TLS URL of the list.
            let tls = || -> Result<TlsConfiguration, OptionsError> {
                let cfg = client_config(url.scheme, config.mqtt.tls.as_ref())?;
                Ok(TlsConfiguration::Rustls(Arc::new(cfg)))
            };
            let transport = match url.scheme {
                Scheme::Mqtt => Transport::Tcp,
                Scheme::Mqtts => Transport::tls_with_config(tls()?),
                Scheme::Ws => Transport::Ws,
                Scheme::Wss => Transport::wss_with_config(tls()?),
            };
            let broker_addr = if url.scheme.is_websocket() {
                // `MqttUrl`'s Display is `scheme://host:port/path`, with IPv6
                // hosts in brackets, which is what rumqttc's websocket code parses.
                url.to_string()
            } else {
                url.host.clone()
            };
            targets.push(Target {
                transport,
                broker_addr,
                port: url.port,
                url: url.to_string(),
            });
        }
        Ok(Connection { targets })
    }
}

/// The rustls client config for mqtts:// and wss://: TLS 1.2 and 1.3 with
/// the `ring` provider; roots from `ca_file`, else the system's; a client
/// certificate when `cert_file` and `key_file` are set. The server name is
/// always checked (rumqttc takes it from the URL's host).
fn client_config(scheme: Scheme, tls: Option<&TlsConfig>) -> Result<ClientConfig, OptionsError> {
    let roots = match tls.and_then(|t| t.ca_file.as_deref()) {
        Some(ca_file) => file_roots(ca_file)?,
        None => system_roots(scheme)?,
    };
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            // ring's provider supports every safe default version.
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots);
    let client_cert = tls.and_then(|t| t.cert_file.as_deref().zip(t.key_file.as_deref()));
    match client_cert {
        Some((cert_file, key_file)) => {
            let chain = read_certs("cert_file", cert_file)?;
            let key = read_key(key_file)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| OptionsError::TlsFile {
                    key: "key_file",
                    path: key_file.to_owned(),
                    problem: match e {
                        rustls::Error::InconsistentKeys(_) => {
                            "this key does not belong to the certificate in mqtt.tls.cert_file"
                                .to_owned()
                        }
                        other => format!("the key cannot be used: {other}"),
                    },
                })
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

fn file_roots(ca_file: &Path) -> Result<RootCertStore, OptionsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in read_certs("ca_file", ca_file)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| OptionsError::TlsFile {
            key: "ca_file",
            path: ca_file.to_owned(),
            problem: format!("certificate #{} is not a usable CA certificate: {e}", i + 1),
        })?;
    }
    Ok(roots)
}

fn system_roots(scheme: Scheme) -> Result<RootCertStore, OptionsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    // Like a browser: unparsable system certificates are skipped.
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let detail = match found.errors.first() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        };
        return Err(OptionsError::NoSystemRoots {
            scheme: scheme.as_str(),
            detail,
        });
    }
    Ok(roots)
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, OptionsError> {
    std::fs::read(path).map_err(|e| OptionsError::TlsFile {
        key,
        path: path.to_owned(),
        problem: format!("cannot read it: {e}"),
    })
}

/// PEM errors in our own words: some of rustls' messages quote bytes of the
/// file, and a key file's bytes must never reach a log.
fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no `-----END` line".into(),
        pem::Error::IllegalSectionStart { .. } => "a `-----BEGIN` line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        pem::Error::SectionTooLarge => "a PEM section is too large".into(),
        _ => "not a valid PEM file".into(),
    }
}

fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, OptionsError> {
    let bytes = read_file(key, path)?;
    let problem = |problem: String| OptionsError::TlsFile {
        key,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(problem(
            "no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----`)".into(),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, OptionsError> {
    let bytes = read_file("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| OptionsError::TlsFile {
        key: "key_file",
        path: path.to_owned(),
        problem: match e {
            pem::Error::NoItemsFound => "no private key in it (expected PEM `PRIVATE KEY`, \
                                         `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
                .into(),
            other => pem_problem(&other),
        },
    })
}

/// rumqttc's options for one broker, in the configured protocol version.
#[derive(Clone)]
pub(super) enum Options {
    V4(Box<rumqttc::MqttOptions>),
    V5(Box<v5::MqttOptions>),
}

/// A session's brokers (`mqtt.url`, DESIGN §3): the options for each, and
/// which one is in use. The driver moves on when the one in use fails.
pub(super) struct Brokers {
    options: Vec<Options>,
    urls: Vec<String>,
    current: usize,
}

impl Brokers {
    /// More than one broker to fail over to.
    pub fn several(&self) -> bool {
        self.options.len() > 1
    }

    /// The URL in use, for the logs.
    pub fn url(&self) -> &str {
        self.urls.get(self.current).map_or("", String::as_str)
    }

    /// The next broker, round robin: its options for the event loop.
    pub fn next(&mut self) -> Options {
        self.current = (self.current + 1) % self.options.len().max(1);
        self.options[self.current].clone()
    }
}

/// The client and event loop of one session (connecting to the first
/// broker) and its brokers.
pub(super) fn session_client(
    config: &Config,
    connection: &Connection,
    spec: &SessionSpec,
    will: String,
) -> (Client, EventLoop, Brokers) {
    let options: Vec<Options> = connection
        .targets
        .iter()
        .map(|target| options_for(config, target, spec, will.clone()))
        .collect();
    let (client, eventloop) = match options.first().cloned() {
        Some(Options::V4(first)) => {
            let (client, eventloop) = rumqttc::AsyncClient::new(*first, REQUEST_CAPACITY);
            (Client::V4(client), EventLoop::V4(Box::new(eventloop)))
        }
        Some(Options::V5(first)) => {
            let (client, eventloop) = v5::AsyncClient::new(*first, REQUEST_CAPACITY);
            (Client::V5(client), EventLoop::V5(Box::new(eventloop)))
        }
        // The config has at least one URL; a session without is unreachable.
        None => {
            let first = rumqttc::MqttOptions::new(spec.client_id.clone(), "", 1883);
            let (client, eventloop) = rumqttc::AsyncClient::new(first, REQUEST_CAPACITY);
            (Client::V4(client), EventLoop::V4(Box::new(eventloop)))
        }
    };
    let urls = connection.targets.iter().map(|t| t.url.clone()).collect();
    let brokers = Brokers {
        options,
        urls,
        current: 0,
    };
    (client, eventloop, brokers)
}

/// One session's options for one broker: its client id, the will on its
/// status topic (retained, QoS 1, DESIGN §4 Availability), credentials,
/// and limits chosen around rumqttc's defaults (see `mod.rs`).
fn options_for(config: &Config, target: &Target, spec: &SessionSpec, will: String) -> Options {
    let credentials = config.mqtt.username.as_ref().map(|user| {
        let password = config.mqtt.password.as_ref().map(|p| p.expose().to_owned());
        (user.clone(), password.unwrap_or_default())
    });
    match config.mqtt.version {
        MqttVersion::V3 => {
            let mut options = rumqttc::MqttOptions::new(
                spec.client_id.clone(),
                target.broker_addr.clone(),
                target.port,
            );
            options
                .set_transport(target.transport.clone())
                .set_keep_alive(config.mqtt.keep_alive)
                // A clean session: commands sent while the gateway is away
                // are not queued by the broker and executed late (the will
                // has told the business side the machine is offline); our
                // own publishes survive in the durable outbox instead of in
                // the broker's session.
                .set_clean_session(true)
                .set_inflight(INFLIGHT)
                .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
                .set_last_will(rumqttc::LastWill::new(
                    spec.status_topic.clone(),
                    will,
                    rumqttc::QoS::AtLeastOnce,
                    true,
                ));
            if let Some((user, password)) = credentials {
                options.set_credentials(user, password);
            }
            Options::V4(Box::new(options))
        }
        MqttVersion::V5 => {
            let mut options = v5::MqttOptions::new(
                spec.client_id.clone(),
                target.broker_addr.clone(),
                target.port,
            );
            options
                .set_transport(target.transport.clone())
                .set_keep_alive(config.mqtt.keep_alive)
                // Clean start with the default session expiry (0): the same
                // clean session as under 3.1.1, for the same reasons.
                .set_clean_start(true)
                // The broker's Receive Maximum lowers it further. rumqttc
                // sizes its packet-id table from it: unbounded, that table
                // would take megabytes per session.
                .set_outgoing_inflight_upper_limit(INFLIGHT)
                .set_max_packet_size(Some(MAX_INCOMING_PACKET as u32))
                .set_last_will(v5::mqttbytes::v5::LastWill::new(
                    spec.status_topic.clone(),
                    will,
                    v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    None,
                ));
            if let Some((user, password)) = credentials {
                options.set_credentials(user, password);
            }
            Options::V5(Box::new(options))
        }
    }
}
