"""The engine's pynetdicom SCU associations (RIS worklist, MPPS relay, recall, storage
commitment, echo) go out with TCP_NODELAY, against a real DCMTK storescp."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from pynetdicom import AE

from bench.peers import free_port, wait_for_port
from engine.dicom import scu


def test_an_scu_association_sets_tcp_nodelay(tmp_path: Path) -> None:
    port = free_port()
    peer = subprocess.Popen(
        ["storescp", "-od", str(tmp_path), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, peer)
        ae = AE(ae_title="EDGE")
        ae.add_requested_context("1.2.840.10008.1.1")
        plain = ae.associate("127.0.0.1", port, ae_title="ANY")
        assert plain.is_established
        plain_socket = plain.dul.socket.socket  # type: ignore[union-attr]
        assert plain_socket is not None
        assert plain_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        plain.release()

        assoc = scu.associate(ae, "127.0.0.1", port, "ANY")
        assert assoc.is_established
        ours = assoc.dul.socket.socket  # type: ignore[union-attr]
        assert ours is not None
        assert ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert assoc.send_c_echo().Status == 0
        assoc.release()
    finally:
        peer.kill()
        peer.wait(timeout=10)
