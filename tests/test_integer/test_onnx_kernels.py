"""The integer-kernel ONNX export: every conv on an integer kernel, exact where it can be."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mmaqd.integer import convert_detector
from mmaqd.integer.detector import HEAD_OUTPUTS
from mmaqd.integer.onnx_export import OnnxDetector
from mmaqd.integer.onnx_kernels import (KERNELS_OPSET, WIDE, Storage, _KernelEmitter, _units,
                                        aligned_range_storage, calibrate_ranges,
                                        codes_storage, export_kernel_onnx, integer_conv_check,
                                        pair_sums_fit, range_storage)
from mmaqd.integer.program import record_program, run_program

from .tiny_detectors import tiny_detector, tiny_images

KINDS = {'retinanet': HEAD_OUTPUTS['AQDRetinaHead'], 'fcos': HEAD_OUTPUTS['AQDFCOSHead']}
MEAN = [124.0, 116.0, 104.0]
CASES = [(d, b) for d in ('retinanet', 'fcos') for b in (2, 4, 8)]
TP = onnx.TensorProto


def _export(detector, bits):
    engine = convert_detector(tiny_detector(detector, bits))
    model, report = export_kernel_onnx(engine, None, [tiny_images(2, seed=11)], MEAN,
                                       KINDS[detector], {'head': detector})
    return engine, model, report


@pytest.mark.parametrize('detector, bits', CASES, ids=[f'{d}-w{b}' for d, b in CASES])
def test_onnxruntime_runs_every_conv_on_an_integer_kernel(detector, bits):
    engine, model, report = _export(detector, bits)
    assert model.opset_import[0].version == KERNELS_OPSET
    check = integer_conv_check(model, report['conv_nodes'])
    assert check['all_integer'], check
    assert check['float_convs'] == 0 and 'Conv' not in check['op_counts']
    outputs = len(KINDS[detector]) * 5  # kinds x pyramid levels
    assert check['op_counts']['ConvInteger'] == outputs
    # one node per conv, and one more per further quantizer reading a conv output that
    # only quantizers read (none here: both towers' first convs quantize alike)
    program, constants = record_program(engine, tiny_images(1))
    emitter = _KernelEmitter(program, constants, {}, MEAN)
    extra = sum(len(emitter.needs(s['output'])) - 1 for s in program['steps']
                if s['op'] == 'conv' and s['output'] not in emitter.outputs and
                WIDE not in emitter.needs(s['output']))
    assert check['op_counts']['QLinearConv'] == report['convs'] - outputs + extra
    assert report['conv_nodes'] == report['convs'] + extra
    assert check['op_counts']['QLinearAdd'] >= 10  # 8 residual + 2 FPN adds
    # the file is a runnable detector: uint8 pixels in, real head outputs out
    got = OnnxDetector(model, len(KINDS[detector]))(tiny_images(1, seed=5))
    units = engine.head.output_units()
    assert [len(k) for k in got] == [len(u) for u in units]
    assert all(torch.isfinite(t).all() for k in got for t in k)


def _copies_as_outputs(emitter, image):
    """Run the emitted nodes with every tensor copy as an output (no optimisation)."""
    names, copies = [], []
    for tid, per_need in emitter.copies.items():
        for need, (name, store) in per_need.items():
            copies.append((tid, need, name, store))
            if name not in names and tid != emitter.program['input']:
                names.append(name)
    graph = onnx.helper.make_graph(
        emitter.g.nodes, 'copies',
        [onnx.helper.make_tensor_value_info('image', TP.UINT8, ['N', 3, 'H', 'W'])],
        [onnx.helper.make_tensor_value_info(n, TP.UINT8, None) for n in names],
        emitter.g.initializers)
    model = onnx.helper.make_model(graph, ir_version=8, opset_imports=[
        onnx.helper.make_opsetid('', KERNELS_OPSET), onnx.helper.make_opsetid('com.microsoft', 1)])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=['CPUExecutionProvider'])
    pixels = (image + torch.tensor(MEAN).view(1, 3, 1, 1)).to(torch.uint8).numpy()
    values = dict(zip(names, session.run(names, {'image': pixels})))
    return copies, values


@pytest.mark.parametrize('bits', [2, 8])
def test_stem_and_single_quantizer_convs_equal_the_engine(bits):
    # The stem convolves raw pixels padded with the per-channel mean (the mean enters
    # its int32 bias): its output is the engine's, rounded once to its 8-bit step,
    # borders included. That step is the first block's input step / k (odd k), so
    # requantizing it rounds once more, not twice, and the block's first conv, whose
    # only reader is one quantizer, outputs exactly that quantizer's codes.
    engine = convert_detector(tiny_detector('retinanet', bits))
    image = tiny_images(1, seed=7)
    program, constants = record_program(engine, image)
    ranges = calibrate_ranges(program, constants, [tiny_images(2, seed=11)])
    emitter = _KernelEmitter(program, constants, ranges, MEAN)
    emitter.emit('image')
    copies, got = _copies_as_outputs(emitter, image)
    units = _units(program, constants)
    engine_values = {}
    run_program(program, constants, image, 'float', engine_values.__setitem__)
    layer_of = {s['output']: s.get('layer') for s in program['steps']}
    checked = []
    for tid, need, name, store in copies:
        if layer_of.get(tid) not in ('backbone.conv1', 'backbone.layer1.0.conv1'):
            continue
        real = engine_values[tid] * units[tid].view(1, -1, 1, 1)
        expected = torch.clamp(torch.round(real / store.scale), store.lo - store.zero,
                               store.hi - store.zero)
        codes = torch.from_numpy(got[name].astype(np.float64)) - store.zero
        assert torch.equal(codes, expected), (layer_of[tid], (codes != expected).sum())
        checked.append(layer_of[tid])
    assert sorted(checked) == ['backbone.conv1', 'backbone.conv1', 'backbone.layer1.0.conv1']
    stem_copies = emitter.copies[program['steps'][0]['output']]
    assert set(stem_copies) == {WIDE, emitter.needs(program['steps'][0]['output'])[0]}


def test_weight_containers_keep_pair_sums_within_int16():
    engine = convert_detector(tiny_detector('retinanet', 4))
    engine.backbone.stem.weight[0, 0, 0, 0] = 127  # the full 8-bit range, as trained stems
    model, _ = export_kernel_onnx(engine, None, [tiny_images(1, seed=11)], MEAN)
    inits = {i.name: i for i in model.graph.initializer}
    weight_type = {}
    for node in model.graph.node:
        if node.op_type == 'QLinearConv':
            weight_type[node.input[3].rsplit('.weight', 1)[0]] = inits[node.input[3]].data_type
    # the 8-bit stem on raw pixels: 2 x 255 x 127 > 32767, so uint8 weights (zero 128)
    assert weight_type['backbone.conv1'] == TP.UINT8
    # 4-bit codes on 4-bit codes: 2 x 15 x 8 = 240
    assert weight_type['backbone.layer1.0.conv1'] == TP.INT8


def test_pair_sums_fit_hand_values():
    assert pair_sums_fit(15, 8)  # 240
    assert pair_sums_fit(255, 64)  # 32640
    assert not pair_sums_fit(255, 65)  # 33150
    assert not pair_sums_fit(143, 127)  # 36322: 5-bit signed codes at zero 128, 8-bit weights


def test_storages_by_hand():
    assert range_storage(0.0, 25.5, relu=True) == Storage(0.1, 0)
    assert range_storage(-12.8, 6.35, relu=False) == Storage(0.1, 128)
    assert range_storage(-1.0, 25.5, relu=True) == Storage(0.1, 0)  # the ReLU clips at 0
    assert codes_storage((0.5, 0, 15), False, 'x') == Storage(0.5, 0, 0, 15, (0.5, 0, 15))
    assert codes_storage((0.5, -8, 7), False, 'x') == Storage(0.5, 128, 120, 135, (0.5, -8, 7))
    assert codes_storage((0.5, -8, 7), True, 'x').lo == 0  # ReLU'd values: codes from 0
    # step 0.35 over a 0.1 grid: k = 3 (odd) -> 0.35 / 3; step 0.45: k = 4 -> 3 -> 0.15
    assert aligned_range_storage(0, 25.5, True, (0.35, 0, 15)).scale == pytest.approx(0.35 / 3)
    assert aligned_range_storage(0, 25.5, True, (0.45, 0, 15)).scale == pytest.approx(0.15)
    # a step finer than the range allows: the plain calibrated storage
    assert aligned_range_storage(0, 25.5, True, (0.05, 0, 255)) == Storage(0.1, 0)


@pytest.mark.parametrize('k, single', [(1, True), (3, True), (5, True), (2, False), (4, False)])
def test_odd_ratio_requantizes_with_one_rounding(k, single):
    # off the exact halves, where two half-to-even roundings may differ from one
    x = np.linspace(-40, 40, 160001) + 1e-6 * np.pi
    twice = np.round(np.round(x * k) / k)  # to the grid 1/k, then to the grid 1
    assert np.array_equal(twice, np.round(x)) == single


def test_metadata_and_uint8_input(tmp_path):
    engine = convert_detector(tiny_detector('fcos', 4))
    path = str(tmp_path / 'tiny.onnx')
    export_kernel_onnx(engine, path, [tiny_images(1, seed=2)], MEAN, KINDS['fcos'],
                       {'head': 'fcos', 'classes': ['a', 'b']})
    model = onnx.load(path)
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props == {'head': 'fcos', 'classes': ['a', 'b'], 'mean': MEAN}
    assert model.graph.input[0].type.tensor_type.elem_type == TP.UINT8
    runtime = OnnxDetector(path, 3)
    with pytest.raises(ValueError, match=r'not uint8 pixels 0\.\.255'):
        runtime(tiny_images(1) - 200)  # pixel - mean below -mean: no pixel


def test_calibration_needs_images():
    engine = convert_detector(tiny_detector('retinanet', 4))
    with pytest.raises(ValueError, match='at least one image'):
        export_kernel_onnx(engine, None, [], MEAN)


def test_calibrated_ranges_are_the_real_ranges_or_their_percentiles():
    engine = convert_detector(tiny_detector('fcos', 4))
    program, constants = record_program(engine, tiny_images(1))
    images = [tiny_images(1, seed=21), tiny_images(1, seed=22)]
    units, real = _units(program, constants), {}
    for image in images:
        run_program(program, constants, image, 'float', lambda t, v: real.setdefault(t, []).append(
            (v * units[t].view(1, -1, 1, 1)).flatten()))
    full = calibrate_ranges(program, constants, images)
    clipped = calibrate_ranges(program, constants, images, percentile=99.0)
    conv = program['steps'][0]['output']  # the stem: 8 x 32 x 32 values per image
    values = real[conv]
    assert full[conv] == (min(float(v.min()) for v in values),
                          max(float(v.max()) for v in values))
    # per image the 1st / 99th percentile, the widest of the two images kept
    per_image = [torch.quantile(v, torch.tensor([0.01, 0.99], dtype=v.dtype)) for v in values]
    assert clipped[conv] == pytest.approx((min(float(q[0]) for q in per_image),
                                           max(float(q[1]) for q in per_image)))
    assert full[conv][0] <= clipped[conv][0] and clipped[conv][1] < full[conv][1]
    with pytest.raises(ValueError, match=r'percentile must be in \(50, 100\], got 40'):
        calibrate_ranges(program, constants, images, percentile=40)


def test_a_negated_code_minus_128_stays_exact_in_uint8():
    engine = convert_detector(tiny_detector('retinanet', 8))
    layer = engine.backbone.stages[0][0].convs[0]  # layer1.0.conv1: 8-bit codes, one level
    layer.weight[0, 0, 0, 0] = -128
    layer.sign[0, 0] = -1  # the folded BN multiplier of channel 0 is negative
    model, report = export_kernel_onnx(engine, None, [tiny_images(1, seed=11)], MEAN)
    assert report['clamped_weights'] == {}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    node = next(n for n in model.graph.node
                if n.op_type == 'QLinearConv' and n.input[3].startswith(layer.name + '.weight'))
    weight, zero = inits[node.input[3]], inits[node.input[5]]
    assert weight.dtype == np.uint8 and set(zero.tolist()) == {127}
    assert int(weight[0, 0, 0, 0]) - 127 == 128  # -(-128), exactly


def test_kernel_outputs_stay_near_the_engine_at_8_bits():
    # A loose bound that a wrong scale, sign or zero point anywhere breaks (measured on
    # these random models: 0.20 RetinaNet, 0.23 FCOS; one flipped sign gives > 1). The
    # residual and FPN sums held in 8 bits keep the file from the engine's exact values.
    for detector in ('retinanet', 'fcos'):
        engine, model, _ = _export(detector, 8)
        images = tiny_images(2, seed=7)
        got = OnnxDetector(model, len(KINDS[detector]))(images)
        expected = engine.real_outputs(engine(images, 'int'))
        error = sum(float((g - e).abs().sum()) for gk, ek in zip(got, expected)
                    for g, e in zip(gk, ek))
        total = sum(float(e.abs().sum()) for ek in expected for e in ek)
        assert error / total < 0.4, (detector, error / total)
