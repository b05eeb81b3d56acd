"""Free loopback ports for tests that start servers of their own."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    # A bind without SO_REUSEADDR fails on any socket holding the port: a listener, an outgoing
    # connection that was given it as its local port, or one in TIME_WAIT.
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        return int(_PORT_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_broker_port() -> int:
    """A free port whose successor is free too: the local broker's controller takes port + 1.

    The pair is drawn below the kernel's ephemeral range, so no outgoing connection can be given
    either port in the seconds between this check and the broker's own bind (the broker's JVM
    takes a few seconds to start, while the tests around it open connections all the time).
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    if low > 20_000:
        for _ in range(200):
            port = rng.randrange(20_000, low - 1)
            if _bindable(port) and _bindable(port + 1):
                return port
    for _ in range(50):
        port = free_port()
        if port < 65000 and _bindable(port + 1):
            return port
    raise RuntimeError("no free pair of loopback ports")
