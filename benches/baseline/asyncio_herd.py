#!/usr/bin/env python3
"""A herd server in plain Python asyncio: the baseline herd is measured against.

Same protocol as herd (docs/PROTOCOL.md sections 2-4): IAMAT, WHATSAT (answered with the
stored AT line and a Places failure body, as herd does without an API key),
AT updates from neighbours (newest wins, flooded on), HERD NAME, `? ` for
anything else; an 8 KiB line limit; a last line ended by EOF is answered.
Every line received and sent is logged, escaped, with an RFC 3339 time, to a
buffered file flushed every second -- what herd does at --log-level debug.
Written the way one would in idiomatic asyncio, without tricks.

    python3 benches/baseline/asyncio_herd.py --name Bench --port 12100 --log-dir /tmp/logs
"""

import argparse
import asyncio
import datetime
import os
import re
import signal
from decimal import Decimal
from time import time_ns

LINE_LIMIT = 8192
COORDS = re.compile(rb"([+-])(\d+(?:\.\d+)?)([+-])(\d+(?:\.\d+)?)")
TIME = re.compile(rb"(\d{1,18})(?:\.(\d{1,9}))?")
NUMBER = re.compile(rb"\d+(?:\.\d+)?")
DIFF = re.compile(rb"[+-]\d+\.\d{9}")
PLAIN = re.compile(rb"[\x20-\x5b\x5d-\x7e]*")
FAILURE = (
    '{\n   "error_message" : "no Places client is configured",\n'
    '   "html_attributions" : [],\n   "results" : [],\n'
    '   "status" : "REQUEST_DENIED"\n}\n\n'
).encode()


def position_ok(coords):
    m = COORDS.fullmatch(coords)
    return bool(m) and Decimal(m[2].decode()) <= 90 and Decimal(m[4].decode()) <= 180


def nanos(text):
    m = TIME.fullmatch(text)
    if not m:
        return None
    return int(m[1]) * 1_000_000_000 + int((m[2] or b"").ljust(9, b"0"))


def escape(line):
    if PLAIN.fullmatch(line):
        return line.decode("ascii")
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else
                   ("\\\\" if b == 0x5C else f"\\x{b:02x}") for b in line)


class Herd:
    def __init__(self, name, neighbours, log_dir):
        self.name = name
        self.neighbours = neighbours  # name -> (host, port)
        self.links = {}  # name -> StreamWriter of our outbound link
        self.store = {}  # client -> (sent_at, AT line)
        os.makedirs(log_dir, exist_ok=True)
        self.log_file = open(os.path.join(log_dir, f"{name}.log"), "a", buffering=1 << 16)

    def log(self, level, text):
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
        self.log_file.write(f"{now} {self.name} {level} {text}\n")

    async def flush_logs(self):
        while True:
            await asyncio.sleep(1)
            self.log_file.flush()

    def handle(self, line, peer, state):
        """The reply to one line (bytes, possibly empty)."""
        self.log("DEBUG", f"from {peer}: {escape(line)}")
        f = line.split()
        if not f:
            return b""
        reply = None
        if f[0] == b"IAMAT" and len(f) == 4 and position_ok(f[2]):
            sent = nanos(f[3])
            if sent is not None:
                diff = time_ns() - sent
                sign = "-" if diff < 0 else "+"
                secs, frac = divmod(abs(diff), 1_000_000_000)
                at = b"AT %s %s%d.%09d %s %s %s" % (self.name.encode(), sign.encode(),
                                                     secs, frac, f[1], f[2], f[3])
                self.offer(f[1], sent, at, None)
                reply = at + b"\n"
        elif f[0] == b"WHATSAT" and len(f) == 4 and f[1] in self.store:
            if NUMBER.fullmatch(f[2]) and f[3].isdigit():
                radius, bound = Decimal(f[2].decode()), int(f[3])
                if 0 < radius <= 50 and 1 <= bound <= 20:
                    reply = self.store[f[1]][1] + b"\n" + FAILURE
        elif f[0] == b"AT" and len(f) == 6 and DIFF.fullmatch(f[2]) and position_ok(f[4]):
            sent = nanos(f[5])
            if sent is not None:
                self.offer(f[3], sent, b" ".join(f), state.get("peer"))
                return b""
        elif f[0] == b"HERD" and len(f) == 2 and "peer" not in state:
            state["peer"] = f[1].decode(errors="replace")
            return b""
        if reply is None:
            reply = b"? " + line.removesuffix(b"\r") + b"\n"
        first = reply.split(b"\n", 1)[0]
        self.log("DEBUG", f"to {peer}: {escape(first)}")
        return reply

    def offer(self, client, sent, at, source):
        old = self.store.get(client)
        if old is not None and (sent, at) <= old:
            return
        self.store[client] = (sent, at)
        for name in self.neighbours:
            if name != source:
                asyncio.ensure_future(self.send(name, at + b"\n"))

    async def send(self, name, data):
        writer = self.links.get(name)
        if writer is None or writer.is_closing():
            try:
                _, writer = await asyncio.open_connection(*self.neighbours[name])
            except OSError:
                return
            writer.write(f"HERD {self.name}\n".encode())
            self.links[name] = writer
        writer.write(data)

    async def serve_client(self, reader, writer):
        peer = "%s:%d" % writer.get_extra_info("peername")[:2]
        self.log("INFO", f"client {peer} connected")
        state = {}
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as e:  # EOF
                    if e.partial:
                        writer.write(self.handle(e.partial, peer, state))
                    break
                except asyncio.LimitOverrunError:
                    start = await reader.readexactly(LINE_LIMIT)
                    self.log("INFO", f"from {peer}: line longer than {LINE_LIMIT} bytes")
                    writer.write(b"? " + start + b"\n")
                    await skip_line(reader)
                    continue
                writer.write(self.handle(line[:-1], peer, state))
                await writer.drain()
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.log("INFO", f"client {peer} disconnected")
            writer.close()


async def skip_line(reader):
    """Discards the rest of an over-long line, up to and with its newline."""
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as e:
            await reader.readexactly(e.consumed)


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", default="Bench")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=12100)
    p.add_argument("--log-dir", default="logs")
    p.add_argument("--neighbour", action="append", default=[], metavar="NAME=HOST:PORT")
    a = p.parse_args()
    neighbours = {}
    for n in a.neighbour:
        name, addr = n.split("=", 1)
        host, port = addr.rsplit(":", 1)
        neighbours[name] = (host, int(port))
    herd = Herd(a.name, neighbours, a.log_dir)
    server = await asyncio.start_server(herd.serve_client, a.host, a.port,
                                        limit=LINE_LIMIT + 1, backlog=1024)
    asyncio.ensure_future(herd.flush_logs())
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    herd.log_file.flush()


if __name__ == "__main__":
    asyncio.run(main())
