"""The Pulumi program, run for real under Pulumi's unit-test mocks (no CLI, no AWS).

The security controls (issue 22, docs/security.md) are one check each, ``control_*`` below, run
on the CPU and the GPU stack by a test named for the control; ``CONTROLS`` lists them, so the
same checks can be counted on another tree's program."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pytest

from infra.config import InputBucket, StackConfig
from posefleet import metric_names as m
from posefleet.dashboard import QUEUE_DELETED, QUEUE_IN_FLIGHT, QUEUE_OLDEST_AGE, QUEUE_VISIBLE
from posefleet.resources import Lane, QueueSpec

ACCOUNT, REGION = "123456789012", "us-east-1"
DEPLOYER = f"arn:aws:iam::{ACCOUNT}:role/deployer"  # the role `pulumi up` runs as
IMAGE_DIGEST = "sha256:" + "ab" * 32
TAG_DIGEST = "sha256:" + "cd" * 32


@dataclass
class Recorded:
    typ: str
    name: str
    state: dict[str, Any] = field(default_factory=dict)


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's marker for a secret value on the wire


def _unwrap_secret(value: Any) -> Any:
    return value["value"] if isinstance(value, dict) and SECRET_SIG in value else value


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[Recorded] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        state = {k: _unwrap_secret(v) for k, v in args.inputs.items()}
        service = args.typ.split(":")[1].split("/")[0]
        state.setdefault("arn", f"arn:aws:{service}:{REGION}:{ACCOUNT}:{args.name}")
        state.setdefault("name", args.name)
        if args.typ == "aws:sqs/queue:Queue":
            state["url"] = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{args.name}"
            state["arn"] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{args.name}"
        if args.typ == "aws:s3/bucket:Bucket":
            state.update(bucket=args.name, arn=f"arn:aws:s3:::{args.name}")
        if args.typ == "aws:ecr/repository:Repository":
            state["repositoryUrl"] = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{args.name}"
        if args.typ == "aws:ec2/vpcEndpoint:VpcEndpoint":
            state["prefixListId"] = f"pl-{args.name}"
        if args.typ == "aws:kms/key:Key":
            state["keyId"] = f"key-{args.name}"
        self.resources.append(Recorded(args.typ, args.name, state))
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {
            "aws:index/getRegion:getRegion": {"region": REGION, "name": REGION, "id": REGION},
            "aws:index/getCallerIdentity:getCallerIdentity": {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/session-1",
                "userId": "x",
                "id": ACCOUNT,
            },
            "aws:iam/getSessionContext:getSessionContext": {
                "arn": args.args.get("arn"),
                "issuerArn": DEPLOYER,
                "issuerId": "x",
                "issuerName": "deployer",
                "sessionName": "session-1",
                "id": "x",
            },
            "aws:index/getAvailabilityZones:getAvailabilityZones": {
                "names": [f"{REGION}a", f"{REGION}b", f"{REGION}c"],
                "zoneIds": ["use1-az1", "use1-az2", "use1-az4"],
                "id": REGION,
            },
            "aws:ecr/getImage:getImage": {"imageDigest": TAG_DIGEST, "id": "x"},
            "aws:ec2/getVpc:getVpc": {"id": "vpc-yours", "cidrBlock": "172.31.0.0/16"},
            "aws:ec2/getRouteTables:getRouteTables": {"ids": ["rtb-1", "rtb-2"], "id": "x"},
            "aws:ssm/getParameter:getParameter": {
                "value": "ami-0gpu",
                "name": args.args.get("name"),
                "id": "x",
            },
        }.get(args.token, {})


class Stack:
    def __init__(self, resources: list[Recorded], outputs: dict[str, Any]) -> None:
        self.resources = resources
        self.outputs = outputs  # the stack's outputs (`pulumi stack output`), resolved

    def of(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name_part: str = "") -> Recorded:
        found = [r for r in self.of(typ) if name_part in r.name]
        assert len(found) == 1, f"{typ} {name_part!r}: {[r.name for r in found]}"
        return found[0]

    def named(self, typ: str, name: str) -> Recorded:
        """The resource of that type whose Pulumi name is exactly ``name``."""
        (found,) = [r for r in self.of(typ) if r.name == name]
        return found


def run_program(config: StackConfig) -> Stack:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="posefleet", stack="test", preview=False)

    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        from infra.program import build

        return pulumi.Output.all(**build(config)).apply(outputs.update)

    program()
    return Stack(mocks.resources, outputs)


INPUTS = (
    InputBucket(bucket="checkins", prefix="uploads/", notify=True),
    InputBucket(bucket="archive"),
)


@pytest.fixture(scope="module")
def cpu_stack() -> Stack:
    # Only what a deployment must name (its inputs, its image) and what these tests look at:
    # every security switch keeps its default.
    return run_program(
        StackConfig(
            input_buckets=INPUTS,
            image_digest=IMAGE_DIGEST,
            longest_task_seconds=150,
            alarm_email="ops@example.com",
        )
    )


@pytest.fixture(scope="module")
def gpu_stack() -> Stack:
    return run_program(
        StackConfig(capacity="gpu", input_buckets=INPUTS, image_digest=IMAGE_DIGEST, min_tasks=1)
    )


QUEUE = "aws:sqs/queue:Queue"
QUEUE_POLICY = "aws:sqs/queuePolicy:QueuePolicy"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
# Each lane's queue and dead-letter queue, by Pulumi name (posefleet.resources.Lane).
LANES = {
    Lane.BACKFILL: ("posefleet-tasks", "posefleet-dlq"),
    Lane.LIVE: ("posefleet-live-tasks", "posefleet-live-dlq"),
}


def _lane(stack: Stack, lane: Lane) -> tuple[Recorded, Recorded]:
    queue, dlq = LANES[lane]
    return stack.named(QUEUE, queue), stack.named(QUEUE, dlq)


@pytest.mark.parametrize("lane", list(Lane))
def test_each_lane_has_a_dead_letter_queue_and_outlives_the_longest_task(cpu_stack, lane):
    tasks, dlq = _lane(cpu_stack, lane)
    redrive = json.loads(tasks.state["redrivePolicy"])
    assert redrive == {
        "deadLetterTargetArn": dlq.state["arn"],
        "maxReceiveCount": QueueSpec().max_receive_count,  # the backstop, as local mode has it
    }
    assert tasks.state["visibilityTimeoutSeconds"] > 150  # the longest task
    assert tasks.state["receiveWaitTimeSeconds"] == 20
    assert dlq.state["messageRetentionSeconds"] > tasks.state["messageRetentionSeconds"]
    assert tasks.state["sqsManagedSseEnabled"] and dlq.state["sqsManagedSseEnabled"]


def test_both_lanes_are_made_from_the_one_queue_spec(cpu_stack):
    (backfill, backfill_dlq), (live, live_dlq) = (_lane(cpu_stack, lane) for lane in Lane)
    settings = ("visibilityTimeoutSeconds", "receiveWaitTimeSeconds", "messageRetentionSeconds")
    assert [live.state[k] for k in settings] == [backfill.state[k] for k in settings]
    assert (
        json.loads(live.state["redrivePolicy"])["maxReceiveCount"]
        == json.loads(backfill.state["redrivePolicy"])["maxReceiveCount"]
    )
    assert (
        live_dlq.state["messageRetentionSeconds"] == backfill_dlq.state["messageRetentionSeconds"]
    )
    assert len(cpu_stack.of(QUEUE)) == 5  # two lanes of two, and the events queue


def test_buckets_are_private_encrypted_tls_only_with_versioned_models(cpu_stack):
    buckets = cpu_stack.of("aws:s3/bucket:Bucket")
    assert sorted(b.name for b in buckets) == ["posefleet-models", "posefleet-results"]
    for b in buckets:
        block = cpu_stack.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", b.name)
        assert all(
            block.state[k]
            for k in (
                "blockPublicAcls",
                "blockPublicPolicy",
                "ignorePublicAcls",
                "restrictPublicBuckets",
            )
        )
        sse = cpu_stack.one(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            b.name,
        )
        assert (
            sse.state["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
        )
        policy = json.loads(
            cpu_stack.one("aws:s3/bucketPolicy:BucketPolicy", b.name).state["policy"]
        )
        (deny,) = [st for st in policy["Statement"] if st["Sid"] == "DenyInsecureTransport"]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {
            "Bool": {"aws:SecureTransport": "false"}
        }
    versioning = cpu_stack.one("aws:s3/bucketVersioning:BucketVersioning")
    assert (
        "models" in versioning.name
        and versioning.state["versioningConfiguration"]["status"] == "Enabled"
    )
    results_rules = cpu_stack.one(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "results"
    )
    assert any(r.get("expiration", {}).get("days") == 90 for r in results_rules.state["rules"])


def test_uploads_to_named_inputs_reach_the_live_lane_and_not_the_backfill(cpu_stack):
    live, _ = _lane(cpu_stack, Lane.LIVE)
    notification = cpu_stack.one("aws:s3/bucketNotification:BucketNotification")
    assert notification.state["bucket"] == "checkins"  # only the input with notify
    (q,) = notification.state["queues"]
    assert q["queueArn"] == live.state["arn"]
    assert q["filterPrefix"] == "uploads/" and q["events"] == ["s3:ObjectCreated:*"]
    policy = _policy(cpu_stack.named(QUEUE_POLICY, "posefleet-live-tasks-policy"))
    (events,) = [st for st in policy["Statement"] if st["Sid"] == "S3EventNotifications"]
    assert events["Condition"]["ArnLike"]["aws:SourceArn"] == ["arn:aws:s3:::checkins"]
    # the backfill queue takes no S3 events any more: an upload never waits behind a backlog
    for name in ("posefleet-tasks-policy", "posefleet-dlq-policy", "posefleet-live-dlq-policy"):
        principals = [
            st["Principal"] for st in _policy(cpu_stack.named(QUEUE_POLICY, name))["Statement"]
        ]
        assert principals == ["*"], name  # the TLS-only deny, nothing allowed


def test_image_repository_scans_on_push(cpu_stack):
    repo = cpu_stack.one("aws:ecr/repository:Repository")
    assert repo.state["imageScanningConfiguration"]["scanOnPush"] is True


def _statements(stack: Stack, role_part: str) -> list[dict]:
    policy = stack.one("aws:iam/rolePolicy:RolePolicy", role_part)
    return json.loads(policy.state["policy"])["Statement"]


def _as_list(v: str | list[str]) -> list[str]:
    return v if isinstance(v, list) else [v]


@pytest.mark.parametrize("stack_name", ["cpu_stack", "gpu_stack"])
def test_no_iam_statement_allows_star_actions_or_needless_star_resources(stack_name, request):
    stack = request.getfixturevalue(stack_name)
    for policy in stack.of("aws:iam/rolePolicy:RolePolicy"):
        for st in json.loads(policy.state["policy"])["Statement"]:
            for action in _as_list(st["Action"]):
                assert "*" not in action, f"{policy.name}: {action}"
            if "*" in _as_list(st["Resource"]):
                assert _as_list(st["Action"]) == ["ecr:GetAuthorizationToken"], (
                    f"{policy.name}: {st}"
                )


def test_task_role_reads_inputs_writes_only_results_and_uses_only_its_queues(cpu_stack):
    statements = _statements(cpu_stack, "task-policy")
    writes = [
        st
        for st in statements
        if any(a.startswith("s3:Put") or a.startswith("s3:Delete") for a in _as_list(st["Action"]))
    ]
    assert [_as_list(st["Resource"]) for st in writes] == [["arn:aws:s3:::posefleet-results/*"]]
    reads = next(st for st in statements if st["Sid"] == "ReadInputs")
    assert reads["Resource"] == ["arn:aws:s3:::archive/*", "arn:aws:s3:::checkins/uploads/*"]
    for st in statements:
        for resource in _as_list(st["Resource"]):
            if resource.startswith("arn:aws:s3:::checkins") or resource.startswith(
                "arn:aws:s3:::archive"
            ):
                assert set(_as_list(st["Action"])) <= {"s3:GetObject", "s3:ListBucket"}
    (queue, dlq), (live, live_dlq) = (_lane(cpu_stack, lane) for lane in Lane)
    sqs = [st for st in statements if any(a.startswith("sqs:") for a in _as_list(st["Action"]))]
    assert [st["Resource"] for st in sqs] == [
        queue.state["arn"],
        dlq.state["arn"],
        live.state["arn"],
        live_dlq.state["arn"],
    ]
    # it sends to a lane's queue only the messages it hands back (worker/ledger.py)
    lane_actions = [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",
    ]
    assert sorted(_as_list(sqs[0]["Action"])) == lane_actions
    # only an invalid body goes to a dead-letter queue, sent by the worker with its reason
    assert sorted(_as_list(sqs[1]["Action"])) == ["sqs:GetQueueUrl", "sqs:SendMessage"]
    # results are read back only where attempt markers live
    result_reads = [
        resource
        for st in statements
        if "s3:GetObject" in _as_list(st["Action"])
        for resource in _as_list(st["Resource"])
        if "posefleet-results" in resource
    ]
    assert result_reads == ["arn:aws:s3:::posefleet-results/*/attempts/*"]


def test_the_worker_uses_the_live_lane_as_it_uses_the_backfill_lane(cpu_stack):
    statements = {st["Sid"]: st for st in _statements(cpu_stack, "task-policy")}
    for backfill, live in (("TasksQueue", "LiveQueue"), ("DeadLetters", "LiveDeadLetters")):
        assert sorted(_as_list(statements[live]["Action"])) == sorted(
            _as_list(statements[backfill]["Action"])
        )
        assert "Condition" not in statements[live] and "Condition" not in statements[backfill]
    (live, live_dlq) = _lane(cpu_stack, Lane.LIVE)
    assert statements["LiveQueue"]["Resource"] == live.state["arn"]
    assert statements["LiveDeadLetters"]["Resource"] == live_dlq.state["arn"]


def test_the_worker_publishes_events_on_its_topic_only_with_its_key_only(cpu_stack):
    topic = cpu_stack.named(TOPIC, "posefleet-events")
    key = cpu_stack.one("aws:kms/key:Key")
    statements = _statements(cpu_stack, "task-policy")
    sns = [st for st in statements if any(a.startswith("sns:") for a in _as_list(st["Action"]))]
    assert [(st["Action"], st["Resource"]) for st in sns] == [("sns:Publish", topic.state["arn"])]
    kms = [st for st in statements if any(a.startswith("kms:") for a in _as_list(st["Action"]))]
    assert [(sorted(st["Action"]), st["Resource"]) for st in kms] == [
        (["kms:Decrypt", "kms:GenerateDataKey"], key.state["arn"])
    ]
    # through SNS and for the events topic's messages only: not the alarms topic's, not any other
    assert kms[0]["Condition"]["StringEquals"] == {
        "kms:ViaService": f"sns.{REGION}.amazonaws.com",
        "kms:EncryptionContext:aws:sns:topicArn": topic.state["arn"],
    }


TOPIC = "aws:sns/topic:Topic"


def test_events_reach_a_queue_subscribed_with_raw_delivery(cpu_stack):
    topic = cpu_stack.named(TOPIC, "posefleet-events")
    queue = cpu_stack.named(QUEUE, "posefleet-events")
    key = cpu_stack.one("aws:kms/key:Key")
    assert topic.state["kmsMasterKeyId"] == key.state["arn"]  # the stack's TopicKey (SNS.1)
    (subscription,) = [
        s
        for s in cpu_stack.of("aws:sns/topicSubscription:TopicSubscription")
        if s.state["protocol"] == "sqs"
    ]
    assert subscription.state["topic"] == topic.state["arn"]
    assert subscription.state["endpoint"] == queue.state["arn"]
    assert subscription.state["rawMessageDelivery"] is True  # the body is the event's JSON
    assert queue.state["sqsManagedSseEnabled"] and "redrivePolicy" not in queue.state
    assert queue.state["messageRetentionSeconds"] == QueueSpec().retention_seconds
    policy = _policy(cpu_stack.named(QUEUE_POLICY, "posefleet-events-policy"))
    assert _tls_denied(policy, queue.state["arn"])
    (grant,) = [st for st in policy["Statement"] if st["Effect"] == "Allow"]
    assert grant["Principal"] == {"Service": "sns.amazonaws.com"}
    assert grant["Action"] == "sqs:SendMessage" and grant["Resource"] == queue.state["arn"]
    assert grant["Condition"] == {"ArnEquals": {"aws:SourceArn": [topic.state["arn"]]}}
    topic_policy = _policy(cpu_stack.one("aws:sns/topicPolicy:TopicPolicy"))
    assert cpu_stack.one("aws:sns/topicPolicy:TopicPolicy").state["arn"] == topic.state["arn"]
    assert _tls_denied(topic_policy, topic.state["arn"])
    assert [st["Effect"] for st in topic_policy["Statement"]] == ["Deny"]


@pytest.mark.parametrize("stack_name", ["cpu_stack", "gpu_stack"])
def test_the_worker_is_told_both_lanes_and_the_events_topic(stack_name, request):
    stack = request.getfixturevalue(stack_name)
    env = {e["name"]: e["value"] for e in _container(stack)["environment"]}
    (queue, _), (live, _) = (_lane(stack, lane) for lane in Lane)
    assert env["POSEFLEET_QUEUE_URL"] == queue.state["url"]
    assert env["POSEFLEET_LIVE_QUEUE_URL"] == live.state["url"]
    assert env["POSEFLEET_EVENTS_TOPIC"] == stack.named(TOPIC, "posefleet-events").state["arn"]
    # each is a setting the worker reads (posefleet/settings.py)
    from posefleet.settings import WorkerSettings

    fields = WorkerSettings.model_fields
    for name in ("POSEFLEET_LIVE_QUEUE_URL", "POSEFLEET_EVENTS_TOPIC"):
        assert name.removeprefix("POSEFLEET_").lower() in fields, name


def test_cpu_mode_runs_on_fargate_and_fargate_spot(cpu_stack):
    providers = cpu_stack.one("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders")
    assert providers.state["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    assert not cpu_stack.of("aws:ecs/capacityProvider:CapacityProvider")
    service = cpu_stack.one("aws:ecs/service:Service")
    assert {s["capacityProvider"] for s in service.state["capacityProviderStrategies"]} == {
        "FARGATE",
        "FARGATE_SPOT",
    }
    task = cpu_stack.one("aws:ecs/taskDefinition:TaskDefinition")
    assert task.state["requiresCompatibilities"] == ["FARGATE"]
    (container,) = json.loads(task.state["containerDefinitions"])
    assert container["stopTimeout"] == 120
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert int(env["POSEFLEET_DRAIN_SECONDS"]) < container["stopTimeout"]
    assert env["POSEFLEET_QUEUE_URL"].endswith("posefleet-tasks")
    assert env["POSEFLEET_RESULTS"] == "s3://posefleet-results/results"
    assert env["POSEFLEET_BACKEND"] == "torch"  # posefleet:backend; openvino-int8 is faster
    assert "resourceRequirements" not in container
    assert cpu_stack.one("aws:cloudwatch/logGroup:LogGroup").state["retentionInDays"] == 30


def test_gpu_mode_adds_the_capacity_provider_and_the_gpu_requirement(gpu_stack):
    provider = gpu_stack.one("aws:ecs/capacityProvider:CapacityProvider")
    assert provider.state["autoScalingGroupProvider"]["managedScaling"]["status"] == "ENABLED"
    assert gpu_stack.one("aws:ec2/launchTemplate:LaunchTemplate").state["imageId"] == "ami-0gpu"
    assert gpu_stack.one("aws:autoscaling/group:Group").state["minSize"] == 0
    task = gpu_stack.one("aws:ecs/taskDefinition:TaskDefinition")
    assert task.state["requiresCompatibilities"] == ["EC2"]
    (container,) = json.loads(task.state["containerDefinitions"])
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["POSEFLEET_DEVICE"] == "cuda"
    service = gpu_stack.one("aws:ecs/service:Service")
    assert [s["capacityProvider"] for s in service.state["capacityProviderStrategies"]] == [
        provider.name
    ]


def _queries(alarm: Recorded) -> dict[str, dict]:
    """An alarm's metric math by id: each metric as (namespace, name, dimensions), and the
    expression."""
    found = {}
    for q in alarm.state["metricQueries"]:
        metric = q.get("metric")
        found[q["id"]] = (
            (metric["namespace"], metric["metricName"], metric["dimensions"])
            if metric
            else q["expression"]
        )
    return found


def _sqs(metric: str, queue: str) -> tuple[str, str, dict]:
    return ("AWS/SQS", metric, {"QueueName": queue})


def test_autoscaling_reaches_zero_and_comes_back_for_work_on_either_lane(cpu_stack, gpu_stack):
    target = cpu_stack.one("aws:appautoscaling/target:Target")
    assert (target.state["minCapacity"], target.state["maxCapacity"]) == (0, 20)
    alarms = {a.name.removeprefix("posefleet-"): a for a in cpu_stack.of(ALARM)}
    start = _queries(alarms["work-waiting-no-workers"])
    assert start["visible"] == _sqs(QUEUE_VISIBLE, "posefleet-tasks")
    assert start["live_visible"] == _sqs(QUEUE_VISIBLE, "posefleet-live-tasks")
    assert start["start"] == "IF(visible + live_visible > 0 AND FILL(running, 0) == 0, 1, 0)"
    to_zero = cpu_stack.one("aws:appautoscaling/policy:Policy", "to-zero")
    step = to_zero.state["stepScalingPolicyConfiguration"]
    assert (
        step["adjustmentType"] == "ExactCapacity"
        and step["stepAdjustments"][0]["scalingAdjustment"] == 0
    )
    idle = _queries(alarms["queue-idle"])  # both lanes empty, visible and in flight
    assert idle["queued"] == "visible + inflight + live_visible + live_inflight"
    for qid, metric, queue in (
        ("visible", QUEUE_VISIBLE, "posefleet-tasks"),
        ("inflight", QUEUE_IN_FLIGHT, "posefleet-tasks"),
        ("live_visible", QUEUE_VISIBLE, "posefleet-live-tasks"),
        ("live_inflight", QUEUE_IN_FLIGHT, "posefleet-live-tasks"),
    ):
        assert idle[qid] == _sqs(metric, queue), qid
    assert alarms["queue-idle"].state["alarmActions"] == [to_zero.state["arn"]]
    assert not [
        p for p in gpu_stack.of("aws:appautoscaling/policy:Policy") if "to-zero" in p.name
    ]  # minTasks 1


def _tracked(stack: Stack) -> tuple[dict, dict[str, Any]]:
    backlog = stack.one("aws:appautoscaling/policy:Policy", "backlog")
    tracking = backlog.state["targetTrackingScalingPolicyConfiguration"]
    metrics = {}
    for q in tracking["customizedMetricSpecification"]["metrics"]:
        stat = q.get("metricStat")
        if stat:
            metric = stat["metric"]
            dims = {d["name"]: d["value"] for d in metric["dimensions"]}
            metrics[q["id"]] = (metric["namespace"], metric["metricName"], dims, stat["stat"])
        else:
            metrics[q["id"]] = q["expression"]
    return tracking, metrics


def _backlog_per_task(expression: str, **values: float) -> float:
    """Evaluates target tracking's metric math for given metric values (arithmetic and the one
    IF it uses)."""
    python = expression.replace("IF(running > 0, running, 1)", "max(running, 1)")
    assert "IF" not in python and "FILL" not in python, expression
    return eval(python, {"max": max}, values)  # the stack's own expression, no input


def test_target_tracking_keeps_the_workers_both_lanes_need(cpu_stack):
    tracking, metrics = _tracked(cpu_stack)
    target = tracking["targetValue"]
    assert target == 50  # 600 s acceptable latency / 12 s per task
    assert metrics["visible"][:3] == _sqs(QUEUE_VISIBLE, "posefleet-tasks")
    assert metrics["live_done"][:3] == _sqs(QUEUE_DELETED, "posefleet-live-tasks")
    assert metrics["live_waiting"][:3] == _sqs(QUEUE_VISIBLE, "posefleet-live-tasks")
    assert metrics["running"][1] == "RunningTaskCount"
    assert {metrics[q][3] for q in ("visible", "live_done", "live_waiting")} == {"Sum"}

    def per_task(**values: float) -> float:
        return _backlog_per_task(metrics["backlog"], **values)

    # The backfill: 50 tasks waiting per worker is the target, as before the live lane.
    assert per_task(visible=500, live_done=0, live_waiting=0, running=10) == target
    # Steady live traffic that SQS never sees waiting: 100 photos a minute, 0.6 s each, keep
    # two workers half busy, and target tracking holds two (scales in below, out above).
    assert per_task(visible=0, live_done=100, live_waiting=0, running=2) == target
    assert per_task(visible=0, live_done=100, live_waiting=0, running=3) < target
    assert per_task(visible=0, live_done=100, live_waiting=0, running=1) > target
    # Live photos waiting count like those labelled; both lanes add up.
    assert per_task(visible=0, live_done=50, live_waiting=50, running=2) == target
    assert per_task(visible=100, live_done=100, live_waiting=0, running=4) == target
    # Nothing on either lane: scale in (to zero, by the idle alarm, when nothing is in flight).
    assert per_task(visible=0, live_done=0, live_waiting=0, running=3) == 0


@pytest.mark.parametrize(
    ("seconds_per_task", "task_size", "latency"), [(12.0, 20, 600), (2.0, 20, 600), (30.0, 10, 120)]
)
def test_a_worker_half_busy_with_live_photos_weighs_a_full_backlog(
    seconds_per_task, task_size, latency
):
    c = StackConfig(
        seconds_per_task=seconds_per_task, task_size=task_size, acceptable_latency_seconds=latency
    )
    photos_per_minute = 30 / (seconds_per_task / task_size)  # half of 60 s of a worker
    assert photos_per_minute * c.live_photo_tasks == pytest.approx(c.backlog_target)


def test_live_work_waiting_adds_a_worker_each_minute(cpu_stack):
    alarm = cpu_stack.named(ALARM, "posefleet-live-work-waiting")
    queries = _queries(alarm)
    assert queries["live_visible"] == _sqs(QUEUE_VISIBLE, "posefleet-live-tasks")
    assert queries["live_age"] == _sqs(QUEUE_OLDEST_AGE, "posefleet-live-tasks")
    # visible and old: a message a worker holds ages too, and more workers would not help it
    assert queries["waiting"] == "IF(live_visible > 0 AND live_age >= 10, 1, 0)"
    assert (alarm.state["threshold"], alarm.state["comparisonOperator"]) == (
        1,
        "GreaterThanOrEqualToThreshold",
    )
    (policy,) = [
        p
        for p in cpu_stack.of("aws:appautoscaling/policy:Policy")
        if p.state["arn"] in alarm.state["alarmActions"]
    ]
    step = policy.state["stepScalingPolicyConfiguration"]
    assert step["adjustmentType"] == "ChangeInCapacity"
    assert [s["scalingAdjustment"] for s in step["stepAdjustments"]] == [1]
    assert step["cooldown"] == 60


@pytest.fixture(scope="module")
def live_stack() -> Stack:
    """The live lane's settings away from their defaults."""
    return run_program(
        StackConfig(
            image_digest=IMAGE_DIGEST,
            live_min_workers=1,
            live_wait_seconds=20,
            live_latency_alarm_seconds=12.5,
        )
    )


