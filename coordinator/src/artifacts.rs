//! The artifact store: each job's committed global weights and its encrypted synthetic
//! dataset, through the object_store crate (a local directory by default). Writes are
//! atomic (a put, or a multipart upload completed only after the last part), so a crash
//! never leaves a half-written object under a committed key.

use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, MultipartUpload, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
};
use sha2::{Digest, Sha256};
use tokio_stream::{Stream, StreamExt};

use crate::error::{CoordinatorError, Result};

/// The artifact store.
#[derive(Debug, Clone)]
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
}

/// SHA-256 of little-endian f32 values, hex.
pub fn weights_digest(values: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    hex::encode(h.finalize())
}

impl Artifacts {
    /// A store in a local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new_with_prefix(dir)?),
        })
    }

    /// Stores round weights; returns the key and their digest.
    pub async fn put_weights(
        &self,
        job: &str,
        round: u32,
        values: &[f32],
    ) -> Result<(String, String)> {
        let key = format!("jobs/{job}/weights-{round:06}.f32");
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.store
            .put_opts(
                &ObjectPath::from(key.as_str()),
                PutPayload::from(bytes),
                PutOptions::default(),
            )
            .await?;
        Ok((key, weights_digest(values)))
    }

    /// Streams an object.
    pub async fn stream(
        &self,
        key: &str,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static> {
        let got = self
            .store
            .get_opts(&ObjectPath::from(key), GetOptions::default())
            .await?;
        Ok(got.into_stream().map(|r| r.map_err(CoordinatorError::from)))
    }

    /// Starts a streamed upload to `key`; nothing is visible there until it completes.
    pub async fn upload(&self, key: &str) -> Result<Upload> {
        let inner = self
            .store
            .put_multipart_opts(&ObjectPath::from(key), PutMultipartOptions::default())
            .await?;
        Ok(Upload {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        })
    }
}

/// An upload in progress.
pub struct Upload {
    inner: Box<dyn MultipartUpload>,
    hasher: Sha256,
    bytes: u64,
}

impl Upload {
    /// Appends one part.
    pub async fn put(&mut self, data: Bytes) -> Result<()> {
        self.hasher.update(&data);
        self.bytes += data.len() as u64;
        self.inner.put_part(PutPayload::from(data)).await?;
        Ok(())
    }

    /// Bytes so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Completes the upload if its size and SHA-256 are the expected ones; aborts otherwise.
    pub async fn finish(mut self, size: u64, sha256: &str) -> Result<()> {
        let digest = hex::encode(self.hasher.clone().finalize());
        if self.bytes != size || !digest.eq_ignore_ascii_case(sha256) {
            self.inner.abort().await?;
            return Err(CoordinatorError::Invalid(format!(
                "artifact: received {} bytes with SHA-256 {digest}, announced {size} bytes with {sha256}",
                self.bytes
            )));
        }
        self.inner.complete().await?;
        Ok(())
    }

    /// Drops the upload.
    pub async fn abort(mut self) {
        let _ = self.inner.abort().await;
    }
}
