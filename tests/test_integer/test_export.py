"""The recorded layer graph and the deployment file reproduce the engine exactly."""
import ast
import copy
import os.path as osp

import pytest
import torch

from mmaqd.integer import IntAdd, IntConv, convert_detector
from mmaqd.integer.export import (ExportError, export_integer, load_integer,
                                  weight_statistics)
from mmaqd.integer.program import PROGRAM_OPS, record_program, run_program
from tests.conftest import ROOT

from .tiny_detectors import tiny_config, tiny_detector, tiny_images

CASES = [(d, b) for d in ('retinanet', 'fcos') for b in (2, 4, 8)]
#: Layers that quant_cfg's overrides keep at 8 bits.
EIGHT_BIT = ('backbone.conv1', 'bbox_head.retina_cls', 'bbox_head.retina_reg',
             'bbox_head.conv_cls', 'bbox_head.conv_reg', 'bbox_head.conv_centerness')


def same_outputs(a, b) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


def check_plain(obj) -> None:
    if isinstance(obj, dict):
        assert all(type(k) is str for k in obj)
        for value in obj.values():
            check_plain(value)
    elif isinstance(obj, list):
        for value in obj:
            check_plain(value)
    else:
        assert isinstance(obj, torch.Tensor) or type(obj) in (int, float, str), type(obj)


@pytest.mark.parametrize('detector, bits', CASES, ids=[f'{d}-w{b}' for d, b in CASES])
def test_loaded_program_equals_engine(detector, bits, tmp_path):
    engine = convert_detector(tiny_detector(detector, bits))
    path = str(tmp_path / 'model.int.pth')
    payload = export_integer(engine, path, tiny_images(1, seed=3))

    raw = torch.load(path, weights_only=True)
    check_plain(raw)
    assert raw['format'] == 'mmaqd-integer' and raw['version'] == 1
    convs = {n: r for n, r in raw['layers'].items() if r['op'] == 'conv'}
    for name, record in convs.items():
        assert record['weight']['packed'].dtype == torch.uint8
        # LSQ codes take exactly the declared bits.
        assert record['weight']['bits'] == record['w_bits'] == (8 if name in EIGHT_BIT else bits)
        for key, dtype in (('in_m0', torch.int32), ('in_shift', torch.int8),
                           ('bias', torch.int32), ('sign', torch.int8)):
            assert key not in record or record[key].dtype == dtype
    adds = [r for r in raw['layers'].values() if r['op'] == 'add']
    assert len(adds) == 10 and all(r['mantissa_x'].dtype == torch.int64 for r in adds)

    program = load_integer(path)
    for image in (tiny_images(2, seed=7), tiny_images(1, size=96, seed=8)[..., :80]):
        expected = engine(image, 'int')
        got = program(image)
        assert same_outputs(got, expected)
        assert all(t.dtype == torch.int64 for kind in got for t in kind)
    assert same_outputs(program(image, 'float'), engine(image, 'float'))
    assert program.kinds == (['cls_score', 'bbox_pred', 'centerness'] if detector == 'fcos'
                             else ['cls_score', 'bbox_pred'])
    assert same_outputs(program.output_units(), engine.head.output_units())
    assert all(u.dtype == torch.float64 for kind in program.output_units() for u in kind)

    stats = weight_statistics(payload)
    assert stats['num_layers'] == len(convs) == (35 if detector == 'fcos' else 34)
    assert stats['packed_weight_bytes'] == sum(r['weight']['packed'].numel()
                                               for r in convs.values())
    assert stats['stored_bits'] == stats['declared_bits']
    # Packing costs at most one partial byte per layer.
    ideal = stats['weight_elements'] * stats['declared_bits'] / 8
    assert ideal <= stats['packed_weight_bytes'] < ideal + len(convs)


