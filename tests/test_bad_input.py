"""Bad input, one row each: the error it gets, with the offending value named.

Also: a failed run stops before its first training iteration and leaves the
checkpoints already in its work_dir byte-identical.
"""
import copy
import glob
import os.path as osp
import re
from functools import cached_property
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import load_checkpoint

from mmaqd.engine import BitWidthScheduleHook, QuantCalibrationHook
from mmaqd.engine.cpu_distributed import prepare_cpu_distributed
from mmaqd.integer import ConversionError, convert_detector
from mmaqd.models.utils import apply_quant_cfg
from mmaqd.quant import QConv
from mmdet.registry import MODELS
from tests.conftest import ROOT
from tests.test_engine.test_hooks.toy_runner import ToyQModel, toy_runner
from tests.test_integer.tiny_detectors import narrow, tiny_config, tiny_detector

SCHEDULE = [dict(begin=0, bits=8), dict(begin=3, bits=4)]
OTHER_SCHEDULE = [dict(begin=0, bits=8), dict(begin=4, bits=4)]
NO_MATCH = r'^neck\.nothing$'
CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason='refused on CPU-only machines')


class IterationRecorder(Hook):
    """Records the index of every training iteration that starts."""

    def __init__(self) -> None:
        self.started = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.started.append(runner.iter)


def fp_model(detector: str) -> torch.nn.Module:
    """A narrow full-precision (stage 1) model of ``detector``."""
    cfg = narrow(Config.fromfile(osp.join(ROOT, f'configs/aqd/{detector}_r18_fpn_aqd-fp32_'
                                                'synthetic.py')))
    return MODELS.build(cfg.model)


