//! The REST catalog client with its OAuth2 token renewed when the catalog refuses it
//! (iceberg-catalog-rest 0.10 fetches one token per process and never renews it).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent,
};
use iceberg_catalog_rest::RestCatalog;

/// How the REST catalog client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RestAuth {
    /// `credential` (OAuth2 client credentials): exchanged for tokens, so a new one can
    /// be fetched (also when a `token` is given too: it is used first).
    Credential,
    /// `token` only: sent as is, nothing to renew it with.
    StaticToken,
    None,
}

impl RestAuth {
    pub(super) fn of(props: &HashMap<String, String>) -> Self {
        if props.contains_key("credential") {
            Self::Credential
        } else if props.contains_key("token") {
            Self::StaticToken
        } else {
            Self::None
        }
    }
}

/// The HTTP status of a call the REST catalog refused as unauthenticated: 401, 403, or
/// the spec's 419 (credentials timed out). iceberg-catalog-rest 0.10 reports these as
/// kind `Unexpected`, message "Received response with unexpected status code", the
/// status in its context (`status: 401 Unauthorized`), which only `Display` shows.
fn refused_status(error: &Error) -> Option<u16> {
    if error.kind() != ErrorKind::Unexpected
        || error.message() != "Received response with unexpected status code"
    {
        return None;
    }
    let text = error.to_string();
    let status = text.split_once("status: ")?.1.get(..3)?.parse().ok()?;
    matches!(status, 401 | 403 | 419).then_some(status)
}

/// What a permanent refusal's message starts with (see [`is_permanent_refusal`]).
const REFUSED_FOR_GOOD: &str = "the REST catalog `";

/// True for a refusal no retry can change: the catalog refused a static `token`, or
/// wants authentication and none is configured.
pub fn is_permanent_refusal(error: &Error) -> bool {
    error.kind() == ErrorKind::PreconditionFailed && error.message().starts_with(REFUSED_FOR_GOOD)
}

/// Why a token refused right after it was fetched is not renewed again.
const FRESH_TOKEN_REFUSED: &str = "refused a token fetched just now for the configured \
    `credential`: the credentials are wrong or lack a permission";

/// The REST catalog with its OAuth2 token renewed. iceberg-catalog-rest 0.10 exchanges
/// `credential` for a token once and sends it for the life of the process, but catalogs
/// expire tokens (SeaweedFS after an hour, Polaris and others too) and refuse every call
/// from then on. A call refused as unauthenticated makes this fetch a new token and make
/// the call once more; with a static `token` the refusal is a permanent error, and so
/// is a token refused right after it was fetched (the credentials lack a permission:
/// fetching more tokens would not help).
#[derive(Debug)]
pub(super) struct RenewingRestCatalog {
    inner: RestCatalog,
    auth: RestAuth,
    /// The catalog URI for messages (password masked).
    uri: String,
    /// A new token was fetched and no call has succeeded with it yet.
    unproven: AtomicBool,
}

impl RenewingRestCatalog {
    pub(super) fn new(inner: RestCatalog, auth: RestAuth, uri: String) -> Self {
        Self {
            inner,
            auth,
            uri,
            unproven: AtomicBool::new(false),
        }
    }

    /// Notes a call that went through: the current token works.
    fn proven<T>(&self, result: iceberg::Result<T>) -> iceberg::Result<T> {
        if result.is_ok() {
            self.unproven.store(false, Ordering::Relaxed);
        }
        result
    }

    /// `call`, made again once with a new token when the catalog refuses the first one.
    async fn renewing<T, F, Fut>(&self, call: F) -> iceberg::Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = iceberg::Result<T>>,
    {
        match call().await {
            Err(error) => match refused_status(&error) {
                Some(status) => {
                    self.renew(status, error).await?;
                    match call().await {
                        Err(error) => match refused_status(&error) {
                            Some(status) => {
                                Err(self.refused_for_good(status, FRESH_TOKEN_REFUSED, error))
                            }
                            None => Err(error),
                        },
                        done => self.proven(done),
                    }
                }
                None => Err(error),
            },
            done => self.proven(done),
        }
    }

