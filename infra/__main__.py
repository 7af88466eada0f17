"""`pulumi up` entry point: wiring only; each concern is a component in infra/components/."""

from infra.program import build

build()
