"""A bounded HTTP load generator for a local server (stdlib + numpy).

N concurrent clients, each a separate OS process holding one persistent keep-alive connection,
send POST (or GET) requests with a given JSON body, or a rotating list of bodies, and headers.
The run stops at whichever comes first: `requests` timed requests in all, or `seconds` of
timed load. Warm-up requests (per client) are sent first and not counted. Only 127.0.0.1 /
localhost is accepted as a target.

Why processes and a raw socket: the clients share a 2-core machine with the server, so they
must cost as little CPU as possible and must not queue behind each other. Threads would share
one GIL, so one client's response parsing would delay another's timestamps (client-side queueing
that looks like server latency); separate processes do not. Each request goes out in ONE
`sendall` (request line, headers and body pre-encoded together) on a socket with TCP_NODELAY,
so neither Nagle's algorithm nor delayed ACKs can hold part of a request back; the client's
garbage collector is off while timing. `split_send=True` / `nodelay=False` reproduce the
classic two-write client (headers, then body) for comparison.

    python benchmarks/load.py --url http://127.0.0.1:3000/recommend --body-file req.json \\
        --header "Authorization: Bearer ..." --clients 4 --requests 2000 --seconds 30

As a module: ``run_load(url, bodies, headers=..., clients=4, requests=2000, seconds=30)``
returns a dict: count, errors by status, throughput_rps, latency_ms p50/p90/p99/max (+ mean).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import numpy as np

ALLOWED_HOSTS: Final = frozenset({"127.0.0.1", "localhost"})
DEFAULT_REQUESTS: Final = 1_000
DEFAULT_SECONDS: Final = 30.0
DEFAULT_WARMUP: Final = 20
MAX_REQUESTS: Final = 200_000
MAX_SECONDS: Final = 600.0
MAX_CLIENTS: Final = 32
MAX_WARMUP: Final = 1_000
SOCKET_TIMEOUT_S: Final = 60.0
START_TIMEOUT_S: Final = 60.0
_CRLF: Final = b"\r\n"


class LoadError(RuntimeError):
    """The load could not be run (bad target, a client failed to start or to report)."""


def check_target(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http URL on this machine; anything else is refused."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise LoadError(f"only http:// URLs are supported, got {parts.scheme!r}")
    host = (parts.hostname or "").lower()
    if host not in ALLOWED_HOSTS:
        raise LoadError(f"refusing to send load to {host!r}: only 127.0.0.1 / localhost")
    if parts.port is None:
        raise LoadError("give the port explicitly (http://127.0.0.1:PORT/...)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return "127.0.0.1", int(parts.port), path


def bounded(requests: int, seconds: float, clients: int, warmup: int) -> None:
    """Raise unless every bound is positive and within its hard cap."""
    if not 1 <= clients <= MAX_CLIENTS:
        raise LoadError(f"clients must be 1..{MAX_CLIENTS}")
    if not 1 <= requests <= MAX_REQUESTS:
        raise LoadError(f"requests must be 1..{MAX_REQUESTS}")
    if not 0 < seconds <= MAX_SECONDS:
        raise LoadError(f"seconds must be in (0, {MAX_SECONDS:g}]")
    if not 0 <= warmup <= MAX_WARMUP:
        raise LoadError(f"warmup must be 0..{MAX_WARMUP}")


# --------------------------------------------------------------------------- one client


def encode_request(
    method: str, host: str, port: int, path: str, headers: Mapping[str, str], body: bytes | None
) -> tuple[bytes, bytes]:
    """The request's head (request line + headers + blank line) and its body, as bytes."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    names = {k.lower() for k in headers}
    if body is not None:
        if "content-type" not in names:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head, body or b""


class Connection:
    """One keep-alive HTTP/1.1 connection that sends pre-encoded requests and reads responses
    (Content-Length or chunked bodies)."""

    def __init__(self, port: int, *, nodelay: bool = True):
        self.port = port
        self.nodelay = nodelay
        self.sock: socket.socket | None = None
        self.buf = b""

    def connect(self) -> None:
        self.close()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=SOCKET_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if self.nodelay else 0)
        self.sock, self.buf = sock, b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(262_144)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while (i := self.buf.find(_CRLF)) < 0:
            self._fill()
        line, self.buf = self.buf[:i], self.buf[i + 2 :]
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def roundtrip(self, head: bytes, body: bytes, *, split: bool = False) -> tuple[int, bool]:
        """Send one request, read the whole response: (status, server keeps the connection)."""
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        if split:
            self.sock.sendall(head)
            if body:
                self.sock.sendall(body)
        else:
            self.sock.sendall(head + body)
        status = int(self._line().split(b" ", 2)[1])
        length, chunked, keep = 0, False, True
        while line := self._line():
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
            elif name == b"connection" and value == b"close":
                keep = False
        if chunked:
            while size := int(self._line().split(b";")[0], 16):
                self._exact(size + 2)
            while self._line():  # trailers, then the blank line
                pass
        else:
            self._exact(length)
        return status, keep


