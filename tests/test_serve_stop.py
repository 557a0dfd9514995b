"""The launcher's stop and its exit codes (vlm_judge.serving.supervisor: stop / stop_exit_code), on stand-in children.

The real vLLM stop under load is tests/test_serving_e2e.py's last test; these cover the three outcomes that one
cannot provoke on demand: a child that exits on SIGTERM, one that ignores it (killed after the grace, with the
rest of its process group), and one that fails while stopping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from vlm_judge import serve
from vlm_judge.serving import supervisor as vllm_process


def spawn(code: str) -> subprocess.Popen:
    """A child in its own session (as the launcher starts vLLM) that prints "ready" once its handlers are set."""
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_child_that_exits_on_sigterm_is_stopped_on_request():
    child = spawn("import time; print('ready', flush=True); time.sleep(600)")
    result = vllm_process.stop(child, signal.SIGTERM, grace=60)
    assert result.code == -signal.SIGTERM and not result.killed
    assert vllm_process.stop_exit_code(result) == vllm_process.EXIT_STOPPED == 0


def test_a_child_that_ignores_sigterm_is_killed_with_its_group_after_the_grace():
    # The child ignores SIGTERM and leaves a grandchild in its process group (as vLLM's engine core would be).
    child = spawn(
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']); "
        "print('ready', flush=True); time.sleep(600)"
    )
    result = vllm_process.stop(child, signal.SIGTERM, grace=0.5)
    assert result.killed and result.code == -signal.SIGKILL
    assert vllm_process.stop_exit_code(result) == vllm_process.EXIT_KILLED == 4
    assert group_gone(child.pid)  # stop() waits until the SIGKILLed group is reaped


def test_a_child_failing_while_stopping_and_a_second_signal_have_their_own_codes():
    child = spawn(
        "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(7)); "
        "print('ready', flush=True); time.sleep(600)"
    )
    result = vllm_process.stop(child, signal.SIGTERM, grace=60)
    assert result.code == 7 and not result.killed
    assert vllm_process.stop_exit_code(result) == vllm_process.EXIT_VLLM_FAILED == 3
    second_signal = vllm_process.StopResult(-signal.SIGKILL, 0.1, False)
    assert vllm_process.stop_exit_code(second_signal, signals_killed=True) == 4


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as exited:
        serve.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for code, words in ((0, "stopped on request"), (2, "bad arguments"), (3, "on its own"), (4, "SIGKILLed")):
        assert f"  {code}  " in out and words in out
