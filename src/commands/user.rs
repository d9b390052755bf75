//! `gatehouse user add|list|lock|totp-reset`: local users in users.toml, and the SSO users
//! seen so far (`<data_dir>/sso-users.toml`) for `list`, `lock` and `totp-reset`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use gatehouse_core::audit::Outcome;
use gatehouse_core::identity::oidc::SsoUsers;
use gatehouse_core::identity::{Enrolment, NewUser, TotpCipher, Users};
use gatehouse_core::secret::SecretKey;

use super::audit::{open_log, record_admin, runtime};
use super::{config_source, load_config};
use crate::cli::UserCommand;

/// A password read from stdin, overwritten in place when dropped (the binary has no
/// zeroize dependency; clearing then refilling reuses the same buffer).
struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        let len = self.0.len();
        self.0.clear();
        self.0.extend(std::iter::repeat_n('\0', len));
    }
}

fn read_line(prompt: Option<&str>) -> anyhow::Result<Secret> {
    if let Some(p) = prompt {
        eprint!("{p}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let trimmed = line.trim_end_matches(['\r', '\n']).to_string();
    drop(Secret(line));
    Ok(Secret(trimmed))
}

fn read_password(name: &str, from_stdin: bool) -> anyhow::Result<Secret> {
    if from_stdin || !std::io::stdin().is_terminal() {
        return read_line(None);
    }
    // Interactive: the terminal echoes (no extra crate for hidden input); ask twice.
    let a = read_line(Some(&format!(
        "password for {name} (visible as you type): "
    )))?;
    let b = read_line(Some("repeat the password: "))?;
    if a.0 != b.0 {
        bail!("the two passwords differ");
    }
    Ok(a)
}

fn print_enrolment(name: &str, e: &Enrolment) {
    println!("TOTP enrolment for {name}: scan the QR code or open the URI in an authenticator app");
    println!("{}", e.otpauth_uri);
    println!("{}", e.qr_terminal);
    println!("(shown once; it is stored encrypted)");
}

/// How long ago unix second `then` was, e.g. `3h ago`.
fn ago(then: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let s = now.saturating_sub(then);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub fn run(explicit: Option<&Path>, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let config = load_config(&config_source(explicit))?;
    let path = config.identity.users_file.clone();
    let sso_path = SsoUsers::path_in(&config.data_dir);
    match cmd {
        UserCommand::List => {
            let users = Users::load(&path)?;
            let sso = SsoUsers::load(&sso_path)?;
            println!(
                "{:<32} {:<40} {:<7} {:<8} {:<12} LAST LOGIN",
                "NAME", "GROUPS", "LOCKED", "SSH KEYS", "PROVIDER"
            );
            for u in users.list() {
                println!(
                    "{:<32} {:<40} {:<7} {:<8} {:<12} -",
                    u.name,
                    u.groups.join(","),
                    yes_no(u.locked),
                    u.ssh_keys,
                    "local"
                );
            }
            // SSO users: the groups of their last login (each login reads them afresh).
            for u in sso.list() {
                println!(
                    "{:<32} {:<40} {:<7} {:<8} {:<12} {}",
                    u.name,
                    u.groups.join(","),
                    yes_no(u.locked),
                    "-",
                    u.provider,
                    ago(u.last_login)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Add {
            name,
            groups,
            ssh_key,
            password_stdin,
        } => {
            let ssh_keys: Vec<String> = match &ssh_key {
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect(),
                None => Vec::new(),
            };
            let key = SecretKey::load(&config).context("loading the secret key")?;
            let cipher = TotpCipher::new(&key)?;
            let log = open_log(&config, &key)?;
            let password = read_password(&name, password_stdin)?;
            // The users file's lock first, as SSO logins take it before the registry's: a
            // name cannot become both a local and an SSO user's.
            let _lock = Users::lock_for_update(&path)?;
            if let Some(sso) = SsoUsers::load(&sso_path)?.get(&name) {
                bail!(
                    "`{name}` is already the name of an SSO user (provider `{}`); pick another name",
                    sso.provider
                );
            }
            let mut users = Users::load(&path)?;
            let enrolment = users
                .add(
                    NewUser {
                        name: &name,
                        groups: &groups,
                        password: &password.0,
                        ssh_keys: &ssh_keys,
                    },
                    &cipher,
                )
                .with_context(|| format!("adding user {name} to {}", path.display()))?;
            runtime()?.block_on(record_admin(&log, "user add", &name, Outcome::Success))?;
            println!(
                "user {name} added to {} (groups: {})",
                path.display(),
                if groups.is_empty() {
                    "-".into()
                } else {
                    groups.join(",")
                }
            );
            print_enrolment(&name, &enrolment);
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Lock { name } => {
            let key = SecretKey::load(&config).context("loading the secret key")?;
            let log = open_log(&config, &key)?;
            let _lock = Users::lock_for_update(&path)?;
            let mut users = Users::load(&path)?;
            if users.get(&name).is_some() {
                users.set_locked(&name, true)?;
            } else {
                let _sso_lock = Users::lock_for_update(&sso_path)?;
                let mut sso = SsoUsers::load(&sso_path)?;
                if sso.get(&name).is_none() {
                    bail!("no such user `{name}` (neither local nor a known SSO user)");
                }
                sso.set_locked(&name, true)?;
            }
            runtime()?.block_on(async {
                record_admin(&log, "user lock", &name, Outcome::Success).await?;
                let reach = super::grant::reach(&config).await?;
                match super::session::revoke(&config, reach, &name, Some(&log)).await? {
                    Some(n) => println!("user {name} locked; {n} live session(s) revoked"),
                    None => println!(
                        "user {name} locked: no new login (no running server holds sessions of it)"
                    ),
                }
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::TotpReset { name } => {
            let key = SecretKey::load(&config).context("loading the secret key")?;
            let cipher = TotpCipher::new(&key)?;
            let log = open_log(&config, &key)?;
            let _lock = Users::lock_for_update(&path)?;
            let mut users = Users::load(&path)?;
            if users.get(&name).is_none() {
                let _sso_lock = Users::lock_for_update(&sso_path)?;
                let mut sso = SsoUsers::load(&sso_path)?;
                if sso.get(&name).is_none() {
                    bail!("no such user `{name}` (neither local nor a known SSO user)");
                }
                sso.clear_totp(&name)?;
                runtime()?.block_on(record_admin(
                    &log,
                    "user totp-reset",
                    &name,
                    Outcome::Success,
                ))?;
                println!(
                    "SSO user {name}: TOTP secret removed; a new authenticator is enrolled at the next sign-in"
                );
                return Ok(ExitCode::SUCCESS);
            }
            let enrolment = users.reset_totp(&name, &cipher)?;
            runtime()?.block_on(record_admin(
                &log,
                "user totp-reset",
                &name,
                Outcome::Success,
            ))?;
            print_enrolment(&name, &enrolment);
            Ok(ExitCode::SUCCESS)
        }
    }
}
