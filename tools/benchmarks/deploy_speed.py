"""Deployment speed, side by side in one process: FP PyTorch, FP ONNX, integer kernels, engine.

Per image size and thread count, every runtime takes its turn in each round
(:func:`mmaqd.utils.interleaved_times`), batch 1, on the same image:

- ``fp_torch``: the FP detector's backbone, neck and head in PyTorch (eval).
- ``fp_onnx``: the same FP detector exported with ``torch.onnx.export``, in onnxruntime.
- ``kernels``: the quantized detector's integer-kernel export (``tools/export_onnx.py``'s
  default), in onnxruntime.
- ``qdq``: the QDQ export (float kernels), in onnxruntime.
- ``engine``: the int64 integer engine (the correctness reference).
- ``openvino_fp`` / ``openvino_qdq`` / ``openvino_kernels``: the ONNX files in
  OpenVINO, if the ``openvino`` package is installed (optional, not pinned: it
  reads ONNX; the files it cannot convert are listed with its message).

Ratios are medians over rounds of per-round time ratios. The runtimes share the
cores, so none may busy-wait between its calls: onnxruntime's pools are created
without spinning, and PyTorch's OpenMP threads wait passively only when the process
starts with ``OMP_WAIT_POLICY=PASSIVE`` (the script warns otherwise; measured here,
spinning threads of one runtime made the next one's 2-thread run 1.7x slower). Speed hardly depends on
the weights, so the quantized model is a random one calibrated on generated
images unless ``--checkpoint`` is given. With ``--profile`` the kernel graph is
also profiled by onnxruntime and its time summed per op type (where the time goes).

Example::

    OMP_WAIT_POLICY=PASSIVE python tools/benchmarks/deploy_speed.py --sizes 256 512 \
        --threads 1 2 --out docs/results/deploy_speed.json
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import tempfile
from typing import Callable, Dict, Optional, Sequence

import torch

from mmaqd.apis import (build_detector, generated_images, load_config, load_trained,
                        random_calibrated_detector)
from mmaqd.apis.deploy import export_float_onnx
from mmaqd.integer import convert_detector
from mmaqd.integer.onnx_export import export_onnx
from mmaqd.integer.onnx_kernels import export_kernel_onnx, integer_conv_check
from mmaqd.utils import interleaved_times, median_ratio

#: CPU flags that decide which integer kernels a runtime can use.
ISA_FLAGS = ('avx2', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx_vnni', 'amx_int8', 'amx_tile')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Deployment speed (mmaqd)')
    parser.add_argument('--config', default='configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py',
                        help='config of the quantized detector')
    parser.add_argument('--checkpoint', help='trained checkpoint (default: random weights)')
    parser.add_argument('--fp-config',
                        default='configs/aqd/retinanet_r18_fpn_aqd-fp32_synthetic.py',
                        help='config of the FP detector')
    parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512])
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--no-engine', action='store_true', help='skip the int64 engine')
    parser.add_argument('--profile', action='store_true',
                        help='time the kernel graph per op type (largest size, most threads)')
    parser.add_argument('--out', help='write the results as JSON')
    args = parser.parse_args(argv)
    if args.rounds < 1 or min(args.sizes) < 32 or min(args.threads) < 1:
        parser.error('need --rounds >= 1, --sizes >= 32 and --threads >= 1')
    return args


def machine() -> Dict[str, object]:
    """CPU model, the ISA flags that matter for int8 kernels, cores, OS."""
    model, flags = platform.processor(), set()
    if osp.isfile('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name') and model in ('', platform.processor()):
                    model = line.split(':', 1)[1].strip()
                if line.startswith('flags'):
                    flags = set(line.split(':', 1)[1].split())
    return {'cpu': model, 'isa': [f for f in ISA_FLAGS if f in flags],
            'cores': os.cpu_count(), 'platform': platform.platform()}


def versions() -> Dict[str, str]:
    """Versions of the runtimes measured."""
    import onnxruntime
    found = {'torch': torch.__version__, 'onnxruntime': onnxruntime.__version__}
    try:
        import openvino
        found['openvino'] = openvino.__version__
    except ImportError:
        pass
    return found


def ort_session(path: str, threads: int, profile_dir: Optional[str] = None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle pool threads must not spin: the next runtime in the round needs the cores.
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = osp.join(profile_dir, 'kernels')
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def openvino_runner(path: str, threads: int, errors: Dict[str, str],
                    name: str) -> Optional[Callable]:
    """A function running the ONNX file in OpenVINO; None without the package or if
    OpenVINO cannot read the file (the reason goes into ``errors[name]``)."""
    try:
        import openvino as ov
    except ImportError:
        return None
    try:
        compiled = ov.Core().compile_model(path, 'CPU', {'INFERENCE_NUM_THREADS': threads,
                                                         'PERFORMANCE_HINT': 'LATENCY'})
    except Exception as error:  # OpenVINO's conversion errors have no common type
        errors[name] = str(error).strip().splitlines()[-1][:300]
        return None
    return compiled.create_infer_request().infer


def profile_by_op(session, feeds: dict, runs: int = 5) -> Dict[str, float]:
    """Milliseconds per run spent in each op type (onnxruntime's profiler)."""
    for _ in range(runs):
        session.run(None, feeds)
    path = session.end_profiling()
    with open(path) as f:
        events = json.load(f)
    totals: Dict[str, float] = {}
    for event in events:
        if event.get('cat') == 'Node' and event.get('name', '').endswith('_kernel_time'):
            op = event.get('args', {}).get('op_name', '?')
            totals[op] = totals.get(op, 0.0) + event['dur'] / 1000 / runs
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if os.environ.get('OMP_WAIT_POLICY', '').upper() != 'PASSIVE':
        print('WARNING: OMP_WAIT_POLICY is not PASSIVE: PyTorch\'s idle OpenMP threads spin '
              'and slow the runtime timed after them')
    torch.manual_seed(0)
    cfg = load_config(args.config)
    if args.checkpoint:
        cfg, model = load_trained(args.config, args.checkpoint)
    else:
        model = random_calibrated_detector(cfg, None, 0, 256)
    engine = convert_detector(model)
    mean = model.data_preprocessor.mean
    fp_model = build_detector(load_config(args.fp_config)).eval()
    tmp = tempfile.mkdtemp(prefix='mmaqd_speed_')
    kernels_path, qdq_path = osp.join(tmp, 'kernels.onnx'), osp.join(tmp, 'qdq.onnx')
    _, report = export_kernel_onnx(engine, kernels_path,
                                   [generated_images(4, 256, 1000) - mean],
                                   mean.flatten().tolist())
    check = integer_conv_check(kernels_path, report['conv_nodes'])
    export_onnx(engine, qdq_path, torch.zeros(1, 3, 64, 64))
    result = {'machine': machine(), 'config': args.config, 'fp_config': args.fp_config,
              'checkpoint': args.checkpoint, 'rounds': args.rounds,
              'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY'),
              'versions': versions(),
              'kernel_graph': dict({k: check[k] for k in ('integer_convs', 'float_convs',
                                                          'all_integer')},
                                   convs=report['convs']),
              'openvino_errors': {}, 'runs': []}
    for size in args.sizes:
        image = generated_images(1, size, 7)
        integer = image - mean
        pixels = image.to(torch.uint8).numpy()
        fp_path = osp.join(tmp, f'fp_{size}.onnx')
        export_float_onnx(fp_model, fp_path, size)
        fp_model.eval()
        for threads in args.threads:
            torch.set_num_threads(threads)
            fp_session = ort_session(fp_path, threads)
            kernel_session = ort_session(kernels_path, threads)
            qdq_session = ort_session(qdq_path, threads)
            fp_feeds = {fp_session.get_inputs()[0].name: integer.numpy()}
            fns = {
                'fp_torch': lambda: fp_model.bbox_head(fp_model.neck(fp_model.backbone(integer))),
                'fp_onnx': lambda: fp_session.run(None, fp_feeds),
                'kernels': lambda: kernel_session.run(None, {'image': pixels}),
                'qdq': lambda: qdq_session.run(None, {'image': integer.numpy()}),
            }
            if not args.no_engine:
                fns['engine'] = lambda: engine(integer, 'int')
            for name, path, data in (('openvino_fp', fp_path, integer.numpy()),
                                     ('openvino_qdq', qdq_path, integer.numpy()),
                                     ('openvino_kernels', kernels_path, pixels)):
                run = openvino_runner(path, threads, result['openvino_errors'], name)
                if run is not None:
                    fns[name] = (lambda r, d: lambda: r([d]))(run, data)
            with torch.no_grad():
                times = interleaved_times(fns, args.rounds, warmup=1)
            row = {'size': size, 'threads': threads,
                   'median_ms': {k: 1000 * statistics.median(v) for k, v in times.items()},
                   'kernels_speedup_vs': {k: 1 / median_ratio(times, 'kernels', k)
                                          for k in times if k != 'kernels'}}
            result['runs'].append(row)
            print(json.dumps(row))
    if args.profile:
        size, threads = max(args.sizes), max(args.threads)
        session = ort_session(kernels_path, threads, profile_dir=tmp)
        pixels = generated_images(1, size, 7).to(torch.uint8).numpy()
        result['kernel_profile_ms'] = {'size': size, 'threads': threads,
                                       'by_op': profile_by_op(session, {'image': pixels})}
        print(json.dumps(result['kernel_profile_ms']))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
            f.write('\n')
    return result


if __name__ == '__main__':
    main()
