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
nothing but those constants and the op table (:data:`~mmaqd.integer.layers.OPS`),
whose classes are also the engine's modules: the engine, the recorder and the
program compute every op with the same function.
"""
import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from . import ops
from .detector import IntegerDetector, integer_image
from .layers import OPS

Program = Dict[str, Any]
Constants = Dict[str, Dict[str, Any]]

#: The ops a program step may have (the names of :data:`~mmaqd.integer.layers.OPS`).
PROGRAM_OPS = tuple(OPS)


class ProgramError(ValueError):
    """A forward pass could not be recorded, or a program is malformed."""


def layer_constants(layer: nn.Module) -> Dict[str, Any]:
    """A copy of an integer layer's constants, as :func:`run_program` uses them.

    Args:
        layer (IntConv | IntAdd): The layer.

    Returns:
        dict: See :meth:`IntConv.constants <mmaqd.integer.layers.IntConv.constants>`
        and :meth:`IntAdd.constants <mmaqd.integer.layers.IntAdd.constants>`.

    Raises:
        ProgramError: For any other module.
    """
    if not hasattr(layer, 'constants') or type(layer) not in OPS.values():
        raise ProgramError(f'{type(layer).__name__} is not an integer layer (IntConv / IntAdd)')
    return {k: v.clone() if isinstance(v, torch.Tensor) else v
            for k, v in layer.constants().items()}


class ProgramRecorder:
    """Records the calls of the op-table modules of one forward pass as program steps.

    Forward hooks on the engine's :data:`~mmaqd.integer.layers.OPS` modules (and
    nothing else: no function or class is replaced) map each call's tensors to
    ids and append a step. Use it as a context manager around the forward pass.

    Args:
        engine (nn.Module): The integer engine.
        image (Tensor): The integer image the forward pass starts from.
    """

    def __init__(self, engine: nn.Module, image: torch.Tensor) -> None:
        self.engine = engine
        self.steps: List[Dict[str, Any]] = []
        self.layers: Dict[str, nn.Module] = {}
        self._ids: Dict[int, int] = {}
        # Holding every recorded tensor keeps its id() from being reused.
        self._alive: List[torch.Tensor] = []
        self._handles: List[torch.utils.hooks.RemovableHandle] = []
        self.input_id = self._new_id(image)

    def _new_id(self, tensor: torch.Tensor) -> int:
        tid = len(self._alive)
        self._alive.append(tensor)
        self._ids[id(tensor)] = tid
        return tid

    def lookup(self, tensor: torch.Tensor, op: str) -> int:
        """The id of a tensor the input or a recorded step produced."""
        try:
            return self._ids[id(tensor)]
        except KeyError:
            raise ProgramError(f'{op} got a tensor that neither the input nor a recorded step '
                               f'produced: the engine computes outside the modules of the op '
                               f'table ({", ".join(OPS)})') from None

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        bound.apply_defaults()
        call = bound.arguments
        step = {'op': module.op, 'inputs': [self.lookup(call[a], module.op)
                                            for a in module.inputs]}
        for key, value in module.step(call).items():
            step[key] = self.lookup(value, module.op) if isinstance(value, torch.Tensor) \
                else value
        if 'layer' in step:
            known = self.layers.setdefault(step['layer'], module)
            if known is not module:
                raise ProgramError(f'two integer layers are both named {step["layer"]!r}')
        step['output'] = self._new_id(output)
        self.steps.append(step)

    def __enter__(self) -> 'ProgramRecorder':
        op_types = tuple(OPS.values())
        self._handles = [m.register_forward_hook(self._hook, with_kwargs=True)
                         for m in self.engine.modules() if isinstance(m, op_types)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def record_program(engine: IntegerDetector,
                   example_image: torch.Tensor) -> Tuple[Program, Constants]:
    """Record an engine's forward pass (``arith='int'``) as a flat program.

    Every call of an op-table module (:data:`~mmaqd.integer.layers.OPS`: IntConv,
    IntAdd, IntMaxPool, IntUpsample, IntReLU) becomes a step; the ops a layer
    computes inside belong to that layer.

    Args:
        engine (IntegerDetector): The engine.
        example_image (Tensor): An integer image ``(N, 3, H, W)``; the program does
            not depend on its values or size.

    Returns:
        tuple[dict, dict]: The program and the constants of its layers
        (:func:`layer_constants`), keyed by layer name.

    Raises:
        ProgramError: If the forward pass computes outside the op-table modules.
    """
    image = integer_image(example_image, 'int')
    with ProgramRecorder(engine, image) as recorder, torch.no_grad():
        outputs = engine(image, 'int')
    output_ids = [[recorder.lookup(t, 'output') for t in kind] for kind in outputs]
    program = {'input': recorder.input_id, 'steps': recorder.steps, 'outputs': output_ids}
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
                arith: str = 'int',
                observe: Optional[Callable[[int, torch.Tensor], None]] = None
                ) -> Tuple[List[torch.Tensor], ...]:
    """Execute a program with :mod:`~mmaqd.integer.ops` and the layers' constants.

    Args:
        program (dict): From :func:`record_program`.
        constants (dict): Layer name -> constants (:func:`layer_constants`).
        image (Tensor): The integer image ``pixel - mean`` ``(N, 3, H, W)``.
        arith (str): ``'int'`` (int64) or ``'float'`` (the float64 simulation).
            Defaults to ``'int'``.
        observe (callable, optional): Called as ``observe(tensor_id, values)`` for
            every tensor the program computes (e.g. to collect value ranges).

    Returns:
        tuple[list[Tensor]]: Per output kind, per level, the integer outputs.
    """
    ops.check_arith(arith)
    values = {program['input']: integer_image(image, arith)}
    release = {}
    for tid, index in _last_reads(program).items():
        release.setdefault(index, []).append(tid)
    for index, step in enumerate(program['steps']):
        if step['op'] not in OPS:
            raise ProgramError(f'step {index}: unknown op {step["op"]!r}')
        values[step['output']] = OPS[step['op']].run(step, constants, values.__getitem__,
                                                     arith)
        if observe is not None:
            observe(step['output'], values[step['output']])
        for tid in release.get(index, ()):
            del values[tid]
    return tuple([values[tid] for tid in kind] for kind in program['outputs'])


__all__ = ['PROGRAM_OPS', 'ProgramError', 'layer_constants', 'record_program',
           'check_program', 'run_program']