def client(config: dict[str, Any]) -> dict[str, Any]:
    """One client's run (called inside a worker process): warm-up, wait for the common start
    time, then timed requests until its quota or the deadline. Returns per-request offsets (s from
    the start), latencies (ms) and statuses."""
    port, method, path = config["port"], config["method"], config["path"]
    bodies = [b.encode() if isinstance(b, str) else None for b in config["bodies"]]
    offset = int(config["index"])  # clients start at different bodies of a rotating list
    encoded = [
        encode_request(method, "127.0.0.1", port, path, config["headers"], b) for b in bodies
    ]
    split = bool(config.get("split_send", False))
    conn = Connection(port, nodelay=bool(config.get("nodelay", True)))
    reconnects = 0

    def one(i: int) -> int:
        nonlocal reconnects
        head, body = encoded[(offset + i) % len(encoded)]
        try:
            status, keep = conn.roundtrip(head, body, split=split)
        except (OSError, ValueError, IndexError):
            conn.close()
            reconnects += 1
            return 0  # a transport error: status 0
        if not keep:
            conn.close()
        return status

    warm_statuses = [one(i) for i in range(int(config["warmup"]))]
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    start_at = float(sys.stdin.readline())  # time.time() of the common start
    deadline = start_at + float(config["seconds"])
    quota = int(config["requests"])
    while (now := time.time()) < start_at:
        time.sleep(min(0.01, start_at - now))
    # A fresh connection for the timed run: waiting for slower clients' warm-up can outlast the
    # server's keep-alive timeout (uvicorn's 5 s), and the first request on the connection it
    # closed was a transport error (the errors once seen at 16 clients, one per client at most).
    conn.connect()
    offsets: list[float] = []
    latencies: list[float] = []
    statuses: list[int] = []
    gc.collect()
    gc.disable()  # the client's own collections must not show up as server latency
    t_start = time.perf_counter()
    try:
        i = 0
        while i < quota:
            t0 = time.perf_counter()
            if start_at + (t0 - t_start) >= deadline:
                break
            status = one(i)
            t1 = time.perf_counter()
            offsets.append(t0 - t_start)
            latencies.append((t1 - t0) * 1000.0)
            statuses.append(status)
            i += 1
    finally:
        gc.enable()
        conn.close()
    return {
        "offsets": offsets,
        "latencies_ms": latencies,
        "statuses": statuses,
        "warmup_statuses": warm_statuses,
        "reconnects": reconnects,
    }


def _worker_main() -> int:
    config = json.loads(sys.stdin.readline())
    result = client(config)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------- the run


