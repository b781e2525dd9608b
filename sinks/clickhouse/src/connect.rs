//! HTTPS to ClickHouse. The `clickhouse` crate is built without TLS: for `https://`
//! URLs we hand it our own hyper-rustls connector, trusting either the CA file of
//! `clickhouse.tls.ca_file` (a private CA) or the system's roots.
//!
//! rustls runs on aws-lc-rs, the provider the object-store client (reqwest) already
//! builds, so TLS here compiles no second crypto library.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

/// The `clickhouse.tls` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseTls {
    /// PEM file of the CA certificate(s) to trust instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// As the crate's own client: keep-alive on idle sockets, and idle connections closed
/// before ClickHouse's 3 s keep-alive timeout would.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `url` needs TLS.
pub fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// The certificates of a PEM file; an error names the file (never its contents).
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}` is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn roots(tls: Option<&ClickHouseTls>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match tls.and_then(|t| t.ca_file.as_deref()) {
        Some(path) => {
            for cert in load_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("`{}`: {e}", path.display()))?;
            }
        }
        None => {
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                return Err(
                    "no CA certificates found on this system; set `clickhouse.tls.ca_file`".into(),
                );
            }
        }
    }
    Ok(roots)
}

/// A client speaking HTTPS (and plain HTTP) with the given trust.
pub(crate) fn https_client(tls: Option<&ClickHouseTls>) -> Result<clickhouse::Client, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots(tls)?)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let http_client = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector);
    Ok(clickhouse::Client::with_http_client(http_client))
}

/// An error and its causes on one line (`network error: client error (Connect): invalid
/// peer certificate: UnknownIssuer`), each cause once.
pub fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// Whether the server's certificate was refused (a wrong CA or host name): retrying
/// cannot help.
pub fn is_certificate_error(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if refuses_certificate(e) {
            return true;
        }
        current = e.source();
    }
    false
}

/// The connector wraps rustls' error in `io::Error`s (twice), whose `source()` skips
/// the wrapped error: look inside them.
fn refuses_certificate(error: &(dyn StdError + 'static)) -> bool {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return matches!(
            tls,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        );
    }
    match error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        Some(inner) => refuses_certificate(inner),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("ingest-ch-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = load_ca_file(&missing).unwrap_err();
        assert!(
            err.contains("missing.pem") && err.contains("cannot read"),
            "{err}"
        );
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hunter2-not-a-certificate\n").unwrap();
        let err = load_ca_file(&not_pem).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn https_is_recognised() {
        assert!(is_https("https://ch:8443") && is_https("HTTPS://ch"));
        assert!(!is_https("http://ch:8123") && !is_https("htt"));
    }

    #[test]
    fn certificate_errors_are_found_in_the_chain() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // As hyper-rustls and tokio-rustls wrap it.
        let io = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        let wrapped = clickhouse::error::Error::Network(Box::new(io));
        assert!(is_certificate_error(&wrapped));
        assert!(
            describe(&wrapped).contains("invalid peer certificate"),
            "{}",
            describe(&wrapped)
        );
        let refused = clickhouse::error::Error::Network(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(!is_certificate_error(&refused));
    }
}
