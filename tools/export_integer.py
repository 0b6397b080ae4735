"""Export a trained quantized detector to one self-contained integer-program file.

Builds the model from its config, loads the checkpoint, converts it to the integer
engine (:func:`mmaqd.integer.convert_detector`) and writes the layer graph with
bit-packed weights and integer constants (:func:`mmaqd.integer.export.export_integer`).
The file loads with ``torch.load(..., weights_only=True)`` and runs with
:func:`mmaqd.integer.export.load_integer`, without mmdet. The export is checked
to reproduce the engine's outputs exactly on an example image.

The last line printed is one JSON object with the sizes.

Example::

    python tools/export_integer.py configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py \
        work_dirs/retinanet_r18_fpn_aqd-w4a4_synthetic/iter_300.pth retinanet_w4a4.int.pth
"""
import argparse
import json
import os.path as osp
from typing import Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import load_checkpoint
from mmengine.utils import import_modules_from_strings

import mmaqd  # noqa: F401  (registers mmaqd's modules and its checkpoint loader)
from mmaqd.integer import convert_detector
from mmaqd.integer.export import export_integer, weight_statistics
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

#: Side of the example image when the config's test pipeline does not fix a size
#: (the generated digits set's 256 x 256 images).
DEFAULT_SIZE = 256


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export an integer program (mmaqd)')
    parser.add_argument('config', help='config of the quantized detector')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('out', help='output file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='example image size (default: the test pipeline\'s Resize '
                             f'scale, else {DEFAULT_SIZE} x {DEFAULT_SIZE})')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    return parser.parse_args(argv)


def example_shape(cfg: Config) -> Tuple[int, int]:
    """``(H, W)`` from a fixed-size Resize of the test pipeline, else the default size."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
    for transform in pipeline:
        scale = transform.get('scale') if transform.get('type') == 'Resize' else None
        if isinstance(scale, int):
            return scale, scale
        if isinstance(scale, (tuple, list)) and len(scale) == 2:
            return int(scale[1]), int(scale[0])  # mmcv's Resize scale is (w, h)
    return DEFAULT_SIZE, DEFAULT_SIZE


def build_model(cfg: Config, checkpoint: str) -> torch.nn.Module:
    """Build the detector of ``cfg``, load ``checkpoint`` (strict) and return it in eval mode."""
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    register_all_modules()
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    return model.eval()


def load_trained(args: argparse.Namespace) -> Tuple[Config, torch.nn.Module]:
    """The config (with ``--cfg-options``) and the trained model of a tool's arguments.

    Args:
        args (Namespace): With ``config``, ``checkpoint`` and ``cfg_options``.

    Returns:
        tuple: The config and the model (checkpoint loaded, eval mode).

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
    """
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint!r} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg, build_model(cfg, args.checkpoint)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    cfg, model = load_trained(args)
    engine = convert_detector(model)
    height, width = args.shape or example_shape(cfg)
    image = torch.zeros(1, 3, height, width)
    payload = export_integer(engine, args.out, image)
    stats = weight_statistics(payload)
    file_bytes = osp.getsize(args.out)
    ckpt_bytes = osp.getsize(args.checkpoint)
    fp32 = stats['fp32_weight_bytes']
    result = dict(
        stats,
        out=args.out,
        example_shape=[1, 3, height, width],
        file_bytes=file_bytes,
        checkpoint_bytes=ckpt_bytes,
        file_vs_checkpoint=file_bytes / ckpt_bytes,
        file_vs_fp32_weights=file_bytes / fp32,
        packed_vs_fp32_weights=stats['packed_weight_bytes'] / fp32,
        ideal_ratio=stats['declared_bits'] / 32,
        config_w_bits=cfg.model.get('quant_cfg', {}).get('w_bits'))
    print(f'{osp.basename(args.config)}: {stats["num_layers"]} conv layers, '
          f'{stats["num_adds"]} adds, {stats["weight_elements"]} weights '
          f'(declared {stats["declared_bits"]:.2f} bits, stored {stats["stored_bits"]:.2f} bits '
          f'per weight on average)')
    print(f'packed weights: {stats["packed_weight_bytes"]} bytes = '
          f'{result["packed_vs_fp32_weights"]:.4f} of the FP32 weights ({fp32} bytes); '
          f'ideal {result["ideal_ratio"]:.4f} (b/32 with each layer\'s b; config w_bits '
          f'{result["config_w_bits"]})')
    print(f'{args.out}: {file_bytes} bytes = {result["file_vs_fp32_weights"]:.4f} of the FP32 '
          f'weights, {result["file_vs_checkpoint"]:.4f} of the checkpoint ({ckpt_bytes} bytes)')
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
