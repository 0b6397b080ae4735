"""The command-line arguments the tools that read a trained detector share."""
import argparse

from mmengine.config import DictAction


def trained_model_parser(description: str) -> argparse.ArgumentParser:
    """A parser with ``config``, ``checkpoint`` and ``--cfg-options`` (see :func:`load_trained`).

    Args:
        description (str): The tool's description.

    Returns:
        ArgumentParser: Add the tool's own arguments to it.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config of the detector')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    return parser