class Inputs:
    """Models and files the rows need, each made once per module on first use."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir

    def path(self, name: str) -> str:
        return osp.join(self.work_dir, name)

    @cached_property
    def retina(self) -> torch.nn.Module:
        """A calibrated 4-bit AQDRetinaNet in eval mode (only ever copied or read)."""
        return tiny_detector('retinanet', 4)

    def retina_copy(self) -> torch.nn.Module:
        return copy.deepcopy(self.retina)

    @cached_property
    def gn_fcos(self) -> torch.nn.Module:
        cfg = tiny_config('fcos', 4)
        cfg.model.bbox_head.norm_cfg = dict(type='GN', num_groups=4)
        return tiny_detector('fcos', 4, cfg=cfg)

    @cached_property
    def fcos_fp_checkpoint(self) -> str:
        """An FP FCOS checkpoint, as mmengine saves it."""
        path = self.path('fcos_fp32.pth')
        torch.save(dict(meta=dict(iter=1), state_dict=fp_model('fcos').state_dict()), path)
        return path

    @cached_property
    def schedule_checkpoint(self) -> str:
        """``iter_2.pth`` of a toy run with :data:`SCHEDULE` (in ``work_dir``/run)."""
        toy_runner(self.path('run'), 2, [BitWidthScheduleHook(SCHEDULE)]).train()
        return self.path('run/iter_2.pth')

    def damaged(self, kind: str) -> str:
        """A broken checkpoint file: ``truncated``, ``garbage``, ``text`` or ``empty``."""
        path = self.path(f'{kind}.pth')
        if not osp.exists(path):
            with open(self.schedule_checkpoint, 'rb') as f:
                good = f.read()
            gen = torch.Generator().manual_seed(0)
            data = dict(
                truncated=good[:len(good) // 2],
                garbage=bytes(torch.randint(0, 256, (4096, ), generator=gen).tolist()),
                text=b'these are my notes, not a checkpoint\n',
                empty=b'')[kind]
            with open(path, 'wb') as f:
                f.write(data)
        return path

    def resume(self, schedule: list, hooks: tuple = ()) -> None:
        """Resume the toy run from ``iter_2.pth`` with ``schedule`` (runs ``train()``)."""
        toy_runner(self.path('run'), 6, [BitWidthScheduleHook(schedule), *hooks], resume=True,
                   load_from=self.schedule_checkpoint).train()


@pytest.fixture(scope='module')
def inputs(tmp_path_factory) -> Inputs:
    return Inputs(str(tmp_path_factory.mktemp('bad_input')))


def build_detector(**quant_cfg) -> torch.nn.Module:
    cfg = tiny_config('retinanet', 4)
    cfg.model.quant_cfg.update(quant_cfg)
    return MODELS.build(cfg.model)


def build_head(**changes) -> torch.nn.Module:
    cfg = tiny_config('retinanet', 4).model.bbox_head
    cfg.update(changes)
    return MODELS.build(cfg)


def head_features(num_levels: int) -> tuple:
    return tuple(torch.zeros(1, 16, 2**(5 - k), 2**(5 - k)) for k in range(num_levels))


def with_preprocessing(mean: list, std: list) -> torch.nn.Module:
    """An (uncalibrated) AQDRetinaNet in eval mode whose config has this mean and std."""
    cfg = tiny_config('retinanet', 4)
    cfg.model.data_preprocessor.update(mean=mean, std=std)
    return MODELS.build(cfg.model).eval()


def bits_message(owner: str, bits) -> str:
    return re.escape(f'{owner}: bits={bits!r} is invalid; expected an int in 2..8, or 32')


FCOS_INTO_RETINA = (r"AQDRetinaNet: the checkpoint does not fit this model\. Size mismatches 1: "
                    r"neck\.fpn_convs\.3\.conv\.weight \(checkpoint \(16, 16, 3, 3\), model "
                    r"\(16, 64, 3, 3\)\)\. Missing 4: bbox_head\.retina_cls\.weight.* Unexpected "
                    r"15: .*bbox_head\.conv_cls\.weight")
BAD_BITS = [0, 1, 9, '4', None, 3.5]
BITS_ROWS = [
    pytest.param(lambda r, b=b: QConv(3, 4, 3, w_bits=b), ValueError,
                 bits_message('QConv weight quantizer', b), id=f'QConv-w_bits-{b!r}')
    for b in BAD_BITS
] + [
    pytest.param(lambda r, b=b: apply_quant_cfg(r.retina, dict(w_bits=b, a_bits=4)),
                 ValueError, bits_message('quant_cfg w_bits', b), id=f'quant_cfg-w_bits-{b!r}')
    for b in BAD_BITS
]

# (what is done, error type, regular expression its message must match)
BAD_INPUTS = BITS_ROWS + [
    pytest.param(lambda r: QConv(3, 4, 3, quantizer='LQS'), ValueError,
                 r"QConv: unknown quantizer type 'LQS'; valid types: 'LSQ', 'Clip', 'MinMax'",
                 id='QConv-unknown-quantizer'),
    pytest.param(lambda r: apply_quant_cfg(r.retina, dict(w_bits=4, quantizer='lsq')),
                 ValueError, r"quant_cfg: unknown quantizer type 'lsq'",
                 id='quant_cfg-unknown-quantizer'),
    pytest.param(lambda r: build_detector(overrides=[dict(pattern=NO_MATCH, w_bits=8)]),
                 ValueError,
                 re.escape(f"quant_cfg: override pattern(s) {[NO_MATCH]!r} match no QConv in "
                           f"scope 'all'"),
                 id='quant_cfg-override-matches-nothing'),
    pytest.param(lambda r: build_head(norm_cfg=dict(type='MultiLevelBN', num_levels=4)),
                 ValueError,
                 r"AQDRetinaHead: norm_cfg num_levels=4 does not match the head's 5 pyramid "
                 r'levels', id='head-MultiLevelBN-4-levels-for-5-strides'),
    pytest.param(lambda r: build_head(num_levels=4), ValueError,
                 r'AQDRetinaHead: num_levels=4 does not match the 5 strides '
                 r'\[8, 16, 32, 64, 128\]', id='head-num_levels-4-for-5-strides'),
    pytest.param(lambda r: r.retina.bbox_head(head_features(4)), ValueError,
                 r'AQDRetinaHead: got 4 feature levels, the head was built for num_levels=5',
                 id='head-forward-4-feature-levels'),
    pytest.param(lambda r: convert_detector(r.gn_fcos), ConversionError,
                 r'bbox_head\.cls_convs\.0\.norm: GroupNorm normalises with per-image '
                 r'statistics and has no integer form', id='integer-GN-head'),
    pytest.param(lambda r: convert_detector(with_preprocessing([123.675, 116.28, 103.53],
                                                               [1, 1, 1])), ConversionError,
                 r'data_preprocessor mean \[123\.67.* do not give an integer image',
                 id='integer-non-integer-mean'),
    pytest.param(lambda r: convert_detector(with_preprocessing([124, 116, 104],
                                                               [58.5, 57.0, 57.5])),
                 ConversionError,
                 r'std \[58\.5, 57\.0, 57\.5\] do not give an integer image',
                 id='integer-std-not-1'),
    pytest.param(lambda r: r.retina_copy().load_state_dict(
        torch.load(r.fcos_fp_checkpoint)['state_dict']), ValueError,
                 FCOS_INTO_RETINA,
                 id='FCOS-state-dict-into-AQDRetinaNet'),
    pytest.param(lambda r: load_checkpoint(r.retina_copy(), r.fcos_fp_checkpoint), ValueError,
                 FCOS_INTO_RETINA,
                 id='FCOS-checkpoint-into-AQDRetinaNet-via-load_checkpoint'),
    pytest.param(lambda r: load_checkpoint(ToyQModel(), r.damaged('truncated')), RuntimeError,
                 r"truncated\.pth' is truncated or not a torch checkpoint",
                 id='checkpoint-truncated'),
    pytest.param(lambda r: load_checkpoint(ToyQModel(), r.damaged('garbage')), RuntimeError,
                 r"garbage\.pth' is truncated or not a torch checkpoint",
                 id='checkpoint-random-bytes'),
    pytest.param(lambda r: load_checkpoint(ToyQModel(), r.damaged('text')), RuntimeError,
                 r"text\.pth' is truncated or not a torch checkpoint",
                 id='checkpoint-text-file'),
    pytest.param(lambda r: load_checkpoint(ToyQModel(), r.damaged('empty')), RuntimeError,
                 r"empty\.pth' is truncated or not a torch checkpoint: EOFError",
                 id='checkpoint-empty-file'),
    pytest.param(lambda r: r.resume(OTHER_SCHEDULE), ValueError,
                 r"cannot resume: the checkpoint was saved with bit schedule .*'begin': 3.*"
                 r"this run has .*'begin': 4", id='resume-with-another-bit-schedule'),
    pytest.param(lambda r: QuantCalibrationHook(num_batches=0), ValueError,
                 r'QuantCalibrationHook: num_batches=0 is invalid; expected an int >= 1',
                 id='calibration-num_batches-0'),
    pytest.param(lambda r: BitWidthScheduleHook([dict(begin=0, bits=8), dict(begin=50, bits=4),
                                                 dict(begin=50, bits=2)]), ValueError,
                 r'schedule\[2\] .*begin=50 does not increase \(previous entry begins at 50\)',
                 id='schedule-begin-not-increasing'),
    pytest.param(lambda r: BitWidthScheduleHook(SCHEDULE, pattern=r'^neck').before_run(
        SimpleNamespace(model=ToyQModel())), ValueError,
                 r"BitWidthScheduleHook: pattern '\^neck' matches no QConv",
                 id='schedule-pattern-matches-nothing'),
    pytest.param(lambda r: prepare_cpu_distributed(Config(dict(launcher='pytorch',
                                                               sync_bn='torch'))),
                 ValueError, r"sync_bn='torch' .* need CUDA; on CPU use .*SyncQBN",
                 id='ddp-sync_bn-without-cuda', marks=CPU_ONLY),
    pytest.param(lambda r: prepare_cpu_distributed(Config(dict(launcher='slurm'))), ValueError,
                 r"launcher 'slurm' on a machine without CUDA", id='ddp-slurm-without-cuda',
                 marks=CPU_ONLY),
]


@pytest.mark.parametrize('action, error, message', BAD_INPUTS)
def test_bad_input_is_refused_naming_the_value(inputs, action, error, message):
    with pytest.raises(error, match=message):
        action(inputs)


def test_fp_checkpoint_of_the_same_architecture_loads(inputs):
    """The counterpart of the FCOS row: an FP RetinaNet fits (only quantizer keys missing)."""
    model = inputs.retina_copy()
    state = fp_model('retinanet').state_dict()
    model.load_state_dict(state)
    assert torch.equal(model.backbone.conv1.weight, state['backbone.conv1.weight'])


FAILED_RUNS = [
    pytest.param(lambda r, hooks: r.resume(OTHER_SCHEDULE, hooks=hooks), ValueError,
                 'saved with bit schedule', id='resume-with-another-bit-schedule'),
    pytest.param(lambda r, hooks: toy_runner(r.path('run'), 6, hooks,
                                             load_from=r.damaged('truncated')).train(),
                 RuntimeError, 'truncated or not a torch checkpoint', id='load_from-truncated'),
    pytest.param(lambda r, hooks: toy_runner(r.path('run'), 6, hooks, resume=True,
                                             load_from=r.damaged('garbage')).train(),
                 RuntimeError, 'truncated or not a torch checkpoint', id='resume-from-garbage'),
    pytest.param(lambda r, hooks: toy_runner(
        r.path('run'), 6, hooks + [dict(type='QuantCalibrationHook', num_batches=0)]).train(),
                 ValueError, 'num_batches=0', id='calibration-num_batches-0'),
    pytest.param(lambda r, hooks: toy_runner(
        r.path('run'), 6, hooks + [BitWidthScheduleHook(SCHEDULE, pattern='^neck')]).train(),
                 ValueError, 'matches no QConv', id='schedule-pattern-matches-nothing'),
]


@pytest.mark.parametrize('run, error, message', FAILED_RUNS)
def test_failed_run_stops_before_training_and_keeps_earlier_checkpoints(
        inputs, run, error, message):
    ckpt = inputs.schedule_checkpoint
    with open(ckpt, 'rb') as f:
        before = f.read()
    recorder = IterationRecorder()
    with pytest.raises(error, match=message):
        run(inputs, [recorder])
    assert recorder.started == []
    with open(ckpt, 'rb') as f:
        assert f.read() == before
    assert sorted(glob.glob(inputs.path('run/*.pth'))) == [ckpt]
