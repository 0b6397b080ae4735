"""2-iteration train, resume and test runs through tools/train.py and tools/test.py.

Also the regression test of mmaqd's checkpoint loader: mmengine 0.10.7 calls
``torch.load`` without ``weights_only`` and torch >= 2.6 defaults it to True, so
resuming a checkpoint that holds mmengine's message hub fails without mmaqd's loader.
"""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmaqd.apis import build_detector, load_config
from tests.conftest import ROOT, load_tool
from tests.test_tools.tiny_data import data_options, make_tiny_data

train_tool = load_tool('train.py')
test_tool = load_tool('test.py')


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    return make_tiny_data(str(tmp_path_factory.mktemp('tiny_synthetic')))


@pytest.mark.parametrize('config', [
    'configs/aqd/retinanet_r18_fpn_aqd-fp32_synthetic.py',
    'configs/aqd/fcos_r18_fpn_aqd-fp32_synthetic.py',
])
def test_train_resume_and_test(config, tiny_data, tmp_path):
    work_dir = str(tmp_path / 'work')
    config = osp.join(ROOT, config)
    opts = data_options(tiny_data)
    train_tool.main([config, '--work-dir', work_dir, '--cfg-options',
                     'train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2', *opts])
    first = osp.join(work_dir, 'iter_2.pth')
    assert osp.isfile(first)

    # The resumed run continues at iteration 3 from the saved message hub and optimizer.
    train_tool.main([config, '--work-dir', work_dir, '--resume', '--cfg-options',
                     'train_cfg.max_iters=3', 'default_hooks.checkpoint.interval=1', *opts])
    last = osp.join(work_dir, 'iter_3.pth')
    resumed = torch.load(last, map_location='cpu', weights_only=False)
    assert resumed['meta']['iter'] == 3

    metrics = test_tool.main([config, last, '--work-dir', work_dir, '--metrics-out',
                              str(tmp_path / 'metrics.json'), '--show-dir', 'vis',
                              '--cfg-options', *opts])
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    assert osp.isfile(tmp_path / 'metrics.json')
    # mmdet's --show-dir: one painted image per val image under work_dir/TIMESTAMP/vis
    assert len(glob.glob(osp.join(work_dir, '*', 'vis', '*'))) == 2


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        test_tool.main([osp.join(ROOT, 'configs/aqd/retinanet_r18_fpn_aqd-fp32_synthetic.py'),
                        str(tmp_path / 'nope.pth')])


@pytest.mark.parametrize('fp_config, q_config', [
    ('retinanet_r18_fpn_aqd-fp32_synthetic.py', 'retinanet_r18_fpn_aqd-w4a4_synthetic.py'),
    ('fcos_r18_fpn_aqd-fp32_synthetic.py', 'fcos_r18_fpn_aqd-w2a2_synthetic.py'),
])
def test_qat_fine_tune_from_fp_checkpoint_and_test(fp_config, q_config, tiny_data, tmp_path):
    opts = data_options(tiny_data)
    fp_dir, q_dir = str(tmp_path / 'fp'), str(tmp_path / 'q')
    # ResNet starts the last BN of each block at gamma = 0; after 2 iterations some
    # gammas sit at 1e-8 or below, by float noise that differs between CPUs, and the
    # integer conversion then (rightly) refuses the folded biases beta / gamma as too
    # large for int32. Starting them at 1 keeps this test about the tools.
    train_tool.main([osp.join(ROOT, 'configs/aqd', fp_config), '--work-dir', fp_dir,
                     '--cfg-options', 'train_cfg.max_iters=2',
                     'model.backbone.zero_init_residual=False', *opts])
    fp_ckpt = osp.join(fp_dir, 'iter_2.pth')
    q_path = osp.join(ROOT, 'configs/aqd', q_config)
    train_tool.main([q_path, '--work-dir', q_dir, '--cfg-options', 'train_cfg.max_iters=2',
                     f'load_from={fp_ckpt}', *opts])
    q_ckpt = torch.load(osp.join(q_dir, 'iter_2.pth'), map_location='cpu',
                        weights_only=False)['state_dict']
    fp_state = torch.load(fp_ckpt, map_location='cpu', weights_only=False)['state_dict']
    # FP weights were loaded, then fine-tuned; the quantizer steps were learned from data.
    assert set(fp_state) < set(q_ckpt)
    steps = [v for k, v in q_ckpt.items()
             if '.input_quantizers.' in k and k.endswith('.initialized')]
    assert steps and all(bool(v) for v in steps)
    metrics = test_tool.main([q_path, osp.join(q_dir, 'iter_2.pth'), '--work-dir', q_dir,
                              '--cfg-options', *opts])
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    # The integer engine through mmdet's evaluator: same predictions up to rounding.
    int_metrics = test_tool.main([q_path, osp.join(q_dir, 'iter_2.pth'), '--work-dir', q_dir,
                                  '--integer', '--cfg-options', *opts])
    assert 0.0 <= int_metrics['coco/bbox_mAP'] <= 1.0
    # ... and its QDQ ONNX export in onnxruntime (equal outputs up to float rounding)
    qdq_metrics = test_tool.main([q_path, osp.join(q_dir, 'iter_2.pth'), '--work-dir', q_dir,
                                  '--integer', 'onnx-qdq', '--cfg-options', *opts])
    assert qdq_metrics['coco/bbox_mAP'] == pytest.approx(int_metrics['coco/bbox_mAP'],
                                                         abs=0.01)
    # ... and the integer-kernel file (8-bit residual and FPN sums: close, not equal)
    onnx_metrics = test_tool.main([q_path, osp.join(q_dir, 'iter_2.pth'), '--work-dir', q_dir,
                                   '--integer', 'onnx', '--cfg-options', *opts])
    assert 0.0 <= onnx_metrics['coco/bbox_mAP'] <= 1.0