def test_live_min_workers_keeps_warm_workers_on_fargate_spot(live_stack, cpu_stack):
    target = live_stack.one("aws:appautoscaling/target:Target")
    assert target.state["minCapacity"] == 1
    assert live_stack.one("aws:ecs/service:Service").state["desiredCount"] == 1
    assert not [p for p in live_stack.of("aws:appautoscaling/policy:Policy") if "to-zero" in p.name]
    assert not [a for a in live_stack.of(ALARM) if "queue-idle" in a.name]

    def bases(stack: Stack) -> dict[str, int]:
        strategy = stack.one("aws:ecs/service:Service").state["capacityProviderStrategies"]
        return {s["capacityProvider"]: s["base"] for s in strategy}

    assert bases(live_stack) == {"FARGATE": 0, "FARGATE_SPOT": 1}  # the warm one: Spot's price
    assert bases(cpu_stack) == {"FARGATE": 0, "FARGATE_SPOT": 0}
    waiting = _queries(live_stack.named(ALARM, "posefleet-live-work-waiting"))["waiting"]
    assert waiting == "IF(live_visible > 0 AND live_age >= 20, 1, 0)"


def _posefleet_metrics_in_dashboard(body: dict) -> set[str]:
    names = set()
    for widget in body["widgets"]:
        for row in widget["properties"]["metrics"]:
            if row and row[0] == m.NAMESPACE:
                names.add(row[1])
            for item in row:
                if isinstance(item, dict) and "SEARCH" in item.get("expression", ""):
                    names.update(re.findall(r'MetricName="(\w+)"', item["expression"]))
    return names


