"""service.deflate: uvicorn's negotiated permessage-deflate made shareable, sans I/O.

A websockets ``ServerProtocol`` configured as uvicorn configures it and a
``ClientProtocol`` offering compression as websockets (and browsers) do talk
through memory: the handshake response is amended before it goes out, the
server's own sends compress without context, and the client's compressed
messages (with the client's context) still decode, through a decompressor made
only when the first one arrives.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from service.deflate import prepare_deflate, shared_deflate_for
from service.frames import shared_deflate


def handshake(
    client_factory: ClientPerMessageDeflateFactory | None = None,
) -> tuple[ClientProtocol, ServerProtocol, Any]:
    """A client and a server protocol after ``prepare_deflate`` and the handshake."""
    client = ClientProtocol(
        parse_uri("ws://127.0.0.1/ws"),
        extensions=[client_factory or ClientPerMessageDeflateFactory(compress_settings={})],
    )
    server = ServerProtocol(
        extensions=[
            ServerPerMessageDeflateFactory(
                server_max_window_bits=12,
                client_max_window_bits=12,
                compress_settings={"memLevel": 5},
            )
        ],
        max_size=None,
    )
    client.send_request(client.connect())
    server.receive_data(b"".join(client.data_to_send()))
    (request,) = server.events_received()
    assert isinstance(request, Request)
    response = server.accept(request)
    uvicorn_like = SimpleNamespace(conn=server, response=response, handshake_complete=False)
    prepare_deflate(uvicorn_like)
    server.send_response(response)
    client.receive_data(b"".join(server.data_to_send()))
    assert client.state.name == "OPEN" and server.state.name == "OPEN"
    client.events_received()
    return client, server, response


def texts_received(protocol: Any) -> list[str]:
    return [
        bytes(event.data).decode()
        for event in protocol.events_received()
        if isinstance(event, Frame) and event.opcode is Opcode.TEXT
    ]


def test_the_response_announces_no_server_context_and_no_compressor_is_kept() -> None:
    client, server, response = handshake()
    assert "server_no_context_takeover" in response.headers["Sec-WebSocket-Extensions"]
    (extension,) = server.extensions
    assert isinstance(extension, PerMessageDeflate)
    assert extension.local_no_context_takeover
    assert "encoder" not in vars(extension) and "decoder" not in vars(extension)
    (accepted,) = client.extensions
    assert isinstance(accepted, PerMessageDeflate) and accepted.remote_no_context_takeover


def test_client_messages_with_context_decode_through_a_decoder_made_on_first_use() -> None:
    client, server, _ = handshake()
    (extension,) = server.extensions
    messages = [f'{{"type":"ping","id":"{i}","pad":"{"abc" * 300}"}}' for i in range(4)]
    for text in messages:
        client.send_text(text.encode())
        server.receive_data(b"".join(client.data_to_send()))
        assert "decoder" in vars(extension)
    assert texts_received(server) == messages


def test_server_sends_and_shared_frames_interleave_on_the_client() -> None:
    client, server, _ = handshake()
    shared = shared_deflate_for(server.extensions)
    assert shared is shared_deflate(12, {"memLevel": 5})
    texts = [f"message {i} " + "xyz" * (50 * i) for i in range(1, 7)]
    for i, text in enumerate(texts):
        if i % 2:
            server.send_text(text.encode())  # uvicorn's own (waiting) send
            client.receive_data(b"".join(server.data_to_send()))
        else:
            client.receive_data(shared.frame(text))
    assert texts_received(client) == texts


def test_an_offer_without_any_context_is_left_as_negotiated() -> None:
    no_context = ClientPerMessageDeflateFactory(
        server_no_context_takeover=True, client_no_context_takeover=True
    )
    client, server, response = handshake(no_context)
    header = response.headers["Sec-WebSocket-Extensions"]
    assert header.count("server_no_context_takeover") == 1
    client.send_text(b"hello " * 40)
    server.receive_data(b"".join(client.data_to_send()))
    assert texts_received(server) == ["hello " * 40]
    assert shared_deflate_for(server.extensions) is not None


def test_no_shared_frames_for_anything_but_one_context_free_deflate() -> None:
    assert shared_deflate_for([]) is None
    assert shared_deflate_for([PerMessageDeflate(False, False, 15, 12)]) is None
    assert shared_deflate_for([SimpleNamespace(name="x")]) is None
