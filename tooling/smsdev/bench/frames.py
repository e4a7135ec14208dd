"""The protobuf bytes the bench sends or writes, encoded by hand (no generated code, no
protobuf runtime in the bench): gRPC request frames for h2load and the ONNX metadata added
to the pre-lean artifact."""

from __future__ import annotations


def pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (strings, bytes, messages, packed numbers)."""
    return pb_varint(number << 3 | 2) + pb_varint(len(payload)) + payload


def grpc_message(message: bytes) -> bytes:
    """One gRPC message: the uncompressed flag, a 4-byte length, the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def classify_frame(text: str) -> bytes:
    """sms.v1 ClassifyRequest{text} (field 1) as one gRPC message."""
    return grpc_message(pb_field(1, text.encode()))


def model_infer_frame(texts: list[str], model: str = "sms-spam") -> bytes:
    """One gRPC message holding the Open Inference Protocol's ModelInferRequest: model
    `model`, input `text` BYTES [N] in raw_input_contents (as tritonclient sends it)."""
    shape = pb_varint(len(texts))
    tensor = pb_field(1, b"text") + pb_field(2, b"BYTES") + pb_field(3, shape)
    raw = b"".join(len(t.encode()).to_bytes(4, "little") + t.encode() for t in texts)
    return grpc_message(pb_field(1, model.encode()) + pb_field(5, tensor) + pb_field(7, raw))


def onnx_metadata_props(props: dict[str, str]) -> bytes:
    """ONNX ModelProto `metadata_props` entries (field 14: StringStringEntryProto, key 1,
    value 2), encoded to append to a serialized model: protobuf merges repeated fields."""
    return b"".join(pb_field(14, pb_field(1, k.encode()) + pb_field(2, v.encode())) for k, v in props.items())
