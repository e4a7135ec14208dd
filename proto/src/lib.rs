//! The `sms.v1` contract shared by both tiers: the gRPC types (generated from
//! `proto/sms/v1/classifier.proto`), the limits both enforce, trace propagation, and
//! the logging set-up both use.

pub mod telemetry;
pub mod trace;

pub mod v1 {
    tonic::include_proto!("sms.v1");

    /// Encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sms_v1_descriptor");
}

/// Longest accepted SMS text, in characters after trimming. A concatenated SMS tops out
/// around 1,600 GSM-7 characters in theory; real messages are far shorter.
pub const MAX_TEXT_CHARS: usize = 1000;

/// Largest gRPC message either side accepts: a 1,000-character text is at most 4 KB of
/// UTF-8, so 16 KiB leaves room for framing and refuses anything absurd early.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 16 * 1024;
