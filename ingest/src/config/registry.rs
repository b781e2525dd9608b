//! `schema_registry:`: where Avro routes find writer schemas. Secrets (`password`,
//! `token`) are given like every other (`${VAR}`, `${file:...}`) and masked in logs.

use std::path::PathBuf;
use std::time::Duration;

use ingest_sink_api::secret;
use serde::Deserialize;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// The Confluent-compatible API's base, e.g. `http://registry:8081` or Apicurio's
    /// `http://registry:8080/apis/ccompat/v7`.
    pub url: String,
    /// HTTP basic authentication.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A bearer token, instead of `username` and `password`.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub tls: RegistryTls,
    /// How long one request may take before it counts as failed (and is retried).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryTls {
    /// PEM file of the CA that signed the registry's certificate (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl SchemaRegistryConfig {
    /// One way to authenticate, and a URL.
    pub fn check(&self) -> Result<(), String> {
        if !self.url.starts_with("http://") && !self.url.starts_with("https://") {
            return Err("at `schema_registry.url`: give an http:// or https:// URL".into());
        }
        if self.token.is_some() && (self.username.is_some() || self.password.is_some()) {
            return Err(
                "at `schema_registry`: give `username` and `password`, or `token`, not both".into(),
            );
        }
        if self.password.is_some() && self.username.is_none() {
            return Err("at `schema_registry.password`: give the `username` too".into());
        }
        Ok(())
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl std::fmt::Debug for SchemaRegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &secret::redact_uri(&self.url))
            .field("username", &self.username)
            .field("password", &masked(&self.password))
            .field("token", &masked(&self.token))
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .finish()
    }
}
