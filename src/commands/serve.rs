//! `gatehouse serve`: validate, bind, announce, serve until SIGTERM/SIGINT, drain.
//!
//! Readiness: once every listener is bound, one line starting with `gatehouse ready:` is
//! printed on stdout with the bound addresses (tests and supervisors wait on it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use gatehouse_core::config::{AppConfig, LogFormat, Upstream};
use gatehouse_gateway::Gateway;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use super::{ConfigSource, config_source, load_config};

/// Host of the quick-start demo app (`*.localhost` resolves to loopback in browsers and curl).
const DEMO_HOST: &str = "demo.gatehouse.localhost";

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
        config.apps.push(AppConfig {
            name: "demo".to_string(),
            host: DEMO_HOST.to_string(),
            path_prefix: None,
            upstream: Upstream {
                authority: demo.to_string(),
            },
        });
    }
    let config = Arc::new(config);
    let gateway = Gateway::bind(config.clone()).await?;
    let bound = gateway.bound();
    let reloader = gateway.reloader();

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
                    tracing::info!("SIGHUP: reloading certificates");
                    reloader.reload();
                }
            }
        }
    });

    println!(
        "gatehouse ready: gateway=https://{} admin=http://{}{}",
        bound.https,
        bound.admin,
        bound
            .redirect
            .map(|r| format!(" redirect=http://{r}"))
            .unwrap_or_default()
    );
    if quickstart {
        let port = bound.https.port();
        println!();
        println!("  Quick-start: open https://{DEMO_HOST}:{port}/ in a browser.");
        println!(
            "  The dev CA is certs/ca.crt (trust it, or use: curl --cacert certs/ca.crt ...)."
        );
        println!();
    }
    let report = gateway.run(shutdown).await?;
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
