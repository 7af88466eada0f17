"""Orchestration on this machine, above the contracts: ``python -m localfleet`` (a local fleet
you point at your photos and your checkpoint) and ``python -m localfleet.demo`` (``make demo``).

It may import every package (producer, worker, training) but drives producer and worker only
through their command lines, as a user would; ``posefleet/`` imports nothing from here.
"""
