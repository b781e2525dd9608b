//! The chDB fixture (`tests/fixtures/clickhouse_chdb_http.py`, ClickHouse 26.9 in
//! process behind ClickHouse's HTTP interface), run by the stack's venv python (`$PY`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use ingest_sink_clickhouse::ClickHouseConnection;

/// The chDB fixture on a free port; killed on drop.
pub struct Chdb {
    child: Child,
    pub url: String,
    dir: std::path::PathBuf,
}

impl Chdb {
    pub fn connection(&self, database: &str) -> ClickHouseConnection {
        serde_json::from_value(serde_json::json!({ "url": self.url, "database": database }))
            .unwrap()
    }
}

impl Drop for Chdb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn start_chdb() -> Chdb {
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let python = std::env::var("PY").unwrap_or_else(|_| "/opt/ingest-stack/venv/bin/python".into());
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/clickhouse_chdb_http.py"
    );
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("ingest-ch-drops-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(python)
        .args([fixture, "--port", "0", "--path"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the stack's venv python (PY) runs the chDB fixture");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the chDB fixture exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep reading its log, so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Chdb { child, url, dir }
}
