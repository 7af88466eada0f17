import json

import pytest

from mappings import ClassMapping, load_poses, pose_name

SEED_LAMBDA_POSES = {
    "Front Relaxed",
    "Back Relaxed",
    "Quarter Turn Left",
    "Quarter Turn Right",
    "Back Double Biceps",
    "Front Double Biceps",
    "Front Lat Spread",
    "Side Chest",
    "Abs & Thighs",
}
SEED_TRAINING_IDS = {
    "1": "Front Lat Spread",
    "2": "Front Double Biceps",
    "5": "Back Double Biceps",
    "7": "Back Lat Spread",
    "11": "Abs & Thighs",
    "14": "Side Chest",
    "16": "Side Triceps",
}


def test_poses_cover_both_seeds_with_stable_ids():
    poses = load_poses()
    assert {p.name for p in poses.values()} >= SEED_LAMBDA_POSES
    for pose_id, name in SEED_TRAINING_IDS.items():
        assert poses[pose_id].name == name
    for pose in poses.values():  # mirrors are poses, and mirroring twice is the identity
        assert poses[poses[pose.mirror].mirror] == pose
    assert poses["22"].mirror == "23"


def test_class_mapping_reads_and_writes_the_seed_format():
    seed = {
        "class_to_idx": {"1": 0, "11": 1, "14": 2, "16": 3, "2": 4, "5": 5, "7": 6},
        "idx_to_class": {"0": "1", "1": "11", "2": "14", "3": "16", "4": "2", "5": "5", "6": "7"},
        "classes": ["1", "11", "14", "16", "2", "5", "7"],
    }
    mapping = ClassMapping.from_json(json.loads(json.dumps(seed)))
    assert mapping.classes == ("1", "11", "14", "16", "2", "5", "7")
    assert mapping.names[4] == "Front Double Biceps"
    assert mapping.to_json() == seed
    assert ClassMapping.from_json({"class_to_idx": seed["class_to_idx"]}) == mapping


def test_class_mapping_refuses_gaps_and_duplicates():
    with pytest.raises(ValueError, match="cover"):
        ClassMapping.from_json({"idx_to_class": {"0": "1", "2": "5"}})
    with pytest.raises(ValueError, match="unique"):
        ClassMapping(("1", "1"))
    assert pose_name("999") == "pose 999"
