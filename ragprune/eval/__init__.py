"""Reusable evaluation pieces (dataset loaders, metrics); the runnable scripts live in eval/."""