def test_clip_weights_take_one_more_bit(tmp_path):
    cfg = tiny_config('retinanet', 2)
    cfg.model.quant_cfg.quantizer = 'Clip'
    engine = convert_detector(tiny_detector('retinanet', 2, cfg=cfg))
    path = str(tmp_path / 'clip.int.pth')
    payload = export_integer(engine, path, tiny_images(1))
    for name, record in payload['layers'].items():
        if record['op'] == 'conv':
            # Odd codes -(2^b - 1)..2^b - 1 (at least one code beyond +-2^(b-1)).
            assert record['weight']['bits'] == record['w_bits'] + 1, name
    image = tiny_images(2, seed=5)
    assert same_outputs(load_integer(path)(image), engine(image, 'int'))


def test_program_is_shape_generic_and_records_module_level_relu():
    cfg = tiny_config('fcos', 4)
    cfg.model.neck.relu_before_extra_convs = True
    engine = convert_detector(tiny_detector('fcos', 4, cfg=cfg))
    # At 16 x 16, C4 and C5 are both 1 x 1: the upsample target must still be the
    # lateral it is added to, so that the program runs at other sizes.
    program, constants = record_program(engine, tiny_images(1, size=16))
    assert not any(m._forward_hooks for m in engine.modules())  # the recorder's are gone
    counts = {op: sum(s['op'] == op for s in program['steps']) for op in PROGRAM_OPS}
    # One relu between the two extra convs; IntConv's / IntAdd's own ReLUs are not steps.
    assert counts == {'conv': 20 + 8 + 5 * 7, 'add': 10, 'max_pool': 1, 'upsample': 2,
                      'relu': 1}
    relu = next(s for s in program['steps'] if s['op'] == 'relu')
    producer = {s['output']: s for s in program['steps']}
    assert producer[relu['inputs'][0]]['layer'] == 'neck.fpn_convs.3.conv'
    for step in program['steps']:
        if step['op'] == 'upsample':
            partner = next(s for s in program['steps']
                           if s['op'] == 'add' and step['output'] in s['inputs'])
            assert step['size_of'] in partner['inputs']
    for size in (64, 40):
        image = tiny_images(2, size=size, seed=size)
        assert same_outputs(run_program(program, constants, image), engine(image, 'int'))


def test_run_program_needs_no_engine_module(monkeypatch):
    engine = convert_detector(tiny_detector('retinanet', 4))
    program, constants = record_program(engine, tiny_images(1))
    image = tiny_images(1, seed=9)
    expected = engine(image, 'int')

    def refuse(*args, **kwargs):
        raise AssertionError('run_program called an engine module')

    monkeypatch.setattr(IntConv, 'forward', refuse)
    monkeypatch.setattr(IntAdd, 'forward', refuse)
    assert same_outputs(run_program(program, constants, image), expected)


def test_recording_leaves_no_hooks_after_an_error():
    engine = convert_detector(tiny_detector('retinanet', 4))
    with pytest.raises(RuntimeError):
        record_program(engine, torch.zeros(1, 4, 32, 32))  # 4 channels: conv1 fails
    assert not any(m._forward_hooks for m in engine.modules())


def test_bias_beyond_int32_is_refused(tmp_path):
    engine = copy.deepcopy(convert_detector(tiny_detector('retinanet', 4)))
    engine.neck.laterals[0].bias[0, 3] = 2**31
    with pytest.raises(ExportError, match=r'neck\.lateral_convs\.0\.conv\.bias.*int32'):
        export_integer(engine, str(tmp_path / 'x.pth'), tiny_images(1))


def test_load_refuses_another_format(tmp_path):
    path = str(tmp_path / 'other.pth')
    torch.save({'format': 'something', 'version': 1}, path)
    with pytest.raises(ExportError, match='not an mmaqd-integer v1 file'):
        load_integer(path)


@pytest.mark.parametrize('module', ['packing', 'program', 'export'])
def test_deployment_modules_import_no_framework(module):
    with open(osp.join(ROOT, 'mmaqd', 'integer', f'{module}.py')) as f:
        tree = ast.parse(f.read())
    imported = {alias.name.split('.')[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split('.')[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert not imported & {'mmdet', 'mmengine', 'mmcv'}, imported
