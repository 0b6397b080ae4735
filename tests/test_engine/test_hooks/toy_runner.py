"""A tiny quantized model and an mmengine Runner around it, for hook tests."""
import uuid

import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from mmaqd.quant import QConv


class ToyQModel(BaseModel):
    """Integer-input 8-bit stem, BN, ReLU, a 4-bit QConv; loss: MSE of channel means."""

    def __init__(self, w_bits: int = 4, a_bits: int = 4) -> None:
        super().__init__()
        self.stem = QConv(3, 8, 3, padding=1, w_bits=8, input_quant=None)
        self.bn = nn.BatchNorm2d(8)
        self.conv = QConv(8, 4, 3, padding=1, w_bits=w_bits, a_bits=a_bits)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.conv(F.relu(self.bn(self.stem(inputs))))
        if mode == 'loss':
            return dict(loss=((out.mean((2, 3)) - targets)**2).mean())
        return out


class ToyDataset(Dataset):
    """Fixed random images (integers 0..15) and targets."""

    def __init__(self, size: int = 16) -> None:
        gen = torch.Generator().manual_seed(123)
        self.inputs = torch.randint(0, 16, (size, 3, 8, 8), generator=gen).float()
        self.targets = torch.randn(size, 4, generator=gen)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, idx: int) -> dict:
        return dict(inputs=self.inputs[idx], targets=self.targets[idx])


class LossRecorder(Hook):
    """Records the loss of every training iteration by its index."""

    def __init__(self) -> None:
        self.losses = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.losses[runner.iter] = outputs['loss'].item()


def toy_runner(work_dir: str, max_iters: int, hooks=(), model=None, ckpt_interval=None,
               resume=False, load_from=None, momentum=0.9, optim_wrapper=None,
               checkpoint_hook: str = 'CheckpointHook', max_keep_ckpts: int = -1) -> Runner:
    """A Runner that trains :class:`ToyQModel` (same initial weights every time) with SGD.

    ``optim_wrapper``, if given, replaces the default SGD optim wrapper config.
    """
    if model is None:
        torch.manual_seed(0)
        model = ToyQModel(w_bits=3, a_bits=3)  # the schedule, not the model, sets 8 and 4
    return Runner(
        model=model,
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=4,
            num_workers=0),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=optim_wrapper or dict(
            optimizer=dict(type='SGD', lr=0.05, momentum=momentum)),
        default_hooks=dict(
            checkpoint=dict(type=checkpoint_hook, by_epoch=False,
                            interval=ckpt_interval or max_iters, max_keep_ckpts=max_keep_ckpts),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks),
        randomness=dict(seed=0),
        resume=resume,
        load_from=load_from,
        default_scope='mmdet',
        visualizer=dict(type='Visualizer'),
        log_level='WARNING',
        experiment_name=f'toy_{uuid.uuid4().hex}')
