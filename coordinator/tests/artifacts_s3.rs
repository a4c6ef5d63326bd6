//! The artifact store on S3: a real S3 server (s3s-fs, over a temporary directory, with
//! SigV4 authentication) on loopback, reached through object_store as a coordinator
//! configured with `artifacts = "s3://…"` reaches AWS or MinIO.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use bytes::Bytes;
use fedsynth_coordinator::artifacts::{Artifacts, weights_digest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;

const KEY_ID: &str = "fedsynth-test-key";
const SECRET: &str = "fedsynth-test-secret-0123456789";

/// Starts an S3 server over `root` (bucket "artifacts" created) and returns its endpoint.
async fn s3_server(root: &std::path::Path) -> String {
    std::fs::create_dir_all(root.join("artifacts")).unwrap();
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let service = {
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(KEY_ID, SECRET));
        b.build()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    format!("http://{addr}")
}

fn options(endpoint: &str, secret: &str) -> BTreeMap<String, String> {
    [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", KEY_ID),
        ("aws_secret_access_key", secret),
        ("aws_virtual_hosted_style_request", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn read_all(a: &Artifacts, key: &str) -> Vec<u8> {
    let mut s = Box::pin(a.stream(key).await.unwrap());
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test]
async fn weights_and_streamed_uploads_round_trip_through_s3() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = s3_server(dir.path()).await;
    let store = Artifacts::open("s3://artifacts/fedsynth", &options(&endpoint, SECRET)).unwrap();

    // Round weights: one put, read back bit for bit.
    let weights: Vec<f32> = (0..100_000).map(|i| (i as f32).sin()).collect();
    let (key, digest) = store.put_weights("job-1", 3, &weights).await.unwrap();
    assert_eq!(digest, weights_digest(&weights));
    let bytes = read_all(&store, &key).await;
    let back: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(back, weights);
    // Under the prefix, in the bucket's directory on the server.
    assert!(
        dir.path()
            .join("artifacts/fedsynth/jobs/job-1/weights-000003.f32")
            .exists()
    );

    // A 12 MiB artifact streamed in 256 KiB chunks: three S3 parts, complete only at the end.
    let data: Vec<u8> = (0..12 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let sha = hex::encode(Sha256::digest(&data));
    let mut up = store.upload("jobs/job-1/output.fsx").await.unwrap();
    for chunk in data.chunks(256 * 1024) {
        up.put(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(up.bytes(), data.len() as u64);
    up.finish(data.len() as u64, &sha).await.unwrap();
    assert_eq!(read_all(&store, "jobs/job-1/output.fsx").await, data);

    // An upload whose digest does not match is aborted: nothing appears under its key.
    let mut up = store.upload("jobs/job-1/bad.fsx").await.unwrap();
    up.put(Bytes::from_static(b"tampered")).await.unwrap();
    let err = up.finish(8, &"0".repeat(64)).await.unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert!(store.stream("jobs/job-1/bad.fsx").await.is_err());
}

#[tokio::test]
async fn a_wrong_secret_or_setting_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = s3_server(dir.path()).await;
    let store = Artifacts::open("s3://artifacts", &options(&endpoint, "not-the-secret")).unwrap();
    let err = store.put_weights("job-1", 0, &[1.0]).await.unwrap_err();
    assert!(!err.to_string().is_empty());
    assert!(!dir.path().join("artifacts/jobs").exists());

    let mut bad = options(&endpoint, SECRET);
    bad.insert("aws_colour".into(), "blue".into());
    let err = Artifacts::open("s3://artifacts", &bad).unwrap_err();
    assert!(err.to_string().contains("aws_colour"), "{err}");
    let err = Artifacts::open("s3://", &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("bucket"), "{err}");
    let err =
        Artifacts::open(dir.path().to_str().unwrap(), &options(&endpoint, SECRET)).unwrap_err();
    assert!(err.to_string().contains("s3://"), "{err}");
}
