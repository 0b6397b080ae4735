"""Test (evaluate) a quantized detector's integer engine through mmdet's evaluator."""
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS

from mmaqd.integer import convert_detector
from mmaqd.integer.onnx_export import OnnxDetector, export_onnx


@HOOKS.register_module()
class IntegerInferenceHook(Hook):
    """Before testing, convert the detector to its integer engine and predict with it.

    The detector's feature extraction and head forward are replaced by the engine
    (integer image -> integer head outputs, times their units); mmdet's own
    post-processing (sigmoid, box decoding, NMS) and evaluator are unchanged.

    Args:
        arith (str): ``'int'`` for the integer engine, ``'float'`` for its float64
            deploy-mode simulation, ``'onnx'`` for the engine's QDQ ONNX export run
            in onnxruntime (needs requirements/deploy.txt). Defaults to ``'int'``.
    """

    priority = 'LOW'  # after QuantCalibrationHook

    def __init__(self, arith: str = 'int') -> None:
        if arith not in ('int', 'float', 'onnx'):
            raise ValueError(f"IntegerInferenceHook: arith must be 'int', 'float' or 'onnx', "
                             f'got {arith!r}')
        self.arith = arith
        self.engine = None

    def before_test(self, runner) -> None:
        """Convert the (loaded) model and route its predictions through the engine."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        device = next(model.parameters()).device
        if device.type != 'cpu':
            raise RuntimeError(f'IntegerInferenceHook: the integer engine runs on the CPU (int64 '
                               f'kernels); the model is on {device}. Test it on a CPU machine, '
                               f'e.g. with CUDA_VISIBLE_DEVICES= .')
        model.eval()
        engine = convert_detector(model)
        head = model.bbox_head
        arith = self.arith

        def extract_feat(batch_inputs):
            return (batch_inputs, )

        if arith == 'onnx':
            kinds = len(engine.head.output_units())
            onnx_model, _ = export_onnx(engine, None, torch.zeros(1, 3, 128, 128))
            runner_onnx = OnnxDetector(onnx_model, kinds)

            def head_forward(feats):
                return head.finish_raw(runner_onnx(feats[0]))
        else:

            def head_forward(feats):
                return head.finish_raw(engine.real_outputs(engine(feats[0], arith)))

        model.extract_feat = extract_feat
        head.forward = head_forward
        self.engine = engine
        layers = sum(1 for _ in engine.modules())
        runner.logger.info(f'IntegerInferenceHook: testing the integer engine '
                           f'(arith={arith!r}, {layers} modules)')
