"""Side-by-side timing: functions run interleaved, repeat by repeat, in one process.

Machine load then slows every function of a repeat alike, so per-repeat ratios
stay meaningful on a shared machine where absolute times are not.
"""
import statistics
import time
from typing import Callable, Dict, List


def interleaved_times(fns: Dict[str, Callable[[], object]], repeats: int,
                      warmup: int = 1) -> Dict[str, List[float]]:
    """Seconds of each call of each function, the functions taking turns.

    Args:
        fns (dict[str, callable]): Name -> function of no arguments.
        repeats (int): Timed rounds (every function once per round).
        warmup (int): Untimed rounds first. Defaults to 1.

    Returns:
        dict[str, list[float]]: Name -> one time per round.

    Raises:
        ValueError: If ``repeats`` is below 1 or ``warmup`` below 0.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f'need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}')
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: Dict[str, List[float]], name: str, reference: str) -> float:
    """Median over rounds of ``time[name] / time[reference]`` in the same round.

    Args:
        times (dict): From :func:`interleaved_times`.
        name (str): The measured function.
        reference (str): The function it is compared with.

    Returns:
        float: The ratio.
    """
    return statistics.median(a / b for a, b in zip(times[name], times[reference]))
