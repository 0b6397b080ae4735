"""Deployment export of an integer engine: one self-contained, weights-only file.

:func:`export_integer` writes, with :func:`torch.save`, a dict of tensors, ints,
floats, strings, lists and dicts only, so that it loads with
``torch.load(path, weights_only=True)``::

    format       'mmaqd-integer'
    version      FORMAT_VERSION
    input        {'channels': int, 'bits': int}   the integer image (pixel - mean)
    program      the layer graph (:mod:`~mmaqd.integer.program`)
    layers       name -> conv or add record (below)
    outputs      {'kinds': [str], 'units': [[float64 (C,)] per level] per kind}

A conv record: ``op='conv'``; ``weight`` = ``{'packed': uint8, 'shape', 'bits',
'signed'}`` (:func:`~mmaqd.integer.packing.pack_codes`); ``w_bits`` (declared
weight bits; absent if unknown); ``num_levels``; ``in_range`` ``[qmin, qmax]``;
``relu`` (0/1); ``stride``, ``padding``, ``dilation``, ``groups``; and, per level
where the layer has them, ``in_m0`` (int32) and ``in_shift`` (int8) ``(L, C_in)``,
``bias`` (int32) and ``sign`` (int8) ``(L, C_out)``. An add record: ``op='add'``,
``mantissa_x``, ``mantissa_y`` (int64 ``(C,)``: a ratio of two units can exceed
2^16), ``frac_bits``, ``relu``.

:func:`load_integer` turns the file back into an :class:`IntegerProgram` that runs
on :func:`~mmaqd.integer.program.run_program`: nothing of the training code,
mmdet or the engine's modules is needed.
"""
import os
from typing import Any, Dict, List, Optional, Tuple

import torch

from .convert import IMAGE_BITS
from .detector import IntegerDetector, real_values
from .packing import pack_codes, signed_bits_needed, unpack_codes
from .program import Constants, Program, check_program, record_program, run_program

Outputs = Tuple[List[torch.Tensor], ...]

FORMAT_NAME = 'mmaqd-integer'
FORMAT_VERSION = 1


_INT_DTYPES = {'in_m0': torch.int32, 'in_shift': torch.int8, 'bias': torch.int32,
               'sign': torch.int8, 'mantissa_x': torch.int64, 'mantissa_y': torch.int64}
_CONV_SCALARS = ('num_levels', 'in_range', 'relu', 'stride', 'padding', 'dilation', 'groups')


class ExportError(ValueError):
    """An engine cannot be written in the deployment format; the message says why."""


def weight_storage_bits(codes: torch.Tensor, w_bits: Optional[int], name: str) -> int:
    """Bits per stored weight code: the declared width, or one more if the codes need it.

    LSQ codes lie in ``[-2^(b-1), 2^(b-1)-1]`` and take ``b`` bits; the Clip
    quantizer's odd codes ``-(2^b-1)..2^b-1`` take ``b + 1``.

    Args:
        codes (Tensor): The integer weight codes.
        w_bits (int, optional): The declared weight bit width; None if unknown
            (then the codes' range alone decides).
        name (str): The layer, for messages.

    Returns:
        int: The bit width to pack with.

    Raises:
        ExportError: If the codes need more than ``w_bits + 1`` bits.
    """
    needed = signed_bits_needed(codes)
    if w_bits is None:
        return needed
    if needed > w_bits + 1:
        raise ExportError(f'{name}: weight codes {int(codes.min())}..{int(codes.max())} need '
                          f'{needed} bits, more than the declared {w_bits} (+1 for Clip)')
    return max(int(w_bits), needed)


