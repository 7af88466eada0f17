"""The prices the benchmarks cost things with, and the requests a million images make.

Public on-demand prices, us-east-1 (check the pricing pages before relying on them):

* Fargate $0.04048 per vCPU-hour and $0.004445 per GB-hour (2025); Lambda $0.0000166667 per
  GB-second and $0.20 per million requests; g5.xlarge $1.006 an hour.
* S3 Standard: PUT, COPY, POST and LIST $0.005 per 1,000 requests; GET $0.0004 per 1,000
  (aws.amazon.com/s3/pricing).
* SQS standard queues: $0.40 per million requests after the first million a month, each 64 KB
  of a request's payload one request (a batch of ten 20-key tasks is about 8.5 KB: one request)
  (aws.amazon.com/sqs/pricing).
* DynamoDB on-demand, since the 1 November 2024 price cut: $0.625 per million write request
  units, $0.125 per million read request units (aws.amazon.com/dynamodb/pricing/on-demand). A
  write of up to 1 KB is one unit, two in a transaction; a strongly consistent read of up to
  4 KB one unit, an eventually consistent one half.

:func:`worker_requests` is the worker's side per 1,000 images, a model (the benchmarks measure
the producer's side): per image one GET of the photo; per task one PUT of its result object,
one ReceiveMessage (the worker asks for what fits its few seconds of work: about one message
a call with large tasks), one DeleteMessageBatch (acknowledgements leave as tasks finish,
rarely ten at once), heartbeats negligible (one per 100 s a held batch); with the job record,
one TransactWriteItems (marker and counter shard: 4 write units) and one strongly consistent
BatchGetItem of the job item and its 8 counter shards (9 read units) to settle, plus the
worker's cached state read (one eventually consistent GetItem per job every 5 s: at 25
images a second, 8 per 1,000 images, 4 read units).
"""

from __future__ import annotations

__all__ = [
    "DDB_READ_PER_MILLION",
    "DDB_WRITE_PER_MILLION",
    "FARGATE_GB_HOUR",
    "FARGATE_VCPU_HOUR",
    "G5_XLARGE_HOUR",
    "LAMBDA_GB_SECOND",
    "LAMBDA_PER_MILLION",
    "S3_GET_PER_1000",
    "S3_LIST_PER_1000",
    "S3_PUT_PER_1000",
    "SQS_PER_MILLION",
    "cost_per_million",
    "worker_requests",
]

FARGATE_VCPU_HOUR, FARGATE_GB_HOUR = 0.04048, 0.004445
LAMBDA_GB_SECOND, LAMBDA_PER_MILLION = 0.0000166667, 0.20
S3_GET_PER_1000, S3_PUT_PER_1000, S3_LIST_PER_1000 = 0.0004, 0.005, 0.005
SQS_PER_MILLION = 0.40
DDB_WRITE_PER_MILLION, DDB_READ_PER_MILLION = 0.625, 0.125
G5_XLARGE_HOUR = 1.006

STATE_READS_PER_1000 = 8  # one GetItem a job every 5 s, at 25 images/s


def worker_requests(tasks_per_1000: float, *, record: bool = True) -> dict[str, float]:
    """The worker's calls per 1,000 images (the module doc's model), and with ``record`` the
    DynamoDB units as ``dynamodb_wru`` and ``dynamodb_rru``."""
    calls = {
        "s3_get": 1000.0,
        "s3_put": tasks_per_1000,
        "sqs": 2 * tasks_per_1000,  # receive + delete
    }
    if record:
        calls |= {
            "dynamodb_wru": 4 * tasks_per_1000,
            "dynamodb_rru": 9 * tasks_per_1000 + STATE_READS_PER_1000 * 0.5,
            "dynamodb_calls": 2 * tasks_per_1000 + STATE_READS_PER_1000,
        }
    return calls


def cost_per_million(per_1000: dict[str, float]) -> dict[str, float]:
    """Dollars per million images, by service, from requests (and DynamoDB units) per 1,000
    images: keys ``s3_get``, ``s3_put``, ``s3_list``, ``sqs``, ``dynamodb_wru``,
    ``dynamodb_rru`` (others are ignored)."""
    k = 1000  # thousands of images in a million
    cost = {
        "s3_get": per_1000.get("s3_get", 0) * k * S3_GET_PER_1000 / 1000,
        "s3_put": per_1000.get("s3_put", 0) * k * S3_PUT_PER_1000 / 1000,
        "s3_list": per_1000.get("s3_list", 0) * k * S3_LIST_PER_1000 / 1000,
        "sqs": per_1000.get("sqs", 0) * k * SQS_PER_MILLION / 1e6,
        "dynamodb": (
            per_1000.get("dynamodb_wru", 0) * k * DDB_WRITE_PER_MILLION / 1e6
            + per_1000.get("dynamodb_rru", 0) * k * DDB_READ_PER_MILLION / 1e6
        ),
    }
    cost["total"] = sum(cost.values())
    cost["total_but_image_gets"] = cost["total"] - cost["s3_get"]
    return {name: round(v, 4) for name, v in cost.items()}
