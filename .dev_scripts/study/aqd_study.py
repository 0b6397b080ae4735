"""The AQD reproduction study (accuracy vs bits, min-max baseline, ablations): one entry point.

Each row of the study is one ``tools/train.py`` run (or one ``tools/test.py`` run
for the integer rows) in its own process, with a generated config that inherits
one of ``configs/aqd/`` and changes only what the row studies. Finished rows are
cached in their work dirs, so an interrupted study continues where it stopped.
The results go to one JSON file; ``.dev_scripts/study/study_report.py`` turns it
into ``docs/benchmarks.md``, the plot and README's results table.

Plans (``PLANS``; ``--dry-run`` prints one with its time estimate):
- ``quick`` (about 9 min on 2 cores): RetinaNet on the digits, FP, AQD w4/w2, min-max
  w2, the integer engine and the costs, short schedules, 50 val images.
- ``full`` (about 2 h on 2 cores): digits and NEON trees, RetinaNet-R18 and
  FCOS-R18: FP and AQD w4a4/w3a3/w2a2 with 3 seeds (for RetinaNet on the digits 3
  FP seeds, elsewhere one FP model and 3 fine-tune seeds from it), the
  min-max QAT baseline (all bit widths for RetinaNet on the digits, 2 bits
  elsewhere), the 2-bit ablations on RetinaNet / digits (head norm, scope,
  quantizer, progressive vs direct, integer engine vs fake-quant), an FP control
  trained on for the fine-tunes' iterations, and the costs; digits FP 200 and
  fine-tunes 50 iterations, the first 200 digits val images. The NEON FP models
  train once for longer (800 iterations, about 15 min each) and are then reused
  from the cache, or passed with ``--fp-checkpoint``: about 2 h then, 2.5 h from
  an empty cache.
- ``large`` (about 12 h on 2 cores; a GPU machine or a night): the configs' own
  schedules, 3 seeds and every min-max bit width everywhere, all val images.

Examples::

    python .dev_scripts/study/aqd_study.py --quick --dry-run   # the plan and its estimate
    python .dev_scripts/study/aqd_study.py --quick
    python .dev_scripts/study/aqd_study.py            # the full plan
    python .dev_scripts/study/aqd_study.py \
        --fp-checkpoint neon-trees/retinanet=work_dirs/demo/neon-trees/fp32/iter_800.pth
"""
import argparse
import glob
import hashlib
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from mmaqd.datasets import write_subset

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(ROOT, 'configs', 'aqd')
#: Seconds per training iteration on the project's 2-core CPU, for the plan's time
#: estimate only: the typical values of the full study's rows (2026-11-27); NEON from
#: the converging study's rows (2026-12-07: 800 FP iterations in 769 s, 300 quantized
#: ones in 386-427 s).
SECONDS_PER_ITER = {('synthetic', False): 1.3, ('synthetic', True): 1.4,
                    ('neon-trees', False): 0.9, ('neon-trees', True): 1.2}
#: A distilled row's step time relative to the same row without the teacher (the
#: README's train-step cost measurement).
DISTILL_STEP_FACTOR = 1.38
#: Seconds of one evaluation of the whole val split (500 digits images, 11 NEON batches).
SECONDS_PER_EVAL = {'synthetic': 45, 'neon-trees': 15}
#: Where each dataset's configs read it, relative to the checkout (``make data``).
DATA_DIRS = {'synthetic': osp.join('data', 'synthetic'),
             'neon-trees': osp.join('data', 'neon_trees')}
#: Seconds every run spends outside its iterations and evaluation (start, build, save).
SECONDS_PER_RUN = 25
#: Seconds of one round of the cost measurements (FP, 4- and 2-bit RetinaNet).
COST_SECONDS_PER_REPEAT = 15
#: The int64 engine's evaluation time relative to the fake-quant model's.
INTEGER_EVAL_FACTOR = 5
#: The quantized digits configs' AdamW lr (the FP configs'), for the FP control.
FINE_TUNE_LR = Config.fromfile(osp.join(CONFIGS, 'retinanet_r18_fpn_aqd-w4a4_synthetic.py')
                               ).optim_wrapper.optimizer.lr
#: The configs' own 8-bit patterns (configs/_base_/quantization/aqd_w4a4.py).
QUANTIZATION = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'quantization',
                                        'aqd_w4a4.py'))
STEM_8BIT = [dict(pattern=QUANTIZATION.stem_pattern, w_bits=8)]


@dataclass(frozen=True)
class Setup:
    """One (data, detector) block of a plan.

    Attributes:
        dataset (str): ``'synthetic'`` or ``'neon-trees'``.
        detector (str): ``'retinanet'`` or ``'fcos'``.
        seeds (tuple[int]): Seeds of its FP rows (and of its AQD rows by default).
        minmax_bits (tuple[int]): Bit widths of its min-max QAT baseline (seed 0).
        qat_seeds (tuple[int], optional): Seeds of its AQD rows if they differ; an AQD
            row whose seed has no FP row fine-tunes the seed-0 FP model (one FP
            model trained once, the quantized fine-tunes repeated).
    """
    dataset: str
    detector: str
    seeds: Tuple[int, ...]
    minmax_bits: Tuple[int, ...]
    qat_seeds: Optional[Tuple[int, ...]] = None


@dataclass(frozen=True)
class PlanSpec:
    """The size of a plan.

    Attributes:
        setups (tuple[Setup]): Its (data, detector) blocks.
        bits (tuple[int]): AQD bit widths.
        fp_iters (dict): FP training iterations per dataset.
        q_iters (dict): Quantized fine-tuning iterations per dataset.
        val_images (dict): Evaluated val images per dataset (the first ones; None: all).
        ablations (bool): The 2-bit ablations on RetinaNet / digits (head norm, scope,
            quantizer, progressive) and the FP-continued control.
        simulation (bool): The float64 simulation row next to the integer-engine row.
        cost_repeats (int): Timed rounds of the cost measurements (0: none).
    """
    setups: Tuple[Setup, ...]
    bits: Tuple[int, ...]
    fp_iters: Dict[str, int]
    q_iters: Dict[str, int]
    val_images: Dict[str, Optional[int]]
    ablations: bool
    simulation: bool
    cost_repeats: int


