"""``python -m posefleet.moto_server -H HOST -p PORT``: moto's server, with DynamoDB's atomicity.

Local mode's server (:class:`posefleet.local.LocalAWS`) is moto's, run as ``python -m
moto.server`` would run it, with two changes to its DynamoDB that the job record relies on
(posefleet/job_record.py), both measured:

* **Requests are serialized.** DynamoDB applies each write, and each transaction, atomically.
  moto's server answers requests on threads with no lock around its DynamoDB backend, so two
  transactions on one item can both pass their conditions (a task counted twice) and a failed
  one restores a copy of the table taken before another committed (a count lost). Here one
  lock takes every DynamoDB request in turn (they are short); S3, SQS (long polls) and SNS
  still run in parallel.
* **Transactions check every condition first, then write.** moto deep-copies each table a
  transaction touches, to roll back: the cost grows with the table, 40 ms a transaction at 1,000
  items and 250 ms at 3,000 on this machine. Under the lock, checking all conditions before
  writing anything makes the rollback unneeded.

Everything else is moto's: its parsing, its condition evaluator, its error shapes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__: list[str] = []  # run as a module (python -m posefleet.moto_server)


class SerialDynamoDB:
    """WSGI middleware: DynamoDB requests (``X-Amz-Target: DynamoDB_...``) one at a time."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))  # the whole answer, under the lock


def patch_transactions() -> None:
    """moto's DynamoDB TransactWriteItems, checking every condition before any write."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import DynamoDBBackend

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        targets: set[tuple[str, str]] = set()
        errors: list[tuple[str | None, str | None, Any]] = []
        for entry in transact_items:
            if len(entry) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(entry.items()))
            table = self.get_table(op["TableName"])
            if op_type == "Put":
                names = [table.hash_key_attr, table.range_key_attr]
                key = {k: op["Item"][k] for k in names if k is not None}
            else:
                key = op["Key"]
            target = (op["TableName"], str(sorted(key.items())))
            if target in targets:
                raise MultipleTransactionsException()
            targets.add(target)
            current = self.get_item(op["TableName"], key)
            condition = op.get("ConditionExpression")
            if condition is not None and not get_filter_expression(
                condition,
                op.get("ExpressionAttributeNames"),
                op.get("ExpressionAttributeValues"),
            ).expr(current):
                old = None
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    old = current.to_json()["Attributes"]
                errors.append(("ConditionalCheckFailed", "The conditional request failed", old))
            else:
                errors.append((None, None, None))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if op_type == "Put":
                self.put_item(op["TableName"], op["Item"])
            elif op_type == "Update":
                self.update_item(
                    op["TableName"],
                    op["Key"],
                    update_expression=op["UpdateExpression"],
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
            elif op_type == "Delete":
                self.delete_item(op["TableName"], op["Key"])

    DynamoDBBackend.transact_write_items = transact_write_items


def serialize_in_process() -> None:
    """The same two changes for moto in a test's own process (``mock_aws``), where several
    worker threads call DynamoDB at once: every DynamoDB request in turn, transactions checked
    before they write. Idempotent."""
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "_serialized", False):
        return
    patch_transactions()
    lock = threading.Lock()
    call_action = DynamoHandler.call_action

    def serialized(self: Any) -> Any:
        with lock:
            return call_action(self)

    serialized._serialized = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = serialized  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    p = argparse.ArgumentParser(prog="python -m posefleet.moto_server", description=__doc__)
    p.add_argument("-H", "--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, required=True)
    args = p.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto.server does
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    patch_transactions()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        SerialDynamoDB(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
