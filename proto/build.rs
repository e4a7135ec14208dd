use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes with the build (protoc-bin-vendored) unless the caller chose one.
    let protoc = match env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let config = || {
        let mut c = tonic_prost_build::Config::new();
        c.protoc_executable(&protoc);
        c
    };
    let protos = ["sms/v1/classifier.proto"];

    // Messages and the client, with tonic's prost codec on small buffers.
    let client_dir = out.join("client");
    std::fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .codec_path("crate::codec::SmallBufferCodec")
        .out_dir(&client_dir)
        .file_descriptor_set_path(out.join("sms_v1_descriptor.bin"))
        .compile_with_config(config(), &protos, &["."])?;

    // The server reuses those messages; its codec answers a request that does not
    // decode with INVALID_ARGUMENT (the caller's fault) instead of INTERNAL.
    let server_dir = out.join("server");
    std::fs::create_dir_all(&server_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .out_dir(&server_dir)
        .extern_path(".sms.v1", "crate::v1")
        .codec_path("crate::codec::RequestValidatingCodec")
        .compile_with_config(config(), &protos, &["."])?;
    println!("cargo:rerun-if-changed=sms/v1/classifier.proto");

    // The Open Inference Protocol, the same way: messages and client, then the server
    // over those messages (its ModelInfer answer its own, infer_answer.rs) with a codec
    // that refuses what does not decode as INVALID_ARGUMENT.
    let inference = ["inference/grpc_service.proto"];
    tonic_prost_build::configure()
        .build_server(false)
        // A tensor's contents (eight repeated fields) boxed: a tensor then takes 128 bytes,
        // not 312, and prost's first push into `inputs` (room for four) stays under the
        // size at which glibc's malloc consolidates its free lists on every call.
        .boxed(".inference.ModelInferRequest.InferInputTensor.contents")
        .codec_path("crate::codec::SmallBufferCodec")
        .out_dir(&client_dir)
        .file_descriptor_set_path(out.join("inference_descriptor.bin"))
        .compile_with_config(config(), &inference, &["."])?;
    tonic_prost_build::configure()
        .build_client(false)
        .out_dir(&server_dir)
        .extern_path(".inference", "crate::inference")
        // The server answers ModelInfer with the same message encoded from borrowed parts.
        .extern_path(".inference.ModelInferResponse", "crate::infer_answer::ModelInferAnswer")
        .codec_path("crate::codec::InferenceRequestCodec")
        .compile_with_config(config(), &inference, &["."])?;
    println!("cargo:rerun-if-changed=inference/grpc_service.proto");
    Ok(())
}
