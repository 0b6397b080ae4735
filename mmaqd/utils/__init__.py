"""Helpers for the tools and the benchmark scripts."""
from .markdown import replace_marked_block
from .timing import interleaved_times, median_ratio

__all__ = ['interleaved_times', 'median_ratio', 'replace_marked_block']
