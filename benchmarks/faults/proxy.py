"""A fault-injecting HTTP proxy between boto3 clients and moto's server (issue 19).

A process points ``AWS_ENDPOINT_URL`` at :attr:`FaultProxy.url`; each call goes on to the
upstream server (:class:`posefleet.local.LocalAWS`) unless the proxy, drawing from its own
seeded generator, faults it. The faults (:class:`Fault`) are the ones a live AWS produces:

* ``error``: a retryable error in the request's own protocol: S3 (REST-XML) ``503 SlowDown``;
  SQS (JSON 1.0, ``X-Amz-Target: AmazonSQS.*``) ``500 InternalError``, with the
  ``x-amzn-query-error`` header SQS sends; DynamoDB ``500 InternalServerError``; SNS and any
  other query-protocol call (``Action=...`` form) ``500 InternalError`` as XML. Nothing reaches
  moto.
* ``reset_before``: the request is read, nothing is forwarded, the connection is reset (RST).
* ``reset_after``: the request is forwarded and answered by moto (it took effect), then the
  connection is reset before the answer reaches the caller: the PUT or delete happened and the
  caller does not know.
* ``delay``: a pause of ``FaultPlan.delay_seconds`` (1-4 s) before forwarding.

and an outage window (:meth:`FaultProxy.outage`) that refuses every call for a while, switched
on and off at run time. It answers in protocol by default (S3 ``503 ServiceUnavailable``, the
others ``500``): a regional outage is front ends answering 5xx, which is what spends botocore's
retry quota (and so slows recovery); ``refusal="reset"`` resets connections instead.

How botocore 1.44's ``standard`` retry mode (the one ``posefleet.aws.client`` configures) takes
them (``botocore/retries/standard.py``): a 500/502/503/504 status and a connection error
(``ConnectionClosedError`` after a reset) are transient, retried with a 50 ms exponential base
and 14 units of the client's 500-unit retry quota each; ``SlowDown`` is also a throttling code,
retried with a 1 s base and 5 units. A call that succeeds gives back what it took (1 unit if
it took none): a long run of failures drains the quota and botocore stops retrying at all.

The service is read from the SigV4 credential scope (``Authorization`` header or presigned
query), the operation from ``X-Amz-Target``, an ``Action`` parameter, or (S3) method and path;
the client from the ``app/<id>`` of the User-Agent, which a process sets with
``AWS_SDK_UA_APP_ID``, so faults can spare one process (``FaultPlan.spare_clients``).

Every call is counted by outcome (each fault kind, ``outage``, ``passed``) and service,
operation and client (:meth:`FaultProxy.counts`). The proxy runs in its owner's process, in a
thread per connection, on 127.0.0.1 and a free port; its owner stops it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "OUTAGE",
    "PASSED",
    "Call",
    "Counts",
    "Decision",
    "Fault",
    "FaultPlan",
    "FaultProxy",
    "error_response",
    "identify",
]

PASSED = "passed"  # forwarded untouched
OUTAGE = "outage"  # refused by an outage window


class Fault(StrEnum):
    ERROR = "error"
    RESET_BEFORE = "reset_before"
    RESET_AFTER = "reset_after"
    DELAY = "delay"


@dataclass(frozen=True, slots=True)
class Call:
    """What the proxy knows of one request."""

    service: str  # from the SigV4 scope: "s3", "sqs", "dynamodb", "sns"; "unknown" without
    operation: str  # "GetObject", "ReceiveMessage", "Publish", ...
    client: str = ""  # the User-Agent's app id (AWS_SDK_UA_APP_ID), "" without
    protocol: Literal["json", "query", "rest"] = "rest"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the proxy did with one call, and when (``time.time()``)."""

    at: float
    call: Call
    outcome: str  # a Fault value, OUTAGE or PASSED


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    """Per-call probabilities of each fault kind (together at most 1), and which calls they
    may hit: ``services`` and ``operations`` (empty: all), never a ``spare_clients`` one."""

    error: float = 0.0
    reset_before: float = 0.0
    reset_after: float = 0.0
    delay: float = 0.0
    seed: int = 0
    delay_seconds: tuple[float, float] = (1.0, 4.0)
    services: frozenset[str] = frozenset()
    operations: frozenset[str] = frozenset()
    spare_clients: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        rates = self.rates()
        if any(not 0 <= r <= 1 for r in rates.values()) or sum(rates.values()) > 1 + 1e-9:
            raise ValueError(f"fault rates must be in [0, 1] and sum to at most 1, got {rates}")
        low, high = self.delay_seconds
        if not 0 <= low <= high:
            raise ValueError(f"delay_seconds must be (low, high), 0 <= low <= high: {low, high}")

    @classmethod
    def spread(cls, rate: float, **options: Any) -> FaultPlan:
        """``rate`` of all calls faulted, shared equally by the four kinds."""
        return cls(**{kind.value: rate / len(Fault) for kind in Fault}, **options)

    def rates(self) -> dict[Fault, float]:
        return {kind: getattr(self, kind.value) for kind in Fault}

    def applies(self, call: Call) -> bool:
        return (
            (not self.services or call.service in self.services)
            and (not self.operations or call.operation in self.operations)
            and call.client not in self.spare_clients
        )

    def draw(self, rng: random.Random) -> tuple[Fault | None, float]:
        """One call's fault (None: none) and its delay in seconds."""
        u, edge = rng.random(), 0.0
        for kind, rate in self.rates().items():
            edge += rate
            if u < edge:
                pause = rng.uniform(*self.delay_seconds) if kind is Fault.DELAY else 0.0
                return kind, pause
        return None, 0.0


