//! The registry's HTTP calls, with the configured authentication and trust.

use reqwest::StatusCode;
use serde::Deserialize;

use crate::config::SchemaRegistryConfig;
use crate::decode::{Reference, WriterSchema};

/// One registry's base URL, credentials and HTTP client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

#[derive(Clone)]
enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

/// `GET /schemas/ids/{id}` and `GET /subjects/{s}/versions/latest` answers.
#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Found {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Named>,
}

/// One reference of a registered schema: the name it is used by, and where it is.
#[derive(Deserialize, Clone)]
struct Named {
    name: String,
    subject: String,
    version: i64,
}

/// How many schemas one schema may refer to, all levels together.
const MOST_REFERENCES: usize = 200;

impl Client {
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder().timeout(config.timeout);
        if let Some(ca) = &config.tls.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("schema_registry.tls.ca_file `{}`: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("schema_registry.tls.ca_file `{}`: {e}", ca.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let auth = match (&config.username, &config.password, &config.token) {
            (Some(user), password, None) => {
                Auth::Basic(user.clone(), password.clone().unwrap_or_default())
            }
            (None, None, Some(token)) => Auth::Bearer(token.clone()),
            (None, None, None) => Auth::None,
            _ => {
                return Err(
                    "schema_registry: give `username` and `password`, or `token`, not both".into(),
                );
            }
        };
        Ok(Self {
            http: builder.build().map_err(|e| e.to_string())?,
            base: config.url.trim_end_matches('/').to_string(),
            auth,
        })
    }

    pub async fn schema_by_id(&self, id: u32) -> Result<Option<WriterSchema>, String> {
        match self.get(&format!("/schemas/ids/{id}")).await? {
            Some(found) => self.with_references(found).await.map(Some),
            None => Ok(None),
        }
    }

    pub async fn latest(&self, subject: &str) -> Result<Option<WriterSchema>, String> {
        match self
            .get(&format!("/subjects/{}/versions/latest", encode(subject)))
            .await?
        {
            Some(found) => self.with_references(found).await.map(Some),
            None => Ok(None),
        }
    }

    /// The schema with every schema it refers to, and theirs, each once. A reference
    /// the registry answers 404 for makes `references` an `Err` naming it.
    async fn with_references(&self, found: Found) -> Result<WriterSchema, String> {
        let mut todo = found.references.clone();
        let mut done: Vec<Reference> = Vec::new();
        let mut missing = None;
        while let Some(named) = todo.pop() {
            if done.iter().any(|r| r.name == named.name) {
                continue;
            }
            if done.len() >= MOST_REFERENCES {
                missing = Some(format!("more than {MOST_REFERENCES} references"));
                break;
            }
            let path = format!(
                "/subjects/{}/versions/{}",
                encode(&named.subject),
                named.version
            );
            match self.get(&path).await? {
                Some(referred) => {
                    todo.extend(referred.references.iter().cloned());
                    done.push(Reference {
                        name: named.name,
                        text: referred.schema,
                    });
                }
                None => {
                    missing = Some(format!(
                        "`{}` (subject `{}` version {})",
                        named.name, named.subject, named.version
                    ));
                    break;
                }
            }
        }
        Ok(WriterSchema {
            kind: found.schema_type.unwrap_or_else(|| "AVRO".into()),
            text: found.schema,
            references: match missing {
                Some(why) => Err(why),
                None => Ok(done),
            },
        })
    }

    /// The schema at `path`, `None` on 404; any other failure is an error to retry.
    async fn get(&self, path: &str) -> Result<Option<Found>, String> {
        let request = self.http.get(format!("{}{path}", self.base));
        let request = match &self.auth {
            Auth::None => request,
            Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
            Auth::Bearer(token) => request.bearer_auth(token),
        };
        // reqwest's errors name the URL, never the credentials.
        let response = request
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(format!("GET {path}: HTTP {status}: {body}"));
        }
        let body = response
            .text()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| format!("GET {path}: unreadable answer: {e}"))
    }
}

/// A subject name as one path segment.
fn encode(subject: &str) -> String {
    subject
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
