//! Validation of `[audit]`, `[alerts]` and `[recording]`.

use std::path::{Path, PathBuf};

use super::defaults as d;
use super::file::{AlertsFile, AuditFile, RecordingFile};
use super::validate::Ctx;
use super::{AlertsConfig, AuditConfig, RecordingConfig, SyslogTarget};
use crate::error::ConfigError;

fn retention(cx: &Ctx<'_>, key: &str, days: u32) -> Result<u32, ConfigError> {
    if days == 0 {
        return Err(cx.err(
            key,
            "0 would delete everything at once",
            "give a number of days, e.g. 380",
        ));
    }
    Ok(days)
}

pub(super) fn audit(
    cx: &Ctx<'_>,
    a: AuditFile,
    data_dir: &Path,
) -> Result<AuditConfig, ConfigError> {
    let retention_days = retention(
        cx,
        "audit.retention_days",
        a.retention_days.unwrap_or(d::AUDIT_RETENTION_DAYS),
    )?;
    let syslog = match a.syslog {
        None => None,
        Some(raw) => Some(syslog_target(cx, &raw)?),
    };
    let signing_key_file = match a.signing_key_file {
        Some(v) => cx.non_empty_path("audit.signing_key_file", Some(v), "")?,
        None => data_dir.join(d::AUDIT_SIGNING_KEY_FILE),
    };
    let stream_max_len = a.stream_max_len.unwrap_or(d::AUDIT_STREAM_MAX_LEN);
    if stream_max_len < 1000 {
        return Err(cx.err(
            "audit.stream_max_len",
            format!("{stream_max_len} would keep almost nothing in the stream"),
            "give at least 1000 (default 1000000)",
        ));
    }
    Ok(AuditConfig {
        dir: cx.non_empty_path("audit.dir", a.dir, d::AUDIT_DIR)?,
        retention_days,
        syslog,
        signing_key_file,
        head_file: data_dir.join(d::AUDIT_HEAD_FILE),
        checkpoint_interval: cx.duration(
            "audit.checkpoint_interval",
            a.checkpoint_interval,
            d::AUDIT_CHECKPOINT_INTERVAL,
            d::AUDIT_CHECKPOINT_INTERVAL,
        )?,
        stream_max_len,
    })
}

fn syslog_target(cx: &Ctx<'_>, raw: &str) -> Result<SyslogTarget, ConfigError> {
    let fix = "write `unix:///dev/log` (a local datagram socket) or `udp://HOST:PORT`";
    if let Some(path) = raw.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(cx.err(
                "audit.syslog",
                format!("`{raw}` does not name an absolute socket path"),
                fix,
            ));
        }
        return Ok(SyslogTarget::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = raw.strip_prefix("udp://") {
        let ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if ok && !addr.contains('/') {
            return Ok(SyslogTarget::Udp(addr.to_string()));
        }
        return Err(cx.err(
            "audit.syslog",
            format!("`{raw}` is not udp://HOST:PORT"),
            fix,
        ));
    }
    Err(cx.err(
        "audit.syslog",
        format!("`{raw}` is not a unix:// or udp:// address"),
        fix,
    ))
}

pub(super) fn alerts(cx: &Ctx<'_>, a: AlertsFile) -> Result<AlertsConfig, ConfigError> {
    let webhook_url = match a.webhook_url {
        None => None,
        Some(raw) => {
            let u = url::Url::parse(&raw).ok().filter(|u| {
                u.username().is_empty() && u.password().is_none() && crate::outbound::url_allowed(u)
            });
            // The URL may carry a token in its path or query: never echo it.
            Some(u.ok_or_else(|| {
                cx.err(
                    "alerts.webhook_url",
                    "not an https URL without credentials (plain http is allowed only for a loopback address)",
                    "write it as `https://hooks.example.com/gatehouse`",
                )
            })?)
        }
    };
    let ca_file = match a.ca_file {
        None => None,
        Some(v) => Some(cx.non_empty_path("alerts.ca_file", Some(v), "")?),
    };
    Ok(AlertsConfig {
        webhook_url,
        ca_file,
    })
}

pub(super) fn recording(
    cx: &Ctx<'_>,
    r: RecordingFile,
    audit_days: u32,
) -> Result<RecordingConfig, ConfigError> {
    Ok(RecordingConfig {
        dir: cx.non_empty_path("recording.dir", r.dir, d::RECORDING_DIR)?,
        retention_days: retention(
            cx,
            "recording.retention_days",
            r.retention_days.unwrap_or(audit_days),
        )?,
        encrypt: r.encrypt.unwrap_or(false),
        stream_cap: match r.stream_cap {
            None => None,
            Some(v) => Some(cx.size("recording.stream_cap", &v)?),
        },
    })
}
