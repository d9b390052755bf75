//! casbin itself, loaded from the same files: it validates the model and serves as the
//! reference the index is checked against (load-time probes, differential tests). Its
//! `enforce()` is a linear scan, so it is never on the request path.

use std::path::Path;

use casbin::{CoreApi, DefaultModel, Enforcer, FileAdapter, StringAdapter};

use crate::error::PolicyError;

/// A casbin enforcer over the model and policy files.
pub struct CasbinReference {
    enforcer: Enforcer,
    policy: std::path::PathBuf,
}

impl std::fmt::Debug for CasbinReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CasbinReference")
    }
}

impl CasbinReference {
    pub async fn load(model: &Path, policy: &Path) -> Result<CasbinReference, PolicyError> {
        let m = DefaultModel::from_file(model)
            .await
            .map_err(|source| PolicyError::Casbin {
                path: model.to_path_buf(),
                source,
            })?;
        let enforcer = Enforcer::new(m, FileAdapter::new(policy.to_path_buf()))
            .await
            .map_err(|source| PolicyError::Casbin {
                path: policy.to_path_buf(),
                source,
            })?;
        Ok(CasbinReference {
            enforcer,
            policy: policy.to_path_buf(),
        })
    }

    /// casbin over a model and a policy given as text (`model` names the model's file in
    /// errors). Does no I/O.
    pub async fn from_text(
        model_text: &str,
        model: &Path,
        policy: &str,
    ) -> Result<CasbinReference, PolicyError> {
        let casbin_err = |source| PolicyError::Casbin {
            path: model.to_path_buf(),
            source,
        };
        let m = DefaultModel::from_str(model_text.trim_start_matches('\u{feff}'))
            .await
            .map_err(casbin_err)?;
        let enforcer = Enforcer::new(m, StringAdapter::new(policy))
            .await
            .map_err(casbin_err)?;
        Ok(CasbinReference {
            enforcer,
            policy: model.to_path_buf(),
        })
    }

    /// casbin's decision for one subject.
    pub fn enforce(&self, subject: &str, object: &str, action: &str) -> Result<bool, PolicyError> {
        self.enforcer
            .enforce((subject, object, action))
            .map_err(|source| PolicyError::Casbin {
                path: self.policy.clone(),
                source,
            })
    }
}
