"""ONNX graph of an integer engine's program on the runtime's integer kernels.

The QDQ graph of :mod:`~mmaqd.integer.onnx_export` mirrors the engine's
arithmetic so closely (BN sign multiply, the add's rounding chain, 4-bit QDQ
types) that onnxruntime fuses none of it and convolves in float. This writer
gives up that bit-level mirroring where a runtime cannot follow it, so that
every conv runs on an integer kernel. Every tensor between two ops is ``uint8``,
``real = (code - zero) * scale`` with a per-tensor ``scale`` and ``zero`` 0
(tensors that are never negative) or 128:

==================  =========================================================
program step        ONNX nodes (opset :data:`KERNELS_OPSET`)
==================  =========================================================
image               ``uint8`` pixels in the model's channel order; each
                    channel is padded with its own mean (Split, Pad, Concat),
                    so the stem convolves raw pixels and the mean enters its
                    int32 bias exactly, borders included
conv                ``QLinearConv``: weight codes with the BN sign folded in
                    (int8; uint8 with zero point 128 where u8 x s8 pair sums
                    could saturate int16 on AVX2, see :func:`pair_sums_fit`),
                    per-channel weight scale ``out_unit / s_x`` (the folded BN
                    multiplier included), int32 folded-BN bias, output scale
                    of the consumer's quantizer; ``Clip`` on uint8 when the
                    code range is narrower than the container (2-7 bits)
head output conv    ``ConvInteger`` (exact int32 accumulators), int32 bias
                    ``Add``, then ``Cast`` and ``Mul`` by sign x unit: the
                    real head output in float32
add                 ``QLinearAdd`` (com.microsoft) of two uint8 operands
max pool, resize    ``MaxPool`` and nearest ``Resize`` on uint8 (exact: both
                    commute with the monotone quantization)
relu                ``Clip`` at the zero point (nothing when it is 0)
requantization      ``DequantizeLinear -> QuantizeLinear [-> Clip]``, only
                    where a quantizer reads a conv output held in 8 bits for
                    an add
==================  =========================================================

Which scale a tensor gets (``docs/deployment.md``): a quantizer that reads it
gets its own codes, so a conv's own output requantization *is* the next
layer's input quantizer (exact but for float rounding of the scale, as in the
QDQ graph). Tensors that adds read are also held in 8 bits with a scale
calibrated on real images (:func:`calibrate_ranges`); the engine keeps those
(residual sums, FPN sums) at accumulator resolution, which is where this graph
and the engine differ.
"""
import json
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .onnx_export import (OnnxExportError, _GraphBuilder, _geometry, _input_step, _onnx,
                          named_output_graph)
from .program import Constants, Program, run_program

#: The opset of the graph (QLinearAdd comes from onnxruntime's com.microsoft domain).
KERNELS_OPSET = 17
#: IR version for opset 17.
KERNELS_IR_VERSION = 8
#: The integer conv operators; an exported graph holds no other conv.
INTEGER_CONV_OPS = ('QLinearConv', 'ConvInteger')
#: Largest int16 value: ``VPMADDUBSW`` (AVX2 u8 x s8) saturates pair sums there.
INT16_MAX = 2**15 - 1
#: Ops whose result is the input's values rearranged (the storage passes through).
PASS_THROUGH = ('max_pool', 'upsample', 'relu')

#: (step, smallest code, largest code) of an input quantizer.
Quantizer = Tuple[float, int, int]


@dataclass(frozen=True)
class Storage:
    """How a program tensor is held in the graph: ``uint8 = zero + round(real / scale)``.

    Attributes:
        scale (float): Real value of one code step.
        zero (int): The code of real 0 (0 or 128).
        lo (int): The smallest uint8 value the tensor holds.
        hi (int): The largest.
        quantizer (tuple, optional): The input quantizer whose codes these are,
            or None for a calibrated 8-bit tensor.
    """

    scale: float
    zero: int
    lo: int = 0
    hi: int = 255
    quantizer: Optional[Quantizer] = None


