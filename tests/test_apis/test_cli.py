"""The tools' shared verdicts, exit codes and quiet logs."""
import logging
import os.path as osp
import subprocess
import sys

from mmengine.logging import MMLogger

from mmaqd.apis import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, quiet_logs, run_check, verdict
from tests.conftest import ROOT


def test_exit_codes_tell_pass_fail_and_could_not_run(capsys):
    assert (EXIT_PASS, EXIT_FAIL, EXIT_ERROR) == (0, 1, 2)
    assert run_check(lambda: dict(passed=True)) == 0
    assert run_check(lambda: dict(passed=False)) == 1

    def missing():
        raise FileNotFoundError("checkpoint 'nope.pth' does not exist")

    assert run_check(missing) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: FileNotFoundError: checkpoint 'nope.pth' does not exist")


def test_verdict_line():
    assert verdict(True, 'a equals b on 100.00%', '100%') == \
        'PASS: a equals b on 100.00% (required: 100%)'
    assert verdict(False, 'x', '>= 99%').startswith('FAIL: x')


def test_quiet_logs_keeps_warnings_only():
    quiet_logs(verbose=False)
    logger = MMLogger.get_current_instance()
    assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING)


def test_a_tool_that_cannot_run_exits_2_naming_the_input(tmp_path):
    config = osp.join(ROOT, 'configs/aqd/retinanet_r18_fpn_aqd-w4a4_synthetic.py')
    missing = str(tmp_path / 'nope.pth')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools/export_onnx.py'), config,
                           missing, str(tmp_path / 'out.onnx')], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: FileNotFoundError: checkpoint {missing!r} does not exist")
