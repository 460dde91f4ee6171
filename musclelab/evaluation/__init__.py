"""Evaluation beyond the per-slice test loop: 2D models scored on whole volumes (:mod:`.volume_from_slices`)."""
