"""Packaging: the wheel carries every file the library reads (the judge prompts included), and its base install
(the client and the reward: no torch, no training stack) works in a fresh environment outside the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_in_the_wheel_list_and_the_prompts_are_mapped():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("vlm_judge", "eval")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert listed - {"vlm_judge.prompts"} == folders
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"vlm_judge.prompts": "prompts"}
    assert "*.yaml" in PYPROJECT["tool"]["setuptools"]["package-data"]["vlm_judge.prompts"]
    base = " ".join(PYPROJECT["project"]["dependencies"])
    for heavy in ("torch", "transformers", "trl", "mlflow", "dvc", "vllm"):
        assert heavy not in base, heavy


CALLER = """
import importlib.util, json, sys
import vlm_judge
from vlm_judge.protocol import DEFAULT_PROMPT_FILE, load_prompt
from vlm_judge.client import JudgeClient
from vlm_judge.reward import DefectReward

url, image = sys.argv[1], sys.argv[2]
with JudgeClient(url, "defect-judge", max_retries=0) as judge:
    result = judge.score(image)
with DefectReward(url, max_retries=0) as reward:
    rewards = reward([image])
print(json.dumps({
    "package": vlm_judge.__file__,
    "prompt_file": str(DEFAULT_PROMPT_FILE),
    "prompt_version": load_prompt().version,
    "p_defect": result.p_defect,
    "error": result.error,
    "method": result.method,
    "reward": rewards[0],
    "heavy_modules": [m for m in ("torch", "transformers", "trl", "mlflow", "vllm") if importlib.util.find_spec(m)],
}))
"""


@pytest.mark.slow
def test_the_wheel_installs_alone_and_judges_through_the_client_and_the_reward(tmp_path):
    """Build the wheel, install it with its base dependencies only (from the package index) into a fresh virtual
    environment, and from a folder outside the repository load the prompt and score an image through the fake
    OpenAI server with JudgeClient and DefectReward."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("vlm_judge-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    image = outside / "gen.png"
    Image.new("RGB", (64, 64), (51, 51, 51)).save(image)  # the fake judge answers p_defect = grey level / 255
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with FakeOpenAIServer(models=["defect-judge"]) as server:
        done = subprocess.run(
            [str(python), "-c", CALLER, server.base_url, str(image)],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(answer, indent=2))
    site = str(venv / "lib")
    assert answer["package"].startswith(site) and answer["prompt_file"].startswith(site)
    assert answer["prompt_file"].endswith("vlm_judge/prompts/defect_judge.yaml")
    assert answer["prompt_version"] == "defect-judge-v1"
    assert answer["error"] is None and answer["p_defect"] == pytest.approx(0.2, abs=1e-6)
    assert answer["method"] == "top_k"  # the fake has no vLLM /tokenize
    assert answer["reward"] == pytest.approx(0.8, abs=1e-6)
    assert (
        answer["heavy_modules"] == []
    )  # the base install brings no torch, transformers, trl, mlflow or vLLM

    for command in ("vlm-judge-score", "vlm-judge-serve"):
        shown = subprocess.run(
            [str(venv / "bin" / command), "--help"], capture_output=True, text=True, timeout=120
        )
        assert shown.returncode == 0 and "usage:" in shown.stdout, (command, shown.stderr[-2000:])
