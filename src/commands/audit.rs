//! `gatehouse audit verify|export|search|public-key`, and the admin-action record shared by
//! the other commands.

mod search;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use gatehouse_core::audit::export::{self, PUBLIC_KEY_FILE};
use gatehouse_core::audit::search::parse_when;
use gatehouse_core::audit::ship::redis::{read_stream, verify_stream};
use gatehouse_core::audit::{
    AuditEvent, AuditKey, AuditLog, AuditOptions, AuditPublicKey, AuditSigner, Outcome,
    VerifyOptions, VerifyReport, public_key_path, verify_export, verify_log,
};
use gatehouse_core::config::StoreConfig;
use gatehouse_core::secret::SecretKey;
use gatehouse_core::{AuditError, Config};

use super::{config_source, load_config};
use crate::cli::AuditCommand;

pub fn run(explicit: Option<&Path>, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        // An exported copy needs no config file and no secret.
        AuditCommand::Verify {
            dir: Some(dir),
            public_key,
            stream,
        } => {
            if stream {
                anyhow::bail!("--stream compares the live log with the Redis stream: give no DIR");
            }
            verify_copy(&dir, public_key.as_deref())
        }
        AuditCommand::Verify {
            dir: None,
            public_key,
            stream,
        } => {
            let config = load_config(&config_source(explicit))?;
            verify_live(&config, public_key.as_deref(), stream)
        }
        AuditCommand::Export { since, until, out } => {
            let config = load_config(&config_source(explicit))?;
            export_window(&config, &since, &until, &out)
        }
        AuditCommand::Search(q) => {
            let config = load_config(&config_source(explicit))?;
            search::run(&config, &q)
        }
        AuditCommand::PublicKey => {
            let config = load_config(&config_source(explicit))?;
            let signer = load_signer(&config)?;
            print!("{}", signer.public_key().to_pem());
            eprintln!("fingerprint {}", signer.public_key().fingerprint());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The report of a verification that passed.
fn print_ok(what: &str, r: &VerifyReport) {
    let span = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!(" (records {a}..{b})"),
        _ => String::new(),
    };
    println!(
        "{what} ok: {} record(s) in {} segment(s){span}{}",
        r.records,
        r.segments,
        r.head
            .as_ref()
            .map(|h| format!(", head {h}"))
            .unwrap_or_default()
    );
    match (r.signed_through, r.last_seq) {
        (Some(s), Some(l)) => println!(
            "  signed: {} signature(s) checked; records up to {s} are covered{}",
            r.checkpoints,
            if l > s {
                format!(" ({} newer record(s) not yet)", l - s)
            } else {
                String::new()
            }
        ),
        (None, Some(_)) => println!("  signed: no checkpoint covers these records yet"),
        _ => {}
    }
    if let Some(b) = r.retention_through {
        println!("  retention: records up to {b} were removed by retention (signed)");
    }
    if let Some(t) = &r.torn_tail {
        println!(
            "  crash: line {} of {} is incomplete: the process stopped while writing it, so that record was never confirmed (not tampering; on a running server it may also be a record being written right now); the server removes it at its next start",
            t.line,
            t.path.display()
        );
    }
}

/// Prints a failed verification; exit 1. Errors that are not findings stay errors.
fn report(what: &str, r: Result<VerifyReport, AuditError>) -> anyhow::Result<ExitCode> {
    match r {
        Ok(r) => {
            print_ok(what, &r);
            Ok(ExitCode::SUCCESS)
        }
        Err(
            e @ (AuditError::Tampered { .. }
            | AuditError::Broken { .. }
            | AuditError::CutTail { .. }),
        ) => {
            println!("{what} TAMPERED: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e).with_context(|| format!("verifying the {what}")),
    }
}

fn verify_copy(dir: &Path, public_key: Option<&Path>) -> anyhow::Result<ExitCode> {
    let key = match public_key {
        Some(p) => AuditPublicKey::load(p)
            .with_context(|| format!("reading the public key {}", p.display()))?,
        None => {
            let p = dir.join(PUBLIC_KEY_FILE);
            let k = AuditPublicKey::load(&p)
                .with_context(|| format!("reading {} (or pass --public-key FILE)", p.display()))?;
            eprintln!(
                "note: checked with the export's own {PUBLIC_KEY_FILE} ({}); compare it with the published key, or pass --public-key",
                k.fingerprint()
            );
            k
        }
    };
    report("audit export", verify_export(dir, &key))
}

/// The public key of the live log: `--public-key`, else `<signing_key_file>.pub`, else the
/// key file itself; `None` before the server first signed anything.
fn live_public_key(
    config: &Config,
    explicit: Option<&Path>,
) -> anyhow::Result<Option<AuditPublicKey>> {
    if let Some(p) = explicit {
        return Ok(Some(
            AuditPublicKey::load(p).with_context(|| format!("reading {}", p.display()))?,
        ));
    }
    let pub_path = public_key_path(&config.audit.signing_key_file);
    if pub_path.exists() {
        return Ok(Some(
            AuditPublicKey::load(&pub_path)
                .with_context(|| format!("reading {}", pub_path.display()))?,
        ));
    }
    if config.audit.signing_key_file.exists() {
        return Ok(Some(load_signer(config)?.public_key().clone()));
    }
    Ok(None)
}

fn verify_live(
    config: &Config,
    public_key: Option<&Path>,
    stream: bool,
) -> anyhow::Result<ExitCode> {
    let secret = SecretKey::load(config).context("loading the secret key (audit MAC)")?;
    let mac = AuditKey::new(&secret);
    let pk = live_public_key(config, public_key)?;
    let head = config
        .audit
        .head_file
        .exists()
        .then_some(config.audit.head_file.as_path());
    let r = verify_log(
        &config.audit.dir,
        VerifyOptions {
            mac: Some(&mac),
            public_key: pk.as_ref(),
            head_file: if pk.is_some() { head } else { None },
        },
    );
    if pk.is_none() {
        eprintln!("note: no audit signing key yet: checkpoints are not checked");
    }
    let code = report("audit log", r)?;
    if !stream || code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let StoreConfig::Redis(url) = &config.store else {
        anyhow::bail!("--stream needs a redis:// store: with memory:// there is no stream");
    };
    let instance = std::fs::read_to_string(config.audit.dir.join("instance-id"))
        .map(|s| s.trim().to_string())
        .context(
            "this log was never shipped to the stream (no instance-id in the audit directory)",
        )?;
    let runtime = runtime()?;
    let entries = runtime
        .block_on(read_stream(url))
        .context("reading the Redis audit stream")?;
    match verify_stream(&entries, &mac, &config.audit.dir, &instance) {
        Ok(r) => {
            println!(
                "audit stream ok: {} record(s) from {} instance(s); this log (instance {instance}) matches the stream's {} record(s) of it",
                entries.len(),
                r.instances.len(),
                r.compared
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => report("audit stream", Err(e)),
    }
}

fn export_window(
    config: &Config,
    since: &str,
    until: &str,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    let now = now_ms();
    let since_ms = parse_when(since, now)
        .map_err(anyhow::Error::msg)
        .context("--since")?;
    let until_ms = parse_when(until, now)
        .map_err(anyhow::Error::msg)
        .context("--until")?;
    let secret = SecretKey::load(config).context("loading the secret key (audit MAC)")?;
    let signer = load_signer(config)?;
    let r = export::export(
        &config.audit.dir,
        &AuditKey::new(&secret),
        &signer,
        since_ms,
        until_ms,
        out,
    );
    let log = open_log(config, &secret)?;
    let subject = format!("{since}..{until} -> {}", out.display());
    match r {
        Ok(r) => {
            runtime()?.block_on(record_admin(
                &log,
                "audit export",
                &subject,
                Outcome::Success,
            ))?;
            let span = match (r.first_seq, r.last_seq) {
                (Some(a), Some(b)) => format!(" (records {a}..{b})"),
                _ => String::new(),
            };
            println!(
                "exported {} record(s){span} in {} segment(s) with {} checkpoint(s) to {}",
                r.records,
                r.segments,
                r.checkpoints,
                out.display()
            );
            println!(
                "verify with: gatehouse audit verify {} --public-key PUBLISHED-KEY.pem  (key fingerprint {})",
                out.display(),
                signer.public_key().fingerprint()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            runtime()?.block_on(record_admin(
                &log,
                "audit export",
                &subject,
                Outcome::Failure,
            ))?;
            Err(e).with_context(|| format!("exporting to {}", out.display()))
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The operator running the CLI, for admin-action records.
pub fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// The checkpoint-signing key of `config` (created when missing).
pub fn load_signer(config: &Config) -> anyhow::Result<AuditSigner> {
    AuditSigner::load_or_create(&config.audit.signing_key_file).with_context(|| {
        format!(
            "loading the audit signing key {}",
            config.audit.signing_key_file.display()
        )
    })
}

/// What every opener of the live log uses: the signing key, the head file, the interval.
pub fn audit_options(config: &Config) -> anyhow::Result<AuditOptions> {
    Ok(AuditOptions {
        signer: Some(Arc::new(load_signer(config)?)),
        head_file: Some(config.audit.head_file.clone()),
        checkpoint_interval: config.audit.checkpoint_interval,
        ..AuditOptions::default()
    })
}

/// The audit log of one command: closed (synced, a final checkpoint signed, the head file
/// written) when the command's handle goes away, on the command's own thread, before the
/// process exits (the syncer thread may otherwise hold the last reference then).
pub struct OpenLog(AuditLog);

impl std::ops::Deref for OpenLog {
    type Target = AuditLog;
    fn deref(&self) -> &AuditLog {
        &self.0
    }
}

impl Drop for OpenLog {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Opens the audit log of `config` (before an admin action: no log, no action).
pub fn open_log(config: &Config, key: &SecretKey) -> anyhow::Result<OpenLog> {
    AuditLog::open_with(
        &config.audit.dir,
        AuditKey::new(key),
        audit_options(config)?,
    )
    .map(OpenLog)
    .with_context(|| format!("opening the audit log in {}", config.audit.dir.display()))
}

/// Records an administrative action.
pub async fn record_admin(
    log: &AuditLog,
    action: &str,
    subject: &str,
    outcome: Outcome,
) -> anyhow::Result<()> {
    log.record(AuditEvent::AdminAction {
        actor: actor(),
        action: action.into(),
        subject: subject.into(),
        outcome,
    })
    .await
    .context("writing the audit record of this action")?;
    Ok(())
}

/// A small runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
