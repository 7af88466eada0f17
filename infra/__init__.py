"""The Pulumi program that provisions posefleet on AWS (see docs/deploy.md)."""