PLANS = {
    # the machinery end to end in about 10 minutes
    'quick': PlanSpec(setups=(Setup('synthetic', 'retinanet', (0, ), (2, )), ), bits=(4, 2),
                      fp_iters={'synthetic': 120}, q_iters={'synthetic': 40},
                      val_images={'synthetic': 50}, ablations=False, simulation=False,
                      cost_repeats=1),
    # the study within 2 hours of the project's 2-core CPU: three FP seeds where the
    # signal is (digits, RetinaNet), elsewhere one FP model and three AQD seeds;
    # short schedules, a 200-image val subset
    'full': PlanSpec(setups=(Setup('synthetic', 'retinanet', (0, 1, 2), (4, 3, 2)),
                             Setup('synthetic', 'fcos', (0, ), (2, ), (0, 1, 2)),
                             Setup('neon-trees', 'retinanet', (0, ), (2, ), (0, 1, 2)),
                             Setup('neon-trees', 'fcos', (0, ), (2, ), (0, 1, 2))),
                     bits=(4, 3, 2), fp_iters={'synthetic': 200, 'neon-trees': 800},
                     q_iters={'synthetic': 50, 'neon-trees': 50},
                     val_images={'synthetic': 200, 'neon-trees': None}, ablations=True,
                     simulation=True, cost_repeats=5),
    # the converging study (build_converge_plan): FP models trained to the configs'
    # 500 iterations, fine-tunes of 100 / 300 / 900 iterations; about a day of the
    # 2-core CPU (2.5 s per quantized iteration measured), run over several sessions:
    # rows are cached in their work dirs and read back from docs/results/
    # accuracy_study.json
    'converge': PlanSpec(setups=(Setup('synthetic', 'retinanet', (0, ), (), (0, 1, 2)),
                                 Setup('synthetic', 'fcos', (0, ), (), (0, 1, 2)),
                                 Setup('neon-trees', 'retinanet', (0, ), (), (0, )),
                                 Setup('neon-trees', 'fcos', (0, ), (), (0, ))),
                         bits=(2, 4, 3), fp_iters={'synthetic': 500, 'neon-trees': 800},
                         q_iters={'synthetic': 300, 'neon-trees': 300},
                         val_images={'synthetic': None, 'neon-trees': None}, ablations=True,
                         simulation=False, cost_repeats=0),
    # the configs' own schedules, three seeds everywhere (about 12 hours on 2 cores:
    # for a GPU machine or a night)
    'large': PlanSpec(setups=tuple(Setup(d, det, (0, 1, 2), (4, 3, 2))
                                   for d in ('synthetic', 'neon-trees')
                                   for det in ('retinanet', 'fcos')),
                      bits=(4, 3, 2), fp_iters={'synthetic': 500, 'neon-trees': 800},
                      q_iters={'synthetic': 300, 'neon-trees': 300},
                      val_images={'synthetic': None, 'neon-trees': None}, ablations=True,
                      simulation=True, cost_repeats=7),
}


@dataclass
class Run:
    """One row of the study.

    Attributes:
        name (str): Unique name, also the work dir under the study's root.
        dataset (str): ``'synthetic'`` or ``'neon-trees'``.
        detector (str): ``'retinanet'`` or ``'fcos'``.
        method (str): ``'fp'``, ``'aqd'``, ``'minmax'`` or an ablation name.
        bits (int): Bit width (32 for FP).
        seed (int): ``randomness.seed``.
        config (str): The config file under ``configs/aqd`` it inherits.
        changes (dict): Top-level config keys it overrides (merged by mmengine).
        parent (str, optional): The run whose last checkpoint it starts from.
        iters (int): Training iterations (0 for evaluation-only rows).
        integer (str, optional): For evaluation rows: ``'int'`` or ``'float'``
            (``tools/test.py --integer``) of the parent's checkpoint.
        checkpoint (str, optional): For an FP row: an FP model trained before
            (``--fp-checkpoint``), evaluated and used instead of training one.
        distill (bool): Distil from the parent (the FP model it starts from): its
            config and checkpoint become the row's ``model.distill`` teacher.
    """
    name: str
    dataset: str
    detector: str
    method: str
    bits: int
    seed: int
    config: str
    changes: Dict = field(default_factory=dict)
    parent: Optional[str] = None
    iters: int = 0
    integer: Optional[str] = None
    checkpoint: Optional[str] = None
    distill: bool = False


def _schedule(iters: int, warmup: int) -> Dict:
    """Iterations and the configs' warm-up + cosine schedule ending at ``iters``."""
    return dict(train_cfg=dict(max_iters=iters),
                param_scheduler=[
                    dict(type='LinearLR', start_factor=0.1 if warmup <= 20 else 0.01,
                         by_epoch=False, begin=0, end=warmup),
                    dict(type='CosineAnnealingLR', by_epoch=False, begin=warmup, end=iters,
                         eta_min_ratio=0.01)])


def _merge(*dicts: Dict) -> Dict:
    """Recursive merge of nested config dicts (later wins; lists are replaced)."""
    out: Dict = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = _merge(out[key], value)
            else:
                out[key] = value
    return out


