//! `gatehouse serve`: validate, load the shared services, bind, announce, serve until
//! SIGTERM/SIGINT, drain. SIGHUP reloads the TLS certificate, the policy and the users file
//! (all three are also reloaded when their files change).
//!
//! Readiness: once every listener is bound, one line starting with `gatehouse ready:` is
//! printed on stdout with the bound addresses (tests and supervisors wait on it).
//! Quick-start: a demo user `demo` (group `staff`) is created once in `data/users.toml`; its
//! random password and TOTP enrolment are printed at creation only (stored hashed and
//! encrypted, never in clear).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use gatehouse_bastion::Bastion;
use gatehouse_core::config::{AppConfig, LogFormat, Upstream};
use gatehouse_core::control::Control;
use gatehouse_core::grant::GrantSync;
use gatehouse_core::identity::{NewUser, TotpCipher, Users, generate_password};
use gatehouse_core::secret::SecretKey;
use gatehouse_gateway::Gateway;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use super::services::Services;
use super::{ConfigSource, config_source, load_config};
use crate::control::server::ControlServer;

/// Host of the quick-start demo app (`*.localhost` resolves to loopback in browsers and curl).
const DEMO_HOST: &str = "demo.gatehouse.localhost";
/// The quick-start demo user and its group (the shipped policy lets `group:staff` use
/// `app:demo/*`).
const DEMO_USER: &str = "demo";
const DEMO_GROUP: &str = "staff";
/// Length of the generated demo password (random base64url).
const DEMO_PASSWORD_LEN: usize = 20;
/// The shipped example policy, written under the data directory when the quick-start runs
/// somewhere without `policies/` (e.g. an installed binary).
const EXAMPLE_MODEL: &str = include_str!("../../policies/model.conf");
const EXAMPLE_POLICY: &str = include_str!("../../policies/policy.csv");

