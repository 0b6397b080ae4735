"""ONNX (QDQ) form of an integer engine's program: image -> head outputs, onnxruntime-runnable.

The graph is written from the recorded program (:mod:`~mmaqd.integer.program`)
with the ``onnx`` package's helpers, one group of nodes per program step, so it
mirrors the integer engine layer by layer. Every tensor carries its real value
(float32); quantization is explicit in QuantizeLinear / DequantizeLinear pairs:

================  ==========================================================
program step      ONNX nodes
================  ==========================================================
conv input        [Max, Min] -> QuantizeLinear -> DequantizeLinear with the input
                  quantizer's step; codes of <= 4 bits in ``uint4``/``int4``,
                  up to 8 bits in ``uint8``/``int8`` (opset 21). A code range
                  narrower than its type (2/3/5-7 bits) is clipped first, so the
                  codes are exactly the quantizer's. The stem's input is the
                  integer image itself: ``int16``, step 1 (exact).
conv weight       DequantizeLinear of the integer codes (``int4`` if they fit,
                  else ``int8``), per output channel; the scale includes the
                  folded BN multiplier ``|g'|``, so conv outputs are in the
                  engine's output unit.
conv bias         DequantizeLinear of the int32 folded-BN bias (scale: input
                  step x weight scale), as QDQ bias inputs are.
BN sign, ReLU     Mul by the per-channel sign of ``g'`` (only if one is
                  negative), Relu.
add               each operand's integer value (Mul, Round) times the engine's
                  fixed-point ratio, rounded half up to the add's common unit
                  (Mul, Add 0.5, Floor, Mul); then Add [-> Relu]. Not
                  QuantizeLinear: the engine keeps residual sums at
                  accumulator resolution (int32), which opset 21's
                  QuantizeLinear cannot output; int16 QDQ needed coarser units
                  on the test models and then changed most of their outputs.
max pool, resize  MaxPool; nearest Resize (asymmetric, floor: PyTorch's nearest)
                  to the size of the tensor the engine takes it from.
================  ==========================================================

Head outputs are real values (the engine's integers times their units); mmdet's
post-processing stays outside the graph. Differences to the engine come from
float32 arithmetic (QuantizeLinear divides by the step where the engine multiplies
by a 31-bit fixed-point multiplier; residual sums beyond 2^24 accumulator units
lose their last bits), which flips a code where a value lies at a rounding
boundary.
"""
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .export import weight_storage_bits
from .layers import OPS
from .program import Constants, Program, record_program

#: The opset of the exported graphs: the first with int4 / uint4 QDQ.
ONNX_OPSET = 21
#: onnxruntime 1.23 reads models up to IR version 11; opset 21 needs IR 10.
ONNX_IR_VERSION = 10


class OnnxExportError(ValueError):
    """The program cannot be written as a QDQ ONNX graph; the message says why."""


def _onnx():
    try:
        import onnx
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError('ONNX export needs the onnx package: pip install -r '
                          'requirements/deploy.txt') from error
    return onnx


def _integer_types() -> Dict[int, Tuple[Any, int, int]]:
    """ONNX integer types of QDQ tensors: numpy dtype (ml_dtypes for 4 bits) and range.

    In the order QDQ codes try them (smallest first).
    """
    import ml_dtypes
    tp = _onnx().TensorProto
    return {tp.UINT4: (ml_dtypes.uint4, 0, 15), tp.INT4: (ml_dtypes.int4, -8, 7),
            tp.UINT8: (np.uint8, 0, 255), tp.INT8: (np.int8, -128, 127),
            tp.UINT16: (np.uint16, 0, 65535), tp.INT16: (np.int16, -32768, 32767),
            tp.INT32: (np.int32, -2**31, 2**31 - 1)}