def _narrow(tensor: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    """Convert an int64 tensor to a narrower dtype, refusing values that do not fit."""
    info = torch.iinfo(dtype)
    if tensor.numel() and (tensor.min() < info.min or tensor.max() > info.max):
        raise ExportError(f'{what}: values {int(tensor.min())}..{int(tensor.max())} do not fit '
                          f'{dtype} ({info.min}..{info.max})')
    return tensor.to(dtype).clone()


def _export_layer(name: str, consts: Dict[str, Any]) -> Dict[str, Any]:
    record = {'op': consts['op']}
    for key, dtype in _INT_DTYPES.items():
        if key in consts:
            record[key] = _narrow(consts[key], dtype, f'{name}.{key}')
    if consts['op'] == 'add':
        record.update(frac_bits=consts['frac_bits'], relu=consts['relu'])
        return record
    w_bits = consts.get('w_bits')
    bits = weight_storage_bits(consts['weight'], w_bits, name)
    packed, meta = pack_codes(consts['weight'], bits, signed=True)
    record['weight'] = dict(meta, packed=packed)
    if w_bits is not None:
        record['w_bits'] = w_bits
    record.update({key: consts[key] for key in _CONV_SCALARS})
    return record


def _import_layer(record: Dict[str, Any]) -> Dict[str, Any]:
    consts = {'op': record['op']}
    for key in _INT_DTYPES:
        if key in record:
            consts[key] = record[key].to(torch.int64)
    if record['op'] == 'add':
        consts.update(frac_bits=record['frac_bits'], relu=record['relu'])
        return consts
    consts['weight'] = unpack_codes(record['weight']['packed'], record['weight'])
    if 'w_bits' in record:
        consts['w_bits'] = record['w_bits']
    consts.update({key: record[key] for key in _CONV_SCALARS})
    return consts


def _check_plain(obj: Any, where: str) -> None:
    """Refuse anything but tensors, ints, floats, strings, lists and dicts (str keys)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if type(key) is not str:
                raise ExportError(f'{where}: key {key!r} is not a string')
            _check_plain(value, f'{where}.{key}')
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _check_plain(value, f'{where}[{i}]')
    elif not (isinstance(obj, torch.Tensor) or type(obj) in (int, float, str)):
        raise ExportError(f'{where}: {type(obj).__name__} is not allowed in the export')


def export_payload(engine: IntegerDetector, example_image: torch.Tensor) -> Dict[str, Any]:
    """The dict :func:`export_integer` saves (see the module docstring).

    Args:
        engine (IntegerDetector): The engine.
        example_image (Tensor): An integer image to record the program with.

    Returns:
        dict: The payload.

    Raises:
        ExportError: If a constant does not fit its stored dtype or a value is
            not of a plain type.
    """
    program, constants = record_program(engine, example_image)
    layers = {name: _export_layer(name, consts) for name, consts in constants.items()}
    head = engine.head
    units = [[u.detach().to(torch.float64).clone() for u in kind]
             for kind in head.output_units()]
    payload = {
        'format': FORMAT_NAME,
        'version': FORMAT_VERSION,
        'input': {'channels': int(example_image.shape[1]), 'bits': IMAGE_BITS},
        'program': program,
        'layers': layers,
        'outputs': {'kinds': list(head.kinds),
                    'units': units},
    }
    _check_plain(payload, 'export')
    return payload


class IntegerProgram:
    """A loaded integer program: image in, integer head outputs out.

    Args:
        program (dict): The layer graph.
        constants (dict): Layer name -> constants, as :func:`run_program` uses them.
        units (list[list[Tensor]]): Per output kind, per level, the float64 unit.
        kinds (list[str]): Names of the output kinds.
    """

    def __init__(self, program: Program, constants: Constants,
                 units: List[List[torch.Tensor]], kinds: List[str]) -> None:
        check_program(program, constants)
        self.program = program
        self.constants = constants
        self.kinds = list(kinds)
        self._units = units

    def __call__(self, image: torch.Tensor, arith: str = 'int') -> Outputs:
        """Run the program on an integer image ``pixel - mean`` ``(N, 3, H, W)``.

        Args:
            image (Tensor): The integer image.
            arith (str): ``'int'`` or ``'float'``. Defaults to ``'int'``.

        Returns:
            tuple[list[Tensor]]: Per output kind, per level, the integer outputs.
        """
        return run_program(self.program, self.constants, image, arith)

    def output_units(self) -> Outputs:
        """Per output kind, per level: the real unit of the integer outputs."""
        return tuple(list(kind) for kind in self._units)

    def real_outputs(self, outputs: Outputs) -> Outputs:
        """Multiply integer outputs by their units (float32, for post-processing)."""
        return real_values(outputs, self._units)


def program_from_payload(payload: Dict[str, Any]) -> IntegerProgram:
    """Build an :class:`IntegerProgram` from a loaded export.

    Raises:
        ExportError: For another format or version.
    """
    if payload.get('format') != FORMAT_NAME or payload.get('version') != FORMAT_VERSION:
        raise ExportError(f'not an {FORMAT_NAME} v{FORMAT_VERSION} file (format '
                          f'{payload.get("format")!r}, version {payload.get("version")!r})')
    constants = {name: _import_layer(record) for name, record in payload['layers'].items()}
    outputs = payload['outputs']
    return IntegerProgram(payload['program'], constants, outputs['units'], outputs['kinds'])


def _same_outputs(a: Outputs, b: Outputs) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


def export_integer(engine: IntegerDetector, path: str, example_image: torch.Tensor,
                   verify: bool = True) -> Dict[str, Any]:
    """Write an engine to one self-contained file.

    Args:
        engine (IntegerDetector): The engine.
        path (str): The output file.
        example_image (Tensor): An integer image ``(N, 3, H, W)`` to record the
            program with (any size: the program is shape-generic).
        verify (bool): Reload the file and check that it reproduces the engine's
            outputs on ``example_image`` exactly. Defaults to True.

    Returns:
        dict: The saved payload.

    Raises:
        ExportError: If the engine cannot be exported, or the reloaded program
            disagrees with the engine.
    """
    payload = export_payload(engine, example_image)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    torch.save(payload, path)
    if verify:
        with torch.no_grad():
            expected = engine(example_image, 'int')
        if not _same_outputs(load_integer(path)(example_image, 'int'), expected):
            raise ExportError(f'{path}: the exported program does not reproduce the engine')
    return payload


def load_integer(path: str) -> IntegerProgram:
    """Load a file written by :func:`export_integer` (``weights_only=True``).

    Args:
        path (str): The file.

    Returns:
        IntegerProgram: The runnable program.
    """
    return program_from_payload(torch.load(path, map_location='cpu', weights_only=True))


def weight_statistics(payload: Dict[str, Any]) -> Dict[str, Any]:
    """Sizes of an export's conv weights.

    Args:
        payload (dict): From :func:`export_payload` / :func:`export_integer`.

    Returns:
        dict: ``num_layers`` (convs), ``num_adds``, ``weight_elements``,
        ``packed_weight_bytes``, ``fp32_weight_bytes`` (4 bytes per element),
        ``stored_bits`` (element-weighted mean of the packed widths) and
        ``declared_bits`` (element-weighted mean of ``w_bits``, or the stored
        width where unknown).
    """
    convs = [r for r in payload['layers'].values() if r['op'] == 'conv']
    elements = stored = declared = packed = 0
    for record in convs:
        weight = record['weight']
        numel = 1
        for s in weight['shape']:
            numel *= s
        elements += numel
        stored += numel * weight['bits']
        declared += numel * record.get('w_bits', weight['bits'])
        packed += weight['packed'].numel()
    return {'num_layers': len(convs), 'num_adds': len(payload['layers']) - len(convs),
            'weight_elements': elements, 'packed_weight_bytes': packed,
            'fp32_weight_bytes': 4 * elements, 'stored_bits': stored / max(elements, 1),
            'declared_bits': declared / max(elements, 1)}


__all__ = ['FORMAT_NAME', 'FORMAT_VERSION', 'ExportError', 'IntegerProgram',
           'weight_storage_bits', 'export_payload', 'export_integer', 'load_integer',
           'program_from_payload', 'weight_statistics']
