//! The process's log output: `tracing` events as text or JSON lines on stderr.
//!
//! When stderr is the journal (systemd sets `$JOURNAL_STREAM` to the `DEV:INODE` of the
//! stream it connected, and stderr still is that stream), every text line starts with
//! the sd-daemon priority prefix (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug and
//! trace) and carries no timestamp: journald stores the priority, so
//! `journalctl -p warning` finds warnings, and it stamps each entry itself. Elsewhere
//! (a terminal, a container, a pipe) lines keep their timestamp and have no prefix.
//! A prefix is a plain text convention on the same stream, so no journal socket and no
//! extra crate are needed, and a unit's `StandardError=` choices keep working.
//! Not here: what is logged (every module logs its own steps), the log notifier.

use std::fmt;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` or `default_level`, on stderr.
pub fn init(format: Format, default_level: &str) {
    let filter = filter(default_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        Format::Text if stderr_is_journal() => builder
            .event_format(JournalFormat::new(format::format().without_time()))
            .init(),
        Format::Text => builder.init(),
        Format::Json => {
            crate::notify::log::use_json(true);
            builder.json().init()
        }
    }
}

/// `RUST_LOG` (or `default_level`), with the AWS SDK's request tracing capped at info.
fn filter(default_level: &str) -> EnvFilter {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // The AWS SDK traces request and response headers (signatures, session tokens) and,
    // with LOG_SENSITIVE_BODIES set, bodies holding secret values: never below info.
    for target in [
        "aws_smithy_runtime",
        "aws_smithy_runtime_api",
        "aws_smithy_http_client",
        "aws_sigv4",
    ] {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Whether stderr is the stream systemd connected to the journal.
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    // A duplicate of fd 2, for its metadata (the same open file: same device and inode).
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(meta) => journal_stream_matches(&stream, meta.dev(), meta.ino()),
        Err(_) => false,
    }
}

/// Whether `$JOURNAL_STREAM` (`DEV:INODE`, decimal) names the file `dev`, `ino`: a
/// child whose stderr was redirected inherits the variable but not the stream.
pub fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The sd-daemon prefix for a level (`sd-daemon(3)`).
pub fn priority_prefix(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Formats with `inner`, then starts every line of the event with its priority prefix
/// (journald reads each line as its own entry, so a continuation line needs it too).
pub struct JournalFormat<F> {
    inner: F,
}

impl<F> JournalFormat<F> {
    /// Wraps an event formatter (one without a timestamp: journald adds its own).
    pub fn new(inner: F) -> JournalFormat<F> {
        JournalFormat { inner }
    }
}

impl<S, N, F> FormatEvent<S, N> for JournalFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let prefix = priority_prefix(event.metadata().level());
        for part in line.trim_end_matches('\n').split('\n') {
            writeln!(writer, "{prefix}{part}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn journal_lines(emit: impl FnOnce()) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(out.clone())
            .event_format(JournalFormat::new(format::format().without_time()))
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = out.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn journal_lines_carry_the_priority_of_their_level_and_no_timestamp() {
        let out = journal_lines(|| {
            tracing::error!(client = "a", "publish failed");
            tracing::warn!("expiring soon");
            tracing::info!("pass over");
            tracing::debug!("detail");
            tracing::trace!("more detail");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        let want = [
            ("<3>", "ERROR"),
            ("<4>", "WARN"),
            ("<6>", "INFO"),
            ("<7>", "DEBUG"),
            ("<7>", "TRACE"),
        ];
        for (line, (prefix, level)) in lines.iter().zip(want) {
            // Right after the prefix comes the level: no timestamp before it.
            let rest = line.strip_prefix(prefix);
            assert!(
                rest.is_some_and(|r| r.trim_start().starts_with(level)),
                "{line:?} should be {prefix}{level} …"
            );
        }
        assert!(
            lines[0].contains("publish failed client=\"a\""),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn every_line_of_a_multi_line_event_gets_the_prefix() {
        let out = journal_lines(|| tracing::warn!("first\nsecond"));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(lines.iter().all(|l| l.starts_with("<4>")), "{out}");
    }

    #[test]
    fn journal_stream_is_recognised_only_for_the_same_device_and_inode() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12345", 8, 12346));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("", 8, 12345));
        assert!(!journal_stream_matches("8", 8, 12345));
        assert!(!journal_stream_matches("8:x", 8, 12345));
    }
}
