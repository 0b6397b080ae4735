"""The layer graph of an integer engine: a flat program recorded from one forward pass.

A program is a plain dict (ints, strings, lists, dicts only)::

    {'input': 0,
     'steps': [{'op': 'conv', 'inputs': [0], 'output': 1,
                'layer': 'backbone.conv1', 'level': 0}, ...],
     'outputs': [[id, ...] per level, ...] per output kind}

Each step reads tensors by id and writes a new id. Ops and their parameters:

============  ===============================================================
``conv``      :class:`~.layers.IntConv` ``layer`` at pyramid ``level``
``add``       :class:`~.layers.IntAdd` ``layer`` on ``inputs[0]``, ``inputs[1]``
``max_pool``  ``kernel_size``, ``stride``, ``padding``
``upsample``  nearest, to the H, W of tensor ``size_of`` (shape-generic)
``relu``      ``max(x, 0)``
============  ===============================================================

The constants the steps refer to are kept apart, one dict per layer (see
:func:`layer_constants`), so that a program runs with :func:`run_program` on
nothing but :mod:`~mmaqd.integer.ops` and those constants.
"""
import inspect
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import ops
from .detector import IntegerDetector, integer_image
from .layers import IntAdd, IntConv

Program = Dict[str, Any]
Constants = Dict[str, Dict[str, Any]]

#: The ops a program step may have.
PROGRAM_OPS = ('conv', 'add', 'max_pool', 'upsample', 'relu')


class ProgramError(ValueError):
    """A forward pass could not be recorded, or a program is malformed."""


def _plain_geometry(value: Union[int, str, Sequence[int]]) -> Union[int, str, List[int]]:
    """A conv / pool geometry argument as an int, a string or a list of ints."""
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list, torch.Size)):
        return [int(v) for v in value]
    return int(value)


def layer_constants(layer: nn.Module) -> Dict[str, Any]:
    """The constants of an integer layer, as :func:`run_program` uses them.

    Args:
        layer (IntConv | IntAdd): The layer.

    Returns:
        dict: For a conv: ``op='conv'``, ``weight`` (int64 codes), ``num_levels``,
        ``in_range``, ``relu`` (0/1), ``stride``, ``padding``, ``dilation``,
        ``groups``, float64 ``(levels, C)`` ``out_unit`` (metadata, e.g. for ONNX
        export: the engine never reads it) and, where the layer has them, int64
        ``(levels, C)`` tensors ``in_m0``, ``in_shift``, ``bias`` and ``sign`` and
        the declared weight bits ``w_bits``. For an add: ``op='add'``, int64
        ``mantissa_x``, ``mantissa_y``, ``frac_bits``, ``relu`` and float64 ``(C,)``
        ``out_unit``.

    Raises:
        ProgramError: For any other module.
    """
    if isinstance(layer, IntConv):
        consts = {'op': 'conv', 'weight': layer.weight.clone(), 'num_levels': layer.num_levels,
                  'in_range': list(layer.in_range), 'relu': int(layer.relu),
                  'stride': _plain_geometry(layer.stride),
                  'padding': _plain_geometry(layer.padding),
                  'dilation': _plain_geometry(layer.dilation), 'groups': int(layer.groups),
                  'out_unit': layer.out_unit.clone()}
        for key in ('in_m0', 'in_shift', 'bias', 'sign'):
            if getattr(layer, key) is not None:
                consts[key] = getattr(layer, key).clone()
        if getattr(layer, 'w_bits', None) is not None:
            consts['w_bits'] = int(layer.w_bits)
        return consts
    if isinstance(layer, IntAdd):
        return {'op': 'add', 'mantissa_x': layer.mantissa_x.clone(),
                'mantissa_y': layer.mantissa_y.clone(), 'frac_bits': int(layer.frac_bits),
                'relu': int(layer.relu), 'out_unit': layer.out_unit.clone()}
    raise ProgramError(f'{type(layer).__name__} is not an integer layer (IntConv / IntAdd)')


