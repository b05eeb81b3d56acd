"""The test helper that draws ports for brokers started by a test."""

from __future__ import annotations

import socket

from tests.ports import _bindable, _ephemeral_low, free_broker_port


def test_broker_ports_lie_below_the_ephemeral_range_and_are_free() -> None:
    port = free_broker_port()
    assert port + 1 < _ephemeral_low()
    assert _bindable(port) and _bindable(port + 1)


def test_a_port_held_by_a_connected_socket_is_not_bindable() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname()) as client:
            assert not _bindable(client.getsockname()[1])
            assert not _bindable(server.getsockname()[1])
