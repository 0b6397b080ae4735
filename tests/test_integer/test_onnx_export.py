"""QDQ ONNX export of the integer engine, run in onnxruntime against the engine."""
import onnx
import pytest
import torch

from mmaqd.integer import convert_detector
from mmaqd.integer.compare import code_agreement
from mmaqd.integer.detector import HEAD_OUTPUTS
from mmaqd.integer.layers import OPS
from mmaqd.integer.onnx_export import ONNX_OPSET, OnnxDetector, _Emitter, export_onnx
from mmaqd.integer.program import PROGRAM_OPS

from .test_detector import random_bns
from .tiny_detectors import tiny_detector, tiny_images

KINDS = {'retinanet': HEAD_OUTPUTS['AQDRetinaHead'], 'fcos': HEAD_OUTPUTS['AQDFCOSHead']}
CASES = [(d, b) for d in ('retinanet', 'fcos') for b in (2, 4, 8)]
TP = onnx.TensorProto


def _export(detector, bits, path=None):
    engine = convert_detector(tiny_detector(detector, bits))
    model, report = export_onnx(engine, path, tiny_images(1, seed=3), KINDS[detector])
    return engine, model, report


@pytest.mark.parametrize('detector, bits', CASES, ids=[f'{d}-w{b}' for d, b in CASES])
def test_onnxruntime_equals_the_integer_engine(detector, bits):
    engine, model, report = _export(detector, bits)
    assert report['opset'] == ONNX_OPSET == model.opset_import[0].version
    images = tiny_images(2, seed=7)  # not the image the program was recorded with
    got = OnnxDetector(model, len(KINDS[detector]))(images)
    agreement = code_agreement(engine(images, 'int'), got, engine.head.output_units())
    # float32 QDQ arithmetic reproduces every integer output of the engine here
    assert agreement['equal_fraction'] == 1.0, agreement
    assert agreement['max_lsb'] < 0.05


def _producers(graph):
    return {out: node for node in graph.node for out in node.output}


def _zero_point_type(graph, node):
    inits = {i.name: i for i in graph.initializer}
    return inits[node.input[2]].data_type


@pytest.mark.parametrize('bits, act_type, weight_type', [
    (4, TP.UINT4, TP.INT4), (2, TP.UINT4, TP.INT4), (8, TP.UINT8, TP.INT8)])
def test_every_conv_reads_dequantized_input_and_weight(bits, act_type, weight_type):
    _, model, _ = _export('retinanet', bits)
    graph = model.graph
    producer = _producers(graph)
    inits = {i.name: i for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == 'Conv']
    # ResNet-18 20, FPN 3 lateral + 5 output; per level 2 x 2 tower convs + 2 predictors
    assert len(convs) == 20 + 8 + 6 * 5
    input_types, weight_types = set(), set()
    for conv in convs:
        x_dq, w_dq = producer[conv.input[0]], producer[conv.input[1]]
        assert x_dq.op_type == w_dq.op_type == 'DequantizeLinear', conv.name
        assert producer[x_dq.input[0]].op_type == 'QuantizeLinear'
        input_types.add(_zero_point_type(graph, x_dq))
        weight_types.add(inits[w_dq.input[0]].data_type)
        if len(conv.input) == 3:  # the folded BN bias: int32 codes, DequantizeLinear
            b_dq = producer[conv.input[2]]
            assert b_dq.op_type == 'DequantizeLinear'
            assert inits[b_dq.input[0]].data_type == TP.INT32
    # the stem reads the integer image (int16, exact); 8-bit predictors and stem weights
    assert input_types == {TP.INT16, act_type, TP.UINT8}
    assert weight_types == {weight_type, TP.INT8}
    # 2-bit codes 0..3 live in uint4 containers: clamped to [0, 3 * step] before quantizing
    value = {name: onnx.numpy_helper.to_array(init) for name, init in inits.items()}
    for q in (n for n in graph.node if n.op_type == 'QuantizeLinear'):
        if _zero_point_type(graph, q) != TP.UINT4:
            continue
        step = float(value[q.input[1]])
        clamp = producer.get(q.input[0])
        if bits == 4:
            assert clamp is None or clamp.op_type != 'Min'
            continue
        low = producer[clamp.input[0]]
        assert (clamp.op_type, low.op_type) == ('Min', 'Max')
        assert float(value[low.input[1]]) == 0.0
        assert float(value[clamp.input[1]]) == pytest.approx(3 * step, rel=1e-6)


def test_saved_file_runs_and_outputs_are_named(tmp_path):
    path = str(tmp_path / 'fcos.onnx')
    engine, _, _ = _export('fcos', 4, path)
    onnx.checker.check_model(path, full_check=True)
    runtime = OnnxDetector(path, 3)
    assert runtime.kinds[2] == [f'centerness_{level}' for level in range(5)]
    images = tiny_images(1, seed=9)
    got = runtime(images)
    real = engine.real_outputs(engine(images, 'int'))
    for kind_got, kind_real in zip(got, real):
        for a, b in zip(kind_got, kind_real):
            assert a.shape == b.shape
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)

def test_every_op_of_the_table_has_an_onnx_handler_and_a_program_name():
    emitter = _Emitter({'input': 0, 'steps': [], 'outputs': []}, {})
    assert set(emitter.handlers) == set(OPS) == set(PROGRAM_OPS)
    assert all(OPS[name].op == name for name in OPS)


def test_a_bn_gamma_near_zero_exports_the_short_mantissa_it_makes():
    """ResNet starts each block's last BN at gamma = 0. One that has barely left 0 gives
    the add after it a tiny unit, and the next conv an input multiplier so small that it
    is capped at the largest shift with a short mantissa, which recovers the input step
    only to about 1 / (2 M0). The export must still find the one step, and equal the engine.
    """
    model = tiny_detector('retinanet', 2)
    random_bns(model, torch.Generator().manual_seed(0))
    bn = model.backbone.layer1[1].bn2
    with torch.no_grad():
        bn.weight[:3] = 1e-9
        bn.bias[:3] = 0.0  # a folded bias beta / gamma would overflow int32 otherwise
    engine = convert_detector(model)
    m0 = engine.backbone.stages[1][0].convs[0].in_m0[0]
    assert 1000 < int(m0.min()) < 2**20 <= int(m0.max())
    onnx_model, _ = export_onnx(engine, None, tiny_images(1, seed=3), KINDS['retinanet'])
    images = tiny_images(2, seed=7)
    got = OnnxDetector(onnx_model, 2)(images)
    agreement = code_agreement(engine(images, 'int'), got, engine.head.output_units())
    assert agreement['equal_fraction'] == 1.0, agreement
