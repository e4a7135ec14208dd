//! The codecs of `sms.v1`: tonic's prost codec with buffers sized for its messages, and
//! for the server, a request that cannot be decoded (truncated, invalid UTF-8 in `text`,
//! ...) answered as the caller's mistake, INVALID_ARGUMENT, instead of INTERNAL.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The buffer each message is encoded into or decoded from, one per message and side:
/// four a Classify call across the two tiers. tonic's default is 8 KiB; `sms.v1`'s
/// messages are a few hundred bytes (a buffer grows for a longer one: a 1,000-character
/// text is at most 4 KB), and a buffer this small comes from the allocator's per-thread
/// cache, where an 8 KiB one takes its locked path.
fn buffers() -> BufferSettings {
    BufferSettings::new(512, 32 * 1024)
}

/// The client's codec: tonic's prost codec with `buffers()`.
#[derive(Debug, Clone)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

// By hand: derived, it would ask the messages to be `Default`, and the server's ModelInfer
// answer (infer_answer.rs) is not.
impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(buffers())
    }
}

/// The protocol a server's codec names in its refusals.
pub trait Protocol: Send + 'static {
    const NAME: &'static str;
}

/// `sms.v1`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmsV1;

impl Protocol for SmsV1 {
    const NAME: &'static str = "sms.v1";
}

/// The Open Inference Protocol (`inference.GRPCInferenceService`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inference;

impl Protocol for Inference {
    const NAME: &'static str = "inference";
}

/// A server's codec: `SmallBufferCodec`, with requests that do not decode refused as
/// INVALID_ARGUMENT naming the protocol `P`.
#[derive(Debug, Clone)]
pub struct ServerCodec<T, U, P>(SmallBufferCodec<T, U>, PhantomData<P>);

impl<T, U, P> Default for ServerCodec<T, U, P> {
    fn default() -> Self {
        Self(SmallBufferCodec::default(), PhantomData)
    }
}

/// The `sms.v1` server's codec.
pub type RequestValidatingCodec<T, U> = ServerCodec<T, U, SmsV1>;
/// The Open Inference Protocol server's codec.
pub type InferenceRequestCodec<T, U> = ServerCodec<T, U, Inference>;

impl<T, U, P> Codec for ServerCodec<T, U, P>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
    P: Protocol,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(self.0.decoder(), P::NAME)
    }
}

/// A request decoder naming its protocol (`sms.v1`, `inference`) in its refusals.
#[derive(Debug)]
pub struct RequestDecoder<U>(ProstDecoder<U>, &'static str);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| match s.code() {
            Code::Internal => {
                Status::invalid_argument(format!("the request is not a valid {} message: {}", self.1, s.message()))
            }
            _ => s,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