def codes_storage(quantizer: Quantizer, relu: bool, name: str) -> Storage:
    """The storage of an input quantizer's codes (``relu``: the values are >= 0)."""
    step, lo, hi = quantizer
    if relu:
        lo = max(lo, 0)
    zero = 0 if lo >= 0 else 128
    if zero + lo < 0 or zero + hi > 255:
        raise OnnxExportError(f'{name}: codes {lo}..{hi} do not fit uint8 with zero point '
                              f'{zero} (more than 8 activation bits)')
    return Storage(float(step), zero, zero + lo, zero + hi, quantizer)


def range_storage(low: float, high: float, relu: bool) -> Storage:
    """An 8-bit storage covering the real range ``[low, high]`` (calibrated)."""
    if relu or low >= 0:
        zero, scale = 0, high / 255
    else:
        zero, scale = 128, max(high / 127, -low / 128)
    return Storage(max(float(scale), 1e-12), zero)


def pair_sums_fit(x_max: int, w_max_abs: int) -> bool:
    """Whether u8 x s8 products summed in pairs stay within int16 (AVX2's ``VPMADDUBSW``).

    Codes of 2-4 bits always fit; 8-bit weights on 8-bit inputs do not, and those
    convs get uint8 weights (a kernel that widens to 16 bits before multiplying).
    """
    return 2 * int(x_max) * int(w_max_abs) <= INT16_MAX


def _units(program: Program, constants: Constants) -> Dict[int, torch.Tensor]:
    """The float64 per-channel unit of every program tensor (the image's is 1)."""
    units = {program['input']: torch.ones(1, dtype=torch.float64)}
    for step in program['steps']:
        if step['op'] == 'conv':
            unit = constants[step['layer']]['out_unit'][step['level']]
        elif step['op'] == 'add':
            unit = constants[step['layer']]['out_unit']
        else:
            unit = units[step['inputs'][0]]
        units[step['output']] = unit.double()
    return units


#: Values a per-batch percentile is taken over at most (a random subsample beyond).
PERCENTILE_SAMPLES = 2**20
#: The export's default calibration percentile: the 8-bit tensors clip the rarest
#: 0.01% of values at each end. On the trained w4 RetinaNet (first 100 val images)
#: min/max ranges gave bbox mAP 0.658, 99.999 0.666, 99.99 0.664, 99.9 0.663, the
#: integer engine 0.662: a few outliers otherwise coarsen the whole tensor's step.
#: The three percentiles are within the noise of 100 images; 99.99 is the middle one.
CALIBRATION_PERCENTILE = 99.99


def calibrate_ranges(program: Program, constants: Constants, images: Iterable[torch.Tensor],
                     percentile: float = 100.0) -> Dict[int, Tuple[float, float]]:
    """The real range of every conv / add output over some images (float64 simulation).

    Args:
        program (dict): From :func:`~mmaqd.integer.program.record_program`.
        constants (dict): Its layer constants.
        images (iterable[Tensor]): Integer images ``pixel - mean`` ``(N, 3, H, W)``.
        percentile (float): Per batch, the range from this percentile of the values
            (and 100 - it for the minimum); the widest over the batches is kept.
            100 (default): min and max.

    Returns:
        dict: Tensor id -> ``(min, max)`` of its real values.

    Raises:
        OnnxExportError: If no image is given or ``percentile`` is not in (50, 100].
    """
    if not 50 < percentile <= 100:
        raise OnnxExportError(f'percentile must be in (50, 100], got {percentile}')
    units = _units(program, constants)
    produced_by = {s['output']: s['op'] for s in program['steps']}
    ranges: Dict[int, Tuple[float, float]] = {}
    generator = torch.Generator().manual_seed(0)

    def observe(tid: int, values: torch.Tensor) -> None:
        if produced_by[tid] not in ('conv', 'add'):
            return
        real = (values * units[tid].view(1, -1, 1, 1)).flatten()
        if percentile == 100:
            low, high = float(real.min()), float(real.max())
        else:
            if real.numel() > PERCENTILE_SAMPLES:
                real = real[torch.randint(real.numel(), (PERCENTILE_SAMPLES, ),
                                          generator=generator)]
            q = torch.tensor([1 - percentile / 100, percentile / 100], dtype=real.dtype)
            low, high = (float(v) for v in torch.quantile(real, q))
        if tid in ranges:
            low, high = min(low, ranges[tid][0]), max(high, ranges[tid][1])
        ranges[tid] = (low, high)

    count = 0
    with torch.no_grad():
        for batch in images:
            run_program(program, constants, batch, 'float', observe)
            count += 1
    if not count:
        raise OnnxExportError('calibrating the 8-bit tensors needs at least one image')
    return ranges


