"""Supervising vLLM's API server, in one place: the launcher (python -m vlm_judge.serve) starts it here and nowhere
else, forwards signals to it, stops it within a bound and reaps its whole process group.

Stopping (SIGTERM as orchestrators send it, or Ctrl-C): the first SIGINT/SIGTERM goes to vLLM's API server. vLLM
runs as `python -m vlm_judge.vllm_entry` (vLLM's own server, see that module) with two shutdown bounds:
--shutdown-timeout (vLLM's; default 3 s, see vlm_judge.vllm_command) makes the engine *drain* - requests already
in the engine finish and get their answer, new ones are refused - instead of vLLM's default 0, which SIGKILLs the
engine at once and can leave in-flight HTTP requests without an answer; --http-shutdown-timeout (default 2 s)
bounds how long the HTTP server then waits for open connections. A second signal, or no exit within the sum of
both plus --kill-after seconds, kills vLLM's whole process group. Either way no vLLM process outlives the
launcher. The launcher's exit code says which way it went (EXIT_CODES_HELP, in --help).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

# Exit codes (also in --help).
EXIT_STOPPED = 0  # stopped on request (SIGTERM/SIGINT): vLLM exited by itself within the grace period
EXIT_USAGE = 2  # bad arguments or model directory, or the server never became ready
EXIT_VLLM_FAILED = 3  # vLLM exited without being asked to, or with an error code after a stop request
EXIT_KILLED = 4  # stopped on request, but vLLM was SIGKILLed (no exit within the grace, or a 2nd signal)
EXIT_CODES_HELP = f"""exit codes:
  {EXIT_STOPPED}  stopped on request (SIGTERM/SIGINT); vLLM shut down by itself
  {EXIT_USAGE}  bad arguments or model directory, or vLLM was not ready in time
  {EXIT_VLLM_FAILED}  vLLM exited on its own (a crash), or with an error code while stopping
  {EXIT_KILLED}  stopped on request, but vLLM's process group had to be SIGKILLed (it did not exit within
     --shutdown-timeout + --http-shutdown-timeout + --kill-after seconds, or a second signal came)"""


class ServeError(RuntimeError):
    """A launcher failure with a message meant for the user (no traceback)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


class _Signals:
    """The first SIGINT/SIGTERM goes to vLLM's API server, which shuts its engine down cleanly; a second one
    kills vLLM's whole process group at once (a user pressing Ctrl-C twice, or an orchestrator insisting)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.child: subprocess.Popen | None = None
        self.killed = False  # a second signal SIGKILLed vLLM's process group

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def ignore(self) -> None:
        # Once vLLM is gone, a late signal must not kill the launcher mid-exit (its code is the result).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.child is None:
            self.received = self.received or signum
            return
        if self.received is None:
            self.received = signum
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)
        else:
            self.killed = True
            _signal_group(self.child, signal.SIGKILL)


@dataclass
class StopResult:
    code: int  # vLLM's exit status (negative: the signal that ended it)
    seconds: float  # from the stop signal to vLLM's exit
    killed: bool  # vLLM did not exit within the grace period and its process group was SIGKILLed


def stop(child: subprocess.Popen, sig: int, grace: float) -> StopResult:
    """Signal vLLM's API server (it drains and stops its engine), wait up to `grace` s, then kill its whole process
    group, so that no orphaned engine worker (GBs of RAM) outlives the server."""
    start = time.monotonic()
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(sig)
    killed = False
    try:
        code = child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        killed = True
        _signal_group(child, signal.SIGKILL)
        code = child.wait()
    _kill_and_reap_group(child)  # whatever vLLM left in its group (its own session, see run)
    return StopResult(code, time.monotonic() - start, killed)


def stop_exit_code(result: StopResult, signals_killed: bool = False) -> int:
    """The launcher's exit code after a stop on request (see EXIT_CODES_HELP)."""
    if result.killed or signals_killed:
        return EXIT_KILLED
    if result.code in (0, -signal.SIGTERM, -signal.SIGINT):
        return EXIT_STOPPED
    return EXIT_VLLM_FAILED


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    # vLLM's engine workers share its process group (its own session, see run): signal them all.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def become_subreaper() -> bool:
    """Linux: make this launcher the "child subreaper" of everything it starts, so vLLM's processes orphaned by
    its API server's exit (engine core, resource tracker) are reparented here and reaped by _kill_and_reap_group
    instead of lingering as processes (or zombies) of vLLM's group after the launcher has exited."""
    global _subreaper
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        _subreaper = ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        _subreaper = False
    return _subreaper


_subreaper = False  # set in the launcher process only: then it may reap any child (all are vLLM's)


def _kill_and_reap_group(child: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL what is left of vLLM's process group and reap it (see become_subreaper), for up to `timeout` s."""
    _signal_group(child, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        if _subreaper:
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0] > 0:  # orphans reparented to this launcher
                    pass
        try:
            os.killpg(child.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if time.monotonic() > deadline:
            print(
                f"vlm_judge.serve: warning: vLLM's process group {child.pid} outlived {timeout:g} s",
                file=sys.stderr,
            )
            return
        time.sleep(0.05)


class VllmProcess:
    """vLLM's API server as the launcher's child: its own session (a terminal's Ctrl-C reaches only the launcher,
    which forwards it), signals forwarded (_Signals), stopped within ``grace`` seconds, its group reaped."""

    def __init__(self, command: list[str], env: dict[str, str], grace: float):
        self.command, self.env, self.grace = command, env, grace
        self.signals = _Signals()
        self.child: subprocess.Popen | None = None

    def start(self) -> int:
        """Start vLLM; its pid."""
        self.signals.install()
        become_subreaper()
        self.child = subprocess.Popen(self.command, env=self.env, start_new_session=True)
        self.signals.child = self.child
        return self.child.pid

    @property
    def stop_requested(self) -> bool:
        return self.signals.received is not None

    def poll(self) -> int | None:
        assert self.child is not None
        return self.child.poll()

    def stop(self, sig: int | None = None) -> tuple[StopResult, int]:
        """Stop vLLM with ``sig`` (default: the signal received, else SIGTERM); (how it went, the exit code)."""
        assert self.child is not None
        sig = sig if sig is not None else self.signals.received or signal.SIGTERM
        result = stop(self.child, sig, self.grace)
        self.signals.ignore()
        return result, stop_exit_code(result, self.signals.killed)

    def supervise(self) -> int:
        """Run until vLLM exits or a stop signal comes; the launcher's exit code."""
        assert self.child is not None
        while self.child.poll() is None and not self.stop_requested:
            time.sleep(0.5)
        if self.stop_requested:
            _log("stopping vLLM")
            result, code = self.stop()
            how = (
                "killed (SIGKILL to its process group)"
                if code == EXIT_KILLED
                else f"stopped (code {result.code})"
            )
            _log(f"vLLM {how} {result.seconds:.1f} s after the stop signal; exit {code}")
            return code
        code = self.child.returncode
        _kill_and_reap_group(self.child)  # an engine process the crashed API server left behind
        _log(f"vLLM exited on its own with code {code}; exit {EXIT_VLLM_FAILED}")
        return EXIT_VLLM_FAILED


def _log(message: str) -> None:
    print(f"vlm_judge.serve: {message}", file=sys.stderr, flush=True)
