"""Helpers for the tools and the benchmark scripts."""
from .timing import interleaved_times, median_ratio

__all__ = ['interleaved_times', 'median_ratio']