def _code_type(qmin: int, qmax: int) -> Tuple[int, int, int]:
    """The smallest QDQ type (up to 16 bits) holding ``[qmin, qmax]``, and its range."""
    for dtype, (_, lo, hi) in _integer_types().items():
        if lo <= qmin and qmax <= hi and dtype != _onnx().TensorProto.INT32:
            return dtype, lo, hi
    raise OnnxExportError(f'code range {qmin}..{qmax} fits no QDQ type up to 16 bits')


class _GraphBuilder:
    """Collects nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: List[Any] = []
        self.initializers: List[Any] = []
        self._count = 0

    def name(self, hint: str) -> str:
        """A unique tensor name starting with ``hint``."""
        self._count += 1
        return f'{hint}_{self._count}'

    def const(self, hint: str, array: np.ndarray) -> str:
        """A float / int64 initializer holding ``array``; returns its name."""
        name = self.name(hint)
        self.initializers.append(_onnx().numpy_helper.from_array(np.asarray(array), name))
        return name

    def int_const(self, hint: str, dtype: int, values: np.ndarray) -> str:
        """An initializer of an ONNX integer type (int4 / uint4 included), stored raw.

        Raw little-endian bytes, 4-bit types packed two per byte: helper.make_tensor
        would store the values as varints (10 bytes each when negative).
        """
        name = self.name(hint)
        values = np.asarray(values, dtype=np.int64)
        np_type, lo, hi = _integer_types()[dtype]
        if values.size and (values.min() < lo or values.max() > hi):
            raise OnnxExportError(f'{name}: values {values.min()}..{values.max()} do not fit '
                                  f'{_onnx().TensorProto.DataType.Name(dtype)}')
        self.initializers.append(_onnx().numpy_helper.from_array(values.astype(np_type), name))
        return name

    def node(self, op: str, inputs: Sequence[str], hint: str, **attrs) -> str:
        """Append a node with one output; returns the output's name."""
        out = self.name(hint)
        self.nodes.append(_onnx().helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def qdq(self, x: str, scale: np.ndarray, qmin: int, qmax: int, hint: str,
            axis: int = 1) -> str:
        """[Max, Min ->] QuantizeLinear -> DequantizeLinear with codes in ``[qmin, qmax]``."""
        dtype, lo, hi = _code_type(qmin, qmax)
        scale = np.asarray(scale, dtype=np.float32)
        s = self.const(f'{hint}_scale', scale)
        zp_shape = list(scale.shape)
        zp = self.int_const(f'{hint}_zero', dtype, np.zeros(zp_shape, dtype=np.int64))
        attrs = {'axis': axis} if scale.ndim else {}
        if (qmin, qmax) != (lo, hi):
            shape = [1, -1, 1, 1] if scale.ndim else []
            lo_v = self.const(f'{hint}_min', (scale * qmin).reshape(shape))
            hi_v = self.const(f'{hint}_max', (scale * qmax).reshape(shape))
            # Max / Min rather than Clip: onnxruntime 1.23's Clip -> QuantizeLinear
            # fusion fails on 4-bit zero points.
            x = self.node('Min', [self.node('Max', [x, lo_v], f'{hint}_lo'), hi_v],
                          f'{hint}_hi')
        q = self.node('QuantizeLinear', [x, s, zp], f'{hint}_q', **attrs)
        return self.node('DequantizeLinear', [q, s, zp], f'{hint}_dq', **attrs)


def _input_step(consts: Dict[str, Any], level: int, in_unit: torch.Tensor, layer: str) -> float:
    """The conv's (per-tensor) input step ``s_x = unit_in / (M0 * 2^-n)``.

    A mantissa is the ratio ``unit_in * 2^n / s_x`` rounded to an integer, so it
    recovers ``s_x`` to about ``1 / (2 M0)`` relative: well below 1e-6 for the
    usual ``M0 >= 2^30``, coarse for the short mantissas of multipliers capped at
    the largest shift (a unit far below the step). The step is taken from the
    full-length mantissas, and every channel must round to its mantissa with it.
    """
    m0 = consts['in_m0'][level].double()
    shift = consts['in_shift'][level].double()
    scaled = in_unit.double().reshape(-1).expand_as(m0) * torch.pow(2.0, shift)
    steps = scaled / m0
    full = m0 >= 2**20
    step = float((steps[full] if full.any() else steps).median())
    # |unit * 2^n / step - M0| within the mantissa's rounding, or 1e-6 relative
    if not bool(((scaled / step - m0).abs() <= 0.5 + 1e-6 * m0).all()):
        raise OnnxExportError(f'{layer}: the input requantization is not one per-tensor step '
                              f'(steps {float(steps.min()):.6g}..{float(steps.max()):.6g})')
    return step


def _geometry(value, n: int = 2) -> List[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * n


class _Emitter:
    """Translate program steps into ONNX nodes, tracking each tensor's unit."""

    def __init__(self, program: Program, constants: Constants) -> None:
        self.program, self.constants = program, constants
        self.g = _GraphBuilder()
        self.names: Dict[int, str] = {}
        self.units: Dict[int, torch.Tensor] = {}
        self.weights: Dict[str, Tuple[str, int]] = {}
        #: One handler per op of the op table (:data:`~mmaqd.integer.layers.OPS`).
        self.handlers = {'conv': self.conv, 'add': self.add, 'max_pool': self.max_pool,
                         'upsample': self.upsample, 'relu': self.relu}
        missing = sorted(set(OPS) - set(self.handlers))
        if missing:
            raise OnnxExportError(f'ops {missing} of the op table have no ONNX handler')

    def weight(self, layer: str, consts: Dict[str, Any]) -> str:
        """The layer's integer weight initializer, shared by its levels."""
        if layer not in self.weights:
            codes = consts['weight']
            bits = weight_storage_bits(codes, consts.get('w_bits'), layer)
            tp = _onnx().TensorProto
            dtype = tp.INT4 if bits <= 4 else tp.INT8 if bits <= 8 else None
            if dtype is None:
                raise OnnxExportError(f'{layer}: {bits}-bit weight codes have no QDQ weight type')
            self.weights[layer] = (self.g.int_const(f'{layer}.weight', dtype, codes.numpy()),
                                   dtype)
        return self.weights[layer]

    def conv(self, index: int, step: Dict[str, Any], args: List[str],
             in_units: List[torch.Tensor]) -> Tuple[str, Any]:
        """Nodes of a conv step; its output and unit."""
        x, in_unit = args[0], in_units[0]
        layer, level = step['layer'], step['level']
        consts = self.constants[layer]
        hint = f'{layer}.l{level}'
        if 'in_m0' in consts:
            s_x = _input_step(consts, level, in_unit, layer)
            x = self.g.qdq(x, np.float32(s_x), *consts['in_range'], f'{hint}.input')
        else:  # the integer image (unit 1): exact in int16
            s_x = float(in_unit.double().mean())
            x = self.g.qdq(x, np.float32(s_x), -2**15, 2**15 - 1, f'{hint}.input')
        out_unit = consts['out_unit'][level].double()
        w_scale = (out_unit / s_x).numpy().astype(np.float32)
        w_name, w_type = self.weight(layer, consts)
        zero = self.g.int_const(f'{hint}.w_zero', w_type, np.zeros(len(w_scale), np.int64))
        w = self.g.node('DequantizeLinear', [w_name, self.g.const(f'{hint}.w_scale', w_scale),
                                             zero], f'{hint}.w_dq', axis=0)
        inputs = [x, w]
        if 'bias' in consts:
            bias = consts['bias'][level]
            if bias.abs().max() > 2**31 - 1:
                raise OnnxExportError(f'{layer}: folded BN bias {int(bias.abs().max())} does not '
                                      f'fit int32 (level {level}); a BN gamma near 0?')
            b_int = self.g.int_const(f'{hint}.bias', _onnx().TensorProto.INT32, bias.numpy())
            b_scale = self.g.const(f'{hint}.b_scale', out_unit.numpy().astype(np.float32))
            inputs.append(self.g.node('DequantizeLinear', [b_int, b_scale], f'{hint}.b_dq',
                                      axis=0))
        pads = _geometry(consts['padding'])
        out = self.g.node('Conv', inputs, f'{hint}.conv', strides=_geometry(consts['stride']),
                          pads=pads + pads, dilations=_geometry(consts['dilation']),
                          group=int(consts['groups']))
        if 'sign' in consts and bool((consts['sign'][level] < 0).any()):
            sign = consts['sign'][level].numpy().astype(np.float32).reshape(1, -1, 1, 1)
            out = self.g.node('Mul', [out, self.g.const(f'{hint}.sign', sign)], f'{hint}.sign')
        if consts['relu']:
            out = self.g.node('Relu', [out], f'{hint}.relu')
        return out, consts['out_unit'][level]

    def add(self, index: int, step: Dict[str, Any], args: List[str],
            in_units: List[torch.Tensor]) -> Tuple[str, Any]:
        """Nodes of an add step; its output and unit."""
        x, y = args
        layer = step['layer']
        consts = self.constants[layer]
        unit = consts['out_unit'].double()
        half = self.g.const(f'{layer}.half', np.float32(0.5))
        operands = []
        pairs = zip((x, y), in_units, ('mantissa_x', 'mantissa_y'))
        for k, (operand, in_unit, key) in enumerate(pairs):
            hint = f'{layer}.in{k}'
            # The engine's alignment: round half up of (integer value) * M / 2^f, with its
            # fixed-point ratio M (the exact unit ratio would differ by up to 2^-15). The
            # integer value is recovered first: float32 conv sums are off by a little.
            inv_unit = (1 / in_unit.double()).numpy().astype(np.float32).reshape(1, -1, 1, 1)
            value = self.g.node('Round', [self.g.node(
                'Mul', [operand, self.g.const(f'{hint}_inv_unit', inv_unit)], f'{hint}_value')],
                f'{hint}_int')
            ratio = (consts[key].double() / 2.0**consts['frac_bits']).numpy().astype(np.float32)
            codes = self.g.node('Floor', [self.g.node(
                'Add', [self.g.node('Mul', [value, self.g.const(f'{hint}_ratio',
                                                                ratio.reshape(1, -1, 1, 1))],
                                    f'{hint}_scaled'), half], f'{hint}_plus_half')],
                f'{hint}_round')
            out_unit = unit.numpy().astype(np.float32).reshape(1, -1, 1, 1)
            operands.append(self.g.node('Mul', [codes, self.g.const(f'{hint}_unit', out_unit)],
                                        f'{hint}_aligned'))
        out = self.g.node('Add', operands, f'{layer}.add')
        if consts['relu']:
            out = self.g.node('Relu', [out], f'{layer}.relu')
        return out, consts['out_unit']

    def max_pool(self, index: int, step: Dict[str, Any], args: List[str],
                 in_units: List[torch.Tensor]) -> Tuple[str, Any]:
        """A MaxPool node; the unit is the input's."""
        k, s, p = (_geometry(step[key]) for key in ('kernel_size', 'stride', 'padding'))
        return self.g.node('MaxPool', [args[0]], f'pool{index}', kernel_shape=k, strides=s,
                           pads=p + p), in_units[0]

    def relu(self, index: int, step: Dict[str, Any], args: List[str],
             in_units: List[torch.Tensor]) -> Tuple[str, Any]:
        """A Relu node; the unit is the input's."""
        return self.g.node('Relu', [args[0]], f'relu{index}'), in_units[0]

    def upsample(self, index: int, step: Dict[str, Any], args: List[str],
                 in_units: List[torch.Tensor]) -> Tuple[str, Any]:
        """Nearest resize to the spatial size of tensor ``size_of``; the input's unit."""
        x, like, hint = args[0], self.names[step['size_of']], f'up{index}'
        g = self.g
        batch_channels = g.node('Slice', [g.node('Shape', [x], f'{hint}.shape'),
                                          g.const(f'{hint}.s0', np.array([0])),
                                          g.const(f'{hint}.s2', np.array([2]))], f'{hint}.nc')
        spatial = g.node('Slice', [g.node('Shape', [like], f'{hint}.like_shape'),
                                   g.const(f'{hint}.t2', np.array([2])),
                                   g.const(f'{hint}.t4', np.array([4]))], f'{hint}.hw')
        sizes = g.node('Concat', [batch_channels, spatial], f'{hint}.sizes', axis=0)
        return g.node('Resize', [x, '', '', sizes], f'{hint}.resize', mode='nearest',
                      coordinate_transformation_mode='asymmetric',
                      nearest_mode='floor'), in_units[0]

    def emit(self, input_name: str) -> List[List[str]]:
        """Translate every step; returns the output names per kind and level."""
        prog = self.program
        self.names[prog['input']] = input_name
        self.units[prog['input']] = torch.ones(1, dtype=torch.float64)
        for index, step in enumerate(prog['steps']):
            handler = self.handlers.get(step['op'])
            if handler is None:
                raise OnnxExportError(f'step {index}: op {step["op"]!r} has no ONNX form')
            out, unit = handler(index, step, [self.names[t] for t in step['inputs']],
                                [self.units[t] for t in step['inputs']])
            self.names[step['output']], self.units[step['output']] = out, unit
        return [[self.names[t] for t in kind] for kind in prog['outputs']]


def named_output_graph(g: _GraphBuilder, outputs: List[List[str]],
                       output_names: Optional[Sequence[str]], image: Any, name: str):
    """The graph of ``g``'s nodes with the outputs renamed ``<kind>_<level>`` (float32).

    Args:
        g (_GraphBuilder): The nodes and initializers.
        outputs (list[list[str]]): Per output kind, per level, the tensor names.
        output_names (list[str], optional): The kinds' names (default ``out<k>``).
        image: The graph input's ``ValueInfoProto``.
        name (str): The graph's name.

    Returns:
        onnx.GraphProto: The graph.
    """
    onnx = _onnx()
    kinds = list(output_names or [f'out{i}' for i in range(len(outputs))])
    if len(kinds) != len(outputs):
        raise OnnxExportError(f'{len(kinds)} output names for {len(outputs)} output kinds')
    graph_outputs = []
    for kind, names in zip(kinds, outputs):
        for level, tensor in enumerate(names):
            final = f'{kind}_{level}'
            g.nodes.append(onnx.helper.make_node('Identity', [tensor], [final]))
            graph_outputs.append(onnx.helper.make_tensor_value_info(
                final, onnx.TensorProto.FLOAT, ['N', None, None, None]))
    return onnx.helper.make_graph(g.nodes, name, [image], graph_outputs, g.initializers)


def program_to_onnx(program: Program, constants: Constants,
                    output_names: Optional[Sequence[str]] = None):
    """Write a recorded program as a QDQ ONNX model (see the module docstring).

    Args:
        program (dict): From :func:`~mmaqd.integer.program.record_program`.
        constants (dict): Its layer constants (with ``out_unit``).
        output_names (list[str], optional): Names of the output kinds, e.g.
            ``('cls_score', 'bbox_pred')``; outputs are named ``<kind>_<level>``.

    Returns:
        onnx.ModelProto: The checked model (opset :data:`ONNX_OPSET`).
    """
    onnx = _onnx()
    for name, consts in constants.items():
        if 'out_unit' not in consts:
            raise OnnxExportError(f'{name}: constants without out_unit (record the program '
                                  f'with this version of mmaqd)')
    emitter = _Emitter(program, constants)
    outputs = emitter.emit('image')
    image = onnx.helper.make_tensor_value_info('image', onnx.TensorProto.FLOAT,
                                               ['N', 3, 'H', 'W'])
    graph = named_output_graph(emitter.g, outputs, output_names, image, 'mmaqd_integer_qdq')
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid('', ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION, producer_name='mmaqd')
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(engine: torch.nn.Module, path: Optional[str], example_image: torch.Tensor,
                output_names: Optional[Sequence[str]] = None) -> Tuple[Any, Dict[str, Any]]:
    """Record an engine's program and write it as a QDQ ONNX model.

    Args:
        engine (IntegerDetector): The integer engine.
        path (str, optional): Where to save the ``.onnx`` file; None to only build.
        example_image (Tensor): An integer image ``(N, 3, H, W)`` to record the
            program with (the graph does not depend on its values or size).
        output_names (list[str], optional): Names of the head's output kinds.

    Returns:
        tuple: The ``onnx.ModelProto`` and a report dict (opset, node count,
        initializer types).
    """
    program, constants = record_program(engine, example_image)
    model = program_to_onnx(program, constants, output_names)
    if path is not None:
        _onnx().save(model, path)
    types = {}
    for init in model.graph.initializer:
        name = _onnx().TensorProto.DataType.Name(init.data_type)
        types[name] = types.get(name, 0) + 1
    report = {'opset': ONNX_OPSET, 'nodes': len(model.graph.node), 'initializer_types': types}
    return model, report


class OnnxDetector:
    """An exported model in onnxruntime (CPU): integer image -> real head outputs.

    Runs both graphs: the QDQ one (float input ``pixel - mean``) and the
    integer-kernel one of :mod:`~mmaqd.integer.onnx_kernels` (uint8 pixels; the
    mean comes from the model's metadata).

    Args:
        model (onnx.ModelProto | str): The model or its path.
        num_kinds (int): Number of output kinds (2 for RetinaNet, 3 for FCOS).
        threads (int, optional): onnxruntime's intra-op threads.
    """

    def __init__(self, model: Any, num_kinds: int, threads: Optional[int] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError('running ONNX models needs onnxruntime: pip install -r '
                              'requirements/deploy.txt') from error
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        data = model if isinstance(model, str) else model.SerializeToString()
        self.session = ort.InferenceSession(data, options, providers=['CPUExecutionProvider'])
        names = [o.name for o in self.session.get_outputs()]
        if len(names) % num_kinds:
            raise OnnxExportError(f'{len(names)} outputs do not split into {num_kinds} kinds')
        per_kind = len(names) // num_kinds
        self.kinds = [names[k * per_kind:(k + 1) * per_kind] for k in range(num_kinds)]
        self.mean = None
        if self.session.get_inputs()[0].type == 'tensor(uint8)':
            meta = self.session.get_modelmeta().custom_metadata_map
            if 'mean' not in meta:
                raise OnnxExportError('a uint8-input model without "mean" in its metadata')
            self.mean = torch.tensor(json.loads(meta['mean']), dtype=torch.float64)

    def __call__(self, image: torch.Tensor) -> Tuple[List[torch.Tensor], ...]:
        """Run the graph.

        Args:
            image (Tensor): The integer image ``pixel - mean`` ``(N, 3, H, W)``.

        Returns:
            tuple[list[Tensor]]: Per output kind, per level, float32 real outputs.

        Raises:
            ValueError: If a uint8-input model gets values that are no pixels.
        """
        image = image.detach().cpu()
        if self.mean is None:
            feeds = {'image': image.float().numpy()}
        else:
            pixels = torch.round(image.double() + self.mean.view(1, -1, 1, 1))
            if pixels.min() < 0 or pixels.max() > 255:
                raise ValueError(f'image + mean spans {float(pixels.min())}..'
                                 f'{float(pixels.max())}, not uint8 pixels 0..255')
            feeds = {'image': pixels.to(torch.uint8).numpy()}
        flat = [n for kind in self.kinds for n in kind]
        values = dict(zip(flat, self.session.run(flat, feeds)))
        return tuple([torch.from_numpy(values[n]) for n in kind] for kind in self.kinds)