@pytest.mark.parametrize("stack_name", ["cpu_stack", "gpu_stack"])
def test_every_metric_on_the_dashboard_and_alarms_is_one_the_worker_emits(stack_name, request):
    stack = request.getfixturevalue(stack_name)
    body = json.loads(stack.one("aws:cloudwatch/dashboard:Dashboard").state["dashboardBody"])
    used = _posefleet_metrics_in_dashboard(body)
    for alarm in stack.of("aws:cloudwatch/metricAlarm:MetricAlarm"):
        if alarm.state.get("namespace") == m.NAMESPACE:
            used.add(alarm.state["metricName"])
        for q in alarm.state.get("metricQueries", []):
            if q.get("metric", {}).get("namespace") == m.NAMESPACE:
                used.add(q["metric"]["metricName"])
    assert used <= m.ALL_METRICS, used - m.ALL_METRICS
    assert {m.IMAGES_PROCESSED, m.IMAGES_FAILED, m.END_TO_END_LATENCY} <= used
    assert (m.GPU_UTILIZATION in used) == (stack_name == "gpu_stack")


def test_alarms_cover_dead_letters_age_failures_stalls_and_live_latency_and_notify_sns(
    cpu_stack,
):
    topic = cpu_stack.named(TOPIC, "posefleet-alarms")
    alarms = {a.name.removeprefix("posefleet-"): a for a in cpu_stack.of(ALARM)}
    for name in (
        "dead-letters",
        "live-dead-letters",
        "oldest-message",
        "failure-rate",
        "no-progress",
        "live-latency",
    ):
        assert alarms[name].state["alarmActions"] == [topic.state["arn"]], name
    for name, lane in (("dead-letters", Lane.BACKFILL), ("live-dead-letters", Lane.LIVE)):
        _, dlq = _lane(cpu_stack, lane)
        assert alarms[name].state["dimensions"] == {"QueueName": dlq.state["name"]}, name
        assert alarms[name].state["threshold"] == 0
    assert alarms["oldest-message"].state["threshold"] == 3600
    stuck = _queries(alarms["no-progress"])  # work queued on either lane, nothing processed
    assert stuck["live_visible"] == _sqs(QUEUE_VISIBLE, "posefleet-live-tasks")
    assert stuck["stuck"].startswith("IF(visible + live_visible > 0")
    (email,) = [
        s
        for s in cpu_stack.of("aws:sns/topicSubscription:TopicSubscription")
        if s.state["protocol"] == "email"
    ]
    assert email.state["endpoint"] == "ops@example.com"
    assert email.state["topic"] == topic.state["arn"]