#: The copy of a tensor that adds and graph outputs read (calibrated 8 bits).
WIDE = 'wide'


def aligned_range_storage(low: float, high: float, relu: bool,
                          quantizer: Optional[Quantizer]) -> Storage:
    """An 8-bit storage of ``[low, high]`` whose step is ``s / k`` for a quantizer's ``s``.

    With ``k`` odd, requantizing these codes to the quantizer's rounds once, not
    twice: ``round(round(x) / k) == round(x / k)`` for odd ``k`` (the boundaries
    of the coarse rounding are boundaries of the fine one). ``k`` is the largest
    odd number for which the range still fits; a quantizer whose step is finer
    than the range allows gets the plain calibrated storage.
    """
    plain = range_storage(low, high, relu)
    if quantizer is None:
        return plain
    k = int(quantizer[0] // plain.scale)
    k -= 1 - k % 2
    if k < 1:
        return plain
    return Storage(quantizer[0] / k, plain.zero)


class _KernelEmitter:
    """Translate program steps into integer-kernel ONNX nodes (one handler per op).

    A tensor may be held in several copies, one per reader's need: the codes of
    each input quantizer that reads it and a calibrated 8-bit copy (:data:`WIDE`)
    for adds. An add computes each copy directly (it is cheap). A conv read only
    by quantizers computes one copy per quantizer (exact codes for each: FPN
    outputs read by both head towers); one read by an add as well computes the
    8-bit copy, its step aligned to a quantizer's (:func:`aligned_range_storage`),
    that the quantizers requantize.
    """

    def __init__(self, program: Program, constants: Constants,
                 ranges: Dict[int, Tuple[float, float]], mean: Sequence[float]) -> None:
        self.program, self.constants, self.ranges = program, constants, ranges
        self.mean = [float(m) for m in mean]
        self.g = _GraphBuilder()
        self.units = _units(program, constants)
        self.outputs = {tid for kind in program['outputs'] for tid in kind}
        self.readers: Dict[int, List[dict]] = {}
        for step in program['steps']:
            for tid in step['inputs']:
                self.readers.setdefault(tid, []).append(step)
        #: Tensor id -> need (a quantizer or WIDE) -> (ONNX name, storage).
        self.copies: Dict[int, Dict[Any, Tuple[str, Storage]]] = {}
        self.real_outputs: Dict[int, str] = {}
        self._requantized: Dict[Tuple[str, Quantizer], str] = {}
        self._weights: Dict[Tuple[str, bytes, str], Tuple[str, str]] = {}
        #: Weight codes changed to fit int8 (8-bit layers only), per layer.
        self.clamped: Dict[str, int] = {}
        self.handlers = {'conv': self.conv, 'add': self.add, 'max_pool': self.max_pool,
                         'upsample': self.upsample, 'relu': self.relu}

    # -- planning ---------------------------------------------------------------------
    def quantizer(self, step: dict, tid: int) -> Quantizer:
        """The input quantizer of conv ``step`` reading tensor ``tid``."""
        consts = self.constants[step['layer']]
        s_x = _input_step(consts, step['level'], self.units[tid], step['layer'])
        lo, hi = consts['in_range']
        return (s_x, int(lo), int(hi))

    def needs(self, tid: int) -> List[Any]:
        """The copies of ``tid`` its readers need (through pass-through ops): the
        quantizers reading it, in program order, and WIDE if an add reads it."""
        found: List[Any] = []
        for step in self.readers.get(tid, []):
            if step['op'] == 'conv' and 'in_m0' in self.constants[step['layer']]:
                inner = [self.quantizer(step, tid)]
            elif step['op'] in PASS_THROUGH:
                inner = self.needs(step['output'])
            elif step['op'] == 'conv':
                raise OnnxExportError(f'{step["layer"]}: a conv without input quantizer reads '
                                      f'tensor {tid}, not the image')
            else:
                inner = [WIDE]
            found += [need for need in inner if need not in found]
        return found

    def range_of(self, tid: int, name: str) -> Tuple[float, float]:
        if tid not in self.ranges:
            raise OnnxExportError(f'{name}: no calibrated range for its output (tensor {tid})')
        return self.ranges[tid]

    # -- node helpers -----------------------------------------------------------------
    def u8(self, hint: str, value: int) -> str:
        return self.g.const(hint, np.array(value, dtype=np.uint8))

    def f32(self, hint: str, value) -> str:
        return self.g.const(hint, np.asarray(value, dtype=np.float32))

    def clip(self, x: str, lo: int, hi: int, hint: str) -> str:
        """Clip a uint8 tensor to ``[lo, hi]`` (no node when that is the full range)."""
        if (lo, hi) == (0, 255):
            return x
        return self.g.node('Clip', [x, self.u8(f'{hint}_lo', lo), self.u8(f'{hint}_hi', hi)],
                           f'{hint}_clip')

    def read(self, tid: int, need: Any, hint: str) -> Tuple[str, Storage]:
        """The copy of tensor ``tid`` for ``need``: a quantizer's codes (requantized
        from the copy that is there if they are not) or the WIDE copy."""
        name, held = self.copies[tid][need]
        if need == WIDE or held.quantizer == need:
            return name, held
        target = codes_storage(need, held.lo >= held.zero, hint)
        key = (name, need)
        if key not in self._requantized:
            real = self.g.node('DequantizeLinear', [name, self.f32(
                f'{hint}_from_scale', held.scale), self.u8(f'{hint}_from_zero', held.zero)],
                f'{hint}_real')
            codes = self.g.node('QuantizeLinear', [real, self.f32(
                f'{hint}_to_scale', target.scale), self.u8(f'{hint}_to_zero', target.zero)],
                f'{hint}_codes')
            self._requantized[key] = self.clip(codes, target.lo, target.hi, hint)
        return self._requantized[key], target

    def weight(self, layer: str, codes: np.ndarray, kind: str) -> Tuple[str, str]:
        """An integer weight initializer (shared by levels with the same codes).

        ``kind`` ``'s8'``: int8 codes, per-channel zero 0; ``'u8'``: codes + zero in
        uint8 with per-channel zero 128, or 127 when the codes reach +128 (an 8-bit
        code -128 negated by the BN sign: still exact); ``'u8_tensor'``: codes + 128,
        one zero 128 (ConvInteger). Codes that fit none are clamped and counted in
        :attr:`clamped`. Returns the names of the weight and of its zero point.
        """
        key = (layer, codes.tobytes(), kind)
        if key not in self._weights:
            zero = 127 if kind == 'u8' and codes.max(initial=0) > 127 else 128
            lo, hi = (-128, 127) if kind == 's8' else (-zero, 255 - zero)
            fitted = np.clip(codes, lo, hi)
            changed = int((fitted != codes).sum())
            if changed:
                self.clamped[layer] = self.clamped.get(layer, 0) + changed
            if kind == 's8':
                w = self.g.int_const(f'{layer}.weight', _onnx().TensorProto.INT8, fitted)
                zero_name = self.g.const(f'{layer}.w_zero', np.zeros(len(codes), np.int8))
            else:
                w = self.g.const(f'{layer}.weight', (fitted + zero).astype(np.uint8))
                shape = len(codes) if kind == 'u8' else ()
                zero_name = self.g.const(f'{layer}.w_zero', np.full(shape, zero, np.uint8))
            self._weights[key] = (w, zero_name)
        return self._weights[key]

    def image(self, consts: Dict[str, Any], hint: str) -> Tuple[str, bool]:
        """The raw uint8 image padded per channel with its mean (if the conv pads)."""
        pads = _geometry(consts['padding'])
        name = self.copies[self.program['input']][WIDE][0]
        if not any(pads):
            return name, False
        channels = [self.g.name(f'{hint}.channel') for _ in self.mean]
        self.g.nodes.append(_onnx().helper.make_node(
            'Split', [name, self.g.const(f'{hint}.split', np.ones(len(self.mean), np.int64))],
            channels, axis=1))
        spatial = np.array([0, 0, pads[0], pads[1], 0, 0, pads[0], pads[1]])
        padded = [self.g.node('Pad', [c, self.g.const(f'{hint}.pads', spatial),
                                      self.u8(f'{hint}.pad_value', int(round(m)))],
                              f'{hint}.padded', mode='constant')
                  for c, m in zip(channels, self.mean)]
        return self.g.node('Concat', padded, f'{hint}.image', axis=1), True

    # -- handlers ---------------------------------------------------------------------
    def conv(self, step: dict) -> None:
        layer, level, tid, out_tid = step['layer'], step['level'], step['inputs'][0], \
            step['output']
        consts = self.constants[layer]
        hint = f'{layer}.l{level}'
        codes = consts['weight'].numpy().astype(np.int64)
        out_unit = consts['out_unit'][level].double().numpy()
        sign = (consts['sign'][level].numpy() if 'sign' in consts
                else np.ones(len(out_unit), np.int64))
        bias = (consts['bias'][level].numpy().astype(np.int64) if 'bias' in consts
                else np.zeros(len(out_unit), np.int64))
        pads = _geometry(consts['padding'])
        if 'in_m0' in consts:
            quantizer = self.quantizer(step, tid)
            x, x_store = self.read(tid, quantizer, f'{hint}.input')
            s_x = quantizer[0]
        else:
            if tid != self.program['input']:
                raise OnnxExportError(f'{layer}: a conv without input quantizer reads tensor '
                                      f'{tid}, not the image')
            if int(consts['groups']) != 1 or codes.shape[1] != len(self.mean):
                raise OnnxExportError(f'{layer}: the image conv must read all {len(self.mean)} '
                                      f'channels in one group (groups {consts["groups"]}, '
                                      f'weight {tuple(codes.shape)})')
            x, padded = self.image(consts, hint)
            x_store = Storage(1.0, 0)
            s_x = float(self.units[tid].mean())
            # Raw pixels: conv(pixel - mean) = conv(pixel) - sum(mean x weight) per channel.
            bias = bias - np.einsum('oikl,i->o', codes, np.round(self.mean)).astype(np.int64)
            if padded:
                pads = [0, 0]
        geometry = dict(strides=_geometry(consts['stride']), pads=pads + pads,
                        dilations=_geometry(consts['dilation']), group=int(consts['groups']))
        x_zero = self.u8(f'{hint}.x_zero', x_store.zero)
        if out_tid in self.outputs:
            if self.readers.get(out_tid):
                raise OnnxExportError(f'{layer}: a head output that other layers read')
            self.output_conv(step, x, x_zero, codes, sign, bias, out_unit, geometry, hint)
            return
        relu = bool(consts['relu'])
        needs = self.needs(out_tid)
        if WIDE in needs:
            quantizers = [n for n in needs if n != WIDE]
            primary = max(quantizers, key=lambda q: q[0]) if quantizers else None
            plans = [(needs, aligned_range_storage(*self.range_of(out_tid, layer), relu,
                                                   primary))]
        else:  # only quantizers read it: one conv per quantizer, each exact
            plans = [([need], codes_storage(need, relu, layer)) for need in needs]
        flipped = codes * sign.reshape(-1, 1, 1, 1)
        fits = (pair_sums_fit(x_store.hi, np.abs(flipped).max(initial=0)) and
                flipped.max(initial=0) <= 127)
        w, w_zero = self.weight(layer, flipped, 's8' if fits else 'u8')
        b = sign * bias
        if np.abs(b).max(initial=0) > 2**31 - 1:
            raise OnnxExportError(f'{layer}: folded BN bias {int(np.abs(b).max())} does not fit '
                                  f'int32 (level {level}); a BN gamma near 0?')
        w_scale = self.f32(f'{hint}.w_scale', (out_unit / s_x).astype(np.float32))
        b_int = self.g.int_const(f'{hint}.bias', _onnx().TensorProto.INT32, b)
        self.copies[out_tid] = {}
        for served, store in plans:
            out = self.g.node('QLinearConv', [
                x, self.f32(f'{hint}.x_scale', s_x), x_zero, w, w_scale, w_zero,
                self.f32(f'{hint}.y_scale', store.scale), self.u8(f'{hint}.y_zero', store.zero),
                b_int], f'{hint}.qconv', **geometry)
            held = (self.clip(out, store.lo, store.hi, hint), store)
            self.copies[out_tid].update({need: held for need in served})

    def output_conv(self, step: dict, x: str, x_zero: str, codes: np.ndarray, sign: np.ndarray,
                    bias: np.ndarray, out_unit: np.ndarray, geometry: dict, hint: str) -> None:
        """A head output: exact int32 accumulators (ConvInteger), then the real value."""
        layer = step['layer']
        w, w_zero = self.weight(layer, codes, 'u8_tensor')
        acc = self.g.node('ConvInteger', [x, w, x_zero, w_zero], f'{hint}.acc', **geometry)
        if np.abs(bias).max(initial=0) > 2**31 - 1:
            raise OnnxExportError(f'{layer}: bias does not fit int32')
        acc = self.g.node('Add', [acc, self.g.int_const(
            f'{hint}.bias', _onnx().TensorProto.INT32, bias.reshape(1, -1, 1, 1))], f'{hint}.sum')
        real = self.g.node('Cast', [acc], f'{hint}.float', to=_onnx().TensorProto.FLOAT)
        scale = (sign * out_unit).astype(np.float32).reshape(1, -1, 1, 1)
        real = self.g.node('Mul', [real, self.f32(f'{hint}.unit', scale)], f'{hint}.real')
        if self.constants[layer]['relu']:
            real = self.g.node('Relu', [real], f'{hint}.relu')
        self.real_outputs[step['output']] = real

    def add(self, step: dict) -> None:
        layer = step['layer']
        consts = self.constants[layer]
        if step['output'] in self.outputs:
            raise OnnxExportError(f'{layer}: an add as a head output has no integer-kernel form')
        relu = bool(consts['relu'])
        operands = []
        for k, tid in enumerate(step['inputs']):
            name, held = self.read(tid, WIDE, f'{layer}.in{k}')
            operands += [name, self.f32(f'{layer}.in{k}_scale', held.scale),
                         self.u8(f'{layer}.in{k}_zero', held.zero)]
        self.copies[step['output']] = {}
        for need in self.needs(step['output']):
            store = (range_storage(*self.range_of(step['output'], layer), relu) if need == WIDE
                     else codes_storage(need, relu, layer))
            out = self.g.node('QLinearAdd', operands + [
                self.f32(f'{layer}.y_scale', store.scale),
                self.u8(f'{layer}.y_zero', store.zero)], f'{layer}.qadd', domain='com.microsoft')
            self.copies[step['output']][need] = (self.clip(out, store.lo, store.hi, layer), store)

    def pass_through(self, step: dict, apply) -> None:
        """Apply ``apply(name, storage) -> (name, storage)`` to each copy the output needs
        (once per distinct input copy)."""
        source = self.copies[step['inputs'][0]]
        done: Dict[str, Tuple[str, Storage]] = {}
        self.copies[step['output']] = {}
        for need in self.needs(step['output']) or list(source):
            name, held = source[need]
            if name not in done:
                done[name] = apply(name, held)
            self.copies[step['output']][need] = done[name]

    def max_pool(self, step: dict) -> None:
        k, s, p = (_geometry(step[key]) for key in ('kernel_size', 'stride', 'padding'))
        self.pass_through(step, lambda name, held: (self.g.node(
            'MaxPool', [name], 'pool', kernel_shape=k, strides=s, pads=p + p), held))

    def upsample(self, step: dict) -> None:
        g = self.g
        like = next(iter(self.copies[step['size_of']].values()))[0]

        def resize(name: str, held: Storage) -> Tuple[str, Storage]:
            batch_channels = g.node('Slice', [g.node('Shape', [name], 'up.shape'),
                                              g.const('up.s0', np.array([0])),
                                              g.const('up.s2', np.array([2]))], 'up.nc')
            spatial = g.node('Slice', [g.node('Shape', [like], 'up.like_shape'),
                                       g.const('up.t2', np.array([2])),
                                       g.const('up.t4', np.array([4]))], 'up.hw')
            sizes = g.node('Concat', [batch_channels, spatial], 'up.sizes', axis=0)
            return g.node('Resize', [name, '', '', sizes], 'up.resize', mode='nearest',
                          coordinate_transformation_mode='asymmetric',
                          nearest_mode='floor'), held

        self.pass_through(step, resize)

    def relu(self, step: dict) -> None:
        def clip_at_zero(name: str, held: Storage) -> Tuple[str, Storage]:
            store = Storage(held.scale, held.zero, max(held.lo, held.zero), held.hi,
                            held.quantizer)
            if store.lo == held.lo:
                return name, store
            return self.clip(name, store.lo, store.hi, 'relu'), store

        self.pass_through(step, clip_at_zero)

    def emit(self, input_name: str) -> List[List[str]]:
        """Translate every step; returns the output names per kind and level."""
        self.copies[self.program['input']] = {WIDE: (input_name, Storage(1.0, 0))}
        for index, step in enumerate(self.program['steps']):
            handler = self.handlers.get(step['op'])
            if handler is None:
                raise OnnxExportError(f'step {index}: op {step["op"]!r} has no integer-kernel '
                                      f'form')
            handler(step)
        return [[self.real_outputs[t] for t in kind] for kind in self.program['outputs']]


def program_to_kernel_onnx(program: Program, constants: Constants,
                           ranges: Dict[int, Tuple[float, float]], mean: Sequence[float],
                           output_names: Optional[Sequence[str]] = None,
                           metadata: Optional[Dict[str, Any]] = None):
    """Write a recorded program as an integer-kernel ONNX model (module docstring).

    Args:
        program (dict): From :func:`~mmaqd.integer.program.record_program`.
        constants (dict): Its layer constants.
        ranges (dict): From :func:`calibrate_ranges`.
        mean (list[float]): The integer per-channel mean the model subtracts, in the
            channel order of the graph's uint8 input.
        output_names (list[str], optional): Names of the output kinds; outputs are
            named ``<kind>_<level>``.
        metadata (dict, optional): Written to ``metadata_props``, each value as JSON.

    Returns:
        tuple: The checked ``onnx.ModelProto`` and a dict of weight codes clamped
        to fit int8 per layer (8-bit layers whose BN sign flips a code -128).
    """
    onnx = _onnx()
    if any(float(m) != round(float(m)) or not 0 <= float(m) <= 255 for m in mean):
        raise OnnxExportError(f'mean {list(mean)} is not integer pixel values 0..255')
    emitter = _KernelEmitter(program, constants, ranges, mean)
    outputs = emitter.emit('image')
    image = onnx.helper.make_tensor_value_info('image', onnx.TensorProto.UINT8,
                                               ['N', len(emitter.mean), 'H', 'W'])
    graph = named_output_graph(emitter.g, outputs, output_names, image, 'mmaqd_integer_kernels')
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid('', KERNELS_OPSET),
                              onnx.helper.make_opsetid('com.microsoft', 1)],
        ir_version=KERNELS_IR_VERSION, producer_name='mmaqd')
    props = dict(metadata or {})
    props.setdefault('mean', [float(m) for m in mean])
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(model)
    return model, dict(emitter.clamped)


