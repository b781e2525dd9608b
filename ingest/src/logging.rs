//! Log output on stderr, as text or JSON lines, with every line scrubbed of secrets
//! (see `ingest_sink_api::secret`): whatever a library logs, a registered password or
//! the password of a URI never reaches the log collector.

use std::io::{self, Write};

use ingest_sink_api::secret;
use tracing_subscriber::fmt::MakeWriter;

pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Scrubbing(io::stderr));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    // A panic message may quote a value too.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        eprintln!("thread '{name}' {}", secret::scrub(&info.to_string()));
    }));
}

/// A writer (or a maker of writers) that masks secrets in what it is given. The
/// formatter writes each event in one call, so a secret is never split across calls.
#[derive(Clone)]
pub struct Scrubbing<W>(pub W);

impl<W: Write> Write for Scrubbing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(secret::scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Scrubbing<M> {
    type Writer = Scrubbing<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Scrubbing(self.0.make_writer())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn log_lines(json: bool) -> String {
        let buffer = Buffer::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(Scrubbing(buffer.clone()))
            .with_ansi(false);
        let emit = || {
            tracing::warn!(
                error = %"login refused for log-\"Secret\"-77",
                detail = ?"log-\"Secret\"-77",
                "catalog postgres://ingest:anything@db/cat refused log-\"Secret\"-77"
            );
        };
        if json {
            tracing::subscriber::with_default(builder.json().finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn log_lines_never_show_registered_secrets_or_uri_passwords() {
        secret::register("log-\"Secret\"-77");
        for json in [false, true] {
            let out = log_lines(json);
            assert!(!out.contains("Secret"), "{out}");
            assert!(!out.contains("anything"), "{out}");
            assert!(out.contains("postgres://ingest:***@db/cat"), "{out}");
            assert!(out.contains("login refused for ***"), "{out}");
        }
    }
}