class _Recorder:
    """Maps the tensors of one forward pass to program ids and collects the steps."""

    def __init__(self) -> None:
        self.steps: List[Dict[str, Any]] = []
        self.layers: Dict[str, nn.Module] = {}
        self.sizes: Dict[int, Tuple[int, int]] = {}
        self.depth = 0
        self._ids: Dict[int, int] = {}
        # Holding every recorded tensor keeps its id() from being reused.
        self._alive: List[torch.Tensor] = []

    def _new_id(self, tensor: torch.Tensor) -> int:
        tid = len(self._alive)
        self._alive.append(tensor)
        self._ids[id(tensor)] = tid
        self.sizes[tid] = tuple(int(s) for s in tensor.shape[-2:])
        return tid

    def add_input(self, tensor: torch.Tensor) -> int:
        return self._new_id(tensor)

    def lookup(self, tensor: torch.Tensor, op: str) -> int:
        try:
            return self._ids[id(tensor)]
        except KeyError:
            raise ProgramError(f'{op} got a tensor that neither the input nor a recorded step '
                               f'produced: the engine computes on tensors outside IntConv, '
                               f'IntAdd and the recorded ops') from None

    def layer_key(self, layer: nn.Module) -> str:
        known = self.layers.setdefault(layer.name, layer)
        if known is not layer:
            raise ProgramError(f'two integer layers are both named {layer.name!r}')
        return layer.name

    def record(self, op: str, inputs: Sequence[torch.Tensor], output: torch.Tensor,
               **params: Any) -> None:
        step = {'op': op, 'inputs': [self.lookup(t, op) for t in inputs]}
        step['output'] = self._new_id(output)
        step.update(params)
        self.steps.append(step)


def _wrap_layer(recorder: _Recorder, forward, op: str, tensor_args: Sequence[str]):
    """Wrap IntConv.forward / IntAdd.forward to record a step for each outermost call."""
    signature = inspect.signature(forward)

    def wrapped(module: nn.Module, *args, **kwargs):
        bound = signature.bind(module, *args, **kwargs)
        bound.apply_defaults()
        recorder.depth += 1
        try:
            out = forward(module, *args, **kwargs)
        finally:
            recorder.depth -= 1
        if recorder.depth == 0:
            params = {'layer': recorder.layer_key(module)}
            if op == 'conv':
                params['level'] = int(bound.arguments['level'])
            recorder.record(op, [bound.arguments[a] for a in tensor_args], out, **params)
        return out

    return wrapped


def _wrap_ops(recorder: _Recorder, originals: Dict[str, Any]) -> Dict[str, Any]:
    """Recording versions of ops.max_pool2d, ops.upsample_nearest and ops.relu."""

    def max_pool2d(x, kernel_size, stride, padding):
        out = originals['max_pool2d'](x, kernel_size, stride, padding)
        if recorder.depth == 0:
            recorder.record('max_pool', [x], out, kernel_size=_plain_geometry(kernel_size),
                            stride=_plain_geometry(stride), padding=_plain_geometry(padding))
        return out

    def upsample_nearest(x, size):
        out = originals['upsample_nearest'](x, size)
        if recorder.depth == 0:
            recorder.record('upsample', [x], out, target=[int(s) for s in size])
        return out

    def relu(x):
        out = originals['relu'](x)
        if recorder.depth == 0:
            recorder.record('relu', [x], out)
        return out

    return {'max_pool2d': max_pool2d, 'upsample_nearest': upsample_nearest, 'relu': relu}


