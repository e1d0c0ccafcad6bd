"""Diversity regularizers for deep ensembles (Huang et al., AAAI 2021): PDD, DEG, metrics, baselines."""

from .pdd import PriorityDiversifiedDropout, PriorityStatistics, default_num_intervals, priority_statistics

__all__ = [
    "PriorityDiversifiedDropout",
    "PriorityStatistics",
    "default_num_intervals",
    "priority_statistics",
]
__version__ = "0.1.0"
