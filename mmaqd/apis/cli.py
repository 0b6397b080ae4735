"""What the command-line tools share: arguments, quiet logs, results, verdicts, exit codes."""
import argparse
import json
import logging
import sys
import traceback
from typing import Callable, Optional

from mmengine.config import DictAction
from mmengine.logging import MMLogger

#: Exit codes of the checking tools: the check passed, it failed, or it could not run
#: (bad arguments or input, or a crash; argparse's own usage errors are 2 as well).
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def trained_model_parser(description: str) -> argparse.ArgumentParser:
    """A parser with ``config``, ``checkpoint``, ``--cfg-options`` and ``--verbose``.

    Args:
        description (str): The tool's description.

    Returns:
        ArgumentParser: Add the tool's own arguments to it.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config of the detector')
    parser.add_argument('checkpoint', help='trained checkpoint')
    add_common_arguments(parser)
    return parser


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--cfg-options`` and ``--verbose`` to a tool's parser."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    parser.add_argument('--verbose', action='store_true',
                        help="show mmengine's info logs (weight init, the quantized layers)")


def quiet_logs(verbose: bool) -> None:
    """Make the current mmengine logger show warnings only, unless ``verbose``.

    mmengine and mmaqd log through the current :class:`MMLogger` (weight
    initialisation alone prints a line per module); the tools that build models
    without a Runner set it to warnings.

    Args:
        verbose (bool): Keep the info logs.
    """
    if not verbose:
        MMLogger.get_current_instance().setLevel(logging.WARNING)


def emit_result(result: dict, out: Optional[str] = None) -> dict:
    """Write a tool's JSON result to ``out`` (if given) and print it as the last line.

    Args:
        result (dict): The result.
        out (str, optional): A file for it (indented JSON).

    Returns:
        dict: ``result``.
    """
    if out:
        with open(out, 'w') as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))
    return result


def verdict(passed: bool, what: str, requirement: str) -> str:
    """The one verdict line of a checking tool, e.g. ``PASS: ... (required: ...)``."""
    return f'{"PASS" if passed else "FAIL"}: {what} (required: {requirement})'


def run_check(main: Callable[[], dict]) -> int:
    """Run a checking tool's ``main`` and turn its outcome into an exit code.

    Args:
        main (callable): Returns the tool's result dict with a bool ``passed``.

    Returns:
        int: :data:`EXIT_PASS`, :data:`EXIT_FAIL`, or :data:`EXIT_ERROR` when ``main``
        raised (the traceback and a last ``error:`` line go to stderr).
    """
    try:
        result = main()
    except Exception as err:  # noqa: BLE001  (any failure to run is exit code 2)
        traceback.print_exc()
        print(f'error: {type(err).__name__}: {err}', file=sys.stderr)
        return EXIT_ERROR
    return EXIT_PASS if result['passed'] else EXIT_FAIL
