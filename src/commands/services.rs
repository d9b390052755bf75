//! The shared services, built once per process so the gateway and the bastion use the same
//! instances: secret key, store, authenticator, policy, audit log, assertion signer, CSRF
//! key and the SSO providers. Anything that cannot be loaded is an error here, before any
//! listener exists.

pub mod audit;

use std::sync::Arc;

use anyhow::Context;
use gatehouse_core::Config;
use gatehouse_core::audit::AuditLog;
use gatehouse_core::identity::oidc::Sso;
use gatehouse_core::identity::{Authenticator, Users};
use gatehouse_core::policy::{self, PolicyHandle};
use gatehouse_core::recording::{RecordingKey, Recordings, RecordingsOptions};
use gatehouse_core::secret::SecretKey;
use gatehouse_core::store::{self, Store};
use gatehouse_gateway::web::assertion::AssertionSigner;
use gatehouse_gateway::web::csrf::CsrfKey;

/// Key-derivation label of the CSRF key: instances sharing the secret key accept each
/// other's forms.
const CSRF_KEY_LABEL: &str = "gatehouse/csrf/v1";

/// The services of one process.
#[derive(Debug, Clone)]
pub struct Services {
    pub key: Arc<SecretKey>,
    pub store: Arc<dyn Store>,
    pub authenticator: Arc<Authenticator>,
    pub policy: Arc<PolicyHandle>,
    pub audit: Arc<AuditLog>,
    /// Shipping, alerts and retention around the audit log.
    pub audit_services: audit::AuditServices,
    /// The recordings directory, its index and live feeds (the console of part 2 and the
    /// gateway's web-session entries use the same one).
    pub recordings: Recordings,
    pub signer: Arc<AssertionSigner>,
    pub csrf: Arc<CsrfKey>,
    /// The SSO providers (fetched lazily: a provider that is down never stops the start).
    pub sso: Sso,
}

impl Services {
    /// Loads and opens everything `config` names; the error names what failed.
    pub async fn build(config: &Config) -> anyhow::Result<Services> {
        let key = SecretKey::load(config).with_context(|| {
            format!(
                "loading the secret key ({} or GATEHOUSE_SECRET_KEY)",
                config.identity.secret_key_file.display()
            )
        })?;
        // A corrupt or unreadable users file stops the start (a missing one is no users).
        Users::load(&config.identity.users_file).with_context(|| {
            format!(
                "loading the users file {}",
                config.identity.users_file.display()
            )
        })?;
        let policy = PolicyHandle::from_config(&config.policy)
            .await
            .with_context(|| {
                format!(
                    "loading the policy ({}, {})",
                    config.policy.model.display(),
                    config.policy.policy.display()
                )
            })?;
        if config.source.is_some() {
            let warnings =
                policy::lint(&policy.current(), &policy::PolicyScope::from_config(config));
            gatehouse_gateway::reload::log_warnings(&config.policy.policy, &warnings);
        }
        let audit_services = audit::start(config, &key).await?;
        let audit = audit_services.log.clone();
        let store = store::open(&config.store, &key)
            .await
            .context("connecting to the store")?;
        let authenticator = Authenticator::from_config(config, &key, store.clone(), audit.clone())
            .context("setting up authentication")?;
        let signer = AssertionSigner::load_or_create(&config.data_dir, &config.gateway.public_url)
            .with_context(|| {
                format!(
                    "loading the assertion signing key under {}",
                    config.data_dir.display()
                )
            })?;
        let csrf =
            CsrfKey::from_bytes(&key.derive(CSRF_KEY_LABEL)).context("deriving the csrf key")?;
        let recordings = open_recordings(config, &key, true)?;
        let sso = Sso::new(config, authenticator.clone())
            .context("setting up the sso providers ([[identity.oidc]])")?;
        Ok(Services {
            key: Arc::new(key),
            store,
            authenticator: Arc::new(authenticator),
            policy: Arc::new(policy),
            audit: Arc::new(audit),
            audit_services,
            recordings,
            signer: Arc::new(signer),
            csrf: Arc::new(csrf),
            sso,
        })
    }

    /// What the bastion serves with: the same authenticator, policy and audit log.
    pub fn bastion(&self) -> gatehouse_bastion::Services {
        gatehouse_bastion::Services {
            authenticator: (*self.authenticator).clone(),
            policy: self.policy.clone(),
            audit: (*self.audit).clone(),
            recordings: self.recordings.clone(),
        }
    }

    /// What the gateway serves with; `end_ssh` ends live SSH connections for the reviewer
    /// console (the bastion's registry, when the bastion runs).
    pub fn gateway(
        &self,
        end_ssh: Option<Arc<dyn gatehouse_core::recording::EndSsh>>,
    ) -> gatehouse_gateway::Services {
        gatehouse_gateway::Services {
            store: self.store.clone(),
            authenticator: (*self.authenticator).clone(),
            policy: self.policy.clone(),
            audit: (*self.audit).clone(),
            signer: self.signer.clone(),
            csrf: (*self.csrf).clone(),
            sso: self.sso.clone(),
            recordings: self.recordings.clone(),
            end_ssh,
        }
    }
}

/// Opens the recordings directory of `config` (its index rebuilt if lost or broken):
/// `writer` for the server, which writes recordings and the index; the CLI only reads. The
/// key decrypts recordings written with `encrypt = true` (and encrypts new ones when set).
pub fn open_recordings(
    config: &Config,
    key: &SecretKey,
    writer: bool,
) -> anyhow::Result<Recordings> {
    // The key reads whatever was written encrypted, whatever the setting is now.
    let options = RecordingsOptions {
        key: Some(RecordingKey::new(key)),
        encrypt: config.recording.encrypt,
        stream_cap: config.recording.stream_cap,
    };
    Recordings::open(&config.recording.dir, options, writer).with_context(|| {
        format!(
            "opening the recordings in {}",
            config.recording.dir.display()
        )
    })
}
