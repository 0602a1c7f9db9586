"""attack.py - an outsider without the key, speaking nng's wire protocol
directly (raw TCP), for the link-hardening tests and the benchmark.

nng's SP over TCP: each side sends an 8-byte header (0x00 'S' 'P' 0x00, its
protocol id as u16 big-endian, 2 zero bytes), then messages as a u64
big-endian length and the bytes. A REQ peer's message starts with a 4-byte
request id (high bit set), then the body: here Chorus sealed frames
(proto/seal.h) with made-up contents.

Every attack is bounded in time and count, and only ever targets the
loopback addresses the tests use. Standard library only.
"""

import os
import random
import socket
import struct
import time

REQ0 = 0x30
REP0 = 0x31


def sp_header(proto=REQ0):
    return b"\x00SP\x00" + struct.pack(">H", proto) + b"\x00\x00"


def sp_connect(port, src="127.0.0.2", timeout_s=5.0, rcvbuf=0):
    """A TCP connection from src (any 127.x address is the loopback) that
    has done nng's handshake as a REQ peer. rcvbuf: a small receive buffer,
    so a peer that does not read fills the node's send side quickly."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout_s)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(sp_header())
    return s


def sp_message(body, request_id=None):
    rid = request_id if request_id is not None else (random.getrandbits(31) | 0x80000000)
    payload = struct.pack(">I", rid) + body
    return struct.pack(">Q", len(payload)) + payload


def data_frame(session_id=None, counter=None, body_bytes=16):
    """A Chorus DATA frame (56 bytes by default) under a made-up session."""
    sid = session_id if session_id is not None else random.getrandbits(64) | 1
    ctr = counter if counter is not None else random.getrandbits(63) | 1
    hdr = bytes([0xC5, 4]) + struct.pack("<H", 1) + b"\x00" * 4 + struct.pack("<QQ", sid, ctr)
    return hdr + os.urandom(body_bytes + 16)


def stream_unknown_sessions(port, duration_s, src="127.0.0.2", batch=64):
    """Streams data frames with random session ids and never reads an
    answer, reconnecting whenever the node closes the connection, for
    duration_s. Returns (frames sent, connections made)."""
    sent = conns = 0
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        try:
            s = sp_connect(port, src, rcvbuf=4096)
        except OSError:
            time.sleep(0.05)
            continue
        conns += 1
        try:
            while time.monotonic() < end:
                # hold on while the node stops reading us: a blocked send
                # is part of the attack, until the attack's end
                s.settimeout(max(0.05, end - time.monotonic()))
                s.sendall(b"".join(sp_message(data_frame()) for _ in range(batch)))
                sent += batch
        except OSError:
            pass  # closed by the node, or the attack's time is up
        finally:
            s.close()
    return sent, conns


def hold_connections(port, n, srcs, declare_bytes=0, send_bytes=0):
    """Opens n connections spread over the source addresses srcs; each
    declares a message of declare_bytes and sends send_bytes of it (0, 0:
    just the handshake), then holds. Returns the open sockets (the caller
    closes them) and how many connects failed."""
    socks, failed = [], 0
    chunk = b"\x00" * 65536
    for i in range(n):
        try:
            s = sp_connect(port, srcs[i % len(srcs)])
            if declare_bytes:
                s.sendall(struct.pack(">Q", declare_bytes))
                left = send_bytes
                while left > 0:
                    k = min(left, len(chunk))
                    s.sendall(chunk[:k])
                    left -= k
            socks.append(s)
        except OSError:
            failed += 1
    return socks, failed


def closed_by_peer(s, timeout_s=0.05):
    """1 when the node has closed this connection (EOF or reset)."""
    s.settimeout(timeout_s)
    try:
        data = s.recv(65536)
        return data == b""
    except socket.timeout:
        return False
    except OSError:
        return True
