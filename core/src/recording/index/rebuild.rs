//! Rebuilding the index from the recordings directory: every metadata file (and every
//! `.cast` from before metadata files), and in each SSH recording its `command:` and `file:`
//! markers; the exec command or subsystem from the metadata. An encrypted recording is read
//! with the key when one is given; without it, its session is indexed without commands.
//! A recording that cannot be read is skipped with a warning (counted), never fatal.

use std::path::Path;

use rusqlite::Connection;

use super::{CommandSource, index_err, schema};
use crate::recording::crypt::RecordingKey;
use crate::recording::reader::EventCode;
use crate::recording::sidecar::Sidecar;
use crate::recording::sink::Format;
use crate::recording::store::{Recordings, RecordingsOptions, legacy_sidecar};
use crate::recording::writer::{COMMAND_MARKER, FILE_MARKER};
use crate::recording::{FileTransfer, RecordingError, RecordingId, RecordingKind};

/// What a rebuild found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub sessions: usize,
    pub commands: usize,
    pub files: usize,
    /// Recordings whose events could not be read (or are encrypted and no key was given).
    pub skipped: usize,
}

/// The ids of the recordings in `dir`, from metadata files and legacy casts.
fn ids(dir: &Path) -> Vec<(RecordingId, bool)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".meta.json") {
            if let Ok(id) = RecordingId::parse(id) {
                out.push((id, true));
            }
        } else if let Some(id) = name.strip_suffix(".cast")
            && let Ok(id) = RecordingId::parse(id)
            && !dir.join(format!("{id}.meta.json")).exists()
        {
            out.push((id, false));
        }
    }
    out.sort();
    out
}

fn parse_file_marker(text: &str) -> Option<FileTransfer> {
    let rest = text.strip_prefix(FILE_MARKER)?;
    let mut parts = rest.splitn(4, ' ');
    let direction = match parts.next()? {
        "upload" => crate::audit::TransferDirection::Upload,
        "download" => crate::audit::TransferDirection::Download,
        _ => return None,
    };
    let protocol = match parts.next()? {
        "scp" => crate::audit::FileProtocol::Scp,
        "sftp" => crate::audit::FileProtocol::Sftp,
        _ => return None,
    };
    let bytes = parts.next()?.parse().ok()?;
    let path = parts.next()?.to_string();
    Some(FileTransfer {
        protocol,
        direction,
        path,
        bytes,
    })
}

/// Fills an empty index from `dir`.
pub fn rebuild(
    dir: &Path,
    key: Option<&RecordingKey>,
    conn: &Connection,
) -> Result<RebuildReport, RecordingError> {
    let mut report = RebuildReport::default();
    // A reader over the same directory, without an index of its own.
    let reader = Recordings::reader(
        dir,
        RecordingsOptions {
            key: key.cloned(),
            ..RecordingsOptions::default()
        },
    );
    let tx = conn
        .unchecked_transaction()
        .map_err(index_err("cannot begin a transaction"))?;
    for (id, has_sidecar) in ids(dir) {
        let sidecar = if has_sidecar {
            Sidecar::read(dir, &id).ok()
        } else {
            legacy_sidecar(dir, &id)
        };
        let Some(sidecar) = sidecar else {
            tracing::warn!(recording = %id, "recordings index rebuild: unreadable metadata, skipped");
            report.skipped += 1;
            continue;
        };
        schema::upsert(&tx, &sidecar)?;
        report.sessions += 1;
        let m = &sidecar.meta;
        let started = match m.request.as_deref() {
            Some("subsystem") => Some(CommandSource::Subsystem),
            Some("exec" | "scp") => Some(CommandSource::Exec),
            _ => None,
        };
        if let (Some(source), Some(cmd)) = (started, &m.command) {
            add_command(&tx, &id, 0, source, cmd)?;
            report.commands += 1;
        }
        if m.kind != RecordingKind::Ssh || sidecar.format.is_none() {
            continue;
        }
        if sidecar.format == Some(Format::Sealed) && key.is_none() {
            report.skipped += 1;
            continue;
        }
        let mut opened = match reader.open_cast(&id) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(recording = %id, error = %crate::recording::error_chain(&e), "recordings index rebuild: unreadable recording, indexed without its commands");
                report.skipped += 1;
                continue;
            }
        };
        loop {
            let ev = match opened.reader.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(recording = %id, error = %crate::recording::error_chain(&e), "recordings index rebuild: damaged recording, indexed up to the damage");
                    report.skipped += 1;
                    break;
                }
            };
            if ev.code != EventCode::Marker {
                continue;
            }
            let at_ms = (ev.time * 1000.0) as u64;
            if let Some(cmd) = ev.data.strip_prefix(COMMAND_MARKER) {
                add_command(&tx, &id, at_ms, CommandSource::Typed, cmd)?;
                report.commands += 1;
            } else if let Some(t) = parse_file_marker(&ev.data) {
                schema::add_file(&tx, &id, at_ms, &t)?;
                report.files += 1;
            }
        }
    }
    tx.commit()
        .map_err(index_err("cannot commit the rebuild"))?;
    Ok(report)
}

pub(super) fn add_command(
    tx: &rusqlite::Transaction<'_>,
    id: &RecordingId,
    at_ms: u64,
    source: CommandSource,
    text: &str,
) -> Result<(), RecordingError> {
    tx.execute(
        "INSERT INTO commands(rid, at_ms, source, text) SELECT rid, ?2, ?3, ?4 FROM sessions WHERE id = ?1",
        rusqlite::params![id.as_str(), at_ms as i64, source.as_str(), text],
    )
    .map_err(index_err("cannot add a command"))?;
    Ok(())
}
