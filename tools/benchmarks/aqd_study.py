"""The AQD reproduction study (accuracy vs bits, min-max baseline, ablations): one entry point.

Each row of the study is one ``tools/train.py`` run (or one ``tools/test.py`` run
for the integer rows) in its own process, with a generated config that inherits
one of ``configs/aqd/`` and changes only what the row studies. Finished rows are
cached in their work dirs, so an interrupted study continues where it stopped.
The results go to one JSON file; ``tools/benchmarks/study_report.py`` turns it
into ``docs/benchmarks.md``, the plot and README's results table.

Plans:
- ``full``: generated digits and NEON trees, RetinaNet-R18 and FCOS-R18: FP and
  AQD w4a4/w3a3/w2a2 with 3 seeds, the min-max QAT baseline (seed 0), and the
  2-bit ablations on RetinaNet / digits (head norm, scope, quantizer,
  progressive vs direct, integer engine vs fake-quant).
- ``quick``: RetinaNet on the digits only, short FP and fine-tunes, evaluated on
  the first 50 val images: the machinery end to end in about 10 minutes.

Examples::

    python tools/benchmarks/aqd_study.py --quick --dry-run   # the plan and its estimate
    python tools/benchmarks/aqd_study.py --quick
    python tools/benchmarks/aqd_study.py --out docs/results/benchmarks.json
"""
import argparse
import glob
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(ROOT, 'configs', 'aqd')
BITS = (4, 3, 2)
SEEDS = (0, 1, 2)
#: Seconds per training iteration on the project's 2-core CPU (measured with the
#: CPU configs, idle machine), for the plan's time estimate only.
SECONDS_PER_ITER = {('synthetic', False): 1.4, ('synthetic', True): 1.9,
                    ('neon-trees', False): 1.1, ('neon-trees', True): 1.5}
#: Seconds of one evaluation of the val split (500 digits images, 11 NEON batches).
SECONDS_PER_EVAL = {'synthetic': 45, 'neon-trees': 15}
#: The int64 engine's evaluation time relative to the fake-quant model's.
INTEGER_EVAL_FACTOR = 10
#: Val images of the quick plan (a subset annotation file of the first ones).
QUICK_VAL_IMAGES = 50
QUICK_VAL_FRACTION = QUICK_VAL_IMAGES / 500
STEM_8BIT = [dict(pattern=r'^backbone\.conv1$', w_bits=8)]


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


