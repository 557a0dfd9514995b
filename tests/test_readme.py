"""The README is for users: every command it names exists and answers --help, and it stays short."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def named_commands() -> list[list[str]]:
    """`python -m MODULE` and `python PATH.py` (recipes/sft.py under accelerate too) in the README's code."""
    code = "\n".join(re.findall(r"```(?:bash|python)?\n(.*?)```", README, flags=re.S)) + "\n" + README
    modules = sorted(set(re.findall(r"python -m ([a-z_]+(?:\.[a-z_]+)+)", code)))
    scripts = sorted(set(re.findall(r"(?<![\w/])((?:scripts|recipes)/[\w/]+\.py)", code)))
    return [["-m", m] for m in modules] + [[s] for s in scripts]


def test_the_readme_names_the_commands_users_run_and_stays_short():
    names = [" ".join(c) for c in named_commands()]
    for expected in ("-m vlm_judge.serve", "-m vlm_judge.score", "-m eval.compare", "-m eval.sbs", "-m eval.drift"):
        assert expected in names
    assert "recipes/sft.py" in names and "scripts/merge_lora.py" in names
    assert len(README.splitlines()) <= 300


@pytest.mark.slow
@pytest.mark.parametrize("command", named_commands(), ids=lambda c: " ".join(c))
def test_every_command_in_the_readme_answers_help(command):
    done = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower(), done.stdout[:500]
