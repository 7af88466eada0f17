"""posefleet: the contracts shared by producer, worker, training, infra and tests.

Each module here is the one definition of one contract in docs/DESIGN (see README):
``task`` (task message), ``result`` (result line), ``layout`` (results layout),
``checkpoint`` (model files), ``preprocess`` (image bytes -> model input),
``settings`` (configuration), ``metric_names`` (CloudWatch names), ``resources``
(queue and bucket settings shared by infra and local mode).

Only ``checkpoint`` and ``preprocess`` import torch; the producer never imports them.
"""
