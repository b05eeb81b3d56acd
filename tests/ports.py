"""Free loopback ports for tests that start servers of their own."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_broker_port() -> int:
    """A free port whose successor is free too: the local broker's controller takes port + 1."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            if port < 65000 and s.connect_ex(("127.0.0.1", port + 1)) != 0:
                return port
    raise RuntimeError("no free pair of loopback ports")