    /// Fetches a new token after the catalog refused a call with `status`; a permanent
    /// error when there is nothing to fetch one with.
    async fn renew(&self, status: u16, refused: Error) -> iceberg::Result<()> {
        let uri = &self.uri;
        let why = match self.auth {
            RestAuth::Credential if self.unproven.swap(true, Ordering::Relaxed) => {
                FRESH_TOKEN_REFUSED
            }
            RestAuth::Credential => {
                tracing::info!(
                    catalog = %uri,
                    status,
                    "the REST catalog refused the OAuth2 token (expired?); fetching a new one"
                );
                return self.inner.regenerate_token().await.map_err(|e| {
                    let message = format!(
                        "the REST catalog `{uri}` refused the token ({status}) \
                         and no new one could be fetched: {e}"
                    );
                    Error::new(ErrorKind::Unexpected, message)
                });
            }
            RestAuth::StaticToken => {
                "refused the configured `token`; a static token cannot be renewed: configure \
                 `credential` (OAuth2 client credentials) for tokens the service renews, or a \
                 valid `token`"
            }
            RestAuth::None => {
                "requires authentication: configure `credential` (OAuth2 client credentials) \
                 or `token`"
            }
        };
        Err(self.refused_for_good(status, why, refused))
    }

    /// A refusal no retry can change (see [`is_permanent_refusal`]).
    fn refused_for_good(&self, status: u16, why: &str, refused: Error) -> Error {
        Error::new(
            ErrorKind::PreconditionFailed,
            format!("{REFUSED_FOR_GOOD}{}` {why} (HTTP {status})", self.uri),
        )
        .with_source(refused)
    }
}

/// A copy of `creation` (`TableCreation` is not `Clone`), to send it again.
fn copy_creation(creation: &TableCreation) -> TableCreation {
    TableCreation {
        name: creation.name.clone(),
        location: creation.location.clone(),
        schema: creation.schema.clone(),
        partition_spec: creation.partition_spec.clone(),
        sort_order: creation.sort_order.clone(),
        properties: creation.properties.clone(),
        format_version: creation.format_version,
    }
}