def progressive_hooks(iters: int) -> Dict:
    """The progressive config's 8 -> 4 -> 3 -> 2-bit schedule scaled to ``iters``.

    As in ``retinanet_r18_fpn_aqd-progressive-w2a2_synthetic.py``: a sixth of the
    iterations at 8, 4 and 3 bits each, the second half at 2 bits.
    """
    begins = (0, iters // 6, iters // 3, iters // 2)
    return dict(custom_hooks=[
        dict(type='BitWidthScheduleHook',
             schedule=[dict(begin=b, bits=bits) for b, bits in zip(begins, (8, 4, 3, 2))],
             exclude=[QUANTIZATION.stem_pattern, QUANTIZATION.retinanet_predictor_pattern]),
        dict(type='QuantNaNGuardHook')])


def build_plan(mode: str) -> List[Run]:
    """The rows of a plan, parents before children.

    Args:
        mode (str): A key of :data:`PLANS`.

    Returns:
        list[Run]: The runs.
    """
    if mode not in PLANS:
        raise ValueError(f'mode must be one of {sorted(PLANS)}, got {mode!r}')
    if mode == 'converge':
        return build_converge_plan()
    spec = PLANS[mode]
    runs: List[Run] = []

    def fp_run(name: str, dataset: str, det: str, method: str, seed: int,
               extra: Optional[Dict] = None) -> Run:
        iters = spec.fp_iters[dataset]
        warmup = min(50 if dataset == 'synthetic' else 100, iters // 3)
        return Run(name, dataset, det, method, 32, seed,
                   f'{det}_r18_fpn_aqd-fp32_{dataset}.py',
                   _merge(_schedule(iters, warmup), extra or {}), iters=iters)

    def q_run(name: str, dataset: str, det: str, method: str, bits: int, parent: str,
              seed: int = 0, extra: Optional[Dict] = None, config: Optional[str] = None) -> Run:
        iters = spec.q_iters[dataset]
        return Run(name, dataset, det, method, bits, seed,
                   config or f'{det}_r18_fpn_aqd-w{bits}a{bits}_{dataset}.py',
                   _merge(_schedule(iters, min(20, iters // 3)), extra or {}),
                   parent=parent, iters=iters)

    for setup in spec.setups:
        dataset, det = setup.dataset, setup.detector
        prefix = f'{dataset}/{det}'
        for seed in setup.seeds:
            runs.append(fp_run(f'{prefix}/fp_s{seed}', dataset, det, 'fp', seed))
        for seed in setup.qat_seeds or setup.seeds:
            parent = f'{prefix}/fp_s{seed if seed in setup.seeds else 0}'
            for bits in spec.bits:
                runs.append(q_run(f'{prefix}/aqd_w{bits}_s{seed}', dataset, det, 'aqd', bits,
                                  parent, seed))
        for bits in setup.minmax_bits:
            runs.append(q_run(f'{prefix}/minmax_w{bits}_s0', dataset, det, 'minmax', bits,
                              f'{prefix}/fp_s0',
                              extra=dict(model=dict(quant_cfg=dict(quantizer='MinMax')))))
    dataset, det = 'synthetic', 'retinanet'
    prefix = f'{dataset}/{det}'
    q2 = 'retinanet_r18_fpn_aqd-w2a2_synthetic.py'
    runs.append(Run(f'{prefix}/aqd_w2_s0_integer', dataset, det, 'integer', 2, 0, q2,
                    parent=f'{prefix}/aqd_w2_s0', integer='int'))
    if spec.simulation:
        runs.append(Run(f'{prefix}/aqd_w2_s0_simulation', dataset, det, 'simulation', 2, 0,
                        q2, parent=f'{prefix}/aqd_w2_s0', integer='float'))
    if not spec.ablations:
        return runs
    # the FP model trained on for the fine-tunes' iterations: what the extra
    # iterations alone give, without quantization
    runs.append(q_run(f'{prefix}/fp_continued_s0', dataset, det, 'fp_continued', 32,
                      f'{prefix}/fp_s0', config='retinanet_r18_fpn_aqd-fp32_synthetic.py',
                      extra=dict(optim_wrapper=dict(optimizer=dict(lr=FINE_TUNE_LR)))))
    for norm in ('SharedLevelBN', 'GN'):
        norm_cfg = dict(type=norm) if norm != 'GN' else dict(type='GN', num_groups=32,
                                                             _delete_=True)
        head = dict(model=dict(bbox_head=dict(norm_cfg=norm_cfg)))
        runs.append(fp_run(f'{prefix}/fp_{norm}_s0', dataset, det, f'fp_{norm}', 0, head))
        runs.append(q_run(f'{prefix}/head_{norm}_w2_s0', dataset, det, f'head_{norm}', 2,
                          f'{prefix}/fp_{norm}_s0', extra=head))
    for scope in ('backbone', 'backbone+neck'):
        runs.append(q_run(f'{prefix}/scope_{scope}_w2_s0', dataset, det, f'scope_{scope}', 2,
                          f'{prefix}/fp_s0', extra=dict(model=dict(quant_cfg=dict(
                              scope=scope, overrides=STEM_8BIT)))))
    runs.append(q_run(f'{prefix}/clip_w2_s0', dataset, det, 'quantizer_clip', 2,
                      f'{prefix}/fp_s0',
                      extra=dict(model=dict(quant_cfg=dict(quantizer='Clip')))))
    runs.append(q_run(f'{prefix}/progressive_w2_s0', dataset, det, 'progressive', 2,
                      f'{prefix}/fp_s0', extra=progressive_hooks(spec.q_iters[dataset]),
                      config='retinanet_r18_fpn_aqd-progressive-w2a2_synthetic.py'))
    return runs


#: Fine-tune lengths of the converging study, the most informative first.
CONVERGE_ITERS = (300, 100, 900)
#: ``custom_hooks`` of a quantized row without integer-aware QAT (the CPU schedule's).
PLAIN_QAT_HOOKS = dict(custom_hooks=[dict(type='QuantNaNGuardHook')])
#: Steps from the least-squared-error calibration instead of LSQ's first-batch rule.
MSE_STEPS = dict(custom_hooks=[dict(type='QuantCalibrationHook', rule='mse', num_batches=4),
                               dict(type='QuantNaNGuardHook'),
                               QUANTIZATION.integer_aware_hook])
#: AQD's fine-tune lr ratio, a tenth of the FP lr: the quantized digits configs' lr
#: until the recipe rows showed 2 bits short of budget with it.
TENTH_LR = dict(optim_wrapper=dict(optimizer=dict(lr=FINE_TUNE_LR / 10)))
#: The recipe rows (what limits 2 bits, #18): name -> (bit widths, changes to the AQD
#: config), each a row at 300 iterations from the setup's FP model.
RECIPES = {'recipe-lr1e-4': ((2, 4, 3), TENTH_LR), 'recipe-mse': ((2, ), MSE_STEPS),
           'recipe-mse-lr1e-4': ((2, ), _merge(MSE_STEPS, TENTH_LR))}
#: The NEON configs' FP SGD lr; their quantized configs fine-tune at a tenth of it.
NEON_FP_LR = Config.fromfile(osp.join(CONFIGS, 'retinanet_r18_fpn_aqd-fp32_neon-trees.py')
                             ).optim_wrapper.optimizer.lr
#: The recipe rows on real data: does the digits' finding (fine-tune at the FP lr)
#: carry over to NEON's SGD configs at 2 bits?
NEON_RECIPES = {'recipe-fp-lr': ((2, ), dict(optim_wrapper=dict(optimizer=dict(
    lr=NEON_FP_LR))))}


def build_converge_plan() -> List[Run]:
    """The rows of the converging study (#18), parents first, the most informative first.

    Per (data, detector): the FP model at the config's iterations (seed 0); then AQD
    (integer-aware, the configs' default) and AQD with distillation from that FP
    model (``aqd_kd``) at 4, 3 and 2 bits, and the FP model trained on with the
    fine-tunes' optimizer (``fp_continued``), for each of :data:`CONVERGE_ITERS`
    on the digits (300 on NEON); fine-tune seeds 1 and 2 at 300 iterations; at 300
    iterations also AQD without integer-aware QAT (``aqd_float``, 4 and 2 bits), the
    integer engine's mAP of the AQD models (``integer``) and the recipe rows
    (:data:`RECIPES`); 2-bit AQD seeds 1 and 2 at 900 iterations. Then the 2-bit head
    norm ablation on the digits: shared BN and GN heads, each from its own FP
    model, at 300 and 900 iterations (multi-level BN is the ``aqd`` row). Last, NEON's
    rows and its recipe rows (:data:`NEON_RECIPES`).

    Returns:
        list[Run]: The runs.
    """
    spec = PLANS['converge']
    runs: List[Run] = []

    def fp_row(prefix: str, dataset: str, det: str, method: str = 'fp',
               extra: Optional[Dict] = None) -> Run:
        iters = spec.fp_iters[dataset]
        warmup = 50 if dataset == 'synthetic' else 100
        return Run(f'{prefix}/{method}_s0', dataset, det, method, 32, 0,
                   f'{det}_r18_fpn_aqd-fp32_{dataset}.py',
                   _merge(_schedule(iters, warmup), extra or {}), iters=iters)

    def tune_row(prefix: str, dataset: str, det: str, method: str, bits: int, iters: int,
                 seed: int = 0, parent: str = 'fp_s0', extra: Optional[Dict] = None,
                 distill: bool = False) -> Run:
        config = (f'{det}_r18_fpn_aqd-fp32_{dataset}.py' if bits == 32 else
                  f'{det}_r18_fpn_aqd-w{bits}a{bits}_{dataset}.py')
        bits_tag = 'fp' if bits == 32 else f'w{bits}'
        return Run(f'{prefix}/{method}_{bits_tag}_i{iters}_s{seed}', dataset, det, method, bits,
                   seed, config, _merge(_schedule(iters, min(20, iters // 3)), extra or {}),
                   parent=f'{prefix}/{parent}', iters=iters, distill=distill)

    continued = dict(optim_wrapper=dict(optimizer=dict(lr=FINE_TUNE_LR)))

    def core(setup: Setup, iters: int, seeds: Sequence[int]) -> List[Run]:
        prefix = f'{setup.dataset}/{setup.detector}'
        rows = []
        for seed in seeds:
            for bits in spec.bits:
                for method, distill in (('aqd', False), ('aqd_kd', True)):
                    rows.append(tune_row(prefix, setup.dataset, setup.detector, method, bits,
                                         iters, seed, distill=distill))
        if 0 in seeds:
            rows.append(tune_row(prefix, setup.dataset, setup.detector, 'fp_continued', 32,
                                 iters, extra=continued))
        return rows

    digits = [s for s in spec.setups if s.dataset == 'synthetic']
    neon = [s for s in spec.setups if s.dataset != 'synthetic']
    for setup in digits:
        runs.append(fp_row(f'{setup.dataset}/{setup.detector}', setup.dataset, setup.detector))
    for setup in digits:
        prefix = f'{setup.dataset}/{setup.detector}'
        runs += core(setup, 300, (0, ))
        for bits in (2, 4):
            runs.append(tune_row(prefix, setup.dataset, setup.detector, 'aqd_float', bits, 300,
                                 extra=PLAIN_QAT_HOOKS))
            parent = f'{prefix}/aqd_w{bits}_i300_s0'
            runs.append(Run(f'{parent}_integer', setup.dataset, setup.detector, 'integer',
                            bits, 0, f'{setup.detector}_r18_fpn_aqd-w{bits}a{bits}_synthetic.py',
                            parent=parent, integer='int', iters=300))
        for method, (recipe_bits, extra) in RECIPES.items():
            runs += [tune_row(prefix, setup.dataset, setup.detector, method, bits, 300,
                              extra=extra) for bits in recipe_bits]
    for iters in CONVERGE_ITERS[1:2]:
        for setup in digits:
            runs += core(setup, iters, (0, ))
    for setup in digits:
        runs += core(setup, 300, tuple(s for s in setup.qat_seeds or () if s != 0))
    for iters in CONVERGE_ITERS[2:]:
        for setup in digits:
            runs += core(setup, iters, (0, ))
    # the goals are means of 3 seeds at up to 900 iterations: 2 bits' further seeds there
    for setup in digits:
        runs += [tune_row(f'{setup.dataset}/{setup.detector}', setup.dataset, setup.detector,
                          'aqd', 2, CONVERGE_ITERS[2], seed)
                 for seed in setup.qat_seeds or () if seed != 0]
    prefix = 'synthetic/retinanet'
    for norm in ('SharedLevelBN', 'GN'):
        norm_cfg = dict(type=norm) if norm != 'GN' else dict(type='GN', num_groups=32,
                                                             _delete_=True)
        head = dict(model=dict(bbox_head=dict(norm_cfg=norm_cfg)))
        runs.append(fp_row(prefix, 'synthetic', 'retinanet', f'fp_{norm}', head))
        for iters in (300, 900):
            # GN has no integer form: no integer-aware QAT for it
            extra = _merge(head, PLAIN_QAT_HOOKS) if norm == 'GN' else head
            runs.append(tune_row(prefix, 'synthetic', 'retinanet', f'head_{norm}', 2, iters,
                                 parent=f'fp_{norm}_s0', extra=extra))
    for setup in neon:
        prefix = f'{setup.dataset}/{setup.detector}'
        runs.append(fp_row(prefix, setup.dataset, setup.detector))
        runs += core(setup, 300, (0, ))
        for method, (recipe_bits, extra) in NEON_RECIPES.items():
            runs += [tune_row(prefix, setup.dataset, setup.detector, method, bits, 300,
                              extra=extra) for bits in recipe_bits]
    return runs


VAL_SIZES = {'synthetic': 500, 'neon-trees': None}


def estimate_seconds(run: Run, val_images: Optional[int] = None) -> float:
    """Rough duration of a run on the project's 2-core CPU (for the plan's estimate).

    Args:
        run (Run): The run.
        val_images (int, optional): Val images evaluated (None: the whole split).

    Returns:
        float: Seconds.
    """
    evaluation = SECONDS_PER_EVAL[run.dataset]
    if val_images is not None and VAL_SIZES[run.dataset]:
        evaluation *= min(1.0, val_images / VAL_SIZES[run.dataset])
    if run.integer:
        return SECONDS_PER_RUN + INTEGER_EVAL_FACTOR * evaluation
    if run.checkpoint:
        return SECONDS_PER_RUN + evaluation
    per_iter = SECONDS_PER_ITER[(run.dataset, run.bits != 32)]
    if run.distill:
        per_iter *= DISTILL_STEP_FACTOR
    return SECONDS_PER_RUN + run.iters * per_iter + evaluation


def plan_seconds(mode: str, plan: Sequence[Run], costs: bool = True) -> float:
    """Estimated seconds of ``plan``'s runs plus (``costs``) the cost measurements."""
    spec = PLANS[mode]
    total = sum(estimate_seconds(run, spec.val_images.get(run.dataset)) for run in plan)
    if costs and spec.cost_repeats:
        total += COST_SECONDS_PER_REPEAT * (spec.cost_repeats + 1) + SECONDS_PER_RUN
    return total


def render_config(run: Run, load_from: Optional[str], val_ann: Optional[str],
                  teacher_config: Optional[str] = None) -> str:
    """The Python config of a run: its base config plus its changes.

    Args:
        run (Run): The run.
        load_from (str, optional): Checkpoint to start from.
        val_ann (str, optional): An annotation file replacing the val / test split's.
        teacher_config (str, optional): For a distilling run, the teacher's config
            (its checkpoint is ``load_from``).

    Returns:
        str: Config source that mmengine reads.
    """
    changes = _merge(run.changes, dict(randomness=dict(seed=run.seed)))
    if run.distill:
        if teacher_config is None or load_from is None:
            raise ValueError(f'{run.name}: a distilling run needs its parent\'s config and '
                             f'checkpoint')
        changes = _merge(changes, dict(model=dict(distill=dict(
            teacher_config=teacher_config, teacher_ckpt=load_from))))
    if val_ann is not None:
        for loader in ('val_dataloader', 'test_dataloader'):
            changes = _merge(changes, {loader: dict(dataset=dict(ann_file=val_ann))})
        for evaluator in ('val_evaluator', 'test_evaluator'):
            changes = _merge(changes, {evaluator: dict(ann_file=val_ann)})
    lines = [f'# generated by .dev_scripts/study/aqd_study.py for {run.name}',
             f'_base_ = {osp.join(CONFIGS, run.config)!r}']
    lines += [f'{key} = {value!r}' for key, value in changes.items()]
    lines.append(f'load_from = {load_from!r}')
    return '\n'.join(lines) + '\n'


def last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint a run's ``last_checkpoint`` file points to.

    Args:
        work_dir (str): The run's work dir.

    Returns:
        str | None: Its path, or None if the run saved none (or it is gone).
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        path = f.read().strip()
    return path if osp.isfile(path) else None


def final_metrics(work_dir: str) -> Optional[Dict[str, float]]:
    """The last val metrics mmengine logged in the newest run folder of a work dir.

    Older folders (earlier attempts of the same row) are not read: a rerun that
    logged no metrics must not report an earlier attempt's.

    Args:
        work_dir (str): The run's work dir.

    Returns:
        dict | None: ``coco/*`` metrics, or None if none were logged.
    """
    paths = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not paths:
        return None
    with open(paths[-1]) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    for entry in reversed(lines):
        if 'coco/bbox_mAP' in entry:
            return {k: float(v) for k, v in entry.items() if k.startswith('coco/')}
    return None


def result_path(work_dir: str) -> str:
    """Where a finished run's row is cached."""
    return osp.join(work_dir, 'study_result.json')


def file_sha256(path: str) -> str:
    """The first 16 hex digits of a file's SHA-256 (a checkpoint's identity)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()[:16]


def root_name(name: str, get_row: Callable[[str], Optional[Dict]]) -> Optional[str]:
    """The FP row a row's chain of parents starts from.

    Args:
        name (str): The row's name.
        get_row (callable): Name -> the row (with its ``parent``), or None if unknown.

    Returns:
        str | None: The root's name, or None if a row of the chain is unknown.
    """
    row = get_row(name)
    while row is not None:
        if row['parent'] is None:
            return name
        name = row['parent']
        row = get_row(name)
    return None


def start_model(run: Run, root: str, committed: Optional[Dict[str, Dict]] = None
                ) -> Optional[str]:
    """Identity (:func:`file_sha256`) of the FP checkpoint a run's chain starts from.

    The FP rows always run here (their children need the checkpoint), so the root's
    checkpoint is read from its work dir; the rows between it and the run come from
    their caches or, if reused, from ``committed``.

    Args:
        run (Run): The run (an FP row: its own checkpoint, once it has one).
        root (str): Root of the runs' work dirs.
        committed (dict, optional): Rows committed before (:func:`committed_rows`).

    Returns:
        str | None: The identity, or None while that checkpoint does not exist.
    """
    def get_row(name: str) -> Optional[Dict]:
        cached = result_path(osp.join(root, name))
        if osp.isfile(cached):
            with open(cached) as f:
                return json.load(f)
        return (committed or {}).get(name)

    name = run.name if run.parent is None else root_name(run.parent, get_row)
    ckpt = None if name is None else last_checkpoint(osp.join(root, name))
    return None if ckpt is None else file_sha256(ckpt)


def adopt_fp_checkpoints(plan: List[Run], given: Sequence[str]) -> List[Run]:
    """Use FP models trained before as the seed-0 FP rows of their setups.

    Args:
        plan (list[Run]): The plan.
        given (list[str]): ``DATASET/DETECTOR=CHECKPOINT`` items.

    Returns:
        list[Run]: The plan with those FP rows evaluating the checkpoints (no training).

    Raises:
        ValueError: If an item is malformed, names no FP row of the plan or its file
            does not exist.
    """
    checkpoints = {}
    for item in given:
        setup, sep, path = item.partition('=')
        if not sep or not path:
            raise ValueError(f'--fp-checkpoint takes DATASET/DETECTOR=CHECKPOINT, got {item!r}')
        if not osp.isfile(path):
            raise ValueError(f'--fp-checkpoint {item!r}: {path!r} does not exist')
        checkpoints[f'{setup}/fp_s0'] = osp.abspath(path)
    names = {run.name for run in plan}
    unknown = sorted(set(checkpoints) - names)
    if unknown:
        raise ValueError(f'--fp-checkpoint: the plan has no FP row {unknown[0]!r}; its FP rows: '
                         f'{sorted(n for n in names if n.endswith("/fp_s0"))}')
    return [replace(run, checkpoint=checkpoints[run.name], iters=0, changes={})
            if run.name in checkpoints else run for run in plan]


def config_sha256(run: Run) -> str:
    """The SHA-256 (first 16 hex digits) of the run's config as mmengine resolves it.

    The config file's own text and all it inherits count, with the run's changes
    merged in; the paths that depend on where the study runs (the start checkpoint,
    a teacher, a val subset) do not. So a row made before a change to a config
    under ``configs/`` (a new default lr) is told apart from one made after it.

    Args:
        run (Run): The run.

    Returns:
        str: 16 hex digits.
    """
    # placeholders for the start checkpoint and the teacher's config
    text = render_config(run, 'start.pth', None, 'teacher.py' if run.distill else None)
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'config.py')
        with open(path, 'w') as f:
            f.write(text)
        resolved = Config.fromfile(path).pretty_text
    return hashlib.sha256(resolved.encode()).hexdigest()[:16]


def made_as_planned(row: Dict, run: Run, digest: Optional[str] = None) -> bool:
    """Whether a cached or committed row has the run's definition and resolved config.

    Args:
        row (dict): The row.
        run (Run): The planned run.
        digest (str, optional): The run's :func:`config_sha256`, if already computed.

    Returns:
        bool: True if the row is the run's.
    """
    # through JSON, as the row went (tuples become lists)
    if any(row.get(key) != value for key, value in json.loads(json.dumps(asdict(run))).items()):
        return False
    return row.get('config_sha256') == (digest or config_sha256(run))


def cache_is_valid(run: Run, root: str) -> bool:
    """Whether a run's cached result is still its result.

    It is not when the run's definition changed (config, changes, iterations, seed,
    parent...), the config files it resolves to changed (:func:`config_sha256`), or
    its parent finished after it (the parent was rerun).

    Args:
        run (Run): The planned run.
        root (str): Root of the runs' work dirs.

    Returns:
        bool: True if the cached result can be reused.
    """
    cached = result_path(osp.join(root, run.name))
    if not osp.isfile(cached):
        return False
    with open(cached) as f:
        row = json.load(f)
    if not made_as_planned(row, run):
        return False
    if run.parent is None:
        return True
    parent = result_path(osp.join(root, run.parent))
    return osp.isfile(parent) and osp.getmtime(parent) <= osp.getmtime(cached)


#: The converging study's results: one flat row per run (:func:`flat_rows`).
ACCURACY_STUDY = osp.join(ROOT, 'docs', 'results', 'accuracy_study.json')


def committed_rows(path: str) -> Dict[str, Dict]:
    """Full rows of a committed flat results file, by run name (see :func:`flat_rows`).

    Args:
        path (str): The file (missing: no rows).

    Returns:
        dict: Name -> the row as :func:`execute` returned it.
    """
    if not osp.isfile(path):
        return {}
    with open(path) as f:
        return {row['name']: row['row'] for row in json.load(f)}


def flat_rows(rows: Sequence[Dict]) -> List[Dict]:
    """The rows as ``{data, detector, method, bits, iters, seed, mAP, fp_mAP}`` (+ more).

    ``fp_mAP`` is that of the FP model the row starts from (its own for FP rows);
    ``name``, ``seconds``, ``command`` and the full ``row`` (its definition, for
    reading it back) come along.

    Args:
        rows (sequence[dict]): Rows of :func:`execute`, parents before children.

    Returns:
        list[dict]: The flat rows.
    """
    by_name = {row['name']: row for row in rows}

    def fp_ancestor(row: Dict) -> Optional[Dict]:
        while row is not None and row['parent'] is not None:
            row = by_name.get(row['parent'])
        return row

    out = []
    for row in rows:
        start = fp_ancestor(row)
        out.append(dict(data=row['dataset'], detector=row['detector'], method=row['method'],
                        bits=row['bits'], iters=row['iters'], seed=row['seed'],
                        mAP=row['metrics']['coco/bbox_mAP'],
                        fp_mAP=None if start is None else start['metrics']['coco/bbox_mAP'],
                        name=row['name'], seconds=row['seconds'], command=row['command'],
                        row=row))
    return out


def execute(run: Run, root: str, python: str, val_ann: Optional[str],
            committed: Optional[Dict[str, Dict]] = None) -> Dict:
    """Run one row (or read its cached result) and return it as a dict.

    Args:
        run (Run): The row.
        root (str): Root of the runs' work dirs.
        python (str): The interpreter to run the tools with.
        val_ann (str, optional): Annotation file replacing the val split's.
        committed (dict, optional): Rows committed before (:func:`committed_rows`): one
            whose definition is the run's and that started from the same FP
            checkpoint (:func:`start_model`) is reused when its work dir has none
            (not for FP rows, whose checkpoint the children need).

    Returns:
        dict: The run's fields, ``metrics``, ``seconds`` and ``command``.

    Raises:
        RuntimeError: If the run's process fails or leaves no metrics.
    """
    work_dir = osp.join(root, run.name)
    cached = result_path(work_dir)
    if cache_is_valid(run, root):
        with open(cached) as f:
            row = json.load(f)
        if 'start_sha256' not in row:  # cached before rows recorded their start
            row['start_sha256'] = start_model(run, root, committed)
        return row
    # an FP row is always rerun where it has no cache: its children need its checkpoint
    previous = (committed or {}).get(run.name) if run.parent is not None else None
    start = start_model(run, root, committed) if run.parent is not None else None
    digest = config_sha256(run)
    # a row from another FP model (retrained on another machine) is not this study's,
    # nor one made from other config files
    if previous is not None and not osp.isfile(cached) and start is not None and (
            previous.get('start_sha256') == start) and made_as_planned(previous, run, digest):
        return previous
    os.makedirs(work_dir, exist_ok=True)
    parent_ckpt = None
    if run.parent is not None:
        parent_ckpt = last_checkpoint(osp.join(root, run.parent))
        if parent_ckpt is None:
            raise RuntimeError(f'{run.name}: parent run {run.parent} has no checkpoint')
    config = osp.join(work_dir, 'config.py')
    teacher_config = osp.join(root, run.parent, 'config.py') if run.distill else None
    with open(config, 'w') as f:
        f.write(render_config(run, None if run.integer else parent_ckpt, val_ann, teacher_config))
    began = time.time()
    log = open(osp.join(work_dir, 'study.log'), 'w')
    metrics_out = osp.join(work_dir, 'metrics.json')
    if run.integer:
        cmd = [python, osp.join(ROOT, 'tools', 'test.py'), config, parent_ckpt, '--work-dir',
               work_dir, '--integer', run.integer, '--metrics-out', metrics_out]
    elif run.checkpoint:
        if not osp.isfile(run.checkpoint):
            raise RuntimeError(f'{run.name}: checkpoint {run.checkpoint} does not exist')
        cmd = [python, osp.join(ROOT, 'tools', 'test.py'), config, run.checkpoint,
               '--work-dir', work_dir, '--metrics-out', metrics_out]
    else:
        cmd = [python, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir]
    with log:
        code = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f'{run.name}: {" ".join(cmd)} failed (exit {code}); see '
                           f'{osp.join(work_dir, "study.log")}')
    if run.integer or run.checkpoint:
        with open(metrics_out) as f:
            metrics = json.load(f)
    else:
        metrics = final_metrics(work_dir)
    if run.checkpoint:  # the children start from it
        with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
            f.write(run.checkpoint)
    if not metrics:
        raise RuntimeError(f'{run.name}: no bbox metrics (no detection above the threshold?)')
    result = dict(asdict(run), metrics=metrics, seconds=round(time.time() - began, 1),
                  command=' '.join(cmd[1:]).replace(ROOT + '/', ''),
                  start_sha256=start if run.parent is not None else start_model(run, root),
                  config_sha256=digest)
    with open(cached, 'w') as f:
        json.dump(result, f, indent=1)
    return result


def measure_costs(root: str, python: str, repeats: int) -> Dict:
    """Run ``detector_costs.py`` on the study's FP, 4- and 2-bit RetinaNet (digits, seed 0).

    Args:
        root (str): Root of the runs' work dirs.
        python (str): The interpreter to run the tool with.
        repeats (int): Timed rounds.

    Returns:
        dict: The tool's JSON result (cached in ``root/costs/costs.json``).

    Raises:
        RuntimeError: If a run it needs has no checkpoint or the tool fails.
    """
    out_dir = osp.join(root, 'costs')
    out = osp.join(out_dir, 'costs.json')
    if osp.isfile(out):
        with open(out) as f:
            return json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    names = [f'synthetic/retinanet/{n}_s0' for n in ('fp', 'aqd_w4', 'aqd_w2')]
    configs = [osp.join(root, n, 'config.py') for n in names]
    ckpts = [last_checkpoint(osp.join(root, n)) for n in names]
    if None in ckpts:
        raise RuntimeError(f'costs: {names[ckpts.index(None)]} has no checkpoint')
    cmd = [python, osp.join(ROOT, 'tools', 'benchmarks', 'detector_costs.py'), *configs,
           '--checkpoints', *ckpts, '--repeats', str(repeats), '--out', out]
    with open(osp.join(out_dir, 'study.log'), 'w') as log:
        code = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f'costs: {" ".join(cmd)} failed (exit {code}); see '
                           f'{osp.join(out_dir, "study.log")}')
    with open(out) as f:
        return json.load(f)


def val_subsets(mode: str, root: str) -> Dict[str, Optional[str]]:
    """Annotation files of the plan's val subsets (the first images), per dataset.

    Args:
        mode (str): The plan.
        root (str): Where to write them.

    Returns:
        dict: Dataset -> annotation file, or None for the whole split.
    """
    subsets: Dict[str, Optional[str]] = {}
    for dataset, num in PLANS[mode].val_images.items():
        if num is None:
            subsets[dataset] = None
            continue
        ann = osp.join(root, f'{dataset}_val_first{num}.json')
        os.makedirs(root, exist_ok=True)
        write_subset(osp.join(ROOT, DATA_DIRS[dataset], 'annotations', 'val.json'), ann, num)
        subsets[dataset] = ann
    return subsets


def missing_data(plan: Sequence[Run], root: str = ROOT) -> List[Tuple[str, str]]:
    """The annotation files the plan's datasets need that are not under ``root``.

    Checked before the first row, so a fresh checkout without ``data/`` stops at
    once with the command that makes the data, instead of failing every row.

    Args:
        plan (Sequence[Run]): The runs to do.
        root (str): The checkout the configs' relative data paths start from.

    Returns:
        list[tuple[str, str]]: (dataset, missing file relative to ``root``) pairs.
    """
    missing = []
    for dataset in sorted({run.dataset for run in plan}):
        for split in ('train', 'val'):
            path = osp.join(DATA_DIRS[dataset], 'annotations', f'{split}.json')
            if not osp.isfile(osp.join(root, path)):
                missing.append((dataset, path))
    return missing


def current_rows(committed: Dict[str, Dict], plan: Sequence[Run]) -> Dict[str, Dict]:
    """The committed rows that the plan still makes as they were made.

    A row stays if the plan has a run of its name with its definition and the same
    resolved config (:func:`config_sha256`); a row made before a config under
    ``configs/`` changed, or one the plan no longer has, goes (git keeps it).

    Args:
        committed (dict): Rows committed before (:func:`committed_rows`).
        plan (sequence[Run]): The whole plan (not only the runs of this call).

    Returns:
        dict: Name -> row, the rows that stay.
    """
    runs = {run.name: run for run in plan}
    return {name: row for name, row in committed.items()
            if name in runs and made_as_planned(row, runs[name])}


def write_accuracy_study(rows: Sequence[Dict], committed: Dict[str, Dict], path: str) -> str:
    """Write the converging study's flat rows: this call's, then committed ones not rerun.

    A committed row whose FP model this call retrained (another ``start_sha256``
    than the new FP row's, e.g. after the work dirs were lost) is dropped: one FP
    model per (data, detector), so the rows' ``fp_mAP`` and the controls agree.

    Args:
        rows (sequence[dict]): Rows of this call, parents first.
        committed (dict): Rows committed before (:func:`committed_rows`).
        path (str): The file.

    Returns:
        str: ``path``.
    """
    this_call = {row['name']: row for row in rows}
    everything = {**committed, **this_call}

    def same_start(row: Dict) -> bool:
        # a committed row whose FP model this call retrained (and so replaced) goes
        start = root_name(row['name'], everything.get)
        return start not in this_call or this_call[start].get('start_sha256') == row.get(
            'start_sha256')

    kept = list(rows) + [row for name, row in committed.items()
                         if name not in this_call and same_start(row)]
    with open(path, 'w') as f:
        json.dump(flat_rows(kept), f, indent=1)
        f.write('\n')
    return path


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='AQD reproduction study (mmaqd)')
    parser.add_argument('--plan', choices=sorted(PLANS), default='full',
                        help='full: the study within 2 hours of a 2-core CPU (default); '
                        'quick: the machinery in about 10 minutes; large: the configs\' '
                        'own schedules, 3 seeds everywhere (about 12 hours on 2 cores)')
    parser.add_argument('--quick', action='store_const', const='quick', dest='plan',
                        help='the same as --plan quick')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the plan and its time estimate, run nothing')
    parser.add_argument('--only', help='run only rows whose name contains this string '
                        '(their parents must have run)')
    parser.add_argument('--fp-checkpoint', action='append', default=[],
                        metavar='DATASET/DETECTOR=CKPT',
                        help='use an FP model trained before as that setup\'s seed-0 FP row '
                        '(evaluated, not trained), e.g. neon-trees/retinanet=work_dirs/demo/'
                        'neon-trees/fp32/iter_800.pth; repeatable')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'study_runs'),
                        help='root of the runs\' work dirs (the cache)')
    parser.add_argument('--out', help='results JSON (default: docs/results/'
                        'benchmarks[_PLAN].json, no suffix for full; with --only: '
                        'results_only.json in the plan\'s work dir)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    mode = args.plan
    spec = PLANS[mode]
    plan = adopt_fp_checkpoints(build_plan(mode), args.fp_checkpoint)
    if args.only:
        plan = [run for run in plan if args.only in run.name]
    total = plan_seconds(mode, plan, costs=not args.only)
    print(f'{mode} plan: {len(plan)} runs, about {total / 60:.0f} min on a 2-core CPU '
          f'(without cached runs)')
    if args.dry_run:
        for run in plan:
            print(f'  {run.name:45s} {run.config:52s} '
                  f'{estimate_seconds(run, spec.val_images.get(run.dataset)) / 60:5.1f} min')
        return dict(mode=mode, runs=[asdict(r) for r in plan], estimate_seconds=total)
    missing = missing_data(plan)
    if missing:
        raise SystemExit('the study needs its data first: ' + '; '.join(
            f'{path} is missing (make data DATA={dataset})' for dataset, path in missing))
    root = osp.join(args.work_dir, mode)
    subsets = val_subsets(mode, root)
    rows, failed = [], {}
    start = time.time()
    committed = {}
    if mode == 'converge':
        committed = committed_rows(ACCURACY_STUDY)
        current = current_rows(committed, build_plan(mode))
        for name in sorted(set(committed) - set(current)):
            print(f'committed row {name} is not the plan\'s any more (another definition or '
                  f'config); it leaves {osp.relpath(ACCURACY_STUDY, ROOT)}', flush=True)
        committed = current
    out = args.out or (osp.join(root, 'results_only.json') if args.only else osp.join(
        ROOT, 'docs', 'results', f'benchmarks{"" if mode == "full" else "_" + mode}.json'))
    for run in plan:
        print(f'=== {run.name}', flush=True)
        if run.parent in failed:
            failed[run.name] = f'parent {run.parent} failed'
            print(f'    skipped: {failed[run.name]}', flush=True)
            continue
        try:
            row = execute(run, root, sys.executable, subsets.get(run.dataset), committed)
        except RuntimeError as err:  # a failed row must not stop the other rows
            failed[run.name] = str(err)
            print(f'    FAILED: {err}', flush=True)
            continue
        print(f'    bbox mAP {row["metrics"]["coco/bbox_mAP"]:.3f} ({row["seconds"]:.0f} s)',
              flush=True)
        rows.append(row)
        if mode == 'converge':  # after every row: a study that spans sessions keeps each
            write_accuracy_study(rows, committed, args.out or ACCURACY_STUDY)
    costs = None
    if spec.cost_repeats and not args.only:
        print('=== costs', flush=True)
        try:
            costs = measure_costs(root, sys.executable, spec.cost_repeats)
        except RuntimeError as err:
            failed['costs'] = str(err)
            print(f'    FAILED: {err}', flush=True)
    result = dict(mode=mode, date=time.strftime('%Y-%m-%d'), machine=dict(
        cpus=os.cpu_count(), platform=platform.platform(), python=platform.python_version()),
        command=' '.join(['python .dev_scripts/study/aqd_study.py']
                         + ([] if mode == 'full' else [f'--plan {mode}'])
                         + [f'--fp-checkpoint {item}' for item in args.fp_checkpoint]),
        minutes=round((time.time() - start) / 60, 1),  # this call's, cached rows free
        rows_minutes=round(sum(row['seconds'] for row in rows) / 60, 1),  # when they ran
        val_images={d: n for d, n in spec.val_images.items()},
        rows=rows, costs=costs, failed=failed)
    if mode == 'converge':
        out = write_accuracy_study(rows, committed, args.out or ACCURACY_STUDY)
    else:
        with open(out, 'w') as f:
            json.dump(result, f, indent=1)
    print(f'results: {out} ({len(rows)} rows, {len(failed)} failed, '
          f'{result["minutes"]} min)')
    return result


if __name__ == '__main__':
    main()
