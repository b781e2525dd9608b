//! The schema registry: writer schemas by id, and a subject's latest version, through
//! Confluent's REST API (Apicurio serves it under `/apis/ccompat/v7`). Written by hand
//! because the two calls are small and the crates that make them also decode rows,
//! which arrow-avro does here. Answers are kept for the life of the process: a schema id
//! never changes what it names.
//!
//! An unreachable, slow or failing registry is a transient fault (an `Err` here, which
//! callers retry); only a 404 says an id or subject does not exist.

mod client;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use client::Client;

use crate::config::SchemaRegistryConfig;
use crate::decode::WriterSchema;

/// The registry with its answers cached.
pub struct Registry {
    client: Client,
    by_id: Mutex<HashMap<u32, Option<WriterSchema>>>,
}

impl Registry {
    pub fn new(config: &SchemaRegistryConfig) -> Result<Self, String> {
        Ok(Self {
            client: Client::new(config)?,
            by_id: Mutex::new(HashMap::new()),
        })
    }

    /// The writer schema of `id`, `None` when the registry has no such id.
    pub async fn schema(&self, id: u32) -> Result<Option<WriterSchema>, String> {
        if let Some(known) = self.by_id.lock().expect("registry cache").get(&id) {
            return Ok(known.clone());
        }
        let found = self.client.schema_by_id(id).await?;
        self.by_id
            .lock()
            .expect("registry cache")
            .insert(id, found.clone());
        Ok(found)
    }
}

/// The latest schema of `subject`, asked at start-up (config loading is not async: this
/// runs on its own thread and runtime). Retried with backoff until `patience` runs out.
pub fn latest_at_start(
    config: &SchemaRegistryConfig,
    subject: &str,
    patience: Duration,
) -> Result<WriterSchema, String> {
    let client = Client::new(config)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let until = Instant::now() + patience;
                    let mut wait = Duration::from_millis(200);
                    loop {
                        match client.latest(subject).await {
                            Ok(Some(found)) => return Ok(found),
                            Ok(None) => {
                                return Err(format!(
                                    "the schema registry has no subject `{subject}`"
                                ));
                            }
                            Err(e) if Instant::now() + wait > until => {
                                return Err(format!(
                                    "the schema registry did not answer for subject `{subject}` within {}: {e}",
                                    humantime::format_duration(patience)
                                ));
                            }
                            Err(e) => {
                                tracing::warn!(subject, error = %e, "schema registry unreachable; retrying");
                            }
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the schema registry lookup panicked".into()))
    })
}
