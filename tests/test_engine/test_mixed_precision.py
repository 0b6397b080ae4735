"""Mixed precision with a quantized model on CPU.

mmengine 0.10.7's ``AmpOptimWrapper`` refuses CPU training when it is built, before
any iteration, whatever ``dtype`` (``--amp`` in tools/train.py reaches it). The
quantized layers themselves work under CPU bfloat16 autocast: the quantizers keep
float32 outputs on their grid (the float32 scale promotes them) and only the
convolutions run in bfloat16.
"""
import pytest
import torch
from mmengine.hooks import Hook

from tests.test_engine.test_hooks.toy_runner import ToyDataset, ToyQModel, toy_runner

AMP_BF16 = dict(type='AmpOptimWrapper', dtype='bfloat16',
                optimizer=dict(type='SGD', lr=0.05, momentum=0.9))


class IterationRecorder(Hook):

    def __init__(self) -> None:
        self.started = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.started.append(runner.iter)


@pytest.mark.skipif(torch.cuda.is_available(), reason='mmengine allows AMP on a GPU')
def test_amp_optim_wrapper_is_refused_on_cpu_before_the_first_iteration(tmp_path):
    recorder = IterationRecorder()
    runner = toy_runner(str(tmp_path), 3, [recorder], optim_wrapper=AMP_BF16)
    steps = runner.model.conv.weight_quantizer.step.detach().clone()
    with pytest.raises(AssertionError, match='only available training on gpu'):
        runner.train()
    assert recorder.started == []
    assert torch.equal(runner.model.conv.weight_quantizer.step, steps)


def test_quantized_model_trains_under_cpu_bfloat16_autocast():
    torch.manual_seed(0)
    model = ToyQModel(w_bits=4, a_bits=4)
    data = ToyDataset()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses, steps = [], []
    x, target = data.inputs[:4], data.targets[:4]
    for _ in range(5):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = model(x, target, mode='loss')['loss']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        steps.append(model.conv.input_quantizer.step.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert len(set(steps)) == len(steps)  # the LSQ step learns
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        features = model.stem(x)
        quantized = model.conv.input_quantizer(features.relu())
    assert features.dtype == torch.bfloat16 and quantized.dtype == torch.float32
    codes = quantized / model.conv.input_quantizer.get_scale()
    assert torch.allclose(codes, codes.round(), atol=1e-4)
