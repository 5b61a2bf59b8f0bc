#!/usr/bin/env python3
"""The host side of the virtio guest's network and vsock checks (Guests/virtio/main.c).

Usage: virtio-host.py TAP LOG [VSOCK_UDS]

- Network: answers every Ethernet frame of type 0x88B5 that arrives from the guest on TAP with
  one to the sender, its payload prefixed with "echo: ".
- vsock (with VSOCK_UDS, Firecracker's host side): listens on VSOCK_UDS_5000 and echoes what each
  connection sends, prefixed with "echo: "; and connects to VSOCK_UDS, asks for the guest's port
  52 (CONNECT 52), sends "ping from host" and records the answer.

Everything it sees goes to LOG, one line per event. Runs until killed.
"""
import os
import socket
import sys
import threading
import time

ETHERTYPE = 0x88B5
PACKET_OUTGOING = 4


def log(line):
    with open(sys.argv[2], "a") as f:
        f.write(line + "\n")


def frames(tap):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
    s.bind((tap, ETHERTYPE))
    while True:
        frame, address = s.recvfrom(65536)
        if address[2] == PACKET_OUTGOING or len(frame) < 14:
            continue
        payload = frame[14:]
        log("net frame from %s: %s" % (frame[6:12].hex(":"), payload.decode(errors="replace")))
        s.send(frame[6:12] + bytes([2, 0, 0, 0, 0, 1]) + frame[12:14] + b"echo: " + payload)


def echo_listener(path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    while True:
        connection, _ = server.accept()
        while True:
            data = connection.recv(4096)
            if not data:
                break
            log("vsock guest sent: %s" % data.decode(errors="replace"))
            connection.sendall(b"echo: " + data)
        connection.close()
        log("vsock guest connection closed")


def connect_to_guest(path):
    """CONNECT 52 until the guest listens there (a refusal closes the connection), then talk."""
    deadline = time.time() + 120
    while time.time() < deadline:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError:
            s.close()
            time.sleep(0.05)
            continue
        s.sendall(b"CONNECT 52\n")
        line = b""
        while not line.endswith(b"\n"):
            part = s.recv(1)
            if not part:
                break
            line += part
        if not line.startswith(b"OK "):
            s.close()
            time.sleep(0.2)
            continue
        log("vsock host got: %s" % line.decode().strip())
        s.sendall(b"ping from host")
        answer = b""
        while True:
            part = s.recv(4096)
            if not part:
                break
            answer += part
        log("vsock host received: %s" % answer.decode(errors="replace"))
        return
    log("vsock host: no guest listened on port 52")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    threading.Thread(target=frames, args=(sys.argv[1],), daemon=True).start()
    if len(sys.argv) > 3:
        threading.Thread(target=echo_listener, args=(sys.argv[3] + "_5000",), daemon=True).start()
        threading.Thread(target=connect_to_guest, args=(sys.argv[3],), daemon=True).start()
    log("helper ready")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
