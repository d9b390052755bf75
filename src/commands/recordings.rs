//! `gatehouse recordings list|play|export`: the recorded sessions, for reviewers and outside
//! auditors. Every read is an audit record (`recording_access`), written before anything is
//! shown: no audit, no read. A recording id is checked (32 lowercase hex digits) before it
//! names anything; no path from the command line reaches the filesystem.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use gatehouse_core::Config;
use gatehouse_core::audit::{AuditEvent, AuditLog, Outcome};
use gatehouse_core::recording::{
    EventCode, Query, RecordingId, RecordingKind, RecordingMeta, Recordings, format_time,
    parse_when, web_timeline_from_log,
};
use gatehouse_core::secret::SecretKey;

use super::audit::{actor, open_log};
use super::services::open_recordings;
use super::{config_source, load_config};
use crate::cli::RecordingsCommand;

/// Longest pause `play` keeps between two events (before the speed applies).
const IDLE_CAP: Duration = Duration::from_secs(2);

pub fn run(explicit: Option<&Path>, cmd: RecordingsCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_source(explicit))?;
    // Checked before the config's secrets are even loaded.
    let id = match &cmd {
        RecordingsCommand::Play { id, .. } | RecordingsCommand::Export { id, .. } => Some(
            RecordingId::parse(id)
                .with_context(|| format!("`{}` is not a recording id", id.escape_debug()))?,
        ),
        RecordingsCommand::List { .. } => None,
    };
    let key =
        SecretKey::load(&config).context("loading the secret key (audit MAC, recordings key)")?;
    let log = open_log(&config, &key)?;
    let recordings = open_recordings(&config, &key, false)?;
    let rt = super::audit::runtime()?;
    rt.block_on(async {
        match (cmd, id) {
            (
                RecordingsCommand::List {
                    user,
                    target,
                    app,
                    since,
                    until,
                    command,
                    file,
                    json,
                },
                _,
            ) => {
                let now = SystemTime::now();
                let when = |t: Option<String>| -> anyhow::Result<Option<SystemTime>> {
                    t.map(|t| parse_when(&t, now).map_err(anyhow::Error::msg))
                        .transpose()
                };
                let q = Query {
                    user,
                    target,
                    app,
                    since: when(since)?,
                    until: when(until)?,
                    command,
                    file,
                    ..Query::default()
                };
                list(&log, &recordings, &q, json).await
            }
            (RecordingsCommand::Play { speed, .. }, Some(id)) => {
                if !(speed.is_finite() && speed > 0.0) {
                    bail!("--speed must be a positive number");
                }
                play(&config, &log, &recordings, &id, speed).await
            }
            (RecordingsCommand::Export { output, .. }, Some(id)) => {
                export(&config, &log, &recordings, &id, output.as_deref()).await
            }
            _ => bail!("a recording id is required"),
        }
    })
}

/// The reviewer-access record; an error refuses the read.
async fn audited(
    log: &AuditLog,
    action: &str,
    id: Option<&RecordingId>,
    detail: Option<String>,
) -> anyhow::Result<()> {
    log.record(AuditEvent::RecordingAccess {
        actor: actor(),
        action: action.into(),
        recording_id: id.map(ToString::to_string),
        detail,
        outcome: Outcome::Success,
        context: Default::default(),
    })
    .await
    .context("writing the audit record of this read (nothing is shown without it)")?;
    Ok(())
}

fn describe(q: &Query) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("user", &q.user),
        ("target", &q.target),
        ("app", &q.app),
        ("command", &q.command),
        ("file", &q.file),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={v:?}"));
        }
    }
    for (k, v) in [("since", q.since), ("until", q.until)] {
        if let Some(t) = v {
            parts.push(format!("{k}={}", format_time(t)));
        }
    }
    parts.join(" ")
}

