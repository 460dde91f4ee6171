"""LightningModules: the tasks musclelab trains."""
from musclelab.tasks.segmentation import SegmentationTask

__all__ = ["SegmentationTask"]
