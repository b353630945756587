//! The settings a reload may change (API, endpoint, key, extra root),
//! checked once into [`Settings`]: at start-up, for a reload before
//! anything changes ([`check_settings`]), and by
//! [`super::Places::reconfigure`].

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::sync::Arc;

use super::url::Endpoint;
use super::{tls, SetupError};
use crate::config::{PlacesApi, PlacesConfig};

/// The settings a reload may change, checked and ready to use.
pub(super) struct Settings {
    pub api: PlacesApi,
    pub endpoint: Endpoint,
    pub key: Option<String>,
    pub key_env: String,
    pub tls: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

impl Settings {
    pub fn new(config: &PlacesConfig, key: Option<String>) -> Result<Settings, SetupError> {
        let endpoint = Endpoint::parse(&config.url).map_err(|e| SetupError(e.to_string()))?;
        let name = match endpoint.ip {
            Some(ip) => ServerName::from(ip),
            None => ServerName::try_from(endpoint.host.clone())
                .map_err(|e| SetupError(format!("bad Places host {:?}: {e}", endpoint.host)))?,
        };
        let tls = tls::client_config(config.ca.as_deref()).map_err(SetupError)?;
        let key = key.map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
        if key
            .as_deref()
            .is_some_and(|k| k.bytes().any(|b| b < 0x20 || b == 0x7f))
        {
            return Err(SetupError(format!(
                "the Places API key in {} holds control characters",
                config.key_env
            )));
        }
        Ok(Settings {
            api: config.api,
            endpoint,
            key,
            key_env: config.key_env.clone(),
            tls,
            name,
        })
    }
}

/// Checks Places settings as [`super::Places::with_limits`] and
/// [`super::Places::reconfigure`] would take them (the URL, the extra root, the
/// key), without making a client: for a reload, before anything changes.
pub fn check_settings(config: &PlacesConfig, key: Option<String>) -> Result<(), SetupError> {
    Settings::new(config, key).map(|_| ())
}
