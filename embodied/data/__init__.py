"""Trajectories: collection, the on-disk format, and segment sampling."""

from embodied.data.collect import NoiseSchedule, collect, rollout
from embodied.data.convert import to_transitions
from embodied.data.dataset import Dataset, load_episodes, write_dataset
from embodied.data.episode import Episode
from embodied.data.segments import Segments, sample_segments

__all__ = [
    "Dataset",
    "Episode",
    "NoiseSchedule",
    "Segments",
    "collect",
    "load_episodes",
    "rollout",
    "sample_segments",
    "to_transitions",
    "write_dataset",
]
