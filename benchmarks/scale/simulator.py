"""A local S3 + SQS endpoint for a virtual bucket of N keys, with AWS-like latency per call.

A benchmark tool, not a test double: the tests use moto. It speaks just enough of both wire
protocols for the producer, ``status`` and ``export`` to run unchanged with ``AWS_ENDPOINT_URL``
pointing at it:

* S3 (REST, path-style): ListObjectsV2 (prefix, delimiter, start-after, continuation-token,
  max-keys), GetObject, PutObject, HeadObject, DeleteObject.
* SQS (botocore's JSON protocol, ``x-amz-json-1.0`` with ``X-Amz-Target``): GetQueueUrl,
  GetQueueAttributes, SendMessageBatch, SendMessage, ReceiveMessage (always empty).
* DynamoDB, the job records' table, just enough for the producer's calls: TransactWriteItems
  and UpdateItem are accepted (the job item a submit creates is kept), GetItem and BatchGetItem
  answer the job item and its counter shards as the workers would have counted them (the
  recorded tasks, the ones ``/_sim/complete`` marked done), Query answers no jobs. Not a
  DynamoDB: no expressions are evaluated; the tests run the record on moto.

The input bucket holds ``keys`` virtual objects, ``photos/u{i // 1000:06d}/img{i:09d}.jpg`` for
i in [0, keys), never held in memory: a key is derived from its index and the sorted listing
finds its place by binary search over the index. Every key a SendMessageBatch carries is marked
in a bitmap of N bits, so "every key exactly once" is checked without keeping the keys.

With ``--record-tasks`` the simulator also remembers each task it saw sent (task id and key
range) so that ``POST /_sim/complete`` can mark a fraction of them done: their result objects
then appear in the results bucket's listing and GetObject synthesizes their JSON Lines.

Latency (``--list-ms`` etc.) is slept in the handler's own thread, so concurrent calls overlap as
they do on AWS. ``GET /_sim/stats`` returns the counters, the exactly-once check, and the
simulator's own CPU time (so the benchmark can tell the producer's cost from the simulator's).
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from posefleet.layout import ResultsLocation
from posefleet.resources import QueueSpec
from posefleet.result import ErrorKind, ImageError, ResultLine

__all__ = ["INPUT_BUCKET", "RESULTS_BUCKET", "Simulator", "virtual_key"]

INPUT_BUCKET = "sim-input"
RESULTS_BUCKET = "sim-results"
QUEUE, DLQ = "sim-tasks", "sim-tasks-dlq"
ACCOUNT, REGION = "123456789012", "us-east-1"
KEY_PREFIX = "photos/"
RESULTS = ResultsLocation(RESULTS_BUCKET, "results")  # where the producer is told to put results
LAST_MODIFIED = "2026-01-01T00:00:00.000Z"
ETAG = "&quot;9b2cf535f27731c974343645a3985328&quot;"


def virtual_key(i: int) -> str:
    return f"photos/u{i // 1000:06d}/img{i:09d}.jpg"


def _successor(prefix: str) -> str:
    """The smallest string greater than every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class VirtualKeys:
    """The input bucket's N sorted keys, derived from their index."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def key(self, i: int) -> str:
        return virtual_key(i)

    def bisect_left(self, s: str) -> int:
        return bisect.bisect_left(range(self.n), s, key=virtual_key)

    def bisect_right(self, s: str) -> int:
        return bisect.bisect_right(range(self.n), s, key=virtual_key)

    def index_of(self, key: str) -> int | None:
        try:
            i = int(key[-13:-4])
        except ValueError:
            return None
        return i if 0 <= i < self.n and virtual_key(i) == key else None


class StoredKeys:
    """A real bucket: objects put by the clients, plus synthesized task results (value None)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes | None] = {}
        self.sorted: list[str] = []

    def __len__(self) -> int:
        return len(self.sorted)

    def key(self, i: int) -> str:
        return self.sorted[i]

    def bisect_left(self, s: str) -> int:
        return bisect.bisect_left(self.sorted, s)

    def bisect_right(self, s: str) -> int:
        return bisect.bisect_right(self.sorted, s)

    def put(self, key: str, body: bytes | None) -> None:
        if key not in self.objects:
            bisect.insort(self.sorted, key)
        self.objects[key] = body

    def put_many(self, keys: list[str]) -> None:
        for k in keys:
            self.objects.setdefault(k, None)
        self.sorted = sorted(self.objects)

    def delete(self, key: str) -> None:
        if self.objects.pop(key, ...) is not ...:
            self.sorted.pop(bisect.bisect_left(self.sorted, key))


