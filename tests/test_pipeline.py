"""The main job's plumbing: the DVC pipeline resolves with the recipe's values, and the prepare stage builds
the same tiny model and synthetic logs the recipe would."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent


def test_dvc_pipeline_has_its_stages_in_order(tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".venv", ".git", "models", "data", "runs",
                                                               "reports", "mlruns", "metrics", "*.lock"))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    dvc = str(Path(sys.executable).with_name("dvc"))
    listed = subprocess.run([dvc, "stage", "list"], cwd=work, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["prepare", "photos", "train", "merge", "evaluate"]
    dag = subprocess.run([dvc, "dag", "--dot"], cwd=work, capture_output=True, text=True, check=True).stdout
    edges = ('"prepare" -> "train"', '"train" -> "merge"', '"merge" -> "evaluate"', '"prepare" -> "evaluate"',
             '"photos" -> "evaluate"')
    for edge in edges:
        assert edge in dag
    recipe = yaml.safe_load((REPO / "recipes/tiny-cpu.yaml").read_text())
    status = subprocess.run([dvc, "status", "--json"], cwd=work, capture_output=True, text=True, check=True)
    assert recipe["dataset_dir"] in status.stdout  # ${dataset_dir} came from the recipe
    assert yaml.safe_load((REPO / "params.yaml").read_text())["photo_dir"] in status.stdout


def test_prepare_stage_builds_model_and_data(tmp_path):
    recipe = yaml.safe_load((REPO / "recipes/tiny-cpu.yaml").read_text())
    recipe["dataset_dir"] = str(tmp_path / "data")
    recipe["synthetic"] = {**recipe["synthetic"], "num_prompts": 6, "num_systems": 2}
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    subprocess.run(
        [sys.executable, str(REPO / "scripts/prepare_embedded_default.py"), "--config", str(config),
         "--model_dir", str(tmp_path / "model")],
        check=True, capture_output=True, text=True,
    )
    spec = json.loads((tmp_path / "model/tiny_model_spec.json").read_text())
    assert spec["max_pixels"] == recipe["tiny_model"]["max_pixels"]
    committed = REPO / recipe["model_name_or_path"]  # the main job trains the pretrained base, not a random one
    assert (tmp_path / "model/model.safetensors").read_bytes() == (committed / "model.safetensors").read_bytes()
    assert (tmp_path / "model/pretraining.json").is_file()
    labels = pd.read_csv(tmp_path / "data/labels.csv")
    assert len(labels) == 12 and set(labels["system"]) == {"gen-v1", "gen-v2"}


def test_prepare_stage_rejects_a_recipe_without_embedded_default(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("model_name_or_path: Qwen/Qwen2-VL-2B-Instruct\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/prepare_embedded_default.py"), "--config", str(config),
         "--model_dir", str(tmp_path / "model")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "lacks tiny_model, synthetic, dataset_dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_summary_is_flat_per_judge(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    from evaluate_judges import write_summary

    report = {"judges": {"finetuned": {
        "quality": {"metrics": {"roc_auc": 0.9, "accuracy@0.5": 0.8, "accuracy@val": 0.85, "rmse_soft": 0.2,
                                "brier": 0.1, "ece": 0.05}},
        "failures": {"failure_rate": 0.0}, "latency": {"latency_mean_ms": 12.5},
        "sbs": {"summary": {"macro_accuracy": 1.0, "n_assessor_significant": 2}}}}}
    (tmp_path / "metrics.json").write_text(json.dumps(report))
    write_summary(tmp_path / "metrics.json", tmp_path / "out/summary.json")
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary == {"finetuned": {"roc_auc": 0.9, "accuracy@0.5": 0.8, "accuracy@val": 0.85, "rmse_soft": 0.2,
                                     "brier": 0.1, "ece": 0.05, "failure_rate": 0.0, "latency_mean_ms": 12.5,
                                     "sbs_macro_accuracy": 1.0, "sbs_assessor_significant_pairs": 2}}


def test_every_dependency_the_pipeline_names_exists():
    """dvc repro fails on a dependency path that is not there (a module moved without the pipeline)."""
    import yaml

    root = Path(__file__).resolve().parent.parent
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    literal = [dep for stage in stages.values() for dep in stage.get("deps", []) if "${" not in dep]
    assert literal and [dep for dep in literal if not (root / dep).exists()] == []
