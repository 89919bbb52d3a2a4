//! Registry arguments shared by the commands that talk to a registry, and the mapping of
//! registry errors to exit codes.

use anyhow::Result;
use clap::Args;

use crate::exit::{fail, AUTH, NOT_FOUND, RETRYABLE, USAGE, VERIFY_FAILED};

/// How to reach a registry.
#[derive(Args)]
pub(crate) struct RegistryArgs {
    /// Talk plain HTTP to the registry (always the case for 127.0.0.1/localhost registries).
    /// Only for registries on a network you trust.
    #[arg(long, alias = "insecure")]
    pub(crate) plain_http: bool,
    /// Docker config file with registry credentials (default: $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub(crate) registry_config: Option<std::path::PathBuf>,
}

impl RegistryArgs {
    /// The client configuration these arguments ask for.
    pub(crate) fn config(&self) -> stella_oci::ClientConfig {
        stella_oci::ClientConfig {
            plain_http: if self.plain_http {
                stella_oci::PlainHttp::Always
            } else {
                stella_oci::PlainHttp::LoopbackOnly
            },
            credentials: match &self.registry_config {
                Some(p) => stella_oci::CredentialSource::DockerConfigFile(p.clone()),
                None => stella_oci::CredentialSource::DockerConfig,
            },
            ..stella_oci::ClientConfig::default()
        }
    }

    pub(crate) fn client(&self) -> Result<stella_oci::BlockingClient> {
        stella_oci::BlockingClient::new(self.config()).map_err(oci_error)
    }
}

/// Parse an image reference (usage error when invalid).
pub(crate) fn image_ref(s: &str) -> Result<stella_oci::Reference> {
    stella_oci::Reference::parse(s).map_err(|e| fail(USAGE, e.to_string()))
}

/// A registry error of a command that uploads: as [`oci_error`], and an unreachable registry
/// says that a rerun resumes (blobs already uploaded are not sent again).
pub(crate) fn oci_push_error(e: stella_oci::Error) -> anyhow::Error {
    if matches!(e, stella_oci::Error::Unreachable { .. }) {
        return fail(
            RETRYABLE,
            format!("{e}; rerun to resume: blobs already uploaded are not sent again"),
        );
    }
    oci_error(e)
}

/// A registry error with the exit code its kind calls for.
pub(crate) fn oci_error(e: stella_oci::Error) -> anyhow::Error {
    let code = match e.kind() {
        stella_oci::ErrorKind::Auth => AUTH,
        stella_oci::ErrorKind::NotFound => NOT_FOUND,
        stella_oci::ErrorKind::Unavailable => RETRYABLE,
        stella_oci::ErrorKind::Integrity => VERIFY_FAILED,
        _ => USAGE,
    };
    fail(code, e.to_string())
}
