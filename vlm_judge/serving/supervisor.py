"""Supervising vLLM's API server, in one place: the launcher (python -m vlm_judge.serve) starts it here and nowhere
else, forwards signals to it, stops it within a bound and reaps its whole process group.

Stopping (SIGTERM as orchestrators send it, or Ctrl-C): once the server is ready, the first SIGINT/SIGTERM reaches
vLLM's API server as SIGUSR1, the request gate's drain (vlm_judge.serving.gate: new requests get 503, the accepted
ones are answered within --drain-timeout), which ends in vLLM's own SIGTERM shutdown with an idle engine: the
engine's --shutdown-timeout (vLLM's; default 10 s here: the idle engine's teardown takes ~3 s on 2 cores) and the HTTP server's --http-shutdown-timeout (2 s) bound
it. Before the server is ready the signal goes to vLLM as it came. A second signal, or no exit within the sum of
those bounds plus --kill-after seconds, kills vLLM's whole process group; an engine process that outlives the API
server by 10 s is killed too. Either way no vLLM process outlives the launcher. The launcher's exit code says
which way it went (EXIT_CODES_HELP, in --help).
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
EXIT_STOPPED = 0  # stopped on request (SIGTERM/SIGINT): drained, and vLLM exited by itself
EXIT_USAGE = 2  # bad arguments or model directory, or the server never became ready
EXIT_VLLM_FAILED = 3  # vLLM exited without being asked to, or with an error code after a stop request
EXIT_KILLED = 4  # stopped on request, but something was forced: accepted requests cut, or a process SIGKILLed
EXIT_CODES_HELP = f"""exit codes:
  {EXIT_STOPPED}  stopped on request (SIGTERM/SIGINT): every accepted request answered, vLLM shut down by itself
  {EXIT_USAGE}  bad arguments or model directory, or vLLM was not ready in time
  {EXIT_VLLM_FAILED}  vLLM exited on its own (a crash), or with an error code while stopping
  {EXIT_KILLED}  stopped on request, but something had to be forced: accepted requests were still open at the
     end of --drain-timeout, or a vLLM process had to be SIGKILLed (no exit within --drain-timeout +
     --shutdown-timeout + --http-shutdown-timeout + --kill-after seconds, an engine process that outlived the
     API server by 10 s, or a second signal)"""


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
        self.drain_signal: int | None = None  # once the server is ready: what the first signal becomes

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
                self.child.send_signal(self.drain_signal or signum)
        else:
            self.killed = True
            _signal_group(self.child, signal.SIGKILL)


@dataclass
class StopResult:
    code: int  # vLLM's exit status (negative: the signal that ended it)
    seconds: float  # from the stop signal to vLLM's exit
    killed: bool  # vLLM did not exit within the grace period and its process group was SIGKILLed


def stop(child: subprocess.Popen, sig: int | None, grace: float, leftover_grace: float = 10.0) -> StopResult:
    """Signal vLLM's API server (None: it was signalled already), wait up to `grace` s, then kill its whole process
    group, so that no orphaned engine worker (GBs of RAM) outlives the server. What the API server leaves behind
    (its engine core finishing its own shutdown) gets `leftover_grace` s to exit by itself before it is killed."""
    start = time.monotonic()
    if sig is not None and child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(sig)
    killed = False
    try:
        code = child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        killed = True
        _signal_group(child, signal.SIGKILL)
        code = child.wait()
    leftovers_killed = not killed and not _wait_group_gone(child, leftover_grace)
    _kill_and_reap_group(child)  # whatever vLLM left in its group (its own session, see run)
    return StopResult(code, time.monotonic() - start, killed or leftovers_killed)


def _wait_group_gone(child: subprocess.Popen, timeout: float) -> bool:
    """Whether vLLM's process group emptied by itself within `timeout` s (orphans reaped as they exit)."""
    deadline = time.monotonic() + timeout
    while True:
        _reap_orphans()
        try:
            os.killpg(child.pid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _reap_orphans() -> None:
    if _subreaper:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:  # orphans reparented to this launcher
                pass


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
    if not _wait_group_gone(child, timeout):
        print(f"vlm_judge.serve: warning: vLLM's process group {child.pid} outlived {timeout:g} s", file=sys.stderr)


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

    def drain_on_stop(self, sig: int) -> None:
        """From now on (the server is ready) the first stop signal reaches vLLM as ``sig``: the request gate's
        drain (vlm_judge.serving.gate), which ends in vLLM's own shutdown."""
        self.signals.drain_signal = sig

    def stop(self, sig: int | None = None) -> tuple[StopResult, int]:
        """Stop vLLM with ``sig`` (default: SIGTERM, unless a received signal was forwarded already);
        (how it went, the exit code)."""
        assert self.child is not None
        if sig is None and self.signals.received is None:
            sig = signal.SIGTERM
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
