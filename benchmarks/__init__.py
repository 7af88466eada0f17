"""``make bench``: posefleet against the seed Lambda's way, in one run (docs/benchmarks.md)."""