class Simulator:
    def __init__(
        self,
        *,
        keys: int,
        list_ms: float = 80.0,
        get_ms: float = 30.0,
        put_ms: float = 30.0,
        sqs_ms: float = 20.0,
        record_tasks: bool = False,
        dead_letters: int = 0,
        error_every: int = 50,
    ) -> None:
        if keys < 0:
            raise ValueError("keys must be at least 0")
        self.keys = VirtualKeys(keys)
        self.latency = {"list": list_ms / 1e3, "get": get_ms / 1e3, "put": put_ms / 1e3}
        self.sqs_latency = sqs_ms / 1e3
        self.record_tasks = record_tasks
        self.dead_letters = dead_letters
        self.error_every = error_every
        self.buckets: dict[str, StoredKeys] = {RESULTS_BUCKET: StoredKeys()}
        self.lock = threading.Lock()
        self.seen = bytearray((keys + 7) // 8)
        self.duplicates = 0
        self.invalid = 0
        self.keys_sent = 0
        self.messages = 0
        self.bytes_sent = 0
        self.first_send: float | None = None
        self.last_send: float | None = None
        self.calls: Counter[str] = Counter()
        # task id -> (results key, first key index, count); filled with --record-tasks
        self.tasks: dict[str, tuple[str, int, int]] = {}
        self.done_results: dict[str, tuple[int, int]] = {}
        # the job records' stand-in: job items as the producer created them; per job [tasks,
        # images] recorded and [tasks, images] done
        self.job_items: dict[str, dict] = {}
        self.job_tasks: dict[str, list[int]] = {}
        self.job_done: dict[str, list[int]] = {}
        self.started = time.time()
        self._line_template, self._error_template = self._render_templates()

    # -- S3 ------------------------------------------------------------------------------------

    def list_objects(self, bucket: str, q: dict[str, str]) -> tuple[int, bytes]:
        source = self.keys if bucket == INPUT_BUCKET else self.buckets.get(bucket)
        if source is None:
            return 404, _s3_error("NoSuchBucket", bucket)
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        max_keys = min(int(q.get("max-keys", "1000")), 1000)
        start_after = q.get("start-after", "")
        token = q.get("continuation-token")
        lo = source.bisect_left(prefix) if prefix else 0
        hi = source.bisect_left(_successor(prefix)) if prefix else len(source)
        i = lo
        if token:
            kind, last = base64.urlsafe_b64decode(token).decode().split(":", 1)
            i = source.bisect_right(last) if kind == "k" else source.bisect_left(_successor(last))
        elif start_after:
            i = source.bisect_right(start_after)
        i = max(i, lo)
        contents: list[str] = []
        prefixes: list[str] = []
        last_entry = ""
        while i < hi and len(contents) + len(prefixes) < max_keys:
            key = source.key(i)
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = key[: cut + len(delimiter)]
                    prefixes.append(common)
                    last_entry = "p:" + common
                    i = source.bisect_left(_successor(common))
                    continue
            contents.append(key)
            last_entry = "k:" + key
            i += 1
        truncated = i < hi
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{bucket}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>"
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
        ]
        if delimiter:
            parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        if start_after:
            parts.append(f"<StartAfter>{escape(start_after)}</StartAfter>")
        if token:
            parts.append(f"<ContinuationToken>{token}</ContinuationToken>")
        if truncated:
            nxt = base64.urlsafe_b64encode(last_entry.encode()).decode()
            parts.append(f"<NextContinuationToken>{nxt}</NextContinuationToken>")
        tail = (
            f"</Key><LastModified>{LAST_MODIFIED}</LastModified><ETag>{ETAG}</ETag>"
            "<Size>2481152</Size><StorageClass>STANDARD</StorageClass></Contents>"
        )
        parts.extend(f"<Contents><Key>{escape(k)}{tail}" for k in contents)
        parts.extend(
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes
        )
        parts.append("</ListBucketResult>")
        return 200, "".join(parts).encode()

    def get_object(self, bucket: str, key: str) -> tuple[int, bytes]:
        store = self.buckets.get(bucket)
        if store is None or key not in store.objects:
            return 404, _s3_error("NoSuchKey", key)
        body = store.objects[key]
        if body is None:
            body = self._synthesize_result(key)
        return 200, body

    def put_object(self, bucket: str, key: str, body: bytes) -> None:
        self.buckets.setdefault(bucket, StoredKeys()).put(key, body)

    def _render_templates(self) -> tuple[str, str]:
        """An ok line and an error line, as the worker writes them, with ``@KEY@`` for the key."""
        probs = {"Front Double Biceps": 0.8125, "Side Chest": 0.125, "Back Lat Spread": 0.0625}
        line = ResultLine(
            bucket=INPUT_BUCKET,
            key="@KEY@",
            status="ok",
            model_version="sim-0123456789ab",
            original_size=(3024, 4032),
            predicted_class_index=0,
            predicted_class_id="1",
            predicted_class_name="Front Double Biceps",
            confidence=0.8125,
            all_probabilities=probs,
        )
        error = ImageError(ErrorKind.NOT_AN_IMAGE, "cannot identify image file")
        return line.to_json(), ResultLine.error(INPUT_BUCKET, "@KEY@", error).to_json()

    def _synthesize_result(self, key: str) -> bytes:
        first, count = self.done_results[key]
        out = []
        for i in range(first, first + count):
            k = virtual_key(i)
            errs = self.error_every and i % self.error_every == self.error_every - 1
            out.append((self._error_template if errs else self._line_template).replace("@KEY@", k))
        return ("\n".join(out) + "\n").encode()

    # -- SQS -----------------------------------------------------------------------------------

    def queue_url(self, host: str, name: str) -> str:
        return f"http://{host}/{ACCOUNT}/{name}"

    def send_batch(self, entries: list[dict]) -> dict:
        now = time.time()
        successful = []
        tasks = []
        n_keys = 0
        for entry in entries:
            body = entry["MessageBody"]
            task = json.loads(body)
            tasks.append(task)
            n_keys += len(task.get("keys", ()))
            successful.append(
                {
                    "Id": entry["Id"],
                    "MessageId": str(uuid.uuid4()),
                    "MD5OfMessageBody": hashlib.md5(body.encode()).hexdigest(),
                }
            )
        with self.lock:
            self.first_send = self.first_send or now
            self.last_send = now
            self.messages += len(entries)
            self.bytes_sent += sum(len(e["MessageBody"]) for e in entries)
            self.keys_sent += n_keys
            for task in tasks:
                indices = [self.keys.index_of(k) for k in task.get("keys", ())]
                for i in indices:
                    if i is None:
                        self.invalid += 1
                        continue
                    byte, bit = i >> 3, 1 << (i & 7)
                    if self.seen[byte] & bit:
                        self.duplicates += 1
                    else:
                        self.seen[byte] |= bit
                if self.record_tasks and indices and None not in indices:
                    self._record(task, indices)
        return {"Successful": successful, "Failed": []}

    def _record(self, task: dict, indices: list[int]) -> None:
        first = indices[0]
        if indices != list(range(first, first + len(indices))):
            raise ValueError("the simulator records tasks of consecutive keys only")
        location = ResultsLocation.parse(task["results"])
        key = location.task_key(task["job_id"], task["task_id"])
        self.tasks[task["task_id"]] = (key, first, len(indices))
        totals = self.job_tasks.setdefault(task["job_id"], [0, 0])
        totals[0] += 1
        totals[1] += len(indices)
        self.buckets.setdefault(location.bucket, StoredKeys())

    def complete(self, fraction: float, seed: int) -> int:
        """Mark ``fraction`` of the recorded tasks done (a random subset); returns how many."""
        rng = random.Random(seed)
        with self.lock:
            done = [t for t in self.tasks.values() if rng.random() < fraction]
            store = self.buckets[RESULTS_BUCKET]
            for key, first, count in done:
                if key not in self.done_results:
                    job = key.removeprefix(RESULTS.prefix + "/").split("/", 1)[0]
                    counts = self.job_done.setdefault(job, [0, 0])
                    counts[0] += 1
                    counts[1] += count
                self.done_results[key] = (first, count)
            store.put_many([key for key, _, _ in done])
        return len(done)

    def synthesize_job(self, *, job_id: str, task_size: int, partitions: int) -> dict:
        """A submitted job over the whole virtual bucket, written as the producer would (its
        manifest and partitions index), its tasks recorded but none done: for ``status`` and
        ``export`` on jobs too large to submit on this machine in the time."""
        import gzip
        from datetime import UTC, datetime

        from posefleet.layout import Manifest, PartitionSummary
        from posefleet.task import make_task_id, partition_id

        n = self.keys.n
        per_part = -(-n // partitions)
        store = self.buckets[RESULTS_BUCKET]
        index: list[PartitionSummary] = []
        total = 0
        for p in range(partitions):
            lo, hi = p * per_part, min(n, (p + 1) * per_part)
            if lo >= hi:
                break
            pid = partition_id(job_id, str(p))
            tasks = 0
            for t, start in enumerate(range(lo, hi, task_size)):
                count = min(task_size, hi - start)
                keys = [virtual_key(i) for i in range(start, start + count)]
                task_id = make_task_id(t, keys, pid)
                self.tasks[task_id] = (RESULTS.task_key(job_id, task_id), start, count)
                tasks += 1
            self.job_tasks[job_id] = [total + tasks, hi]
            total += tasks
            index.append(PartitionSummary(partition=pid, tasks=tasks, images=hi - lo, shards=1))
        manifest = Manifest(
            job_id=job_id,
            source_bucket=INPUT_BUCKET,
            source_prefix=KEY_PREFIX,
            source=f"s3://{INPUT_BUCKET}/{KEY_PREFIX}",
            tasks=total,
            images=n,
            task_size=task_size,
            queue_url=f"http://127.0.0.1/{ACCOUNT}/{QUEUE}",
            model="sim",
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            complete=True,
            tasks_sent=total,
            partitions=len(index),
            plan=RESULTS.plan_prefix(job_id),
        )
        lines = "".join(x.model_dump_json() + "\n" for x in index).encode()
        store.put(RESULTS.partitions_index_key(job_id), gzip.compress(lines))
        store.put(RESULTS.manifest_key(job_id), manifest.model_dump_json().encode())
        created = manifest.created_at
        self.job_items[job_id] = {
            "id": {"S": job_id},
            "listing": {"S": "job"},
            "v": {"N": "1"},
            "state": {"S": "running"},
            "source": {"S": manifest.source},
            "model": {"S": "sim"},
            "task_size": {"N": str(task_size)},
            "results": {"S": f"{RESULTS.uri}/{job_id}/"},
            "manifest": {"S": f"s3://{RESULTS_BUCKET}/{RESULTS.manifest_key(job_id)}"},
            "queue_url": {"S": manifest.queue_url},
            **{k: {"S": created} for k in ("created_at", "started_at", "run", "counting")},
            "tasks_planned": {"N": str(total)},
            "tasks_sent": {"N": str(total)},
        }
        with self.lock:
            self.messages += total
        return {"tasks": total, "partitions": len(index)}

    # -- DynamoDB (the job records) ------------------------------------------------------------

    def record_items(self, ids: list[str]) -> list[dict]:
        """The job items and counter shards asked for, the counts as workers would have made
        them: every done task of the job in shard 0."""
        items = []
        with self.lock:
            for item_id in ids:
                job, _, shard = item_id.partition("#")
                if job not in self.job_items:
                    continue
                total, images = self.job_tasks.get(job, (0, 0))
                done, done_images = self.job_done.get(job, (0, 0))
                counting = self.job_items[job]["counting"]
                if not shard:
                    item = dict(self.job_items[job])
                    if total:
                        state = "complete" if done >= total else "running"
                        item |= {
                            "state": {"S": state},
                            "tasks_total": {"N": str(total)},
                            "images_total": {"N": str(images)},
                        }
                    items.append(item)
                    continue
                first = shard == "0"
                counts = {
                    "tasks_done": done if first else 0,
                    "tasks_cancelled": 0,
                    "tasks_finished": done if first else 0,
                    "images_ok": done_images if first else 0,
                    "images_failed": 0,
                }
                items.append(
                    {
                        "id": {"S": item_id},
                        "counting": counting,
                        **{k: {"N": str(v)} for k, v in counts.items()},
                    }
                )
        return items

    def dynamodb(self, op: str, req: dict) -> tuple[int, dict]:
        table = req.get("TableName")
        if op == "TransactWriteItems":
            for entry in req["TransactItems"]:
                item = entry.get("Put", {}).get("Item", {})
                if "listing" in item:
                    with self.lock:
                        self.job_items[item["id"]["S"]] = item
            return 200, {}
        if op == "UpdateItem":
            return 200, {}
        if op == "GetItem":
            found = self.record_items([req["Key"]["id"]["S"]])
            return 200, {"Item": found[0]} if found else {}
        if op == "BatchGetItem":
            ((table, asked),) = req["RequestItems"].items()
            found = self.record_items([k["id"]["S"] for k in asked["Keys"]])
            return 200, {"Responses": {table: found}, "UnprocessedKeys": {}}
        if op == "Query":
            return 200, {"Items": [], "Count": 0, "ScannedCount": 0}
        return 400, {"__type": "UnknownOperationException", "message": f"{op} ({table})"}

    def queue_attributes(self, name: str, wanted: list[str]) -> dict[str, str]:
        if name == DLQ:
            visible = self.dead_letters
        else:
            visible = max(0, self.messages - len(self.done_results))
        attrs = {
            "ApproximateNumberOfMessages": str(visible),
            "ApproximateNumberOfMessagesNotVisible": "0",
            "QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
        }
        if name == QUEUE:
            attrs["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{DLQ}",
                    "maxReceiveCount": QueueSpec().max_receive_count,
                }
            )
        if "All" in wanted:
            return attrs
        return {k: v for k, v in attrs.items() if k in wanted}

    def stats(self) -> dict:
        import resource

        with self.lock:
            sent_once = int.from_bytes(self.seen, "little").bit_count()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return {
                "keys": self.keys.n,
                "calls": dict(self.calls),
                "keys_sent": self.keys_sent,
                "distinct_keys_sent": sent_once,
                "missing": self.keys.n - sent_once,
                "duplicates": self.duplicates,
                "invalid": self.invalid,
                "exactly_once": sent_once == self.keys.n
                and self.duplicates == 0
                and self.invalid == 0,
                "messages": self.messages,
                "bytes_sent": self.bytes_sent,
                "first_send": self.first_send,
                "last_send": self.last_send,
                "tasks_recorded": len(self.tasks),
                "tasks_done": len(self.done_results),
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "max_rss_mib": usage.ru_maxrss / 1024,
            }