def _resolve_upsample_sizes(steps: List[Dict[str, Any]], sizes: Dict[int, Tuple[int, int]],
                            input_id: int) -> None:
    """Replace each upsample's recorded target size by the id of a tensor of that size.

    The recorded size holds for the example image only. The tensor kept is the
    other operand of the add that consumes the upsampled tensor (FPN's top-down
    path upsamples to the lateral it is added to); without one, the latest tensor
    of that size computed before the upsample.
    """
    producer = {input_id: -1}
    for index, step in enumerate(steps):
        producer[step['output']] = index
    for index, step in enumerate(steps):
        if step['op'] != 'upsample':
            continue
        target = tuple(step.pop('target'))
        earlier = [tid for tid, size in sizes.items()
                   if size == target and tid in producer and producer[tid] < index]
        partners = [tid for later in steps[index + 1:] if later['op'] == 'add' and
                    step['output'] in later['inputs']
                    for tid in later['inputs'] if tid != step['output']]
        chosen = [tid for tid in partners if tid in earlier]
        if chosen:
            step['size_of'] = chosen[0]
        elif earlier:
            step['size_of'] = max(earlier, key=lambda tid: producer[tid])
        else:
            raise ProgramError(f'upsample to {target}: no tensor computed before it has that '
                               f'size, so the target size cannot be expressed')


def record_program(engine: IntegerDetector,
                   example_image: torch.Tensor) -> Tuple[Program, Constants]:
    """Record an engine's forward pass (``arith='int'``) as a flat program.

    IntConv / IntAdd calls and the module-level calls to ``ops.max_pool2d``,
    ``ops.upsample_nearest`` and ``ops.relu`` become steps; calls made inside an
    IntConv / IntAdd belong to that layer and are not recorded.

    Args:
        engine (IntegerDetector): The engine.
        example_image (Tensor): An integer image ``(N, 3, H, W)``; the program does
            not depend on its values or size.

    Returns:
        tuple[dict, dict]: The program and the constants of its layers
        (:func:`layer_constants`), keyed by layer name.

    Raises:
        ProgramError: If the forward pass computes outside the recorded calls.
    """
    recorder = _Recorder()
    image = integer_image(example_image, 'int')
    input_id = recorder.add_input(image)
    names = ('max_pool2d', 'upsample_nearest', 'relu')
    originals = {name: getattr(ops, name) for name in names}
    forwards = {IntConv: IntConv.forward, IntAdd: IntAdd.forward}
    try:
        for name, fn in _wrap_ops(recorder, originals).items():
            setattr(ops, name, fn)
        IntConv.forward = _wrap_layer(recorder, forwards[IntConv], 'conv', ['x'])
        IntAdd.forward = _wrap_layer(recorder, forwards[IntAdd], 'add', ['x', 'y'])
        with torch.no_grad():
            outputs = engine(image, 'int')
        output_ids = [[recorder.lookup(t, 'output') for t in kind] for kind in outputs]
    finally:
        for name, fn in originals.items():
            setattr(ops, name, fn)
        for cls, forward in forwards.items():
            cls.forward = forward
    _resolve_upsample_sizes(recorder.steps, recorder.sizes, input_id)
    program = {'input': input_id, 'steps': recorder.steps, 'outputs': output_ids}
    check_program(program)
    constants = {key: layer_constants(layer) for key, layer in recorder.layers.items()}
    return program, constants


def check_program(program: Program, constants: Optional[Constants] = None) -> None:
    """Check that every step reads defined tensors and known layers.

    Args:
        program (dict): The program.
        constants (dict, optional): Its constants; if given, every layer a step
            names must be there with the step's op.

    Raises:
        ProgramError: Naming the first fault.
    """
    defined = {program['input']}
    for index, step in enumerate(program['steps']):
        op = step.get('op')
        if op not in PROGRAM_OPS:
            raise ProgramError(f'step {index}: unknown op {op!r}')
        reads = list(step['inputs']) + ([step['size_of']] if op == 'upsample' else [])
        missing = [tid for tid in reads if tid not in defined]
        if missing:
            raise ProgramError(f'step {index} ({op}) reads undefined tensor(s) {missing}')
        if op in ('conv', 'add') and constants is not None:
            layer = constants.get(step['layer'])
            if layer is None or layer['op'] != op:
                raise ProgramError(f'step {index}: no {op} layer {step["layer"]!r}')
        if step['output'] in defined:
            raise ProgramError(f'step {index} ({op}) overwrites tensor {step["output"]}')
        defined.add(step['output'])
    undefined = [tid for kind in program['outputs'] for tid in kind if tid not in defined]
    if undefined:
        raise ProgramError(f'program outputs {undefined} are never computed')