def test_live_latency_alarms_on_the_p95_of_upload_to_label(cpu_stack, live_stack):
    for stack, seconds in ((cpu_stack, 30), (live_stack, 12.5)):  # liveLatencyAlarmSeconds
        alarm = stack.named(ALARM, "posefleet-live-latency")
        assert alarm.state["namespace"] == m.NAMESPACE
        assert alarm.state["metricName"] == m.END_TO_END_LATENCY
        # the dimensions the worker emits it with (worker/write.py): its service and the lane
        assert alarm.state["dimensions"] == {m.DIM_SERVICE: m.SERVICE, m.DIM_LANE: "live"}
        assert alarm.state["extendedStatistic"] == "p95" and "statistic" not in alarm.state
        assert alarm.state["threshold"] == seconds * 1000  # EndToEndLatency is in milliseconds
        assert alarm.state["comparisonOperator"] == "GreaterThanThreshold"
        # 3 slow minutes of 5: one cold start does not raise it, a fleet that cannot keep up does
        assert (alarm.state["datapointsToAlarm"], alarm.state["evaluationPeriods"]) == (3, 5)
        assert alarm.state["treatMissingData"] == "notBreaching"  # no uploads is not slow


def test_the_stack_publishes_what_the_producer_needs(cpu_stack):
    from posefleet.resources import DISCOVERY_PARAMETER

    parameter = cpu_stack.one("aws:ssm/parameter:Parameter")
    assert parameter.state["name"] == DISCOVERY_PARAMETER
    value = json.loads(parameter.state["value"])
    (queue, dlq), (live, live_dlq) = (_lane(cpu_stack, lane) for lane in Lane)
    topic = cpu_stack.named(TOPIC, "posefleet-events").state["arn"]
    events_queue = cpu_stack.named(QUEUE, "posefleet-events").state["url"]
    assert value == {
        "queue_url": queue.state["url"],
        "live_queue_url": live.state["url"],
        "events_topic": topic,
        "events_queue_url": events_queue,
        "jobs_table": "posefleet-jobs",
        "results": "s3://posefleet-results/results",
        "model": "s3://posefleet-models/pose_classifier/current.json",
    }
    # every key the producer's discovery reads is there (producer/discovery.py)
    import inspect

    from producer import discovery

    read = set(
        re.findall(r'"(\w+_url|results|jobs_table|events_topic)"', inspect.getsource(discovery))
    )
    assert {"queue_url", "live_queue_url", "events_queue_url", "results", "jobs_table"} <= read
    assert read <= set(value), read - set(value)
    outputs = cpu_stack.outputs
    assert outputs["live_queue_url"] == live.state["url"]
    assert outputs["live_dlq_url"] == live_dlq.state["url"]
    assert outputs["events_topic"] == topic and outputs["events_queue_url"] == events_queue
    assert (outputs["queue_url"], outputs["dlq_url"]) == (queue.state["url"], dlq.state["url"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity": "tpu"}, "capacity"),
        ({"min_tasks": 5, "max_tasks": 2}, "minTasks"),
        ({"drain_seconds": 150}, "stopTimeout"),
        ({"backend": "tensorrt"}, "backend"),
        ({"backend": "openvino-int8", "capacity": "gpu"}, "runs on CPUs"),
        ({"live_min_workers": 30}, "liveMinWorkers"),
        ({"live_min_workers": -1}, "liveMinWorkers"),
        ({"live_wait_seconds": 0}, "liveWaitSeconds"),
        ({"live_latency_alarm_seconds": 0}, "liveLatencyAlarmSeconds"),
        ({"task_size": 0}, "taskSize"),
    ],
)
def test_bad_config_fails_before_anything_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StackConfig(**kwargs)


