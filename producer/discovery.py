"""Finding a deployed stack: ``pulumi up`` publishes the queues' URLs (both lanes, the events
queue), the results location, the job records' table and the events topic in an SSM parameter,
so ``python -m producer --bucket X --prefix Y`` needs no other flags.

Order: explicit settings (flags or ``POSEFLEET_*``), then the stack's parameter, then defaults.
IAM: ``ssm:GetParameter`` on the parameter.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from botocore.exceptions import ClientError

from posefleet.settings import ProducerSettings

__all__ = ["Endpoints"]


class Endpoints:
    def __init__(self, settings: ProducerSettings, *, sqs: Any, ssm: Any) -> None:
        self.settings = settings
        self.sqs = sqs
        self.ssm = ssm

    @cached_property
    def discovered(self) -> dict[str, str]:
        try:
            value = self.ssm.get_parameter(Name=self.settings.discovery_parameter)["Parameter"][
                "Value"
            ]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in (
                "ParameterNotFound",
                "AccessDeniedException",
            ):
                return {}
            raise
        return json.loads(value)

    @property
    def results(self) -> str:
        if "results" in self.settings.model_fields_set:
            return self.settings.results
        return self.discovered.get("results", self.settings.results)

    @property
    def jobs_table(self) -> str:
        if "jobs_table" in self.settings.model_fields_set:
            return self.settings.jobs_table
        return self.discovered.get("jobs_table", self.settings.jobs_table)

    @property
    def events_topic(self) -> str | None:
        if self.settings.events_topic:
            return self.settings.events_topic
        return self.discovered.get("events_topic")

    @property
    def queue_url(self) -> str:
        """The backfill lane's queue."""
        s = self.settings
        return self._queue(s.queue_url, "queue_url", s.queue_name)

    def _queue(self, explicit: str | None, discovered: str, name: str) -> str:
        if explicit:
            return explicit
        if found := self.discovered.get(discovered):
            return found
        return self.sqs.get_queue_url(QueueName=name)["QueueUrl"]

    @property
    def live_queue_url(self) -> str:
        """The live lane's queue (``--lane live``)."""
        s = self.settings
        return self._queue(s.live_queue_url, "live_queue_url", s.live_queue_name)

    @property
    def events_queue_url(self) -> str:
        """The queue subscribed to the events topic."""
        s = self.settings
        return self._queue(s.events_queue_url, "events_queue_url", s.events_queue_name)