#[async_trait::async_trait]
impl Catalog for RenewingRestCatalog {
    /// A `TableCommit` cannot be rebuilt here: after a refusal (the commit was not
    /// applied) and a new token, the error comes back retryable, and
    /// `Transaction::commit` builds the commit again and sends it (through
    /// `PinnedCatalog`: on the same base snapshot, the same compare-and-swap).
    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        let ident = commit.identifier().clone();
        match self.inner.update_table(commit).await {
            Err(error) => match refused_status(&error) {
                Some(status) => {
                    self.renew(status, error).await?;
                    let message = format!(
                        "the REST catalog `{}` refused the commit to {ident} ({status}), \
                         not applied; retrying with a new token",
                        self.uri
                    );
                    Err(Error::new(ErrorKind::Unexpected, message).with_retryable(true))
                }
                None => Err(error),
            },
            done => self.proven(done),
        }
    }

    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.renewing(|| self.inner.list_namespaces(parent)).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.renewing(|| self.inner.create_namespace(namespace, properties.clone()))
            .await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.renewing(|| self.inner.get_namespace(namespace)).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.renewing(|| self.inner.namespace_exists(namespace))
            .await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.renewing(|| self.inner.update_namespace(namespace, properties.clone()))
            .await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.renewing(|| self.inner.drop_namespace(namespace)).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.renewing(|| self.inner.list_tables(namespace)).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.renewing(|| self.inner.create_table(namespace, copy_creation(&creation)))
            .await
    }
    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        self.renewing(|| self.inner.load_table(table)).await
    }
    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.renewing(|| self.inner.drop_table(table)).await
    }
    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.renewing(|| self.inner.purge_table(table)).await
    }
    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.renewing(|| self.inner.table_exists(table)).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.renewing(|| self.inner.rename_table(src, dest)).await
    }
    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.renewing(|| self.inner.register_table(table, metadata_location.clone()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogConfig, CatalogKind, open_catalog};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn refusals_are_read_from_the_status() {
        // As iceberg-catalog-rest 0.10 reports a status it has no case for.
        let reply = |status: &str| {
            Error::new(
                ErrorKind::Unexpected,
                "Received response with unexpected status code",
            )
            .with_context("status", status.to_string())
            .with_context("headers", "{}")
            .with_context("json", r#"{"error": {"code": 500}}"#)
        };
        assert_eq!(refused_status(&reply("401 Unauthorized")), Some(401));
        assert_eq!(refused_status(&reply("403 Forbidden")), Some(403));
        assert_eq!(
            refused_status(&reply("419 <unknown status code>")),
            Some(419)
        );
        assert_eq!(refused_status(&reply("500 Internal Server Error")), None);
        let other = Error::new(ErrorKind::DataInvalid, "status: 401");
        assert_eq!(refused_status(&other), None);
    }

    /// A REST catalog answering `GET /v1/config`, `HEAD /v1/namespaces/{ns}` (204) and
    /// `POST /v1/oauth/tokens`; a request without the live token gets 401 as SeaweedFS
    /// answers an expired one.
    #[derive(Default)]
    struct FakeCatalog {
        /// The token requests are accepted with (the last one issued, until expired).
        live: Mutex<Option<String>>,
        issued: Mutex<u32>,
        /// Refuses every catalog call, whatever the token (missing permissions).
        forbidden: Mutex<bool>,
        /// `METHOD path -> status` of every request.
        seen: Mutex<Vec<String>>,
    }

    impl FakeCatalog {
        fn answer(&self, head: &str) -> (u16, String) {
            let request = head.lines().next().unwrap_or_default();
            let header = |name: &str| {
                head.lines().find_map(|line| {
                    let (key, value) = line.split_once(": ")?;
                    key.eq_ignore_ascii_case(name).then_some(value)
                })
            };
            let bearer = header("authorization")
                .and_then(|value| value.strip_prefix("Bearer "))
                .map(str::to_string);
            let (status, body) = if request.starts_with("POST /v1/oauth/tokens ") {
                let mut issued = self.issued.lock().unwrap();
                *issued += 1;
                let token = format!("token-{issued}");
                *self.live.lock().unwrap() = Some(token.clone());
                let body = format!(
                    r#"{{"access_token":"{token}","token_type":"bearer","expires_in":3600}}"#
                );
                (200, body)
            } else if *self.forbidden.lock().unwrap() {
                let body =
                    r#"{"error":{"message":"not allowed","type":"ForbiddenException","code":403}}"#;
                (403, body.to_string())
            } else if bearer.is_none() || bearer != *self.live.lock().unwrap() {
                let body = r#"{"error":{"message":"Bearer token is invalid or expired","type":"NotAuthorizedException","code":401}}"#;
                (401, body.to_string())
            } else if request.starts_with("GET /v1/config") {
                (200, r#"{"defaults":{},"overrides":{}}"#.to_string())
            } else {
                (204, String::new())
            };
            let path = request.rsplit_once(' ').map_or(request, |(p, _)| p);
            let path = path.split('?').next().unwrap_or(path);
            self.seen
                .lock()
                .unwrap()
                .push(format!("{path} -> {status}"));
            (status, body)
        }

        /// Serves on a local port: the catalog URI with `userinfo`.
        async fn serve(self: &Arc<Self>, userinfo: &str) -> String {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let uri = format!("http://{userinfo}{}", listener.local_addr().unwrap());
            let fake = Arc::clone(self);
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let fake = Arc::clone(&fake);
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        // The request head, then its body (read, not used).
                        let (head, body_start) = loop {
                            let n = socket.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break (String::from_utf8_lossy(&buf[..end]).into_owned(), end + 4);
                            }
                        };
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")?
                                    .parse()
                                    .ok()
                            })
                            .unwrap_or(0);
                        while buf.len() < body_start + length {
                            match socket.read(&mut chunk).await {
                                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                                _ => return,
                            }
                        }
                        let (status, body) = fake.answer(&head);
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(reply.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
            });
            uri
        }
    }

    fn rest_config(uri: String, properties: &[(&str, &str)]) -> CatalogConfig {
        let dir = std::env::temp_dir().join(format!("ingest-rest-auth-{}", std::process::id()));
        CatalogConfig {
            kind: CatalogKind::Rest,
            uri,
            warehouse: format!("file://{}", dir.display()),
            name: "ingest".into(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A fake catalog, the service's client of it with `credential`, and a namespace
    /// the first call has found (so the first token is in use).
    async fn catalog_with_credential() -> (Arc<FakeCatalog>, Arc<dyn Catalog>, NamespaceIdent) {
        let fake = Arc::new(FakeCatalog::default());
        let uri = fake.serve("").await;
        let catalog = open_catalog(&rest_config(uri, &[("credential", "id:secret")]))
            .await
            .unwrap();
        let ns = NamespaceIdent::new("ns".into());
        assert!(catalog.namespace_exists(&ns).await.unwrap());
        (fake, catalog, ns)
    }

    #[tokio::test]
    async fn an_expired_token_is_renewed_and_the_call_made_again() {
        let (fake, catalog, ns) = catalog_with_credential().await;
        // The token expires: the next call is refused once, then made with a new token.
        *fake.live.lock().unwrap() = None;
        assert!(catalog.namespace_exists(&ns).await.unwrap());
        assert!(catalog.namespace_exists(&ns).await.unwrap());
        assert_eq!(*fake.issued.lock().unwrap(), 2);
        assert_eq!(
            *fake.seen.lock().unwrap(),
            [
                "POST /v1/oauth/tokens -> 200",
                "GET /v1/config -> 200",
                "HEAD /v1/namespaces/ns -> 204",
                "HEAD /v1/namespaces/ns -> 401",
                "POST /v1/oauth/tokens -> 200",
                "HEAD /v1/namespaces/ns -> 204",
                "HEAD /v1/namespaces/ns -> 204",
            ]
        );
    }

    #[tokio::test]
    async fn a_fresh_token_refused_is_a_permanent_error_not_a_renewal_loop() {
        let (fake, catalog, ns) = catalog_with_credential().await;
        *fake.forbidden.lock().unwrap() = true;
        for _ in 0..3 {
            let error = catalog.namespace_exists(&ns).await.unwrap_err();
            assert!(is_permanent_refusal(&error), "{error}");
            assert!(error.to_string().contains("lack a permission"), "{error}");
        }
        // One renewal after the first refusal, none after.
        assert_eq!(*fake.issued.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn a_static_token_refused_is_a_permanent_error_naming_the_catalog() {
        let fake = Arc::new(FakeCatalog::default());
        let uri = fake.serve("ingest:hunter22@").await;
        let config = rest_config(uri, &[("token", "static-secret-token")]);
        let catalog = open_catalog(&config).await.unwrap();
        let error = catalog
            .namespace_exists(&NamespaceIdent::new("ns".into()))
            .await
            .unwrap_err();
        assert!(is_permanent_refusal(&error), "{error}");
        let text = error.to_string();
        assert!(
            text.contains(&format!("`{}`", config.display_uri())),
            "{text}"
        );
        assert!(
            text.contains("`credential`") && text.contains("401"),
            "{text}"
        );
        assert!(
            !text.contains("hunter22") && !text.contains("static-secret-token"),
            "{text}"
        );
        assert_eq!(*fake.issued.lock().unwrap(), 0);
    }
}
