"""Jobs: the job records' DynamoDB table and the worker's least-privilege access to it; the
results queryable where they lie (a Glue table and an Athena workgroup).

* **The table** (posefleet/job_record.py: key schema, the sparse newest-first index, the markers'
  TTL attribute, all from the one definition): on demand, encrypted with KMS (the AWS managed
  key), point-in-time recovery (FSBP DynamoDB.2), deletion protection (DynamoDB.6).
* **The worker's policy** (:func:`worker_policy`): it may read job items (their state, and the
  counts it settles a job by), put task markers only (``dynamodb:LeadingKeys`` of the marker
  form ``<job>/<task>``, job ids having no ``/``), and update only the counters, the markers'
  and the final-state attributes (``dynamodb:Attributes``): it cannot create, delete or rewrite
  a job's source, totals or times, nor query the index.
* **The results table** (posefleet/results_table.py): ``posefleet_results`` over
  ``<results>/<job>/tasks/``, JSON Lines, ``job`` a projected (injected) partition, in a Glue
  database; an Athena workgroup that enforces its settings, writes query results encrypted
  under ``athena/`` in the results bucket and stops a query past 100 GB scanned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from posefleet.job_record import (
    COUNTER_FIELDS,
    TTL_ATTRIBUTE,
    error_attribute,
    table_definition,
)
from posefleet.result import ErrorKind
from posefleet.results_table import COLUMNS, PARTITION, TABLE, tasks_location_template

__all__ = ["Jobs", "JobsArgs", "worker_policy"]

BYTES_SCANNED_CUTOFF = 100 * 1024**3  # Athena stops a query of the workgroup past this


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsArgs:
    results_bucket: pulumi.Input[str]
    results_prefix: str = "results"
    task_role_name: pulumi.Input[str]  # the worker's task role, given the table's policy


def worker_policy(table_arn: str) -> dict[str, Any]:
    """What a worker may do to the job records (see the module doc)."""
    counters = [*COUNTER_FIELDS, *(error_attribute(k) for k in ErrorKind)]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadJobRecords",
                "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem"],
                "Resource": table_arn,
            },
            {  # a marker per counted task: "<job>/<task>" only, never a job or counter item
                "Sid": "PutTaskMarkers",
                "Effect": "Allow",
                "Action": "dynamodb:PutItem",
                "Resource": table_arn,
                "Condition": {
                    "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["*/*"]},
                    "ForAllValues:StringEquals": {
                        "dynamodb:Attributes": ["id", "kind", "counting", TTL_ATTRIBUTE]
                    },
                },
            },
            {  # counter shards' counts, and the job item's final state when a worker ends it
                "Sid": "CountTasksAndEndJobs",
                "Effect": "Allow",
                "Action": "dynamodb:UpdateItem",
                "Resource": table_arn,
                "Condition": {
                    "ForAllValues:StringEquals": {
                        "dynamodb:Attributes": [
                            "id",
                            "counting",
                            *counters,
                            "state",
                            "finished_at",
                            "event_pending",
                        ]
                    }
                },
            },
        ],
    }


def _table_args(name: str) -> dict[str, Any]:
    """posefleet.job_record.table_definition as pulumi_aws.dynamodb.Table arguments."""
    d = table_definition(name)
    (key,) = d["KeySchema"]
    (index,) = d["GlobalSecondaryIndexes"]
    hash_key, range_key = (k["AttributeName"] for k in index["KeySchema"])
    return {
        "name": name,
        "billing_mode": d["BillingMode"],
        "hash_key": key["AttributeName"],
        "attributes": [
            {"name": a["AttributeName"], "type": a["AttributeType"]}
            for a in d["AttributeDefinitions"]
        ],
        "global_secondary_indexes": [
            {
                "name": index["IndexName"],
                "hash_key": hash_key,
                "range_key": range_key,
                "projection_type": index["Projection"]["ProjectionType"],
                "non_key_attributes": index["Projection"]["NonKeyAttributes"],
            }
        ],
    }


class Jobs(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: JobsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("posefleet:jobs:Jobs", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.table = aws.dynamodb.Table(
            f"{name}-jobs",
            **_table_args(f"{name}-jobs"),
            ttl={"attribute_name": TTL_ATTRIBUTE, "enabled": True},
            point_in_time_recovery={"enabled": True},
            server_side_encryption={"enabled": True},  # the AWS managed key (aws/dynamodb)
            deletion_protection_enabled=True,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-jobs-worker-policy",
            role=args.task_role_name,
            policy=self.table.arn.apply(lambda arn: json.dumps(worker_policy(arn))),
            opts=child,
        )
        results_uri = pulumi.Output.concat("s3://", args.results_bucket, "/", args.results_prefix)
        self.database = aws.glue.CatalogDatabase(
            f"{name}-results-db", name=name.replace("-", "_"), opts=child
        )
        self.results_table = aws.glue.CatalogTable(
            f"{name}-results-table",
            name=TABLE,
            database_name=self.database.name,
            table_type="EXTERNAL_TABLE",
            parameters=results_uri.apply(
                lambda uri: {
                    "classification": "json",
                    "projection.enabled": "true",
                    f"projection.{PARTITION}.type": "injected",
                    "storage.location.template": tasks_location_template(uri),
                }
            ),
            partition_keys=[{"name": PARTITION, "type": "string"}],
            storage_descriptor={
                "location": pulumi.Output.concat(results_uri, "/"),
                "input_format": "org.apache.hadoop.mapred.TextInputFormat",
                "output_format": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
                "ser_de_info": {
                    "serialization_library": "org.openx.data.jsonserde.JsonSerDe",
                    "parameters": {"ignore.malformed.json": "false"},
                },
                "columns": [{"name": c, "type": hive} for c, hive, _ in COLUMNS],
            },
            opts=child,
        )
        self.workgroup = aws.athena.Workgroup(
            f"{name}-results",
            name=f"{name}-results",
            configuration={
                "enforce_workgroup_configuration": True,
                "publish_cloudwatch_metrics_enabled": True,
                "bytes_scanned_cutoff_per_query": BYTES_SCANNED_CUTOFF,
                "result_configuration": {
                    "output_location": pulumi.Output.concat(
                        "s3://", args.results_bucket, "/athena/"
                    ),
                    "encryption_configuration": {"encryption_option": "SSE_S3"},
                },
            },
            opts=child,
        )
        self.register_outputs(
            {
                "jobs_table": self.table.name,
                "results_table": self.results_table.name,
                "workgroup": self.workgroup.name,
            }
        )
