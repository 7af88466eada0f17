"""The Pulumi program, run for real under Pulumi's unit-test mocks (no CLI, no AWS)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pytest

from infra.config import InputBucket, StackConfig
from posefleet import metric_names as m
from posefleet.resources import QueueSpec

ACCOUNT, REGION = "123456789012", "us-east-1"


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
        self.resources.append(Recorded(args.typ, args.name, state))
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {
            "aws:index/getRegion:getRegion": {"region": REGION, "name": REGION, "id": REGION},
            "aws:index/getCallerIdentity:getCallerIdentity": {
                "accountId": ACCOUNT,
                "arn": "x",
                "userId": "x",
                "id": ACCOUNT,
            },
            "aws:ec2/getVpc:getVpc": {"id": "vpc-123"},
            "aws:ec2/getSubnets:getSubnets": {"ids": ["subnet-a", "subnet-b"], "id": "x"},
            "aws:ssm/getParameter:getParameter": {
                "value": "ami-0gpu",
                "name": args.args.get("name"),
                "id": "x",
            },
        }.get(args.token, {})


class Stack:
    def __init__(self, resources: list[Recorded]) -> None:
        self.resources = resources

    def of(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name_part: str = "") -> Recorded:
        found = [r for r in self.of(typ) if name_part in r.name]
        assert len(found) == 1, f"{typ} {name_part!r}: {[r.name for r in found]}"
        return found[0]


def run_program(config: StackConfig) -> Stack:
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="posefleet", stack="test", preview=False)

    @pulumi.runtime.test
    def program():
        from infra.program import build

        return pulumi.Output.all(*build(config).values())

    program()
    return Stack(mocks.resources)


INPUTS = (
    InputBucket(bucket="checkins", prefix="uploads/", notify=True),
    InputBucket(bucket="archive"),
)


@pytest.fixture(scope="module")
def cpu_stack() -> Stack:
    return run_program(
        StackConfig(input_buckets=INPUTS, longest_task_seconds=150, alarm_email="ops@example.com")
    )


@pytest.fixture(scope="module")
def gpu_stack() -> Stack:
    return run_program(StackConfig(capacity="gpu", input_buckets=INPUTS, min_tasks=1))


def test_the_queue_has_a_dead_letter_queue_and_outlives_the_longest_task(cpu_stack):
    tasks, dlq = (
        cpu_stack.one("aws:sqs/queue:Queue", "tasks"),
        cpu_stack.one("aws:sqs/queue:Queue", "dlq"),
    )
    redrive = json.loads(tasks.state["redrivePolicy"])
    assert redrive == {
        "deadLetterTargetArn": dlq.state["arn"],
        "maxReceiveCount": QueueSpec().max_receive_count,  # the backstop, as local mode has it
    }
    assert tasks.state["visibilityTimeoutSeconds"] > 150  # the longest task
    assert tasks.state["receiveWaitTimeSeconds"] == 20
    assert dlq.state["messageRetentionSeconds"] > tasks.state["messageRetentionSeconds"]
    assert tasks.state["sqsManagedSseEnabled"] and dlq.state["sqsManagedSseEnabled"]


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
        (deny,) = policy["Statement"]
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


def test_s3_events_from_named_inputs_reach_the_queue(cpu_stack):
    notification = cpu_stack.one("aws:s3/bucketNotification:BucketNotification")
    assert notification.state["bucket"] == "checkins"
    (q,) = notification.state["queues"]
    assert q["filterPrefix"] == "uploads/" and q["events"] == ["s3:ObjectCreated:*"]
    policy = json.loads(cpu_stack.one("aws:sqs/queuePolicy:QueuePolicy").state["policy"])
    assert policy["Statement"][0]["Condition"]["ArnLike"]["aws:SourceArn"] == [
        "arn:aws:s3:::checkins"
    ]


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


def test_task_role_reads_inputs_writes_only_results_and_uses_only_its_queue(cpu_stack):
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
    queue_arn = cpu_stack.one("aws:sqs/queue:Queue", "tasks").state["arn"]
    dlq_arn = cpu_stack.one("aws:sqs/queue:Queue", "dlq").state["arn"]
    sqs = [st for st in statements if any(a.startswith("sqs:") for a in _as_list(st["Action"]))]
    assert [st["Resource"] for st in sqs] == [queue_arn, dlq_arn]
    # it sends to the tasks queue only the messages it hands back (worker/ledger.py)
    assert sorted(_as_list(sqs[0]["Action"])) == [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",
    ]
    # only an invalid body goes to the dead-letter queue, sent by the worker with its reason
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


def test_autoscaling_reaches_zero_and_comes_back_for_work(cpu_stack, gpu_stack):
    target = cpu_stack.one("aws:appautoscaling/target:Target")
    assert (target.state["minCapacity"], target.state["maxCapacity"]) == (0, 20)
    backlog = cpu_stack.one("aws:appautoscaling/policy:Policy", "backlog")
    tracking = backlog.state["targetTrackingScalingPolicyConfiguration"]
    assert tracking["targetValue"] == 50  # 600 s acceptable latency / 12 s per task
    expressions = [
        q.get("expression") for q in tracking["customizedMetricSpecification"]["metrics"]
    ]
    assert "visible / IF(running > 0, running, 1)" in expressions
    to_zero = cpu_stack.one("aws:appautoscaling/policy:Policy", "to-zero")
    step = to_zero.state["stepScalingPolicyConfiguration"]
    assert (
        step["adjustmentType"] == "ExactCapacity"
        and step["stepAdjustments"][0]["scalingAdjustment"] == 0
    )
    assert cpu_stack.one("aws:cloudwatch/metricAlarm:MetricAlarm", "queue-idle")
    assert cpu_stack.one("aws:cloudwatch/metricAlarm:MetricAlarm", "work-waiting-no-workers")
    assert not [
        p for p in gpu_stack.of("aws:appautoscaling/policy:Policy") if "to-zero" in p.name
    ]  # minTasks 1


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


def test_alarms_cover_dead_letters_age_failures_and_stalls_and_notify_sns(cpu_stack):
    topic = cpu_stack.one("aws:sns/topic:Topic")
    alarms = {
        a.name.removeprefix("posefleet-"): a
        for a in cpu_stack.of("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    for name in ("dead-letters", "oldest-message", "failure-rate", "no-progress"):
        assert alarms[name].state["alarmActions"] == [topic.state["arn"]], name
    assert alarms["dead-letters"].state["threshold"] == 0
    assert alarms["oldest-message"].state["threshold"] == 3600
    assert (
        cpu_stack.one("aws:sns/topicSubscription:TopicSubscription").state["endpoint"]
        == "ops@example.com"
    )


def test_the_stack_publishes_what_the_producer_needs(cpu_stack):
    parameter = cpu_stack.one("aws:ssm/parameter:Parameter")
    from posefleet.resources import DISCOVERY_PARAMETER

    assert parameter.state["name"] == DISCOVERY_PARAMETER
    value = json.loads(parameter.state["value"])
    assert value["queue_url"].endswith("posefleet-tasks")
    assert value["results"] == "s3://posefleet-results/results"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity": "tpu"}, "capacity"),
        ({"min_tasks": 5, "max_tasks": 2}, "minTasks"),
        ({"drain_seconds": 150}, "stopTimeout"),
        ({"backend": "tensorrt"}, "backend"),
        ({"backend": "openvino-int8", "capacity": "gpu"}, "runs on CPUs"),
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
    queue, dlq = (stack.one("aws:sqs/queue:Queue", part).state["name"] for part in ("tasks", "dlq"))
    defined = widgets(
        queue=queue,
        dlq=dlq,
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
    titles = " ".join(w.title.lower() for w in defined)  # the widgets the issue names
    for word in ("images per second", "stage", "failures", "batch", "latency", "dead-letter"):
        assert word in titles, word
