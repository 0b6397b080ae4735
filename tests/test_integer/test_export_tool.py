"""tools/export_integer.py on a tiny checkpoint: the file, its sizes and its outputs."""
import os.path as osp

import pytest
import torch

from mmaqd.apis import DEFAULT_SIZE, example_shape
from mmaqd.integer import convert_detector
from mmaqd.integer.export import load_integer
from tests.conftest import ROOT, load_tool

from .tiny_detectors import CONFIGS, tiny_detector, tiny_images

export_tool = load_tool('export_integer.py')

TINY_OPTIONS = ['model.backbone.base_channels=8', 'model.neck.in_channels=[8,16,32,64]',
                'model.neck.out_channels=16', 'model.bbox_head.in_channels=16',
                'model.bbox_head.feat_channels=16']


@pytest.mark.parametrize('detector', ['retinanet', 'fcos'])
def test_export_tool_on_tiny_checkpoint(detector, tmp_path, capsys):
    model = tiny_detector(detector, 4)
    ckpt = str(tmp_path / 'tiny.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    out = str(tmp_path / 'export' / 'tiny.int.pth')

    result = export_tool.main([osp.join(ROOT, CONFIGS[detector]), ckpt, out, '--shape', '64',
                               '64', '--cfg-options', *TINY_OPTIONS])

    assert osp.isfile(out) and result['file_bytes'] == osp.getsize(out)
    assert result['checkpoint_bytes'] == osp.getsize(ckpt)
    assert result['example_shape'] == [1, 3, 64, 64]
    assert result['num_layers'] == (35 if detector == 'fcos' else 34)
    assert result['num_adds'] == 10
    assert result['fp32_weight_bytes'] == 4 * sum(
        m.weight.numel() for m in model.modules() if type(m).__name__ == 'QConv')
    # 4-bit layers plus the 8-bit stem and predictors: b/32 lies between 4/32 and 8/32.
    assert 4 / 32 < result['ideal_ratio'] < 8 / 32
    ideal_bytes = result['ideal_ratio'] * result['fp32_weight_bytes']
    assert ideal_bytes <= result['packed_weight_bytes'] < ideal_bytes + result['num_layers']
    assert result['packed_vs_fp32_weights'] == pytest.approx(result['ideal_ratio'], rel=1e-3)
    assert result['file_vs_checkpoint'] < 0.5
    assert result['file_vs_fp32_weights'] < 0.5
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith('{') and result['passed'] is True
    assert lines[-2] == (f"PASS: {out} reproduces the integer engine's outputs "
                         f'(required: all equal)')

    torch.load(out, weights_only=True)
    engine = convert_detector(model)
    image = tiny_images(2, seed=11)
    expected = engine(image, 'int')
    got = load_integer(out)(image)
    assert all(torch.equal(u, v) for a, b in zip(got, expected) for u, v in zip(a, b))


def test_example_shape_reads_a_fixed_resize():
    from mmengine.config import Config
    cfg = Config(dict(test_dataloader=dict(dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=(320, 192), keep_ratio=False)
    ]))))
    assert example_shape(cfg) == (192, 320)
    assert example_shape(Config.fromfile(osp.join(ROOT, CONFIGS['fcos']))) == \
        (DEFAULT_SIZE, DEFAULT_SIZE)


def _tiny_checkpoint(tmp_path, detector, bits):
    """A tiny detector's checkpoint file and an output path next to it."""
    ckpt = str(tmp_path / 'tiny.pth')
    torch.save({'state_dict': tiny_detector(detector, bits).state_dict(), 'meta': {}}, ckpt)
    return ckpt, str(tmp_path / 'tiny.onnx')


def test_onnx_export_tool_on_tiny_checkpoint(tmp_path, capsys):
    onnx_tool = load_tool('export_onnx.py')
    ckpt, out = _tiny_checkpoint(tmp_path, 'fcos', 4)
    # the val data is missing here: the tool compares on generated images
    result = onnx_tool.main([osp.join(ROOT, CONFIGS['fcos']), ckpt, out, '--num-images', '2',
                             '--format', 'qdq', '--cfg-options', *TINY_OPTIONS,
                             'val_dataloader.dataset.data_root=/nonexistent/'])
    assert osp.isfile(out) and result['file_bytes'] == osp.getsize(out)
    assert result['images'] == 2 and result['opset'] == 21 and result['format'] == 'qdq'
    assert {'INT4', 'UINT4', 'INT8', 'INT32'} <= set(result['initializer_types'])
    assert result['vs_engine_equal_fraction'] == 1.0
    # the fake-quant model does not simulate the integer rounding: its outputs differ
    assert result['vs_fakequant_equal_fraction'] < 1.0
    assert result['vs_fakequant_max_lsb'] >= 0.5 and result['vs_fakequant_relative_error'] > 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith('{') and result['passed'] is True
    assert lines[-2].startswith('PASS: onnxruntime equals the integer engine on 100.00%')


def test_onnx_export_tool_writes_integer_kernels_by_default(tmp_path, capsys):
    onnx_tool = load_tool('export_onnx.py')
    ckpt, out = _tiny_checkpoint(tmp_path, 'retinanet', 2)
    w2a2 = CONFIGS['retinanet'].replace('w4a4', 'w2a2')
    result = onnx_tool.main([osp.join(ROOT, w2a2), ckpt, out, '--num-images',
                             '1', '--calib-images', '2', '--cfg-options', *TINY_OPTIONS,
                             'val_dataloader.dataset.data_root=/nonexistent/',
                             'train_dataloader.dataset.data_root=/nonexistent/'])
    assert result['format'] == 'kernels' and result['passed'] is True
    assert result['calibration_source'].startswith('generated images')
    assert result['convs'] == 58 and result['float_convs'] == 0
    assert result['integer_convs'] == result['conv_nodes'] >= 58
    # RetinaNet: 2 predictors x 5 levels give real outputs (exact int32 accumulators)
    assert result['op_counts']['ConvInteger'] == 10
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == (f'PASS: onnxruntime runs the 58 convs as {result["conv_nodes"]} '
                         f'integer-kernel nodes (of {result["conv_nodes"]} written) and 0 float '
                         f'convs (required: every conv on an integer kernel)')


def test_onnx_export_tool_random_init_needs_no_checkpoint(tmp_path, capsys):
    onnx_tool = load_tool('export_onnx.py')
    out = str(tmp_path / 'random.onnx')
    result = onnx_tool.main([osp.join(ROOT, CONFIGS['fcos']), out, '--random-init', '--bits',
                             '3', '--size', '64', '--num-images', '1', '--calib-images', '1',
                             '--cfg-options', *TINY_OPTIONS])
    assert result['passed'] is True and result['convs'] == 63 and result['float_convs'] == 0
    with pytest.raises(SystemExit):
        onnx_tool.parse_args([osp.join(ROOT, CONFIGS['fcos']), out])  # neither given
    assert 'give either a CHECKPOINT or --random-init' in capsys.readouterr().err
