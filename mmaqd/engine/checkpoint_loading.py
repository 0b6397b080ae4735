"""Weights-only loading of local checkpoints for mmengine 0.10.7 under torch >= 2.6.

torch >= 2.6 defaults ``torch.load(weights_only=True)``. mmengine 0.10.7 calls
``torch.load`` without that argument, and its checkpoints hold more than tensors:
the message hub's :class:`HistoryBuffer` objects with their numpy arrays and
scalars. Resume and ``load_from`` therefore fail. Rather than switching weights-only
loading off (unpickling an untrusted file can run code), mmaqd replaces mmengine's
local-file loader with one that keeps ``weights_only=True`` and allows exactly the
globals mmengine/mmdet checkpoints contain. Anything else in a checkpoint is refused
with an error naming it.
"""
import builtins
import os.path as osp
import pickle
import pickletools
import re
import struct
import zipfile
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

_NUMPY_DTYPES = (np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16,
                 np.float32, np.float64)


# What torch's weights-only unpickler says about content it refuses (as opposed to bytes
# that are no pickle at all, which make it fail with other messages).
_DISALLOWED_CONTENT = re.compile(
    r'(Unsupported global: GLOBAL [\w.]+|unsupported GLOBAL [\w.]+|getattr\(.*\) is not '
    r'allowed[^\n]*|but got <class [^>]+>|call reduce for unrecognized function [^\n]*)')
_UNPICKLER_DETAIL = re.compile(r'WeightsUnpickler error:\s*([^\n]+)')


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds a pickled object outside mmaqd's allow-list."""


def _history_buffer_attribute(obj: Any, name: str) -> Callable:
    """The only ``getattr`` a checkpoint may perform while it is unpickled.

    A pickled :class:`HistoryBuffer` refers to its statistics methods as
    ``getattr(HistoryBuffer, 'mean')``; anything else is refused, so ``getattr``
    cannot be used to reach other objects.
    """
    if obj is HistoryBuffer and name in ('min', 'max', 'mean', 'current'):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint')


def checkpoint_safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """Globals an mmengine/mmdet checkpoint may contain, for ``torch.load``.

    Returns:
        list: Objects (and ``(substitute, 'module.name')`` pairs) for
        :func:`torch.serialization.safe_globals`.
    """
    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        np._core.multiarray._reconstruct,
        np._core.multiarray.scalar,
        *(type(np.dtype(t)) for t in _NUMPY_DTYPES),
        (_history_buffer_attribute, f'{builtins.__name__}.getattr'),
    ]


def load_from_local_weights_only(filename: str, map_location: Optional[Any] = None) -> Any:
    """Load a local checkpoint with ``weights_only=True`` and mmaqd's allow-list.

    Args:
        filename (str): Path of the checkpoint.
        map_location (optional): Same as for :func:`torch.load`.

    Returns:
        The unpickled checkpoint (usually a dict).

    Raises:
        FileNotFoundError: No such file.
        UnsafeCheckpointError: The checkpoint holds an object outside the allow-list.
        RuntimeError: The file is truncated, corrupt or not a torch checkpoint.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename!r} does not exist')
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = _DISALLOWED_CONTENT.search(text)
        if found is None:
            # The unpickler stopped on bytes that are no valid pickle at all.
            corrupt = _UNPICKLER_DETAIL.search(text)
            raise _not_a_checkpoint(filename, corrupt.group(1) if corrupt else text) from err
        raise UnsafeCheckpointError(
            f'refusing to load checkpoint {filename!r}: it contains a pickled object '
            f'outside the allow-list of mmengine/mmdet checkpoint contents '
            f'({found.group(1)}). Unpickling it could run arbitrary code.') from err
    except PermissionError:
        raise
    except (RuntimeError, EOFError, OSError, LookupError, ValueError, AssertionError,
            struct.error) as err:
        # Besides torch's RuntimeErrors ("not a ZIP archive", ...), a cut zip archive can
        # give ``OSError: Invalid argument`` and the weights-only unpickler lets plain
        # errors escape on garbage, e.g. ``KeyError: 101`` for a text file.
        detail = str(err) if isinstance(err, RuntimeError) else type(err).__name__
        if not isinstance(err, RuntimeError) and str(err):
            detail += f': {err}'
        raise _not_a_checkpoint(filename, detail) from err


# Modules whose globals torch / mmengine checkpoints (also legacy, non-zip ones) refer to.
_CHECKPOINT_MODULES = ('torch', 'collections', 'numpy', 'mmengine', '_codecs')


def _foreign_globals(filename: str) -> List[str]:
    """The globals a plain (non-zip) pickle refers to outside checkpoint modules.

    The opcodes are only read (:func:`pickletools.genops`), nothing is unpickled.
    torch's weights-only unpickler stops at the first opcode it does not know
    (e.g. protocol 4's FRAME), before it reaches a global, so without this scan a
    pickle that would run code looked like a broken file.
    """
    if zipfile.is_zipfile(filename):
        return []
    found, strings = [], []
    try:
        with open(filename, 'rb') as f:
            if f.read(1) != pickle.PROTO:  # pickles of protocol 2+ (torch.save's) start so
                return []
            f.seek(0)
            for opcode, arg, _ in pickletools.genops(f):
                if opcode.name in ('GLOBAL', 'INST'):
                    found.append(str(arg).replace(' ', '.'))
                elif opcode.name == 'STACK_GLOBAL' and len(strings) >= 2:
                    found.append(f'{strings[-2]}.{strings[-1]}')
                elif isinstance(arg, str):
                    strings.append(arg)
    except (ValueError, EOFError, UnicodeDecodeError):
        pass  # a cut or garbled pickle: keep what was read
    return [g for g in found if g.split('.')[0] not in _CHECKPOINT_MODULES]


def _not_a_checkpoint(filename: str, detail: str) -> RuntimeError:
    foreign = _foreign_globals(filename)
    if foreign:
        return UnsafeCheckpointError(
            f'refusing to load checkpoint {filename!r}: it is a plain pickle that refers to '
            f'{", ".join(sorted(set(foreign))[:5])}, outside the allow-list of mmengine/mmdet '
            f'checkpoint contents. Unpickling it could run arbitrary code.')
    return RuntimeError(f'checkpoint {filename!r} is truncated or not a torch checkpoint: '
                        f'{detail}')


# '' is mmengine's fallback scheme: every local path (resume, load_from, test) lands here.
# mmengine logs the loader's name minus its first 10 characters ('local_weights_only').
CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_weights_only, force=True)