def optimized_op_counts(model: Any, threads: int = 1) -> Dict[str, int]:
    """Node types of the graph onnxruntime runs, after its optimisations.

    Args:
        model (onnx.ModelProto | str): The model or its path.
        threads (int): Intra-op threads of the session. Defaults to 1.

    Returns:
        dict: Op type -> count in the optimised graph
        (``SessionOptions.optimized_model_filepath``).
    """
    import os
    import tempfile

    import onnxruntime as ort
    onnx = _onnx()
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.optimized_model_filepath = os.path.join(tmp, 'optimized.onnx')
        data = model if isinstance(model, str) else model.SerializeToString()
        ort.InferenceSession(data, options, providers=['CPUExecutionProvider'])
        optimized = onnx.load(options.optimized_model_filepath)
    counts: Dict[str, int] = {}
    for node in optimized.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts




def export_kernel_onnx(engine: torch.nn.Module, path: Optional[str],
                       calibration_images: Sequence[torch.Tensor], mean: Sequence[float],
                       output_names: Optional[Sequence[str]] = None,
                       metadata: Optional[Dict[str, Any]] = None,
                       percentile: float = CALIBRATION_PERCENTILE) -> Tuple[Any, Dict[str, Any]]:
    """Record an engine's program and write it as an integer-kernel ONNX model.

    Args:
        engine (IntegerDetector): The integer engine.
        path (str, optional): Where to save the ``.onnx`` file; None to only build.
        calibration_images (list[Tensor]): Integer images ``pixel - mean`` whose
            value ranges set the scales of the 8-bit tensors (training images,
            preprocessed as for testing).
        mean (list[float]): The model's integer per-channel mean.
        output_names (list[str], optional): Names of the head's output kinds.
        metadata (dict, optional): For ``metadata_props``.
        percentile (float): Of the calibration ranges (:func:`calibrate_ranges`).
            Defaults to :data:`CALIBRATION_PERCENTILE`.

    Returns:
        tuple: The ``onnx.ModelProto`` and a report: opset, nodes, the program's
        ``convs``, the graph's integer ``conv_nodes`` (a conv read by several
        quantizers is one node per quantizer), weight codes clamped to fit int8.
    """
    from .program import record_program
    images = list(calibration_images)
    if not images:
        raise OnnxExportError('calibrating the 8-bit tensors needs at least one image')
    program, constants = record_program(engine, images[0][:1])
    ranges = calibrate_ranges(program, constants, images, percentile)
    model, clamped = program_to_kernel_onnx(program, constants, ranges, mean, output_names,
                                            metadata)
    if path is not None:
        _onnx().save(model, path)
    convs = sum(1 for step in program['steps'] if step['op'] == 'conv')
    conv_nodes = sum(1 for node in model.graph.node if node.op_type in INTEGER_CONV_OPS)
    report = {'format': 'kernels', 'opset': KERNELS_OPSET, 'nodes': len(model.graph.node),
              'convs': convs, 'conv_nodes': conv_nodes,
              'calibration_images': sum(int(i.shape[0]) for i in images),
              'calibration_percentile': percentile,
              'clamped_weights': clamped}
    return model, report