async fn list(log: &AuditLog, rec: &Recordings, q: &Query, json: bool) -> anyhow::Result<ExitCode> {
    audited(log, "list", None, Some(describe(q))).await?;
    let found = rec
        .index()
        .search(q)
        .context("searching the recordings index")?;
    let mut out = std::io::stdout().lock();
    for m in found {
        if json {
            serde_json::to_writer(&mut out, &m).context("writing JSON")?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", human(&m))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human(m: &RecordingMeta) -> String {
    let place = match m.kind {
        RecordingKind::Ssh => format!(
            "{}@{}",
            m.login.as_deref().unwrap_or("?"),
            m.target.as_deref().unwrap_or("?")
        ),
        RecordingKind::Web => {
            if m.apps.is_empty() {
                m.app.clone().unwrap_or_default()
            } else {
                m.apps.join(",")
            }
        }
    };
    let ended = m.ended_at.map_or_else(|| "live".to_string(), format_time);
    let what = match (&m.request, &m.command) {
        (Some(r), Some(c)) => format!("{r}: {c}"),
        (Some(r), None) => r.clone(),
        _ => String::new(),
    };
    format!(
        "{}  {:<3}  {:<12}  {:<24}  {}  {}  {}",
        m.id,
        m.kind.as_str(),
        m.user,
        place,
        format_time(m.started_at),
        ended,
        what
    )
}

/// App name to host, for web timelines.
fn hosts(config: &Config) -> HashMap<String, String> {
    config
        .apps
        .iter()
        .map(|a| (a.name.clone(), a.host.clone()))
        .collect()
}

async fn play(
    config: &Config,
    log: &AuditLog,
    rec: &Recordings,
    id: &RecordingId,
    speed: f64,
) -> anyhow::Result<ExitCode> {
    let meta = rec.meta(id).context("finding the recording")?;
    audited(log, "play", Some(id), None).await?;
    let mut out = std::io::stdout().lock();
    if meta.meta.kind == RecordingKind::Web {
        for r in web_timeline_from_log(&config.audit.dir, &meta.meta, &hosts(config))? {
            let status = r.status.map_or_else(|| "-".to_string(), |s| s.to_string());
            let bytes = r.bytes.map_or_else(|| "-".to_string(), |b| b.to_string());
            writeln!(
                out,
                "{}  {:<5}  {:<6} {}{}  {status} {bytes}B  {}",
                r.time,
                r.decision,
                r.method,
                r.host.as_deref().unwrap_or(&r.app),
                r.path,
                r.request_id.as_deref().unwrap_or("")
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut opened = rec.open_cast(id).context("opening the recording")?;
    let mut last = 0.0f64;
    while let Some(ev) = opened
        .reader
        .next_event()
        .context("reading the recording")?
    {
        if ev.code != EventCode::Output {
            continue;
        }
        let gap = Duration::from_secs_f64((ev.time - last).max(0.0)).min(IDLE_CAP);
        last = ev.time;
        let pause = gap.div_f64(speed);
        if !pause.is_zero() {
            out.flush()?;
            tokio::time::sleep(pause).await;
        }
        out.write_all(ev.data.as_bytes())?;
    }
    out.flush()?;
    if let Some(d) = opened.damage() {
        eprintln!("gatehouse: note: {d}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(
    config: &Config,
    log: &AuditLog,
    rec: &Recordings,
    id: &RecordingId,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let meta = rec.meta(id).context("finding the recording")?;
    audited(
        log,
        "export",
        Some(id),
        output.map(|p| p.display().to_string()),
    )
    .await?;
    let mut sink: Box<dyn Write> = match output {
        Some(p) => {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            Box::new(std::io::BufWriter::new(
                opts.open(p)
                    .with_context(|| format!("creating {}", p.display()))?,
            ))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    if meta.meta.kind == RecordingKind::Web {
        for r in web_timeline_from_log(&config.audit.dir, &meta.meta, &hosts(config))? {
            serde_json::to_writer(&mut sink, &r)?;
            writeln!(sink)?;
        }
        sink.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut opened = rec.open_cast(id).context("opening the recording")?;
    serde_json::to_writer(&mut sink, opened.reader.header())?;
    writeln!(sink)?;
    while let Some(ev) = opened
        .reader
        .next_event()
        .context("reading the recording")?
    {
        serde_json::to_writer(&mut sink, &(ev.time, ev.code.as_str(), &ev.data))?;
        writeln!(sink)?;
    }
    sink.flush()?;
    if let Some(d) = opened.damage() {
        eprintln!("gatehouse: note: {d}");
    }
    Ok(ExitCode::SUCCESS)
}
