//! Blocking front-ends for callers without an async runtime (the mirror commands). A
//! [`BlockingClient`] owns a small runtime and the client whose connections live on it; do
//! not use it from inside another tokio runtime.

use std::path::Path;

use stella_keys::Keyring;

use crate::client::{Client, ClientConfig};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media::Platforms;
use crate::reference::Reference;
use crate::release::{ReleasePolicy, Verdict};
use crate::transfer::{PullOptions, PulledImage, PushOptions, Report};

/// A [`Client`] plus the runtime it runs on.
pub struct BlockingClient {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl std::fmt::Debug for BlockingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingClient").finish_non_exhaustive()
    }
}

impl BlockingClient {
    pub fn new(config: ClientConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
                    .clamp(2, 8),
            )
            .thread_name("stella-oci")
            .enable_all()
            .build()
            .map_err(|e| Error::Input(format!("cannot start the I/O runtime: {e}")))?;
        let client = {
            let _guard = rt.enter();
            Client::new(config)?
        };
        Ok(BlockingClient { rt, client })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Run any future of this crate on the client's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// [`crate::pull_to_layout`].
    pub fn pull_to_layout(
        &self,
        reference: &Reference,
        platforms: &Platforms,
        layout_dir: &Path,
        options: &PullOptions,
    ) -> Result<PulledImage> {
        self.rt.block_on(crate::transfer::pull_to_layout(
            &self.client,
            reference,
            platforms,
            layout_dir,
            options,
        ))
    }

    /// [`crate::push_from_layout`].
    pub fn push_from_layout(
        &self,
        layout_dir: &Path,
        manifest_digest: &Digest,
        target: &Reference,
        options: &PushOptions,
    ) -> Result<Report> {
        self.rt.block_on(crate::transfer::push_from_layout(
            &self.client,
            layout_dir,
            manifest_digest,
            target,
            options,
        ))
    }

    /// [`crate::push_all_from_layout`].
    pub fn push_all_from_layout(
        &self,
        layout_dir: &Path,
        images: &[(Digest, Reference)],
        options: &PushOptions,
    ) -> Result<Vec<Report>> {
        self.rt.block_on(crate::transfer::push_all_from_layout(
            &self.client,
            layout_dir,
            images,
            options,
        ))
    }

    /// [`crate::verify_image`].
    pub fn verify_image(
        &self,
        image: &Reference,
        keyring: &Keyring,
        policy: &ReleasePolicy,
    ) -> Result<Verdict> {
        self.rt.block_on(crate::release::verify_image(
            &self.client,
            image,
            keyring,
            policy,
        ))
    }
}
