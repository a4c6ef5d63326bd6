//! Generates the fedsynth.v1 client and server code with the `protoc` shipped by
//! `protoc-bin-vendored` (unless `PROTOC` names another), so a fresh machine needs no system
//! protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => std::path::PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/fedsynth/v1/fedsynth.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto/fedsynth/v1/fedsynth.proto");
    Ok(())
}