def integer_conv_check(model: Any, conv_nodes: int, threads: int = 1) -> Dict[str, Any]:
    """Whether onnxruntime runs every conv of the model on an integer kernel.

    Args:
        model (onnx.ModelProto | str): The model or its path.
        conv_nodes (int): The integer conv nodes written (the export's report).
        threads (int): Session threads. Defaults to 1.

    Returns:
        dict: ``integer_convs`` and ``float_convs`` in the optimised graph, the op
        counts, and ``all_integer`` (as many integer convs as written, no float conv).
    """
    counts = optimized_op_counts(model, threads)
    integer = sum(n for op, n in counts.items() if op in INTEGER_CONV_OPS)
    floating = sum(n for op, n in counts.items()
                   if op not in INTEGER_CONV_OPS and 'Conv' in op)
    return {'integer_convs': integer, 'float_convs': floating, 'op_counts': counts,
            'all_integer': integer == conv_nodes and floating == 0}


__all__ = ['KERNELS_OPSET', 'INTEGER_CONV_OPS', 'WIDE', 'CALIBRATION_PERCENTILE', 'Storage', 'codes_storage',
           'range_storage', 'aligned_range_storage', 'pair_sums_fit', 'calibrate_ranges',
           'program_to_kernel_onnx', 'export_kernel_onnx', 'optimized_op_counts',
           'integer_conv_check']
