"""Tiny quantized RetinaNet / FCOS models (random weights, calibrated) for engine tests."""
import os.path as osp

import torch
from mmengine.config import Config

import mmaqd  # noqa: F401
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from tests.conftest import ROOT

register_all_modules()

CONFIGS = {
    'retinanet': 'configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py',
    'fcos': 'configs/aqd/fcos_r18_fpn_aqd-w4a4_synthetic.py',
}


def narrow(cfg: Config) -> Config:
    """``cfg`` with a ResNet-18 of base width 8 and 16-channel FPN and head (in place)."""
    cfg.model.backbone.base_channels = 8
    cfg.model.neck.in_channels = [8, 16, 32, 64]
    cfg.model.neck.out_channels = 16
    cfg.model.bbox_head.in_channels = 16
    cfg.model.bbox_head.feat_channels = 16
    return cfg


def tiny_config(detector: str, bits: int) -> Config:
    """The CPU config of ``detector`` with narrow layers and ``bits`` everywhere."""
    cfg = narrow(Config.fromfile(osp.join(ROOT, CONFIGS[detector])))
    cfg.model.quant_cfg.w_bits = cfg.model.quant_cfg.a_bits = bits
    return cfg


def tiny_images(num: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Random 8-bit images minus the configs' integer mean."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num, 3, size, size), generator=gen).float()
    return images - torch.tensor([124.0, 116.0, 104.0]).view(1, 3, 1, 1)


def tiny_detector(detector: str, bits: int, seed: int = 0, cfg: Config = None):
    """Build, initialise (LSQ steps, BN statistics from 3 batches) and return it in eval mode."""
    cfg = cfg or tiny_config(detector, bits)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    with torch.no_grad():
        for k in range(3):
            model.bbox_head(model.neck(model.backbone(tiny_images(2, seed=100 + k))))
    return model.eval()
