//! `gatehouse audit search`: a thin layer over `gatehouse_core::audit::search`.

use std::io::Write;
use std::ops::ControlFlow;
use std::process::ExitCode;

use anyhow::Context;
use gatehouse_core::Config;
use gatehouse_core::audit::Record;
use gatehouse_core::audit::search::{Query, parse_when, search};

use crate::cli::AuditSearch;

fn query(q: &AuditSearch, now: u64) -> anyhow::Result<Query> {
    let when = |v: &Option<String>, flag: &str| -> anyhow::Result<Option<u64>> {
        v.as_deref()
            .map(|t| {
                parse_when(t, now)
                    .map_err(anyhow::Error::msg)
                    .context(flag.to_string())
            })
            .transpose()
    };
    Ok(Query {
        user: q.user.clone(),
        event: q.event.clone(),
        since_ms: when(&q.since, "--since")?,
        until_ms: when(&q.until, "--until")?,
        target: q.target.clone(),
        app: q.app.clone(),
        decision: q
            .decision
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("--decision")?,
        incident_id: q.incident_id.clone(),
        client: q.client.clone(),
        newest: q.limit,
    })
}

/// One line per record for people: time, seq, kind, who, what, decision, incident, client.
fn human(r: &Record) -> String {
    let mut s = format!(
        "{}  {:>8}  {:<18} {:<16}",
        r.ts,
        r.seq,
        r.kind(),
        r.user().unwrap_or("-")
    );
    if let Some(a) = r.about() {
        s.push_str(&format!(" {a}"));
    }
    if let Some(d) = r.decision() {
        s.push_str(&format!(" {}", d.as_str()));
    }
    if let Some(i) = r.incident_id() {
        s.push_str(&format!(" incident={i}"));
    }
    if let Some(c) = r.client() {
        s.push_str(&format!(" client={c}"));
    }
    s
}

pub fn run(config: &Config, q: &AuditSearch) -> anyhow::Result<ExitCode> {
    let query = query(q, super::now_ms())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_failed = None;
    search(&config.audit.dir, &query, |r| {
        let line = if q.json { r.line.clone() } else { human(&r) };
        match writeln!(out, "{line}") {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_failed = Some(e);
                ControlFlow::Break(())
            }
        }
    })
    .with_context(|| format!("searching {}", config.audit.dir.display()))?;
    let flushed = out.flush();
    match write_failed.map_or(flushed, Err) {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => {
            r.context("writing the results")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
