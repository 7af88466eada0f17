"""ECS task scale-in protection, through the ECS agent's endpoint.

While a worker holds work it asks ECS not to stop it on scale-in; when idle it clears the flag.
Only on ECS (``ECS_AGENT_URI`` is set); elsewhere it does nothing. A failed call is logged and
ignored: protection is an optimisation, the drain on SIGTERM is the guarantee.
"""

from __future__ import annotations

import json
import urllib.request

from posefleet.logs import get_logger

__all__ = ["ScaleInProtection"]

log = get_logger(__name__)


class ScaleInProtection:
    def __init__(self, agent_uri: str | None, *, expires_minutes: int = 60) -> None:
        self.agent_uri = agent_uri
        self.expires_minutes = expires_minutes
        self.enabled: bool | None = None

    def set(self, enabled: bool) -> None:
        if not self.agent_uri or self.enabled == enabled:
            return
        body: dict[str, object] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = self.expires_minutes
        request = urllib.request.Request(
            f"{self.agent_uri}/task-protection/v1/state",
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
            self.enabled = enabled
        except OSError as e:
            log.warning("scale_in_protection_failed", enabled=enabled, error=str(e))
