use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes with the build (protoc-bin-vendored) unless the caller chose one.
    let protoc = match env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("sms_v1_descriptor.bin"))
        .compile_with_config(config, &["sms/v1/classifier.proto"], &["."])?;
    println!("cargo:rerun-if-changed=sms/v1/classifier.proto");
    Ok(())
}