def _run_conv(consts: Dict[str, Any], x: torch.Tensor, level: int, arith: str) -> torch.Tensor:
    if not 0 <= level < consts['num_levels']:
        raise ProgramError(f'level {level} is out of range for {consts["num_levels"]} levels')
    if 'in_m0' in consts:
        x = ops.requantize(x, consts['in_m0'][level], consts['in_shift'][level],
                           *consts['in_range'], arith)
    bias = consts['bias'][level] if 'bias' in consts else None
    out = ops.conv2d(x, consts['weight'], bias, consts['stride'], consts['padding'],
                     consts['dilation'], consts['groups'], arith)
    if 'sign' in consts:
        out = out * ops.as_arith(consts['sign'][level], arith).view(1, -1, 1, 1)
    return ops.relu(out) if consts['relu'] else out


def _run_add(consts: Dict[str, Any], x: torch.Tensor, y: torch.Tensor, arith: str) -> torch.Tensor:
    out = (ops.rescale_fixed(x, consts['mantissa_x'], consts['frac_bits'], arith) +
           ops.rescale_fixed(y, consts['mantissa_y'], consts['frac_bits'], arith))
    return ops.relu(out) if consts['relu'] else out


def _last_reads(program: Program) -> Dict[int, int]:
    """The index of the last step reading each tensor (outputs are never released)."""
    last = {}
    for index, step in enumerate(program['steps']):
        reads = step['inputs'] + ([step['size_of']] if step['op'] == 'upsample' else [])
        for tid in reads:
            last[tid] = index
    for kind in program['outputs']:
        for tid in kind:
            last.pop(tid, None)
    return last


def run_program(program: Program, constants: Constants, image: torch.Tensor,
                arith: str = 'int') -> Tuple[List[torch.Tensor], ...]:
    """Execute a program with :mod:`~mmaqd.integer.ops` and the layers' constants.

    Args:
        program (dict): From :func:`record_program`.
        constants (dict): Layer name -> constants (:func:`layer_constants`).
        image (Tensor): The integer image ``pixel - mean`` ``(N, 3, H, W)``.
        arith (str): ``'int'`` (int64) or ``'float'`` (the float64 simulation).
            Defaults to ``'int'``.

    Returns:
        tuple[list[Tensor]]: Per output kind, per level, the integer outputs.
    """
    ops.check_arith(arith)
    values = {program['input']: integer_image(image, arith)}
    release = {}
    for tid, index in _last_reads(program).items():
        release.setdefault(index, []).append(tid)
    for index, step in enumerate(program['steps']):
        op = step['op']
        args = [values[tid] for tid in step['inputs']]
        if op == 'conv':
            out = _run_conv(constants[step['layer']], args[0], step['level'], arith)
        elif op == 'add':
            out = _run_add(constants[step['layer']], args[0], args[1], arith)
        elif op == 'max_pool':
            out = ops.max_pool2d(args[0], step['kernel_size'], step['stride'], step['padding'])
        elif op == 'upsample':
            out = ops.upsample_nearest(args[0], values[step['size_of']].shape[-2:])
        elif op == 'relu':
            out = ops.relu(args[0])
        else:
            raise ProgramError(f'step {index}: unknown op {op!r}')
        values[step['output']] = out
        for tid in release.get(index, ()):
            del values[tid]
    return tuple([values[tid] for tid in kind] for kind in program['outputs'])


__all__ = ['PROGRAM_OPS', 'ProgramError', 'layer_constants', 'record_program',
           'check_program', 'run_program']