/// Quick-start without `policies/` here: use (and create once) `data/policies/`.
fn ensure_quickstart_policy(config: &mut gatehouse_core::Config) -> anyhow::Result<()> {
    if config.policy.model.is_file() && config.policy.policy.is_file() {
        return Ok(());
    }
    let dir = config.data_dir.join("policies");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let model = dir.join("model.conf");
    let policy = dir.join("policy.csv");
    for (path, text) in [(&model, EXAMPLE_MODEL), (&policy, EXAMPLE_POLICY)] {
        if !path.exists() {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    tracing::info!(dir = %dir.display(), "no policies/ here: the quick-start uses the example policy in the data directory");
    config.policy.model = model;
    config.policy.policy = policy;
    Ok(())
}

/// What to tell a newcomer about the demo user.
enum DemoUser {
    Created {
        password: String,
        otpauth_uri: String,
        secret_base32: String,
        code: String,
    },
    Exists,
}

/// Creates the demo user once (random password, new TOTP secret); later starts leave it.
fn ensure_demo_user(config: &gatehouse_core::Config, key: &SecretKey) -> anyhow::Result<DemoUser> {
    let path = &config.identity.users_file;
    let _lock = Users::lock_for_update(path)?;
    let mut users = Users::load(path)?;
    if users.get(DEMO_USER).is_some() {
        return Ok(DemoUser::Exists);
    }
    let cipher = TotpCipher::new(key)?;
    let password = generate_password(DEMO_PASSWORD_LEN).context("generating the demo password")?;
    let enrolment = users
        .add(
            NewUser {
                name: DEMO_USER,
                groups: &[DEMO_GROUP.to_string()],
                password: &password,
                ssh_keys: &[],
            },
            &cipher,
        )
        .with_context(|| format!("creating the demo user in {}", path.display()))?;
    let code = users.current_totp_code(DEMO_USER, &cipher)?;
    Ok(DemoUser::Created {
        password,
        otpauth_uri: enrolment.otpauth_uri,
        secret_base32: enrolment.secret_base32,
        code,
    })
}

fn print_demo_user(demo: &DemoUser, port: u16) {
    println!("  Sign in at https://{DEMO_HOST}:{port}/ as user `{DEMO_USER}`.");
    match demo {
        DemoUser::Created {
            password,
            otpauth_uri,
            secret_base32,
            code,
        } => {
            println!("  password: {password}");
            println!("    (shown once: it is stored only as an argon2id hash)");
            println!("  second factor (otpauth URI for an authenticator app):");
            println!("    {otpauth_uri}");
            println!(
                "  TOTP: use an authenticator app or: the code right now is {code} (later codes: oathtool --totp -b {secret_base32})"
            );
        }
        DemoUser::Exists => {
            println!(
                "  user {DEMO_USER} exists (its password was shown when it was created; `gatehouse user totp-reset {DEMO_USER}` renews its second factor)."
            );
        }
    }
}

pub fn run(explicit: Option<&Path>) -> anyhow::Result<ExitCode> {
    let source = config_source(explicit);
    // Config errors exit before anything listens or a runtime starts.
    let config = load_config(&source)?;
    init_tracing(config.log.format, &config.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(source, config))
}

/// Binds the SSH bastion when `[bastion] enabled` (the default), on the shared services: the
/// same authenticator, store, policy and audit log as the gateway. Generates its ed25519 host
/// key (0600) when missing.
async fn start_bastion(
    config: &Arc<gatehouse_core::Config>,
    services: &Services,
) -> anyhow::Result<Option<Bastion>> {
    if !config.bastion.enabled {
        return Ok(None);
    }
    let bastion = Bastion::bind(config.clone(), services.bastion())
        .await
        .with_context(|| {
            format!(
                "starting the ssh bastion on {} (host key {})",
                config.bastion.listen,
                config.bastion.host_key.display()
            )
        })?;
    Ok(Some(bastion))
}

/// With the in-process store, the control socket through which the CLI reaches this server
/// (`grant`, `session`, `user lock`); with Redis the CLI goes through the store.
fn start_control(
    config: &gatehouse_core::Config,
    services: &Services,
    sync: GrantSync,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !services.store.is_in_process() {
        return Ok(None);
    }
    let server = ControlServer::bind(&config.data_dir)?;
    tracing::info!(path = %server.path().display(), "control socket ready (owner only)");
    let control = Control {
        store: services.store.clone(),
        policy: services.policy.clone(),
        audit: (*services.audit).clone(),
        sync,
        max_grant: config.grants.max_duration,
    };
    Ok(Some(tokio::spawn(server.run(control, shutdown.clone()))))
}

fn init_tracing(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

async fn serve(
    source: ConfigSource,
    mut config: gatehouse_core::Config,
) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let quickstart = matches!(source, ConfigSource::QuickStart);
    if quickstart {
        let certs = PathBuf::from("certs");
        gatehouse_gateway::devcert::ensure(
            &certs,
            &config.gateway.tls_cert,
            &config.gateway.tls_key,
        )
        .context("generating the quick-start certificates under certs/")?;
        let demo = gatehouse_gateway::demo::spawn(shutdown.child_token())
            .await
            .context("starting the quick-start demo app")?;
        ensure_quickstart_policy(&mut config)?;
        config.apps.push(AppConfig {
            name: "demo".to_string(),
            host: DEMO_HOST.to_string(),
            path_prefix: None,
            upstream: Upstream {
                authority: demo.to_string(),
            },
            allowed_origins: Vec::new(),
        });
    }
    let services = Services::build(&config).await?;
    let demo_user = if quickstart {
        Some(ensure_demo_user(&config, &services.key)?)
    } else {
        None
    };
    let grants = GrantSync::start(
        services.store.clone(),
        services.policy.clone(),
        (*services.audit).clone(),
        shutdown.clone(),
    )
    .await
    .context("loading the grants from the store")?;
    let control = start_control(&config, &services, grants, &shutdown)?;
    let config = Arc::new(config);
    // The bastion first: the reviewer console ends its live connections through its registry.
    let bastion = start_bastion(&config, &services).await?;
    let end_ssh = bastion
        .as_ref()
        .map(|b| Arc::new(b.registry()) as Arc<dyn gatehouse_core::recording::EndSsh>);
    let gateway = Gateway::bind(config.clone(), services.gateway(end_ssh)).await?;
    let bastion = bastion.map(|b| b.with_preauth_metrics(gateway.ssh_preauth_metrics()));
    let bound = gateway.bound();
    let reloader = gateway.reloader();
    let policy_reloader = gateway.policy_reloader();
    let authenticator = (*services.authenticator).clone();

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sigterm.recv() => { tracing::info!("SIGTERM: draining"); stop.cancel(); break; }
                _ = sigint.recv() => { tracing::info!("SIGINT: draining"); stop.cancel(); break; }
                _ = sighup.recv() => {
                    tracing::info!("SIGHUP: reloading certificates, policy and users");
                    reloader.reload();
                    // Errors are logged and audited by the reloader; the running policy stays.
                    let _ = policy_reloader.reload().await;
                    if let Err(e) = authenticator.reload_users().await {
                        tracing::error!(error = %gatehouse_core::error_chain(&e), "users file does not load; the running copy stays");
                    }
                }
            }
        }
    });

    let bastion_addr = match &bastion {
        Some(b) => Some(b.local_addr().context("reading the bastion's address")?),
        None => None,
    };
    println!(
        "gatehouse ready: gateway=https://{} admin=http://{}{}{}",
        bound.https,
        bound.admin,
        bound
            .redirect
            .map(|r| format!(" redirect=http://{r}"))
            .unwrap_or_default(),
        bastion_addr
            .map(|a| format!(" bastion={a}"))
            .unwrap_or_default()
    );
    if quickstart {
        let port = bound.https.port();
        println!();
        println!("  Quick-start: open https://{DEMO_HOST}:{port}/ in a browser.");
        println!(
            "  The dev CA is certs/ca.crt (trust it, or use: curl --cacert certs/ca.crt ...)."
        );
        if let Some(demo) = &demo_user {
            print_demo_user(demo, port);
        }
        if let Some(a) = bastion_addr {
            println!("  SSH bastion on {a} (no targets yet: add [[targets]] to a gatehouse.toml).");
        }
        println!();
    }
    // The bastion runs beside the gateway under the same token; either one failing stops
    // both (a half-started product is not left running).
    let bastion_task = bastion.map(|b| {
        let token = shutdown.clone();
        tokio::spawn(async move {
            let r = b.run(token.clone()).await;
            if r.is_err() {
                token.cancel();
            }
            r
        })
    });
    let report = gateway.run(shutdown.clone()).await;
    shutdown.cancel();
    if let Some(t) = bastion_task {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the ssh bastion failed"),
            Err(e) => tracing::error!(error = %e, "the ssh bastion task failed"),
        }
    }
    if let Some(c) = control {
        // It removes its socket when it stops.
        let _ = c.await;
    }
    services.audit_services.close().await;
    let report = report?;
    if report.drained {
        tracing::info!("shutdown complete: every connection drained");
        Ok(ExitCode::SUCCESS)
    } else {
        tracing::warn!(
            open = report.remaining,
            "shutdown grace period ended with connections still open"
        );
        Ok(ExitCode::SUCCESS)
    }
}
