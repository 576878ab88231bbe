//! The 8x8 JaaS bridge (being built). JaaS takes no commands: a moderator
//! whose JaaS token allows it records from the Jitsi client, and onair
//! follows the recording through 8x8's webhooks.

use crate::config::JaasConfig;

/// The JaaS bridge.
pub struct Jaas {
    #[allow(dead_code)]
    config: JaasConfig,
    #[allow(dead_code)]
    http: reqwest::Client,
}

impl Jaas {
    /// A bridge for this configuration.
    pub fn new(config: &JaasConfig, http: reqwest::Client) -> Self {
        Self {
            config: config.clone(),
            http,
        }
    }
}
