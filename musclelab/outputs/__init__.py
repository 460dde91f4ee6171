"""What a run leaves on disk: status marker, plots, per-case tables, summaries."""