@dataclass(frozen=True)
class Counts:
    """A snapshot of what the proxy did: calls by (service, operation, client, outcome)."""

    calls: Mapping[tuple[str, str, str, str], int] = field(default_factory=dict)

    def total(
        self,
        outcome: str | None = None,
        *,
        service: str | None = None,
        operation: str | None = None,
        client: str | None = None,
    ) -> int:
        wanted = (service, operation, client, outcome)
        return sum(
            n
            for key, n in self.calls.items()
            if all(w is None or w == k for w, k in zip(wanted, key, strict=True))
        )

    def as_dict(self) -> dict[str, Any]:
        outcomes: Counter[str] = Counter()
        operations: dict[str, Counter[str]] = {}
        clients: dict[str, Counter[str]] = {}
        for (service, operation, client, outcome), n in sorted(self.calls.items()):
            outcomes[outcome] += n
            operations.setdefault(f"{service}.{operation}", Counter())[outcome] += n
            clients.setdefault(client or "-", Counter())[outcome] += n
        return {
            "calls": sum(outcomes.values()),
            "outcomes": dict(outcomes),
            "operations": {k: dict(v) for k, v in operations.items()},
            "clients": {k: dict(v) for k, v in clients.items()},
        }


# ---------------------------------------------------------------------------- the request

_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_APP_ID = re.compile(r"(?:^|\s)app/(\S+)")
_TARGETS = {"AmazonSQS": "sqs", "DynamoDB_20120810": "dynamodb"}


def identify(method: str, target: str, headers: Mapping[str, str], body: bytes) -> Call:
    """The service, operation, client and protocol of a request (``target``: path and query)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    scope = _SCOPE.search(headers.get("Authorization", "")) or _SCOPE.search(
        "Credential=" + query.get("X-Amz-Credential", [""])[0]
    )
    amz_target = headers.get("X-Amz-Target", "")
    prefix = amz_target.split(".", 1)[0]
    service = scope.group(1) if scope else _TARGETS.get(prefix, "unknown")
    app = _APP_ID.search(headers.get("User-Agent", ""))
    client = app.group(1) if app else ""
    if amz_target:
        return Call(service, amz_target.rsplit(".", 1)[-1], client, "json")
    form = headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
    action = (parse_qs(body.decode("latin-1")) if form else query).get("Action")
    if action:
        return Call(service, action[0], client, "query")
    operation = _s3_operation(method, parts.path, query, headers) if service == "s3" else method
    return Call(service, operation, client, "rest")


def _s3_operation(
    method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str]
) -> str:
    """The S3 operation of a path-style request (as botocore sends to an IP endpoint)."""
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        return "ListBuckets"
    if not key:
        if method == "GET":
            return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
        return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(
            method, "DeleteObjects" if "delete" in query else f"{method}Bucket"
        )
    if method == "PUT" and "x-amz-copy-source" in {h.lower() for h in headers}:
        return "CopyObject"
    if "uploadId" in query or "uploads" in query:
        return {"POST": "CompleteMultipartUpload", "PUT": "UploadPart"}.get(
            method, "MultipartUpload"
        )
    return {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject"}.get(
        method, "DeleteObject" if method == "DELETE" else f"{method}Object"
    )


# ---------------------------------------------------------------------------- error answers

_GENERIC = (500, "InternalError", "We encountered an internal error. Please try again.")
_ERRORS = {  # service: (status, code, message) of an `error` fault
    "s3": (503, "SlowDown", "Please reduce your request rate."),
    "dynamodb": (500, "InternalServerError", "Internal server error"),
}
_OUTAGE_ERRORS = _ERRORS | {"s3": (503, "ServiceUnavailable", "Service is unable to handle it.")}
_JSON_NAMESPACES = {"sqs": "com.amazonaws.sqs", "dynamodb": "com.amazonaws.dynamodb.v20120810"}


def error_response(call: Call, *, outage: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a retryable error for ``call``, in its protocol."""
    status, code, message = (_OUTAGE_ERRORS if outage else _ERRORS).get(call.service, _GENERIC)
    request_id = str(uuid.uuid4())
    if call.protocol == "json":
        namespace = _JSON_NAMESPACES.get(call.service)
        body = json.dumps(
            {"__type": f"{namespace}#{code}" if namespace else code, "message": message}
        ).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": request_id}
        if call.service == "sqs":  # SQS speaks JSON for the query protocol's errors
            headers["x-amzn-query-error"] = f"{code};Receiver"
        return status, headers, body
    if call.protocol == "query":
        xml = (
            "<ErrorResponse><Error><Type>Receiver</Type>"
            f"<Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, xml.encode()
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId></Error>"
    )
    return status, {"Content-Type": "application/xml", "x-amz-request-id": request_id}, xml.encode()