def build_plan(mode: str) -> List[Run]:
    """The rows of a plan, parents before children.

    Args:
        mode (str): ``'full'`` or ``'quick'``.

    Returns:
        list[Run]: The runs.
    """
    if mode not in ('full', 'quick'):
        raise ValueError(f"mode must be 'full' or 'quick', got {mode!r}")
    quick = mode == 'quick'
    datasets = ('synthetic', ) if quick else ('synthetic', 'neon-trees')
    detectors = ('retinanet', ) if quick else ('retinanet', 'fcos')
    seeds = (0, ) if quick else SEEDS
    bits_list = (4, 2) if quick else BITS
    fp_iters = {'synthetic': 120 if quick else 500, 'neon-trees': 800}
    q_iters = 40 if quick else 300
    runs: List[Run] = []
    for dataset in datasets:
        for det in detectors:
            prefix = f'{dataset}/{det}'
            fp_cfg = f'{det}_r18_fpn_aqd-fp32_{dataset}.py'
            fp_warmup = 50 if dataset == 'synthetic' else 100
            for seed in seeds:
                runs.append(Run(f'{prefix}/fp_s{seed}', dataset, det, 'fp', 32, seed, fp_cfg,
                                _schedule(fp_iters[dataset], min(fp_warmup,
                                                                 fp_iters[dataset] // 3)),
                                iters=fp_iters[dataset]))
            for seed in seeds:
                for bits in bits_list:
                    runs.append(Run(f'{prefix}/aqd_w{bits}_s{seed}', dataset, det, 'aqd', bits,
                                    seed, f'{det}_r18_fpn_aqd-w{bits}a{bits}_{dataset}.py',
                                    _schedule(q_iters, min(20, q_iters // 3)),
                                    parent=f'{prefix}/fp_s{seed}', iters=q_iters))
            for bits in bits_list[-1:] if quick else bits_list:
                runs.append(Run(f'{prefix}/minmax_w{bits}_s0', dataset, det, 'minmax', bits, 0,
                                f'{det}_r18_fpn_aqd-w{bits}a{bits}_{dataset}.py',
                                _merge(_schedule(q_iters, min(20, q_iters // 3)),
                                       dict(model=dict(quant_cfg=dict(quantizer='MinMax')))),
                                parent=f'{prefix}/fp_s0', iters=q_iters))
    prefix = 'synthetic/retinanet'
    runs.append(Run(f'{prefix}/aqd_w2_s0_integer', 'synthetic', 'retinanet', 'integer', 2, 0,
                    'retinanet_r18_fpn_aqd-w2a2_synthetic.py', parent=f'{prefix}/aqd_w2_s0',
                    integer='int'))
    if quick:
        return runs
    runs.append(Run(f'{prefix}/aqd_w2_s0_simulation', 'synthetic', 'retinanet', 'simulation',
                    2, 0, 'retinanet_r18_fpn_aqd-w2a2_synthetic.py',
                    parent=f'{prefix}/aqd_w2_s0', integer='float'))
    q2 = 'retinanet_r18_fpn_aqd-w2a2_synthetic.py'
    sched = _schedule(q_iters, 20)
    for norm in ('SharedLevelBN', 'GN'):
        norm_cfg = dict(type=norm) if norm != 'GN' else dict(type='GN', num_groups=32,
                                                             _delete_=True)
        head = dict(model=dict(bbox_head=dict(norm_cfg=norm_cfg)))
        runs.append(Run(f'{prefix}/fp_{norm}_s0', 'synthetic', 'retinanet', f'fp_{norm}', 32,
                        0, 'retinanet_r18_fpn_aqd-fp32_synthetic.py',
                        _merge(_schedule(fp_iters['synthetic'], 50), head),
                        iters=fp_iters['synthetic']))
        runs.append(Run(f'{prefix}/head_{norm}_w2_s0', 'synthetic', 'retinanet',
                        f'head_{norm}', 2, 0, q2, _merge(sched, head),
                        parent=f'{prefix}/fp_{norm}_s0', iters=q_iters))
    for scope in ('backbone', 'backbone+neck'):
        runs.append(Run(f'{prefix}/scope_{scope}_w2_s0', 'synthetic', 'retinanet',
                        f'scope_{scope}', 2, 0, q2,
                        _merge(sched, dict(model=dict(quant_cfg=dict(
                            scope=scope, overrides=STEM_8BIT)))),
                        parent=f'{prefix}/fp_s0', iters=q_iters))
    runs.append(Run(f'{prefix}/clip_w2_s0', 'synthetic', 'retinanet', 'quantizer_clip', 2, 0,
                    q2, _merge(sched, dict(model=dict(quant_cfg=dict(quantizer='Clip')))),
                    parent=f'{prefix}/fp_s0', iters=q_iters))
    runs.append(Run(f'{prefix}/progressive_w2_s0', 'synthetic', 'retinanet', 'progressive', 2,
                    0, 'retinanet_r18_fpn_aqd-progressive-w2a2_synthetic.py',
                    parent=f'{prefix}/fp_s0', iters=q_iters))
    return runs


def estimate_seconds(run: Run, val_fraction: float = 1.0) -> float:
    """Rough duration of a run on the project's 2-core CPU (for the plan's estimate).

    Args:
        run (Run): The run.
        val_fraction (float): Part of the val split evaluated. Defaults to 1.

    Returns:
        float: Seconds.
    """
    evaluation = SECONDS_PER_EVAL[run.dataset] * val_fraction
    if run.integer:
        return INTEGER_EVAL_FACTOR * evaluation
    per_iter = SECONDS_PER_ITER[(run.dataset, run.bits != 32)]
    return run.iters * per_iter + evaluation


def render_config(run: Run, load_from: Optional[str], val_ann: Optional[str]) -> str:
    """The Python config of a run: its base config plus its changes.

    Args:
        run (Run): The run.
        load_from (str, optional): Checkpoint to start from.
        val_ann (str, optional): An annotation file replacing the val / test split's.

    Returns:
        str: Config source that mmengine reads.
    """
    changes = _merge(run.changes, dict(randomness=dict(seed=run.seed)))
    if val_ann is not None:
        for loader in ('val_dataloader', 'test_dataloader'):
            changes = _merge(changes, {loader: dict(dataset=dict(ann_file=val_ann))})
        for evaluator in ('val_evaluator', 'test_evaluator'):
            changes = _merge(changes, {evaluator: dict(ann_file=val_ann)})
    lines = [f'# generated by tools/benchmarks/aqd_study.py for {run.name}',
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
    """The last val metrics mmengine logged in a work dir (newest run folder first).

    Args:
        work_dir (str): The run's work dir.

    Returns:
        dict | None: ``coco/*`` metrics, or None if none were logged.
    """
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')),
                       reverse=True):
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        for entry in reversed(lines):
            if 'coco/bbox_mAP' in entry:
                return {k: float(v) for k, v in entry.items() if k.startswith('coco/')}
    return None


def result_path(work_dir: str) -> str:
    """Where a finished run's row is cached."""
    return osp.join(work_dir, 'study_result.json')


def execute(run: Run, root: str, python: str, val_ann: Optional[str]) -> Dict:
    """Run one row (or read its cached result) and return it as a dict.

    Args:
        run (Run): The row.
        root (str): Root of the runs' work dirs.
        python (str): The interpreter to run the tools with.
        val_ann (str, optional): Annotation file replacing the val split's.

    Returns:
        dict: The run's fields, ``metrics``, ``seconds`` and ``command``.

    Raises:
        RuntimeError: If the run's process fails or leaves no metrics.
    """
    work_dir = osp.join(root, run.name)
    cached = result_path(work_dir)
    if osp.isfile(cached):
        with open(cached) as f:
            return json.load(f)
    os.makedirs(work_dir, exist_ok=True)
    parent_ckpt = None
    if run.parent is not None:
        parent_ckpt = last_checkpoint(osp.join(root, run.parent))
        if parent_ckpt is None:
            raise RuntimeError(f'{run.name}: parent run {run.parent} has no checkpoint')
    config = osp.join(work_dir, 'config.py')
    with open(config, 'w') as f:
        f.write(render_config(run, None if run.integer else parent_ckpt, val_ann))
    start = time.time()
    log = open(osp.join(work_dir, 'study.log'), 'w')
    if run.integer:
        metrics_out = osp.join(work_dir, 'metrics.json')
        cmd = [python, osp.join(ROOT, 'tools', 'test.py'), config, parent_ckpt, '--work-dir',
               work_dir, '--integer', run.integer, '--metrics-out', metrics_out]
    else:
        cmd = [python, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir]
    with log:
        code = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f'{run.name}: {" ".join(cmd)} failed (exit {code}); see '
                           f'{osp.join(work_dir, "study.log")}')
    if run.integer:
        with open(metrics_out) as f:
            metrics = json.load(f)
    else:
        metrics = final_metrics(work_dir)
    if not metrics:
        raise RuntimeError(f'{run.name}: no bbox metrics (no detection above the threshold?)')
    result = dict(asdict(run), metrics=metrics, seconds=round(time.time() - start, 1),
                  command=' '.join(cmd[1:]).replace(ROOT + '/', ''))
    with open(cached, 'w') as f:
        json.dump(result, f, indent=1)
    return result


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='AQD reproduction study (mmaqd)')
    parser.add_argument('--quick', action='store_true', help='the ~10 minute plan')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the plan and its time estimate, run nothing')
    parser.add_argument('--only', help='run only rows whose name contains this string '
                        '(their parents must have run)')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'study_runs'),
                        help='root of the runs\' work dirs (the cache)')
    parser.add_argument('--out', help='results JSON (default: docs/results/'
                        'benchmarks[_quick].json)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    mode = 'quick' if args.quick else 'full'
    plan = build_plan(mode)
    if args.only:
        plan = [run for run in plan if args.only in run.name]
    fraction = QUICK_VAL_FRACTION if args.quick else 1.0
    total = sum(estimate_seconds(run, fraction) for run in plan)
    print(f'{mode} plan: {len(plan)} runs, about {total / 60:.0f} min on a 2-core CPU '
          f'(without cached runs)')
    if args.dry_run:
        for run in plan:
            print(f'  {run.name:45s} {run.config:52s} '
                  f'{estimate_seconds(run, fraction) / 60:5.1f} min')
        return dict(mode=mode, runs=[asdict(r) for r in plan], estimate_seconds=total)
    root = osp.join(args.work_dir, mode)
    val_ann = None
    if args.quick:
        sys.path.insert(0, osp.join(ROOT, 'tools'))
        from demo import write_subset
        val_ann = osp.join(root, f'val_first{QUICK_VAL_IMAGES}.json')
        os.makedirs(root, exist_ok=True)
        write_subset(osp.join(ROOT, 'data', 'synthetic', 'annotations', 'val.json'), val_ann,
                     QUICK_VAL_IMAGES)
    rows = []
    for run in plan:
        print(f'=== {run.name}', flush=True)
        row = execute(run, root, sys.executable, val_ann)
        print(f'    bbox mAP {row["metrics"]["coco/bbox_mAP"]:.3f} ({row["seconds"]:.0f} s)',
              flush=True)
        rows.append(row)
    result = dict(mode=mode, date=time.strftime('%Y-%m-%d'), machine=dict(
        cpus=os.cpu_count(), platform=platform.platform(), python=platform.python_version()),
        command='python tools/benchmarks/aqd_study.py' + (' --quick' if args.quick else ''),
        val_subset=val_ann is not None, rows=rows)
    out = args.out or osp.join(ROOT, 'docs', 'results',
                               f'benchmarks{"_quick" if args.quick else ""}.json')
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)
    print(f'results: {out}')
    return result


if __name__ == '__main__':
    main()