def test_progressive_schedule_and_resume_through_the_tools(tiny_data, tmp_path):
    """The progressive config's hooks in tools/train.py: stages, checkpointed bits, resume."""
    opts = data_options(tiny_data)
    fp_dir, q_dir = str(tmp_path / 'fp'), str(tmp_path / 'q')
    train_tool.main([osp.join(ROOT, 'configs/aqd/retinanet_r18_fpn_aqd-fp32_synthetic.py'),
                     '--work-dir', fp_dir, '--cfg-options', 'train_cfg.max_iters=1', *opts])
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/aqd/retinanet_r18_fpn_aqd-progressive-w2a2_synthetic.py'))
    cfg.custom_hooks[0].schedule = [dict(begin=0, bits=8), dict(begin=1, bits=4),
                                    dict(begin=2, bits=2)]
    cfg.custom_hooks.append(dict(type='QuantCalibrationHook', num_batches=1))
    config = str(tmp_path / 'progressive.py')
    cfg.dump(config)
    common = ['--work-dir', q_dir, '--cfg-options', f'load_from={fp_dir}/iter_1.pth', *opts]
    train_tool.main([config, *common[:2], '--cfg-options', 'train_cfg.max_iters=2',
                     'default_hooks.checkpoint.interval=2', *common[3:]])
    train_tool.main([config, *common[:2], '--resume', '--cfg-options', 'train_cfg.max_iters=3',
                     'default_hooks.checkpoint.interval=1',
                     'default_hooks.checkpoint.max_keep_ckpts=3',
                     *common[3:]])
    states = {}
    for it in (2, 3):
        ckpt = torch.load(osp.join(q_dir, f'iter_{it}.pth'), map_location='cpu',
                          weights_only=False)
        (state, ) = ckpt['aqd_bit_schedules'].values()
        states[it] = state
    # iterations 0, 1 ran at 8 and 4 bits; the resumed iteration 2 at 2 bits
    assert states[2]['stage'] == 1 and states[3]['stage'] == 2
    assert states[2]['bits']['backbone.layer1.0.conv1'] == [4, 4]
    assert states[3]['bits']['neck.fpn_convs.0.conv'] == [2, 2]
    assert 'backbone.conv1' not in states[3]['bits']  # the 8-bit stem is excluded


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a CPU machine')
def test_amp_without_cuda_is_one_usage_error(capsys):
    with pytest.raises(SystemExit) as err:
        train_tool.parse_args(
            [osp.join(ROOT, 'configs/aqd/retinanet_r18_fpn_aqd-fp32_synthetic.py'), '--amp'])
    assert err.value.code == 2
    assert '--amp needs CUDA' in capsys.readouterr().err


def test_distilled_fine_tune_saves_only_the_student(tiny_data, tmp_path):
    opts = data_options(tiny_data)
    fp_config = osp.join(ROOT, 'configs/aqd/fcos_r18_fpn_aqd-fp32_synthetic.py')
    fp_dir, kd_dir = str(tmp_path / 'fp'), str(tmp_path / 'kd')
    train_tool.main([fp_config, '--work-dir', fp_dir, '--cfg-options', 'train_cfg.max_iters=2',
                     *opts])
    fp_ckpt = osp.join(fp_dir, 'iter_2.pth')
    kd_config = osp.join(ROOT, 'configs/aqd/fcos_r18_fpn_aqd-w2a2-kd_synthetic.py')
    train_tool.main([kd_config, '--work-dir', kd_dir, '--cfg-options', 'train_cfg.max_iters=2',
                     'default_hooks.logger.interval=1', f'load_from={fp_ckpt}',
                     f'model.distill.teacher_ckpt={fp_ckpt}',
                     f'model.distill.teacher_config={fp_config}', *opts])
    state = torch.load(osp.join(kd_dir, 'iter_2.pth'), map_location='cpu',
                       weights_only=False)['state_dict']
    # the text log: a second run in one process shares the first one's scalars.json
    logs = glob.glob(osp.join(kd_dir, '*', '*.log'))
    with open(logs[-1]) as f:
        logged = f.read()
    assert 'loss_distill_feat: ' in logged and 'loss_distill_cls: ' in logged
    # the student's keys are the plain 2-bit model's: nothing of the teacher was saved
    plain = build_detector(load_config(
        osp.join(ROOT, 'configs/aqd/fcos_r18_fpn_aqd-w2a2_synthetic.py')))
    assert set(state) == set(plain.state_dict())