# ---------------------------------------------------------------------------- the proxy

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}
_CHUNK = 64 * 1024


class FaultProxy:
    """The proxy. ``with FaultProxy(upstream, plan) as proxy:`` or ``start()`` and ``stop()``."""

    def __init__(
        self,
        upstream: str,
        plan: FaultPlan | None = None,
        *,
        refusal: Literal["error", "reset"] = "error",
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http://host:port URL, got {upstream!r}")
        if refusal not in ("error", "reset"):
            raise ValueError(f"refusal must be 'error' or 'reset', got {refusal!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.refusal = refusal
        self._lock = threading.Lock()
        self._plan = plan or FaultPlan()
        self._rng = random.Random(self._plan.seed)
        self._outage_until = 0.0  # time.monotonic()
        self._history: list[Decision] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler, proxy=self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- switched at run time

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    def set_plan(self, plan: FaultPlan) -> None:
        """Fault by ``plan`` from now on, its generator restarted from its seed."""
        with self._lock:
            self._plan, self._rng = plan, random.Random(plan.seed)

    def outage(self, seconds: float | None = None) -> None:
        """Refuse every call from now, for ``seconds`` (None: until :meth:`end_outage`)."""
        with self._lock:
            self._outage_until = time.monotonic() + (float("inf") if seconds is None else seconds)

    def end_outage(self) -> None:
        with self._lock:
            self._outage_until = 0.0

    @property
    def in_outage(self) -> bool:
        return time.monotonic() < self._outage_until

    def counts(self) -> Counts:
        calls = Counter(
            (d.call.service, d.call.operation, d.call.client, d.outcome) for d in self.history()
        )
        return Counts(dict(calls))

    def history(self) -> list[Decision]:
        """Every call and its outcome, in the order the proxy decided them."""
        with self._lock:
            return list(self._history)

    def reset_counts(self) -> None:
        with self._lock:
            self._history.clear()

    # -- per call

    def decide(self, call: Call) -> tuple[str, float]:
        """The outcome for one call (a :class:`Fault` value, OUTAGE or PASSED) and its delay."""
        with self._lock:
            pause = 0.0
            if time.monotonic() < self._outage_until:
                outcome = OUTAGE
            elif self._plan.applies(call):
                fault, pause = self._plan.draw(self._rng)
                outcome = fault.value if fault else PASSED
            else:
                outcome = PASSED
            self._history.append(Decision(time.time(), call, outcome))
        return outcome, pause

    def pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type, *, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a caller that went away, or a connection we reset on purpose


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes: without this, Nagle's algorithm and the
        # caller's delayed ACK add about 40 ms to every call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def finish(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
        with contextlib.suppress(OSError):
            super().finish()

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        call = identify(self.command, self.path, self.headers, body)
        outcome, pause = proxy.decide(call)
        if outcome == Fault.ERROR or (outcome == OUTAGE and proxy.refusal == "error"):
            self._answer(*error_response(call, outage=outcome == OUTAGE))
            return
        if outcome in (OUTAGE, Fault.RESET_BEFORE):
            self._reset()
            return
        if outcome == Fault.DELAY:
            proxy.pause(pause)
        try:
            response = self._forward(body)
        except OSError:
            self._answer(502, {"Content-Type": "text/plain"}, b"upstream unreachable")
            return
        if outcome == Fault.RESET_AFTER:
            response.read()  # moto has answered: the call took effect
            self._reset()
            return
        self._relay(response)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> http.client.HTTPResponse:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed by moto
            reused = self._upstream is not None
            if self._upstream is None:
                host, port = self.server.proxy.upstream
                self._upstream = http.client.HTTPConnection(host, port, timeout=120)
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                return self._upstream.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._upstream.close()
                self._upstream = None
                if not reused or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        bodiless = self.command == "HEAD" or response.status in (204, 304)
        if bodiless:
            if (length := response.getheader("Content-Length")) is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            response.read()
            return
        if response.chunked or response.length is None:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while chunk := response.read1(_CHUNK):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            if response.length is None and not response.chunked:
                self._upstream = None  # read to its close
            return
        self.send_header("Content-Length", str(response.length))
        self.end_headers()
        while chunk := response.read(_CHUNK):
            self.wfile.write(chunk)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":  # an error to a HEAD is its status alone, as S3 answers
            self.wfile.write(body)

    def _reset(self) -> None:
        """Close the connection with an RST, not a FIN: what a dropped connection looks like."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True