def _s3_error(code: str, resource: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{code}</Message><Resource>{escape(resource)}</Resource></Error>"
    ).encode()


def _sqs_error(code: str, message: str) -> bytes:
    return json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message}).encode()


def _decode_aws_chunked(raw: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = raw.index(b"\r\n", pos)
        size = int(raw[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += raw[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sim: Simulator  # set on the subclass by serve()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
            body = bytes(raw)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "aws-chunked" in self.headers.get("Content-Encoding", ""):
            body = _decode_aws_chunked(body)
        return body

    def _reply(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _timed(self, kind: str, op: str, fn: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes]:
        started = time.monotonic()
        with self.sim.lock:
            self.sim.calls[op] += 1
        result = fn()
        delay = self.sim.latency.get(kind, self.sim.sqs_latency) - (time.monotonic() - started)
        if delay > 0:
            time.sleep(delay)
        return result

    def do_POST(self) -> None:
        target = self.headers.get("X-Amz-Target")
        body = self._body()
        if target and target.startswith("AmazonSSM"):  # no deployed stack to discover
            op = target.split(".")[-1]
            status, answer = self._timed(
                "sqs",
                op,
                lambda: (400, {"__type": "ParameterNotFound", "message": "no parameters here"}),
            )
            self._reply(status, json.dumps(answer).encode(), "application/x-amz-json-1.1")
        elif target and target.startswith("DynamoDB_"):
            op = target.split(".")[-1]
            req = json.loads(body or b"{}")
            status, answer = self._timed("dynamodb", op, lambda: self.sim.dynamodb(op, req))
            self._reply(status, json.dumps(answer).encode(), "application/x-amz-json-1.0")
        elif target:
            self._sqs(target.split(".")[-1], json.loads(body or b"{}"))
        elif self.path.startswith("/_sim/"):
            self._control(body)
        else:
            self._reply(501, _s3_error("NotImplemented", self.path), "application/xml")

    def _sqs(self, op: str, req: dict) -> None:
        sim = self.sim
        host = self.headers.get("Host", "127.0.0.1")

        def run() -> tuple[int, bytes]:
            if op == "GetQueueUrl":
                if req.get("QueueName") not in (QUEUE, DLQ):
                    return 400, _sqs_error(
                        "QueueDoesNotExist", "The specified queue does not exist."
                    )
                return 200, json.dumps({"QueueUrl": sim.queue_url(host, req["QueueName"])}).encode()
            name = str(req.get("QueueUrl", "")).rstrip("/").rsplit("/", 1)[-1]
            if name not in (QUEUE, DLQ):
                return 400, _sqs_error("QueueDoesNotExist", "The specified queue does not exist.")
            if op == "GetQueueAttributes":
                attrs = sim.queue_attributes(name, req.get("AttributeNames", ["All"]))
                return 200, json.dumps({"Attributes": attrs} if attrs else {}).encode()
            if op == "SendMessageBatch":
                return 200, json.dumps(sim.send_batch(req["Entries"])).encode()
            if op == "SendMessage":
                got = sim.send_batch([{"Id": "0", "MessageBody": req["MessageBody"]}])
                ok = got["Successful"][0]
                return 200, json.dumps(
                    {k: ok[k] for k in ("MessageId", "MD5OfMessageBody")}
                ).encode()
            if op == "ReceiveMessage":
                return 200, b"{}"
            return 400, _sqs_error("InvalidAction", f"the simulator does not implement {op}")

        status, payload = self._timed("sqs", op, run)
        self._reply(status, payload, "application/x-amz-json-1.0")

    def _split(self) -> tuple[str, str, dict[str, str]]:
        url = urlsplit(self.path)
        bucket, _, key = url.path.lstrip("/").partition("/")
        q = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        return unquote(bucket), unquote(key), q

    def do_GET(self) -> None:
        if self.path.startswith("/_sim/stats"):
            self._reply(200, json.dumps(self.sim.stats()).encode(), "application/json")
            return
        bucket, key, q = self._split()
        if not key:
            status, body = self._timed(
                "list", "ListObjectsV2", lambda: self.sim.list_objects(bucket, q)
            )
            self._reply(status, body, "application/xml")
            return
        status, body = self._timed("get", "GetObject", lambda: self.sim.get_object(bucket, key))
        extra = {"ETag": '"0"', "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT"}
        self._reply(
            status, body, "application/octet-stream" if status == 200 else "application/xml", extra
        )

    def do_HEAD(self) -> None:
        bucket, key, _ = self._split()
        status, body = self._timed("get", "HeadObject", lambda: self.sim.get_object(bucket, key))
        self._reply(status, body, "application/octet-stream")

    def do_PUT(self) -> None:
        bucket, key, _ = self._split()
        body = self._body()

        def run() -> tuple[int, bytes]:
            if key:
                self.sim.put_object(bucket, key, body)
            else:
                self.sim.buckets.setdefault(bucket, StoredKeys())
            return 200, b""

        status, payload = self._timed("put", "PutObject" if key else "CreateBucket", run)
        self._reply(status, payload, "application/xml", {"ETag": '"0"'})

    def do_DELETE(self) -> None:
        bucket, key, _ = self._split()

        def run() -> tuple[int, bytes]:
            store = self.sim.buckets.get(bucket)
            if store is not None:
                store.delete(key)
            return 204, b""

        status, payload = self._timed("put", "DeleteObject", run)
        self._reply(status, payload, "application/xml")

    def _control(self, body: bytes) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/_sim/complete":
            n = self.sim.complete(float(q.get("fraction", "1")), int(q.get("seed", "0")))
            self._reply(200, json.dumps({"done": n}).encode(), "application/json")
        elif url.path == "/_sim/job":
            got = self.sim.synthesize_job(
                job_id=q["job"],
                task_size=int(q.get("task_size", "20")),
                partitions=int(q.get("partitions", "1000")),
            )
            self._reply(200, json.dumps(got).encode(), "application/json")
        elif url.path == "/_sim/reset-calls":
            with self.sim.lock:
                self.sim.calls.clear()
            self._reply(200, b"{}", "application/json")
        else:
            self._reply(404, b"{}", "application/json")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def serve(sim: Simulator, port: int) -> _Server:
    handler = type("BoundHandler", (Handler,), {"sim": sim})
    return _Server(("127.0.0.1", port), handler)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale.simulator", description=__doc__)
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--list-ms", type=float, default=80.0)
    p.add_argument("--get-ms", type=float, default=30.0)
    p.add_argument("--put-ms", type=float, default=30.0)
    p.add_argument("--sqs-ms", type=float, default=20.0)
    p.add_argument("--record-tasks", action="store_true")
    p.add_argument("--dead-letters", type=int, default=0)
    args = p.parse_args(argv)
    sim = Simulator(
        keys=args.keys,
        list_ms=args.list_ms,
        get_ms=args.get_ms,
        put_ms=args.put_ms,
        sqs_ms=args.sqs_ms,
        record_tasks=args.record_tasks,
        dead_letters=args.dead_letters,
    )
    server = serve(sim, args.port)
    print(json.dumps({"listening": f"http://127.0.0.1:{args.port}"}), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