@pytest.mark.parametrize("stack_name", ["cpu_stack", "gpu_stack"])
def test_the_deployed_dashboard_is_the_one_definition(stack_name, request):
    from posefleet.dashboard import widgets

    stack = request.getfixturevalue(stack_name)
    body = json.loads(stack.one("aws:cloudwatch/dashboard:Dashboard").state["dashboardBody"])
    deployed = body["widgets"]
    (queue, dlq), (live, live_dlq) = (
        (q.state["name"] for q in _lane(stack, lane)) for lane in Lane
    )
    defined = widgets(
        queue=queue,
        dlq=dlq,
        live_queue=live,
        live_dlq=live_dlq,
        cluster="c",
        service="s",
        metrics_service=m.SERVICE,
        gpu=stack_name == "gpu_stack",
    )
    assert [w["properties"]["title"] for w in deployed] == [w.title for w in defined]
    assert [(w["x"], w["y"], w["width"], w["height"]) for w in deployed] == [
        (w.x, w.y, w.width, w.height) for w in defined
    ]
    # the deployed rows name the definition's metrics, dimensions and statistics
    for shown, widget in zip(deployed, defined, strict=True):
        rows = shown["properties"]["metrics"]
        if widget.split_by:
            (expression,) = (item["expression"] for row in rows for item in row)
            for metric in widget.metrics:
                assert f'MetricName="{metric.name}"' in expression
                assert f"'{metric.stat}', {shown['properties']['period']})" in expression
            continue
        plain = [row for row in rows if isinstance(row[0], str)]
        assert [row[:2] for row in plain] == [[x.namespace, x.name] for x in widget.metrics]
        assert [row[-1]["stat"] for row in plain] == [x.stat for x in widget.metrics]
        if widget.metrics[0].namespace == m.NAMESPACE:
            assert [row[2:-1] for row in plain] == [
                [part for pair in x.dimensions for part in pair] for x in widget.metrics
            ]
    titles = " ".join(w.title.lower() for w in defined)  # the widgets the issues name
    for word in ("images per second", "stage", "failures", "batch", "latency", "dead-letter"):
        assert word in titles, word
    # the live lane is seen: its queue's depth and oldest message, its dead letters
    live_rows = [
        row
        for w in deployed
        for row in w["properties"]["metrics"]
        if isinstance(row[0], str) and live in row
    ]
    assert {row[1] for row in live_rows} >= {QUEUE_VISIBLE, QUEUE_IN_FLIGHT, QUEUE_OLDEST_AGE}
    assert any(live_dlq in row for w in deployed for row in w["properties"]["metrics"])


# --- Security controls (issue 22; docs/security.md maps each to its AWS control) ---------------
# Each check takes a stack and asserts; it returns quietly when the control has nothing to apply
# to in that stack (no EC2 host in a Fargate stack).


def _container(stack: Stack) -> dict:
    (container,) = json.loads(
        stack.one("aws:ecs/taskDefinition:TaskDefinition").state["containerDefinitions"]
    )
    return container


def _policy(resource: Recorded, key: str = "policy") -> dict:
    return json.loads(resource.state[key])


def _tls_denied(policy: dict, resource: str) -> bool:
    return any(
        st["Effect"] == "Deny"
        and st.get("Principal") == "*"
        and st.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        and resource in _as_list(st["Resource"])
        for st in policy["Statement"]
    )


def control_sqs_1_queues_encrypted(stack: Stack) -> None:
    for queue in stack.of("aws:sqs/queue:Queue"):
        assert queue.state.get("sqsManagedSseEnabled") or queue.state.get("kmsMasterKeyId"), (
            queue.name
        )


def control_s3_buckets_private_encrypted_tls_only(stack: Stack) -> None:
    for bucket in stack.of("aws:s3/bucket:Bucket"):
        block = stack.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", bucket.name)
        assert all(
            block.state[k]
            for k in (
                "blockPublicAcls",
                "blockPublicPolicy",
                "ignorePublicAcls",
                "restrictPublicBuckets",
            )
        )
        assert stack.one(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            bucket.name,
        )
        policies = [
            p for p in stack.of("aws:s3/bucketPolicy:BucketPolicy") if bucket.name in p.name
        ]
        assert any(_tls_denied(_policy(p), bucket.state["arn"]) for p in policies), bucket.name


def control_iam_no_wildcard_allows(stack: Stack) -> None:
    for policy in stack.of("aws:iam/rolePolicy:RolePolicy"):
        for st in _policy(policy)["Statement"]:
            assert not any("*" in a for a in _as_list(st["Action"])), policy.name
            if "*" in _as_list(st["Resource"]):
                assert _as_list(st["Action"]) == ["ecr:GetAuthorizationToken"], policy.name


def control_ecr_1_scan_on_push(stack: Stack) -> None:
    repo = stack.one("aws:ecr/repository:Repository")
    assert repo.state["imageScanningConfiguration"]["scanOnPush"] is True


def control_ec2_8_imdsv2_required(stack: Stack) -> None:
    for template in stack.of("aws:ec2/launchTemplate:LaunchTemplate"):
        assert template.state["metadataOptions"]["httpTokens"] == "required"


def control_ecs_2_tasks_get_no_public_ip(stack: Stack) -> None:
    for service in stack.of("aws:ecs/service:Service"):
        assert not service.state["networkConfiguration"].get("assignPublicIp"), service.name
    assert not stack.of("aws:ec2/internetGateway:InternetGateway")
    assert not stack.of("aws:ec2/natGateway:NatGateway")
    subnets = stack.of("aws:ec2/subnet:Subnet")
    assert subnets, "the tasks run in subnets the stack makes private"
    assert not any(s.state.get("mapPublicIpOnLaunch") for s in subnets)


def control_ec2_10_55_56_vpc_endpoints_for_every_aws_api(stack: Stack) -> None:
    endpoints = {
        e.state["serviceName"].removeprefix(f"com.amazonaws.{REGION}."): e
        for e in stack.of("aws:ec2/vpcEndpoint:VpcEndpoint")
    }
    gpu = bool(stack.of("aws:ec2/launchTemplate:LaunchTemplate"))
    interface = {"ec2", "ecr.api", "ecr.dkr", "sqs", "sns", "logs"}  # EC2.10, EC2.55, EC2.56
    interface |= {"ecs", "ecs-agent", "ecs-telemetry"} if gpu else set()
    assert interface | {"s3"} <= set(endpoints), sorted(endpoints)
    for service in interface:
        e = endpoints[service]
        assert e.state["vpcEndpointType"] == "Interface" and e.state["privateDnsEnabled"]
    s3 = endpoints["s3"]
    route_tables = {f"{r.name}-id" for r in stack.of("aws:ec2/routeTable:RouteTable")}
    assert s3.state["vpcEndpointType"] == "Gateway"
    assert route_tables and set(s3.state["routeTableIds"]) == route_tables


