"""service.frames: broadcast frames built once, plain or compressed once per parameters.

Data in, bytes out: every compressed frame is read back by websockets' own
permessage-deflate decoder as a client would read it, with and without the
client keeping its decompression context, so "a shared frame decodes on any
connection with these parameters" is checked against a real implementation.
"""

from __future__ import annotations

import os
import random
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from service.frames import (
    MIN_COMPRESSED_BYTES,
    SharedDeflate,
    deflated_frame,
    frame_header,
    shared_deflate,
)

SETTINGS = {"memLevel": 5}  # what uvicorn's permessage-deflate compresses with


def parse(frame: bytes) -> tuple[bool, int, bytes]:
    """``(rsv1, declared length, payload)`` of one unmasked, final text frame."""
    first, second = frame[0], frame[1]
    assert first & 0x80, "FIN must be set"
    assert first & 0x0F == 0x1, "a text frame"
    assert not second & 0x80, "a server frame is not masked"
    marker = second & 0x7F
    if marker < 126:
        length, start = marker, 2
    elif marker == 126:
        (length,) = struct.unpack("!H", frame[2:4])
        start = 4
        assert length >= 126, "the shortest length encoding must be used"
    else:
        (length,) = struct.unpack("!Q", frame[2:10])
        start = 10
        assert length >= 1 << 16, "the shortest length encoding must be used"
    payload = frame[start:]
    assert len(payload) == length
    return bool(first & 0x40), length, payload


def client_reads(frames: list[bytes], *, window_bits: int, keep_context: bool) -> list[str]:
    """What a client's websockets decoder makes of ``frames``, in order."""
    client = PerMessageDeflate(
        remote_no_context_takeover=not keep_context,
        local_no_context_takeover=False,
        remote_max_window_bits=window_bits,
        local_max_window_bits=15,
    )
    out = []
    for frame in frames:
        rsv1, _, payload = parse(frame)
        decoded = client.decode(Frame(Opcode.TEXT, payload, fin=True, rsv1=rsv1), max_size=None)
        out.append(bytes(decoded.data).decode())
    return out


def incompressible(chars: int, seed: int) -> str:
    """Text that deflate cannot shrink much, with 1- to 4-byte UTF-8 characters."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789éüß€✓😀🚀中文"
    return "".join(rng.choice(alphabet) for _ in range(chars))


LENGTH_CLASSES = {
    # compressed payload <= 125 bytes: one length byte
    "7-bit": "training progress " * 200,
    # 126..65535 compressed bytes: 16-bit length
    "16-bit": incompressible(3_000, 1),
    # >= 65536 compressed bytes: 64-bit length
    "64-bit": incompressible(100_000, 2),
}


@pytest.mark.parametrize("name", LENGTH_CLASSES)
@pytest.mark.parametrize("window_bits", [9, 12, 15])
@pytest.mark.parametrize("keep_context", [True, False], ids=["client-context", "no-context"])
def test_a_compressed_frame_of_every_length_class_decodes_as_the_text(
    name: str, window_bits: int, keep_context: bool
) -> None:
    text = LENGTH_CLASSES[name]
    frame = deflated_frame(text.encode(), window_bits, SETTINGS)
    rsv1, length, _ = parse(frame)
    assert rsv1, "a compressible message goes compressed"
    expected = {"7-bit": range(0, 126), "16-bit": range(126, 1 << 16)}.get(
        name, range(1 << 16, 1 << 32)
    )
    assert length in expected
    assert client_reads([frame], window_bits=window_bits, keep_context=keep_context) == [text]


def test_a_tiny_message_goes_uncompressed_with_rsv1_clear() -> None:
    text = "x" * (MIN_COMPRESSED_BYTES - 1)
    frame = deflated_frame(text.encode(), 12, SETTINGS)
    assert frame == frame_header(len(text)) + text.encode()
    assert client_reads([frame], window_bits=12, keep_context=True) == [text]


def test_a_message_deflate_would_grow_goes_uncompressed() -> None:
    data = os.urandom(300).hex()[: MIN_COMPRESSED_BYTES + 10]  # hex of random bytes barely shrinks
    noise = "".join(chr(0x4E00 + b) for b in os.urandom(200))  # 3-byte chars, random
    for text in (data, noise):
        frame = deflated_frame(text.encode(), 12, SETTINGS)
        rsv1, length, _ = parse(frame)
        assert length <= len(text.encode())
        if not rsv1:
            assert frame == frame_header(len(text.encode())) + text.encode()
        assert client_reads([frame], window_bits=12, keep_context=True) == [text]


@pytest.mark.parametrize("keep_context", [True, False], ids=["client-context", "no-context"])
def test_shared_frames_interleave_with_frames_uvicorn_compresses_itself(
    keep_context: bool,
) -> None:
    """On one connection: shared broadcast frames, then frames the server's own
    per-connection encoder wrote (a send that had to wait), in any order. Both are
    compressed without context, so a client with or without its own context reads
    every one."""
    server = PerMessageDeflate(
        remote_no_context_takeover=False,
        local_no_context_takeover=True,  # what service.directsend sets on uvicorn's
        remote_max_window_bits=12,
        local_max_window_bits=12,
        compress_settings=SETTINGS,
    )
    shared = SharedDeflate(12, SETTINGS)
    texts = [f'{{"n":{i},"pad":"{"abc" * (i * 40)}"}}' for i in range(12)]
    frames = []
    for i, text in enumerate(texts):
        if i % 3 == 1:  # the ASGI path: uvicorn's encoder
            encoded = server.encode(Frame(Opcode.TEXT, text.encode(), fin=True))
            frames.append(frame_header(len(encoded.data), 0xC1) + bytes(encoded.data))
        else:
            frames.append(shared.frame(text))
    assert client_reads(frames, window_bits=12, keep_context=keep_context) == texts


def test_one_compression_per_text_object() -> None:
    shared = SharedDeflate(12, SETTINGS)
    text = "compress me once " * 20
    first = shared.frame(text)
    assert shared.frame(text) is first
    equal_copy = "".join(["compress me once "] * 20)
    assert equal_copy is not text
    assert shared.frame(equal_copy) == first  # equal text, equal bytes (built again)


def test_shared_compressors_are_one_per_distinct_parameters() -> None:
    assert shared_deflate(12, {"memLevel": 5}) is shared_deflate(12, {"memLevel": 5})
    assert shared_deflate(12, {"memLevel": 5}) is not shared_deflate(11, {"memLevel": 5})
    assert shared_deflate(12, {"memLevel": 5}) is not shared_deflate(12, {"memLevel": 8})


@pytest.mark.parametrize("bits", [8, 16])
def test_a_window_zlib_cannot_compress_with_is_refused(bits: int) -> None:
    with pytest.raises(ValueError, match="window_bits"):
        SharedDeflate(bits, SETTINGS)


def test_a_smaller_window_never_references_beyond_it() -> None:
    """A client that asked for a 9-bit window (512 bytes) can decode what was
    compressed for it; a frame compressed with a 15-bit window may not be."""
    text = ("0123456789abcdef" * 16 + incompressible(600, 3)) * 4  # repeats 1 KiB apart
    frame = SharedDeflate(9, SETTINGS).frame(text)
    inflater = zlib.decompressobj(wbits=-9)
    _, _, payload = parse(frame)
    assert inflater.decompress(payload + b"\x00\x00\xff\xff").decode() == text


@given(st.text(max_size=3_000))
def test_any_text_decodes_back(text: str) -> None:
    frame = deflated_frame(text.encode(), 12, SETTINGS)
    assert client_reads([frame], window_bits=12, keep_context=True) == [text]
