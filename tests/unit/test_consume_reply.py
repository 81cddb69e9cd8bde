"""The server writes Consume replies itself (``encode_consume_response``) instead of through protobuf: the
bytes must be exactly protobuf's, so every client parses them as before."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb
from streamhouse.server import encode_consume_response

int64s = st.integers(-(1 << 63), (1 << 63) - 1)


@given(
    record_set=st.binary(max_size=300) | st.sampled_from([b"", b"\x00" * 200_000]),
    high_watermark=int64s | st.sampled_from([0, 1, 127, 128, 16383, 16384]),
    log_start_offset=int64s | st.just(0),
)
def test_consume_reply_bytes_are_protobufs(
    record_set: bytes, high_watermark: int, log_start_offset: int
) -> None:
    ours = encode_consume_response(record_set, high_watermark, log_start_offset)
    theirs = pb.ConsumeResponse(
        record_set=record_set, high_watermark=high_watermark, log_start_offset=log_start_offset
    ).SerializeToString()
    assert ours == theirs
    back = pb.ConsumeResponse.FromString(ours)
    assert (back.record_set, back.high_watermark, back.log_start_offset) == (
        record_set,
        high_watermark,
        log_start_offset,
    )