def control_security_group_egress_is_https_to_aws_only(stack: Stack) -> None:
    service = stack.one("aws:ecs/service:Service")
    (sg_id,) = service.state["networkConfiguration"]["securityGroups"]
    (worker,) = [
        g for g in stack.of("aws:ec2/securityGroup:SecurityGroup") if f"{g.name}-id" == sg_id
    ]
    assert not worker.state.get("ingress")
    prefix_lists = {e.state["prefixListId"] for e in stack.of("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert worker.state["egress"]
    for rule in worker.state["egress"]:
        assert (rule["protocol"], rule["fromPort"], rule["toPort"]) == ("tcp", 443, 443), rule
        assert not rule.get("cidrBlocks") and not rule.get("ipv6CidrBlocks"), rule
        assert set(rule.get("prefixListIds", [])) <= prefix_lists, rule


def control_ecs_5_read_only_root_filesystem(stack: Stack) -> None:
    assert _container(stack)["readonlyRootFilesystem"] is True


def control_tasks_run_as_non_root_without_capabilities(stack: Stack) -> None:
    task = stack.one("aws:ecs/taskDefinition:TaskDefinition")
    container = _container(stack)
    uid = container["user"].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, container["user"]
    capabilities = container["linuxParameters"]["capabilities"]
    assert capabilities["drop"] == ["ALL"] and not capabilities.get("add")
    assert not container.get("privileged")
    volumes = {v["name"] for v in task.state["volumes"]}
    assert {m["sourceVolume"] for m in container["mountPoints"]} <= volumes


def control_ecr_2_3_immutable_tags_and_a_lifecycle_policy(stack: Stack) -> None:
    repo = stack.one("aws:ecr/repository:Repository")
    assert repo.state["imageTagMutability"] == "IMMUTABLE"
    lifecycle = stack.one("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert lifecycle.state["repository"] == repo.state["name"]
    assert _policy(lifecycle)["rules"]


def control_the_image_is_deployed_by_digest(stack: Stack) -> None:
    repo = stack.one("aws:ecr/repository:Repository").state["repositoryUrl"]
    assert re.fullmatch(re.escape(repo) + r"@sha256:[0-9a-f]{64}", _container(stack)["image"])


def control_sqs_tls_only_and_s3_events_from_this_account(stack: Stack) -> None:
    policies = {
        p.state["queueUrl"]: _policy(p) for p in stack.of("aws:sqs/queuePolicy:QueuePolicy")
    }
    for queue in stack.of("aws:sqs/queue:Queue"):
        policy = policies.get(queue.state["url"])
        assert policy is not None and _tls_denied(policy, queue.state["arn"]), queue.name
        for st in policy["Statement"]:
            if st["Effect"] == "Allow" and st["Principal"] == {"Service": "s3.amazonaws.com"}:
                assert st["Condition"]["StringEquals"]["aws:SourceAccount"] == ACCOUNT
                assert st["Condition"]["ArnLike"]["aws:SourceArn"]


def control_sqs_takes_sns_deliveries_only_from_the_stacks_topics(stack: Stack) -> None:
    topics = {t.state["arn"] for t in stack.of(TOPIC)}
    granted = 0
    for policy in stack.of(QUEUE_POLICY):
        for st in _policy(policy)["Statement"]:
            if st["Effect"] == "Allow" and st["Principal"] == {"Service": "sns.amazonaws.com"}:
                sources = _as_list(st["Condition"]["ArnEquals"]["aws:SourceArn"])
                assert sources and set(sources) <= topics, policy.name
                assert _as_list(st["Action"]) == ["sqs:SendMessage"], policy.name
                granted += 1
    assert granted == 1, "the events queue, subscribed to the events topic"


def control_sns_topics_published_to_by_the_workers_are_tls_only(stack: Stack) -> None:
    published = {
        resource
        for policy in stack.of("aws:iam/rolePolicy:RolePolicy")
        for st in _policy(policy)["Statement"]
        if "sns:Publish" in _as_list(st["Action"])
        for resource in _as_list(st["Resource"])
    }
    assert published, "the workers publish events"
    policies = {p.state["arn"]: _policy(p) for p in stack.of("aws:sns/topicPolicy:TopicPolicy")}
    for topic in published:
        assert topic in policies and _tls_denied(policies[topic], topic), topic


def control_s3_12_acls_disabled(stack: Stack) -> None:
    for bucket in stack.of("aws:s3/bucket:Bucket"):
        ownership = stack.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls", bucket.name)
        assert ownership.state["rule"]["objectOwnership"] == "BucketOwnerEnforced"


def control_sns_1_topics_encrypted(stack: Stack) -> None:
    keys = {k.state["arn"]: k for k in stack.of("aws:kms/key:Key")}
    for topic in stack.of("aws:sns/topic:Topic"):
        key = keys.get(topic.state.get("kmsMasterKeyId"))
        assert key is not None, f"{topic.name} is not encrypted with a key of the stack"
        assert key.state["enableKeyRotation"] is True
        principals = [st["Principal"] for st in _policy(key)["Statement"]]
        assert {"Service": "cloudwatch.amazonaws.com"} in principals  # alarms can publish


def control_iam_trust_policies_scoped(stack: Stack) -> None:
    for role in stack.of("aws:iam/role:Role"):
        for st in _policy(role, "assumeRolePolicy")["Statement"]:
            service = st["Principal"].get("Service")
            if service is None or service == "ec2.amazonaws.com":  # EC2 sets no source keys
                continue
            condition = st.get("Condition", {})
            assert condition.get("StringEquals", {}).get("aws:SourceAccount") == ACCOUNT, role.name
            assert all(
                arn.startswith(f"arn:aws:ecs:{REGION}:{ACCOUNT}:")
                for arn in _as_list(condition["ArnLike"]["aws:SourceArn"])
            )


def control_gpu_hosts_imds_hop_limit_1_blocked_for_tasks_encrypted_ebs(stack: Stack) -> None:
    for template in stack.of("aws:ec2/launchTemplate:LaunchTemplate"):
        metadata = template.state["metadataOptions"]
        assert metadata["httpTokens"] == "required" and metadata["httpPutResponseHopLimit"] == 1
        assert "ECS_AWSVPC_BLOCK_IMDS=true" in base64.b64decode(template.state["userData"]).decode()
        volumes = template.state["blockDeviceMappings"]
        assert volumes and all(v["ebs"]["encrypted"] == "true" for v in volumes)
        assert [n["associatePublicIpAddress"] for n in template.state["networkInterfaces"]] == [
            "false"
        ]


CONTROLS: dict[str, Callable[[Stack], None]] = {
    # met before issue 22
    "SQS.1 queues encrypted": control_sqs_1_queues_encrypted,
    "S3 public access blocked, encrypted, TLS only": control_s3_buckets_private_encrypted_tls_only,
    "IAM no wildcard allows": control_iam_no_wildcard_allows,
    "ECR.1 scan on push": control_ecr_1_scan_on_push,
    "EC2.8 IMDSv2 (GPU)": control_ec2_8_imdsv2_required,
    # the table
    "ECS.2 no public IP": control_ecs_2_tasks_get_no_public_ip,
    "EC2.10/55/56 VPC endpoints": control_ec2_10_55_56_vpc_endpoints_for_every_aws_api,
    "security group egress limited": control_security_group_egress_is_https_to_aws_only,
    "ECS.5 read-only root": control_ecs_5_read_only_root_filesystem,
    "non-root user, capabilities dropped": control_tasks_run_as_non_root_without_capabilities,
    "ECR.2 immutable tags, ECR.3 lifecycle": control_ecr_2_3_immutable_tags_and_a_lifecycle_policy,
    "image deployed by digest": control_the_image_is_deployed_by_digest,
    "SQS TLS only, S3->SQS aws:SourceAccount": control_sqs_tls_only_and_s3_events_from_this_account,
    "S3.12 ACLs disabled": control_s3_12_acls_disabled,
    # the live lane (issue 21): the events channel
    "SNS->SQS aws:SourceArn": control_sqs_takes_sns_deliveries_only_from_the_stacks_topics,
    "SNS topics TLS only": control_sns_topics_published_to_by_the_workers_are_tls_only,
    "SNS.1 topics encrypted": control_sns_1_topics_encrypted,
    "IAM trust policies scoped": control_iam_trust_policies_scoped,
    "GPU hosts: hop limit 1, IMDS blocked, EBS encrypted": (
        control_gpu_hosts_imds_hop_limit_1_blocked_for_tasks_encrypted_ebs
    ),
}
GPU_ONLY = {"EC2.8 IMDSv2 (GPU)", "GPU hosts: hop limit 1, IMDS blocked, EBS encrypted"}
BOTH = pytest.mark.parametrize("stack_name", ["cpu_stack", "gpu_stack"])


@BOTH
def test_sqs_1_queues_encrypted(stack_name, request):
    control_sqs_1_queues_encrypted(request.getfixturevalue(stack_name))


@BOTH
def test_s3_buckets_private_encrypted_tls_only(stack_name, request):
    control_s3_buckets_private_encrypted_tls_only(request.getfixturevalue(stack_name))


@BOTH
def test_iam_no_wildcard_allows(stack_name, request):
    control_iam_no_wildcard_allows(request.getfixturevalue(stack_name))


@BOTH
def test_ecr_1_scan_on_push(stack_name, request):
    control_ecr_1_scan_on_push(request.getfixturevalue(stack_name))


@BOTH
def test_ecs_2_tasks_get_no_public_ip(stack_name, request):
    control_ecs_2_tasks_get_no_public_ip(request.getfixturevalue(stack_name))


@BOTH
def test_ec2_10_55_56_vpc_endpoints_for_every_aws_api(stack_name, request):
    control_ec2_10_55_56_vpc_endpoints_for_every_aws_api(request.getfixturevalue(stack_name))


@BOTH
def test_security_group_egress_is_https_to_aws_only(stack_name, request):
    control_security_group_egress_is_https_to_aws_only(request.getfixturevalue(stack_name))


@BOTH
def test_ecs_5_read_only_root_filesystem(stack_name, request):
    control_ecs_5_read_only_root_filesystem(request.getfixturevalue(stack_name))


@BOTH
def test_tasks_run_as_non_root_without_capabilities(stack_name, request):
    control_tasks_run_as_non_root_without_capabilities(request.getfixturevalue(stack_name))


@BOTH
def test_ecr_2_3_immutable_tags_and_a_lifecycle_policy(stack_name, request):
    control_ecr_2_3_immutable_tags_and_a_lifecycle_policy(request.getfixturevalue(stack_name))


@BOTH
def test_the_image_is_deployed_by_digest(stack_name, request):
    control_the_image_is_deployed_by_digest(request.getfixturevalue(stack_name))


@BOTH
def test_sqs_tls_only_and_s3_events_from_this_account(stack_name, request):
    control_sqs_tls_only_and_s3_events_from_this_account(request.getfixturevalue(stack_name))


@BOTH
def test_sqs_takes_sns_deliveries_only_from_the_stacks_topics(stack_name, request):
    control_sqs_takes_sns_deliveries_only_from_the_stacks_topics(
        request.getfixturevalue(stack_name)
    )


@BOTH
def test_sns_topics_published_to_by_the_workers_are_tls_only(stack_name, request):
    control_sns_topics_published_to_by_the_workers_are_tls_only(request.getfixturevalue(stack_name))


@BOTH
def test_s3_12_acls_disabled(stack_name, request):
    control_s3_12_acls_disabled(request.getfixturevalue(stack_name))


@BOTH
def test_sns_1_topics_encrypted(stack_name, request):
    control_sns_1_topics_encrypted(request.getfixturevalue(stack_name))


@BOTH
def test_iam_trust_policies_scoped(stack_name, request):
    control_iam_trust_policies_scoped(request.getfixturevalue(stack_name))


def test_ec2_8_imdsv2_required(gpu_stack):
    control_ec2_8_imdsv2_required(gpu_stack)


def test_gpu_hosts_imds_hop_limit_1_blocked_for_tasks_encrypted_ebs(gpu_stack):
    assert gpu_stack.of("aws:ec2/launchTemplate:LaunchTemplate")
    control_gpu_hosts_imds_hop_limit_1_blocked_for_tasks_encrypted_ebs(gpu_stack)


def test_every_control_is_tested_by_name():
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    for check in CONTROLS.values():
        assert check.__name__.removeprefix("control_") in tested, check.__name__


# --- The switches: each secure by default; what the other value does --------------------------


def test_the_models_bucket_is_written_only_by_its_publishers(cpu_stack):
    models = cpu_stack.one("aws:s3/bucket:Bucket", "models")
    policy = _policy(cpu_stack.one("aws:s3/bucketPolicy:BucketPolicy", "models"))
    (deny,) = [st for st in policy["Statement"] if st["Sid"] == "OnlyPublishersWriteModels"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert {"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"} <= set(deny["Action"])
    assert deny["Resource"] == f"{models.state['arn']}/*"
    publisher = cpu_stack.one("aws:iam/role:Role", "publisher")
    writers = deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    # the publisher role and the deploying role (not its session), and no one else: not the
    # workers' task role, whatever its policy says
    assert sorted(writers) == sorted([publisher.state["arn"], DEPLOYER])
    task_role = cpu_stack.one("aws:iam/role:Role", "posefleet-task").state["arn"]
    assert task_role not in writers
    trust = _policy(publisher, "assumeRolePolicy")["Statement"]
    assert [st["Principal"] for st in trust] == [{"AWS": f"arn:aws:iam::{ACCOUNT}:root"}]
    statements = _statements(cpu_stack, "publisher-policy")
    (publish,) = [st for st in statements if st["Sid"] == "PublishModels"]
    assert publish["Resource"] == "arn:aws:s3:::posefleet-models/pose_classifier/*"
    assert not cpu_stack.of("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")


def test_models_object_lock_keeps_every_published_version(cpu_stack):
    stack = run_program(
        StackConfig(
            image_digest=IMAGE_DIGEST,
            models_object_lock=True,
            models_lock_days=60,
            model_publishers=("arn:aws:iam::123456789012:role/ci",),
        )
    )
    assert stack.one("aws:s3/bucket:Bucket", "models").state["objectLockEnabled"] is True
    assert not stack.one("aws:s3/bucket:Bucket", "results").state.get("objectLockEnabled")
    lock = stack.one("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
    assert lock.state["rule"]["defaultRetention"] == {"mode": "GOVERNANCE", "days": 60}
    policy = _policy(stack.one("aws:s3/bucketPolicy:BucketPolicy", "models"))
    (deny,) = [st for st in policy["Statement"] if st["Sid"] == "OnlyPublishersWriteModels"]
    assert (
        "arn:aws:iam::123456789012:role/ci" in deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    )


def test_a_pinned_model_hash_reaches_every_worker_and_extra_env_cannot_undo_it():
    pinned = "ef" * 32
    stack = run_program(
        StackConfig(
            image_digest=IMAGE_DIGEST,
            model_sha256=pinned,
            extra_env={"POSEFLEET_MODEL_SHA256": "0" * 64, "POSEFLEET_BATCH_SIZE": "64"},
        )
    )
    env = {e["name"]: e["value"] for e in _container(stack)["environment"]}
    assert env["POSEFLEET_MODEL_SHA256"] == pinned and env["POSEFLEET_BATCH_SIZE"] == "64"
    assert env["POSEFLEET_MODEL_CACHE_DIR"] == "/home/posefleet/models"
    assert "POSEFLEET_MODEL_SHA256" not in {
        e["name"]
        for e in _container(run_program(StackConfig(image_digest=IMAGE_DIGEST)))["environment"]
    }


def test_an_image_tag_is_deployed_as_its_digest():
    stack = run_program(StackConfig(image_tag="v1.2.0"))
    repo = stack.one("aws:ecr/repository:Repository").state["repositoryUrl"]
    assert _container(stack)["image"] == f"{repo}@{TAG_DIGEST}"


def test_without_an_image_the_stack_is_made_without_workers_and_says_what_next():
    stack = run_program(StackConfig())
    assert stack.one("aws:ecr/repository:Repository")
    assert stack.one("aws:s3/bucket:Bucket", "models")
    assert not stack.of("aws:ecs/taskDefinition:TaskDefinition")
    assert not stack.of("aws:ecs/service:Service")
    for check in CONTROLS.values():  # nothing it makes weakens a control
        if check.__name__ not in {
            "control_security_group_egress_is_https_to_aws_only",
            "control_ecs_5_read_only_root_filesystem",
            "control_tasks_run_as_non_root_without_capabilities",
            "control_the_image_is_deployed_by_digest",
        }:
            check(stack)


def test_vpc_endpoints_off_leaves_https_to_anywhere_for_a_nat():
    stack = run_program(
        StackConfig(
            image_digest=IMAGE_DIGEST,
            vpc_id="vpc-yours",
            subnet_ids=("subnet-a", "subnet-b"),
            vpc_endpoints=False,
        )
    )
    assert not stack.of("aws:ec2/vpc:Vpc") and not stack.of("aws:ec2/vpcEndpoint:VpcEndpoint")
    service = stack.one("aws:ecs/service:Service").state["networkConfiguration"]
    assert service["subnets"] == ["subnet-a", "subnet-b"] and not service["assignPublicIp"]
    (sg,) = stack.of("aws:ec2/securityGroup:SecurityGroup")
    assert [(r["protocol"], r["fromPort"], r["cidrBlocks"]) for r in sg.state["egress"]] == [
        ("tcp", 443, ["0.0.0.0/0"])
    ]


def test_your_own_vpc_gets_the_endpoints_on_all_its_route_tables():
    stack = run_program(
        StackConfig(image_digest=IMAGE_DIGEST, vpc_id="vpc-yours", subnet_ids=("subnet-a",))
    )
    assert not stack.of("aws:ec2/vpc:Vpc") and not stack.of("aws:ec2/subnet:Subnet")
    endpoints = {e.name: e.state for e in stack.of("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert endpoints["posefleet-s3"]["routeTableIds"] == ["rtb-1", "rtb-2"]
    assert endpoints["posefleet-sqs"]["subnetIds"] == ["subnet-a"]
    ingress = stack.one("aws:ec2/securityGroup:SecurityGroup", "endpoints").state["ingress"]
    assert [r["cidrBlocks"] for r in ingress] == [["172.31.0.0/16"]]


def test_the_stacks_vpc_is_private_in_as_many_zones_as_asked():
    stack = run_program(StackConfig(image_digest=IMAGE_DIGEST, availability_zones=3))
    (vpc,) = stack.of("aws:ec2/vpc:Vpc")
    assert vpc.state["enableDnsSupport"] and vpc.state["enableDnsHostnames"]
    subnets = stack.of("aws:ec2/subnet:Subnet")
    assert sorted(s.state["availabilityZone"] for s in subnets) == [
        "us-east-1a",
        "us-east-1b",
        "us-east-1c",
    ]
    (routes,) = stack.of("aws:ec2/routeTable:RouteTable")
    assert not routes.state.get("routes")  # local only: no internet gateway, no NAT


def test_without_the_customer_key_the_topics_are_not_encrypted():
    stack = run_program(StackConfig(image_digest=IMAGE_DIGEST, customer_kms_key=False))
    assert not stack.of("aws:kms/key:Key")
    topics = stack.of(TOPIC)
    assert sorted(t.name for t in topics) == ["posefleet-alarms", "posefleet-events"]
    assert not any(t.state.get("kmsMasterKeyId") for t in topics)
    # and the worker gets no key to use: it publishes in the clear, over TLS still
    statements = _statements(stack, "task-policy")
    assert not [st for st in statements if "kms:" in json.dumps(st["Action"])]
    assert [st["Sid"] for st in statements if st["Action"] == "sns:Publish"] == ["PublishEvents"]
    with pytest.raises(AssertionError, match="not encrypted"):
        control_sns_1_topics_encrypted(stack)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_digest": "latest"}, "imageDigest"),
        ({"model_sha256": "abc"}, "modelSha256"),
        ({"subnet_ids": ("subnet-a",)}, "vpcId"),
        ({"assign_public_ip": True}, "public subnets"),
        ({"availability_zones": 0}, "availabilityZones"),
        ({"model_publishers": ("arn:aws:iam::1:role/*",)}, "no wildcard"),
    ],
)
def test_bad_security_config_fails_before_anything_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StackConfig(**kwargs)


def test_the_live_lanes_settings_are_read_from_the_stacks_config():
    from pulumi.runtime import config as runtime_config

    given = {"liveMinWorkers": "2", "liveWaitSeconds": "15", "liveLatencyAlarmSeconds": "7.5"}
    before = dict(runtime_config.CONFIG.get())
    runtime_config.set_all_config({**before, **{f"posefleet:{k}": v for k, v in given.items()}})
    try:
        loaded = StackConfig.load()
    finally:
        runtime_config.set_all_config(before)
    assert (
        loaded.live_min_workers,
        loaded.live_wait_seconds,
        loaded.live_latency_alarm_seconds,
    ) == (2, 15, 7.5)
    assert loaded.floor == 2 and StackConfig.load().floor == 0  # minTasks 0: the default


# -- jobs: the job records' table, the worker's access to it, the results table ------------------


def test_the_job_records_table_follows_the_contract_and_is_recoverable(cpu_stack):
    """FSBP DynamoDB.2 (point-in-time recovery) and DynamoDB.6 (deletion protection)."""
    from posefleet.job_record import INDEX, TTL_ATTRIBUTE
    from posefleet.resources import DEFAULT_JOBS_TABLE

    table = cpu_stack.one("aws:dynamodb/table:Table").state
    assert table["name"] == DEFAULT_JOBS_TABLE and table["billingMode"] == "PAY_PER_REQUEST"
    assert table["hashKey"] == "id"
    (index,) = table["globalSecondaryIndexes"]
    assert (index["name"], index["hashKey"], index["rangeKey"]) == (INDEX, "listing", "created_at")
    assert (index["projectionType"], index["nonKeyAttributes"]) == ("INCLUDE", ["state"])
    assert table["ttl"] == {"attributeName": TTL_ATTRIBUTE, "enabled": True}
    assert table["pointInTimeRecovery"]["enabled"] is True
    assert table["deletionProtectionEnabled"] is True
    assert table["serverSideEncryption"]["enabled"] is True


def test_the_worker_may_only_read_records_put_markers_and_update_counts(cpu_stack):
    statements = {st["Sid"]: st for st in _statements(cpu_stack, "jobs-worker-policy")}
    table = cpu_stack.one("aws:dynamodb/table:Table").state["arn"]
    actions = sorted(a for st in statements.values() for a in _as_list(st["Action"]))
    assert actions == [
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    ]  # no Query or Scan (the index), no DeleteItem, no transaction on anything else
    assert {st["Resource"] for st in statements.values()} == {table}
    put = statements["PutTaskMarkers"]["Condition"]
    assert put["ForAllValues:StringLike"] == {"dynamodb:LeadingKeys": ["*/*"]}
    condition = statements["CountTasksAndEndJobs"]["Condition"]
    update = set(condition["ForAllValues:StringEquals"]["dynamodb:Attributes"])
    assert {"tasks_done", "images_failed", "err_truncated", "state", "finished_at"} <= update
    assert not {"tasks_total", "source", "created_at", "run", "listing"} & update


def test_results_are_one_table_partitioned_by_job_with_an_enforced_encrypted_workgroup(cpu_stack):
    from posefleet.results_table import COLUMNS, TABLE

    table = cpu_stack.one("aws:glue/catalogTable:CatalogTable").state
    assert table["name"] == TABLE and table["tableType"] == "EXTERNAL_TABLE"
    assert table["partitionKeys"] == [{"name": "job", "type": "string"}]
    params = table["parameters"]
    assert params["projection.enabled"] == "true" and params["projection.job.type"] == "injected"
    assert params["storage.location.template"] == "s3://posefleet-results/results/${job}/tasks/"
    storage = table["storageDescriptor"]
    assert storage["serDeInfo"]["serializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    assert [(c["name"], c["type"]) for c in storage["columns"]] == [(c, t) for c, t, _ in COLUMNS]
    workgroup = cpu_stack.one("aws:athena/workgroup:Workgroup").state["configuration"]
    assert workgroup["enforceWorkgroupConfiguration"] is True
    results = workgroup["resultConfiguration"]
    assert results["outputLocation"] == "s3://posefleet-results/athena/"
    assert results["encryptionConfiguration"]["encryptionOption"] == "SSE_S3"
    assert workgroup["bytesScannedCutoffPerQuery"] > 0


def test_workers_and_the_producer_find_the_job_records_table(cpu_stack):
    from posefleet.resources import DEFAULT_JOBS_TABLE

    parameter = json.loads(cpu_stack.one("aws:ssm/parameter:Parameter").state["value"])
    assert parameter["jobs_table"] == DEFAULT_JOBS_TABLE
    task = cpu_stack.one("aws:ecs/taskDefinition:TaskDefinition").state
    (container,) = json.loads(task["containerDefinitions"])
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["POSEFLEET_JOBS_TABLE"] == DEFAULT_JOBS_TABLE
