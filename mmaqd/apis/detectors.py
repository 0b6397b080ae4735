"""Build, load and calibrate quantized detectors from their configs."""
import os.path as osp
from typing import Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmengine.utils import import_modules_from_strings
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from torch import nn


def load_config(config: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config and apply ``--cfg-options`` style overrides.

    Args:
        config (str): Config file.
        cfg_options (dict, optional): ``key=value`` overrides. Defaults to None.

    Returns:
        Config: The config.
    """
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_detector(cfg: Config) -> nn.Module:
    """Build the detector of ``cfg`` with mmdet's and the config's modules registered."""
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    register_all_modules()
    return MODELS.build(cfg.model)


def build_quantized_detector(cfg: Config, bits: Optional[int] = None,
                             seed: int = 0) -> nn.Module:
    """Build the quantized detector of ``cfg`` with random weights.

    Args:
        cfg (Config): Config of a quantized detector (its model has ``quant_cfg``).
        bits (int, optional): Set ``w_bits`` and ``a_bits`` of ``quant_cfg``.
        seed (int): Seed of the random weights. Defaults to 0.

    Returns:
        nn.Module: The detector.

    Raises:
        ValueError: If the model has no ``quant_cfg``.
    """
    if 'quant_cfg' not in cfg.model:
        raise ValueError(f'{cfg.filename}: model has no quant_cfg (not a quantized detector)')
    if bits is not None:
        cfg.model.quant_cfg.w_bits = cfg.model.quant_cfg.a_bits = bits
    torch.manual_seed(seed)
    return build_detector(cfg)


def random_calibrated_detector(cfg: Config, bits: Optional[int], seed: int,
                               size: int) -> nn.Module:
    """A quantized detector with random weights, its LSQ steps and BN statistics set on
    generated images (3 passes over 4 images, seed ``seed + 1``); eval mode.

    For checking conversion and export without a trained checkpoint.
    """
    from .images import generated_images
    model = build_quantized_detector(cfg, bits, seed)
    model.init_weights()
    calibrate(model, generated_images(4, size, seed + 1) - model.data_preprocessor.mean, 3)
    return model.eval()


def load_trained(config: str, checkpoint: str,
                 cfg_options: Optional[dict] = None) -> Tuple[Config, nn.Module]:
    """The config and the trained detector (checkpoint loaded strictly, eval mode).

    Args:
        config (str): Config file.
        checkpoint (str): Checkpoint file.
        cfg_options (dict, optional): ``key=value`` overrides. Defaults to None.

    Returns:
        tuple: The config and the model.

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
    """
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint!r} does not exist')
    cfg = load_config(config, cfg_options)
    model = build_detector(cfg)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    return cfg, model.eval()


def calibrate(model: nn.Module, images: torch.Tensor, passes: int) -> None:
    """Run ``images`` through the detector in train mode without gradients.

    Initialises the LSQ steps (first pass) and the BN running statistics of a
    model that was not trained; the model is left in train mode.

    Args:
        model (nn.Module): The detector.
        images (Tensor): Preprocessed images ``(N, 3, H, W)``.
        passes (int): Forward passes.
    """
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model.bbox_head(model.neck(model.backbone(images)))