def summarise(
    latencies_ms: Sequence[float], statuses: Sequence[int], seconds: float
) -> dict[str, Any]:
    """count, errors by status (non-2xx; 0 = transport error), req/s, latency percentiles."""
    lat = np.asarray(latencies_ms, dtype=float)
    errors: dict[str, int] = {}
    for s in statuses:
        if not 200 <= s < 300:
            errors[str(s)] = errors.get(str(s), 0) + 1
    pct = (
        {
            "p50": float(np.percentile(lat, 50)),
            "p90": float(np.percentile(lat, 90)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
            "mean": float(lat.mean()),
        }
        if lat.size
        else {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    )
    return {
        "count": int(lat.size),
        "errors": errors,
        "error_count": int(sum(errors.values())),
        "seconds": round(seconds, 3),
        "throughput_rps": float(lat.size / seconds) if seconds > 0 else 0.0,
        "latency_ms": pct,
    }


def run_load(
    url: str,
    bodies: Sequence[Any] | Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    clients: int = 1,
    requests: int = DEFAULT_REQUESTS,
    seconds: float = DEFAULT_SECONDS,
    warmup: int = DEFAULT_WARMUP,
    method: str | None = None,
    split_send: bool = False,
    nodelay: bool = True,
    samples: bool = False,
) -> dict[str, Any]:
    """Load `url` with `clients` concurrent keep-alive clients (one process each).

    `bodies`: one JSON-able body, a list of them (rotated; each client starts at a different
    one), or None for GET. Pre-encoded JSON text (str) is sent as it is. Stops after `requests`
    timed requests in all (split evenly across clients) or `seconds`, whichever comes first;
    `warmup` requests per client are not counted. Returns `summarise(...)` plus the settings
    (and, with `samples`, every request's [client, start offset s, latency ms, status])."""
    _host, port, path = check_target(url)
    bounded(requests, seconds, clients, warmup)
    if bodies is None:
        texts: list[str | None] = [None]
    elif isinstance(bodies, list | tuple):
        texts = [b if isinstance(b, str) else json.dumps(b) for b in bodies]
    else:
        texts = [bodies if isinstance(bodies, str) else json.dumps(bodies)]
    if not texts:
        raise LoadError("bodies is an empty list")
    verb = method or ("GET" if texts == [None] else "POST")
    quotas = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    procs: list[subprocess.Popen[str]] = []
    env = dict(os.environ, PYTHONHASHSEED="0")
    try:
        for i, quota in enumerate(quotas):
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            procs.append(proc)
            config = {
                "port": port,
                "method": verb,
                "path": path,
                "headers": dict(headers or {}),
                "bodies": texts,
                "index": i * max(1, len(texts) // clients),
                "warmup": warmup,
                "requests": max(quota, 1),
                "seconds": seconds,
                "split_send": split_send,
                "nodelay": nodelay,
            }
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(config) + "\n")
            proc.stdin.flush()
        for proc in procs:  # every client connected and warmed up
            assert proc.stdout is not None
            if _readline(proc, START_TIMEOUT_S + warmup * SOCKET_TIMEOUT_S) != "ready":
                raise LoadError("a load client failed during warm-up")
        start_at = time.time() + 0.05
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start_at!r}\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            line = _readline(proc, seconds + SOCKET_TIMEOUT_S + 30)
            if not line:
                raise LoadError("a load client ended without a result")
            results.append(json.loads(line))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    latencies = [x for r in results for x in r["latencies_ms"]]
    statuses = [s for r in results for s in r["statuses"]]
    ends = [
        o + lat / 1000.0
        for r in results
        for o, lat in zip(r["offsets"], r["latencies_ms"], strict=True)
    ]
    window = max(ends) if ends else 0.0
    out = summarise(latencies, statuses, window)
    warm = [s for r in results for s in r["warmup_statuses"]]
    out["warmup"] = {"requests": len(warm), "errors": sum(1 for s in warm if not 200 <= s < 300)}
    out["reconnects"] = sum(int(r["reconnects"]) for r in results)
    if samples:
        out["samples"] = sorted(
            (
                [c, o, lat, s]
                for c, r in enumerate(results)
                for o, lat, s in zip(r["offsets"], r["latencies_ms"], r["statuses"], strict=True)
            ),
            key=lambda row: row[1],
        )
    out["settings"] = {
        "url": url,
        "method": verb,
        "clients": clients,
        "requests": requests,
        "seconds_cap": seconds,
        "warmup_per_client": warmup,
        "bodies": len(texts),
        "split_send": split_send,
        "nodelay": nodelay,
    }
    return out


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of a client's stdout within `timeout` seconds ("" when it ended or timed out)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline().strip()


# --------------------------------------------------------------------------- CLI


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header {text!r}: use 'Name: value'")
    return name.strip(), value.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path")
    parser.add_argument(
        "--body-file",
        type=Path,
        help="a JSON body, or a JSON list of bodies with --rotate (default: GET without body)",
    )
    parser.add_argument("--rotate", action="store_true", help="the body file is a list to rotate")
    parser.add_argument("--header", action="append", type=_header, default=[], metavar="H")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="timed, in all")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="timed, at most")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="per client")
    parser.add_argument("--split-send", action="store_true", help="headers and body apart")
    parser.add_argument("--no-nodelay", action="store_true", help="leave Nagle's algorithm on")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    bodies: Any = None
    if args.body_file is not None:
        bodies = json.loads(args.body_file.read_text())
        if not args.rotate:
            bodies = [bodies]
    try:
        out = run_load(
            args.url,
            bodies,
            headers=dict(args.header),
            clients=args.clients,
            requests=args.requests,
            seconds=args.seconds,
            warmup=args.warmup,
            split_send=args.split_send,
            nodelay=not args.no_nodelay,
        )
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        ms = out["latency_ms"]
        print(
            f"{out['count']} requests in {out['seconds']:.2f} s = {out['throughput_rps']:.1f} req/s; "
            f"errors {out['errors'] or 0}; ms p50 {ms['p50']:.2f} p90 {ms['p90']:.2f} "
            f"p99 {ms['p99']:.2f} max {ms['max']:.2f}"
        )
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--_worker"]:
        sys.exit(_worker_main())
    sys.exit(main())
