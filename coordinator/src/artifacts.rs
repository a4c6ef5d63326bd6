//! The artifact store: each job's committed global weights and its encrypted synthetic
//! dataset, through the object_store crate: a local directory by default, or an
//! S3-compatible bucket (`s3://bucket/prefix`). Writes are atomic (a put, or a multipart
//! upload completed only after the last part), so a crash never leaves a half-written
//! object under a committed key.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{
    GetOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    WriteMultipart,
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

/// Where the coordinator's optimiser state that goes with the weights of `round` is kept.
pub fn optimizer_key(job: &str, round: u32) -> String {
    format!("jobs/{job}/adam-{round:06}.bin")
}

/// An object read in exact-sized pieces, whatever the chunking of its stream.
pub struct ObjectReader {
    stream: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
    buf: BytesMut,
}

impl ObjectReader {
    /// The next `n` bytes; `None` at the end of the object; an error if it ends inside them.
    pub async fn read_exact(&mut self, n: usize) -> Result<Option<Bytes>> {
        while self.buf.len() < n {
            match self.stream.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk?),
                None => break,
            }
        }
        if self.buf.is_empty() && n > 0 {
            return Ok(None);
        }
        if self.buf.len() < n {
            return Err(CoordinatorError::Corrupt(format!(
                "an object ends {} bytes into a {n}-byte record",
                self.buf.len()
            )));
        }
        Ok(Some(self.buf.split_to(n).freeze()))
    }
}

/// Size of the parts of a streamed upload (S3's smallest part but the last is 5 MiB).
const PART_BYTES: usize = 5 * 1024 * 1024;

impl Artifacts {
    /// Opens the store at `location`: `s3://bucket[/prefix]` (credentials, region and
    /// endpoint from the standard `AWS_*` environment variables, overridden by `options`,
    /// whose keys are object_store's S3 settings such as `aws_endpoint` or
    /// `aws_allow_http`), or else a local directory (created if missing). Options are an
    /// error for a local directory.
    pub fn open(location: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        let Some(rest) = location.strip_prefix("s3://") else {
            if !options.is_empty() {
                return Err(CoordinatorError::Config(
                    "artifact_options apply to an s3:// artifact store only".into(),
                ));
            }
            let dir = location.strip_prefix("file://").unwrap_or(location);
            return Self::local(std::path::Path::new(dir));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(CoordinatorError::Config(format!(
                "artifacts = {location:?}: name the bucket, as in s3://bucket/prefix"
            )));
        }
        // reqwest's rustls has no bundled provider here: use ring, as tonic does. A provider
        // already installed (by an embedding program) is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key.parse().map_err(|_| {
                CoordinatorError::Config(format!(
                    "artifact_options: {key:?} is not an S3 setting (e.g. aws_endpoint, aws_region, aws_allow_http)"
                ))
            })?;
            builder = builder.with_config(key, value);
        }
        let s3 = builder.build()?;
        let store: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix.trim_matches('/')))
        };
        Ok(Self { store })
    }

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

    /// Deletes an object; one already gone is fine.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads an object in exact-sized pieces.
    pub async fn reader(&self, key: &str) -> Result<ObjectReader> {
        Ok(ObjectReader {
            stream: Box::pin(self.stream(key).await?),
            buf: BytesMut::new(),
        })
    }

    /// Like [`Artifacts::reader`], or `None` if there is no object under `key`.
    pub async fn reader_if_present(&self, key: &str) -> Result<Option<ObjectReader>> {
        match self.reader(key).await {
            Ok(r) => Ok(Some(r)),
            Err(CoordinatorError::Artifacts(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
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
            inner: WriteMultipart::new_with_chunk_size(inner, PART_BYTES),
            hasher: Sha256::new(),
            bytes: 0,
        })
    }
}

/// An upload in progress: chunks are gathered into parts of `PART_BYTES`, at most two in
/// flight, so memory stays bounded whatever the artifact's size.
pub struct Upload {
    inner: WriteMultipart,
    hasher: Sha256,
    bytes: u64,
}

impl Upload {
    /// Appends one chunk.
    pub async fn put(&mut self, data: Bytes) -> Result<()> {
        self.hasher.update(&data);
        self.bytes += data.len() as u64;
        self.inner.wait_for_capacity(2).await?;
        self.inner.put(data);
        Ok(())
    }

    /// Bytes so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Completes the upload if its size and SHA-256 are the expected ones; aborts otherwise.
    pub async fn finish(self, size: u64, sha256: &str) -> Result<()> {
        let digest = hex::encode(self.hasher.clone().finalize());
        if self.bytes != size || !digest.eq_ignore_ascii_case(sha256) {
            self.inner.abort().await?;
            return Err(CoordinatorError::Invalid(format!(
                "artifact: received {} bytes with SHA-256 {digest}, announced {size} bytes with {sha256}",
                self.bytes
            )));
        }
        self.inner.finish().await?;
        Ok(())
    }

    /// Completes the upload as received (content the coordinator wrote itself).
    pub async fn finish_own(self) -> Result<()> {
        self.inner.finish().await?;
        Ok(())
    }

    /// Drops the upload.
    pub async fn abort(self) {
        let _ = self.inner.abort().await;
    }
}
