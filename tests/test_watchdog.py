"""The watchdog that gives blocking sockets a deadline (`_watchdog.py`)."""

from __future__ import annotations

import socket
import time

from carecycle_webhooks._watchdog import Watchdog


def test_a_socket_past_its_deadline_is_shut_down() -> None:
    watchdog = Watchdog()
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.settimeout(5)
        watchdog.arm(ours, ours.fileno(), time.monotonic() + 0.05)
        assert ours.recv(1) == b""  # woken by the shutdown: end of file
        assert watchdog.fired == 1


def test_a_descriptor_closed_behind_its_owner_and_reused_is_never_shut() -> None:
    # libpq closes a lost connection's socket itself; the number then goes to the next
    # socket the process opens (another delivery's connection, a client's request).
    watchdog = Watchdog()
    lost, lost_peer = socket.socketpair()
    number = lost.fileno()
    watchdog.arm(lost, number, time.monotonic() + 0.05)
    lost.close()
    lost_peer.close()
    innocent, peer = socket.socketpair()
    with innocent, peer:
        if innocent.fileno() != number:  # the kernel gives the lowest free number: it is reused
            peer, innocent = innocent, peer
        assert innocent.fileno() == number
        # Another socket with a deadline, armed after the first: once it fires, the first is past.
        marker, marker_peer = socket.socketpair()
        with marker, marker_peer:
            marker.settimeout(5)
            watchdog.arm(marker, marker.fileno(), time.monotonic() + 0.1)
            assert marker.recv(1) == b""
        peer.sendall(b"x")
        innocent.settimeout(5)
        assert innocent.recv(1) == b"x"
        innocent.sendall(b"y")
        assert peer.recv(1) == b"y"
    assert watchdog.fired == 1  # the marker only


def test_a_disarmed_socket_is_left_alone() -> None:
    watchdog = Watchdog()
    ours, peer = socket.socketpair()
    with ours, peer:
        watchdog.arm(ours, ours.fileno(), time.monotonic() + 0.05)
        watchdog.disarm(ours)
        marker, marker_peer = socket.socketpair()
        with marker, marker_peer:
            marker.settimeout(5)
            watchdog.arm(marker, marker.fileno(), time.monotonic() + 0.1)
            assert marker.recv(1) == b""
        peer.sendall(b"x")
        ours.settimeout(5)
        assert ours.recv(1) == b"x"
