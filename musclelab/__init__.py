"""musclelab: a PyTorch Lightning + Hydra framework for data-efficient CT muscle segmentation research."""

__version__ = "0.1.0"
