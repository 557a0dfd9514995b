"""Training stack on the tiny model (fast): answer-only labels on a real collated batch, the judge loss against a
hand computation, LoRA/full-FT parameter updates, QLoRA on CPU, max_length guard, and recipes/sft.py end to end."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from vlm_judge.modeling import load_model, load_processor
from vlm_judge.protocol import answer_token_ids, load_prompt

REPO = Path(__file__).resolve().parent.parent
SIDE = 112  # images rendered at 112 px, kept native by the pixel bounds: 16 visual tokens, fast on CPU
BOUNDS = {"min_pixels": SIDE * SIDE, "max_pixels": SIDE * SIDE}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    from vlm_judge.embedded.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic-112")
    generate_synthetic_dataset(root, num_prompts=20, num_systems=2, image_size=SIDE, seed=1)
    return root


@pytest.fixture(scope="module")
def judge_data(synthetic_dir):
    from vlm_judge.data import load_judge_dataset

    return load_judge_dataset(synthetic_dir, min_side=64)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir, **BOUNDS)


def _script_args(**overrides):
    from vlm_judge.training import JudgeScriptArguments

    fields = {"min_image_side": 64, "mlflow_tracking_uri": "", **BOUNDS, **overrides}
    return JudgeScriptArguments(**fields)


def _sft_config(tmp_path, **overrides):
    from trl import SFTConfig

    fields = {
        "output_dir": str(tmp_path / "out"),
        "max_length": None,
        "bf16": False,
        "gradient_checkpointing": False,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "max_steps": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": [],
        "remove_unused_columns": False,
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
    }
    fields.update(overrides)
    return SFTConfig(**fields)


def _trainer(
    tiny_model_dir,
    processor,
    judge_data,
    tmp_path,
    *,
    model_args=None,
    script_args=None,
    group_by=None,
    pair_loss_weight=0.0,
    **config,
):
    from trl import ModelConfig

    from vlm_judge.training import (
        JudgeDataCollator,
        JudgeSFTTrainer,
        build_model,
        defect_types_of,
        prepare_split,
    )

    script_args = script_args or _script_args()
    model_args = model_args or ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32")
    model, peft_config = build_model(model_args, script_args)
    return JudgeSFTTrainer(
        model=model,
        args=_sft_config(tmp_path, **config),
        data_collator=JudgeDataCollator(
            processor=processor, label_mode=script_args.label_mode, defect_types=defect_types_of(judge_data)
        ),
        train_dataset=prepare_split(judge_data["train"]),
        processing_class=processor,
        peft_config=peft_config,
        group_by=group_by,
        pair_loss_weight=pair_loss_weight,
    )


# ------------------------------------------------------------------------------------------------ collation


def test_labels_cover_only_the_answer_turn_on_a_real_batch(processor, judge_data):
    from vlm_judge.training import JudgeDataCollator, prepare_split

    rows = prepare_split(judge_data["train"])
    yes = next(r for r in rows if r["label"] == 1)
    no = next(r for r in rows if r["label"] == 0)
    batch = JudgeDataCollator(processor=processor, label_mode="soft")([yes, no])
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    assert batch["pixel_values"].shape[0] == 2 * (SIDE // 14) ** 2
    assert torch.allclose(batch["judge_targets"], torch.tensor([yes["soft_label"], no["soft_label"]]))
    for row, answer in ((0, "Yes"), (1, "No")):
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        kept = (labels != -100).nonzero().flatten()
        assert tok.convert_ids_to_tokens(labels[kept].tolist()) == [answer, "<|im_end|>", "Ċ"]
        assert torch.equal(
            labels[kept], ids[kept]
        )  # labels are the input tokens themselves (shifted in the loss)
        # Everything before the answer (system, question, all image tokens) is masked.
        assert (labels[: kept[0]] == -100).all()
        assert (ids == image_id).sum() == (SIDE // 28) ** 2
        assert (labels[ids == image_id] == -100).all()
        # The answer follows the generation prompt exactly as at inference time.
        prefix = tok.decode(ids[: kept[0]])
        assert prefix.endswith("<|im_start|>assistant\n")


def test_max_length_never_truncates_image_tokens(tiny_model_dir):
    from vlm_judge.modeling import NATIVE_1024_MAX_PIXELS
    from vlm_judge.training import check_max_length, max_sequence_length

    native = load_processor(tiny_model_dir, max_pixels=NATIVE_1024_MAX_PIXELS)
    needed = max_sequence_length(native)
    assert needed > 1369  # 1036^2 -> 1369 visual tokens + the chat text
    with pytest.raises(ValueError, match="truncate image tokens"):
        check_max_length(1024, native)  # TRL's default
    check_max_length(None, native)
    check_max_length(needed, native)


# ------------------------------------------------------------------------------------------------ loss


def test_soft_label_loss_equals_hand_computation(tiny_model_dir, processor, judge_data, tmp_path):
    from vlm_judge.training import JudgeDataCollator, prepare_split

    trainer = _trainer(
        tiny_model_dir, processor, judge_data, tmp_path, script_args=_script_args(label_mode="soft")
    )
    rows = list(prepare_split(judge_data["train"]).select(range(3)))
    targets = [0.6, 0.2, 1.0]
    for row, t in zip(rows, targets, strict=True):
        row["soft_label"] = t
    batch = JudgeDataCollator(processor=processor, label_mode="soft")(rows)
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        full = {k: v for k, v in batch.items() if k != "labels" and not k.startswith("judge_")}
        logits = model(**full).logits.double()

    defect_ids, clean_ids = answer_token_ids(processor.tokenizer, load_prompt())
    total, count = 0.0, 0
    for b, t in enumerate(targets):
        positions = (batch["labels"][b] != -100).nonzero().flatten().tolist()
        for i, pos in enumerate(positions):
            probs = torch.softmax(logits[b, pos - 1], dim=-1)
            count += 1
            if i == 0:  # the answer: pair cross-entropy with the vote ratio + the Yes/No mass term
                p_yes, p_no = probs[defect_ids].sum().item(), probs[clean_ids].sum().item()
                p = p_yes / (p_yes + p_no)
                total += -(t * math.log(p) + (1 - t) * math.log(1 - p)) - math.log(p_yes + p_no)
            else:  # <|im_end|>, newline: plain next-token NLL
                total += -math.log(probs[batch["labels"][b, pos]].item())
    assert count == 9
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_hard_label_loss_is_plain_sft_nll(tiny_model_dir, processor, judge_data, tmp_path):
    # With t in {0, 1} and a single Yes/No token each, the answer loss is the usual next-token NLL.
    from vlm_judge.training import answer_loss_terms

    logits = torch.randn(4, 50, dtype=torch.float64)
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    pair, neg_mass, _ = answer_loss_terms(logits, targets, [7], [9])
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor([7, 9, 7, 9]), reduction="none")
    assert torch.allclose(pair + neg_mass, nll)


def test_prompt_pair_loss_hand_computed():
    from vlm_judge.training.trainer import prompt_pair_loss

    log_odds = torch.tensor([2.0, -1.0, 0.5, 0.0, 3.0, -2.0, 1.0])
    targets = torch.tensor([1.0, 0.0, 0.2, 0.7, 1.0, 0.4, 0.4])
    groups = torch.tensor([0, 0, 1, 1, -1, 2, 2])  # -1: no prompt; group 2: equal targets, no pair
    expected = (math.log1p(math.exp(-3.0)) + math.log1p(math.exp(-(0.0 - 0.5)))) / 2
    assert prompt_pair_loss(log_odds, targets, groups).item() == pytest.approx(expected, rel=1e-6)
    assert prompt_pair_loss(log_odds[5:], targets[5:], groups[5:]) is None


def test_pair_loss_weight_adds_the_pairwise_term_to_the_judge_loss(tiny_model_dir, processor, judge_data, tmp_path):
    from vlm_judge.training import JudgeDataCollator, prepare_split

    trainer = _trainer(tiny_model_dir, processor, judge_data, tmp_path)
    rows = list(prepare_split(judge_data["train"]).select(range(4)))
    for row, prompt, label in zip(rows, ["a", "a", "b", "b"], [1, 0, 0, 1], strict=True):
        row["prompt_id"], row["label"], row["soft_label"] = prompt, label, float(label)
    batch = JudgeDataCollator(processor=processor)(rows)
    assert batch["judge_groups"].tolist() == [0, 0, 1, 1]
    ids = [{**row, "prompt_id": pid} for row, pid in zip(rows, [0, 0, None, ""], strict=True)]
    assert JudgeDataCollator(processor=processor)(ids)["judge_groups"].tolist() == [0, 0, -1, -1]
    model = trainer.model.eval()
    with torch.no_grad():
        plain = trainer.compute_loss(model, dict(batch)).item()
        trainer.pair_loss_weight = 0.5
        paired = trainer.compute_loss(model, dict(batch)).item()
        full = {k: v for k, v in batch.items() if k != "labels" and not k.startswith("judge_")}
        logits = model(**full).logits.double()

    defect_ids, clean_ids = answer_token_ids(processor.tokenizer, load_prompt())
    log_odds = []
    for b in range(4):
        answer = int((batch["labels"][b] != -100).nonzero()[0])
        probs = torch.softmax(logits[b, answer - 1], dim=-1)
        log_odds.append(math.log(probs[defect_ids].sum().item() / probs[clean_ids].sum().item()))
    pairs = [log_odds[0] - log_odds[1], log_odds[3] - log_odds[2]]  # the defective row first
    expected = sum(math.log1p(math.exp(-m)) for m in pairs) / 2
    assert paired - plain == pytest.approx(0.5 * expected, rel=1e-4)
    with pytest.raises(ValueError, match="pair_loss_weight must be >= 0"):
        _trainer(tiny_model_dir, processor, judge_data, tmp_path, pair_loss_weight=-1.0)


# ------------------------------------------------------------------------------------------------ evaluation


def test_evaluation_reports_the_reference_scorers_metrics(tiny_model_dir, processor, judge_data, tmp_path):
    # Trainer's eval loop scores each row once (the loss's forward pass); its metrics are those of the reference
    # scorer (modeling.score_images, the protocol's rule) and vlm_judge.metrics on the same model.
    from vlm_judge.metrics import judge_metrics
    from vlm_judge.modeling import score_images
    from vlm_judge.training import prepare_split

    split = judge_data["train"]
    trainer = _trainer(tiny_model_dir, processor, judge_data, tmp_path, per_device_eval_batch_size=8)
    trainer.train()
    metrics = trainer.evaluate(prepare_split(split), metric_key_prefix="test")
    assert all(key.startswith("test_") for key in metrics if key != "epoch")

    scores = score_images(trainer.model, processor, list(split["image_path"]), batch_size=8)
    reference = judge_metrics(split["label"], scores, defects=split["defect"], soft_labels=split["soft_label"])
    got = {k.removeprefix("test_"): v for k, v in metrics.items() if k.removeprefix("test_") in reference}
    assert got.keys() == reference.keys() and sum(k.startswith("roc_auc_") for k in got) >= 2
    assert got == pytest.approx(reference, abs=1e-6)
    assert got["roc_auc"] == reference["roc_auc"] and got["n"] == len(split)
    assert 0.0 < metrics["test_answer_mass"] <= 1.0 and metrics["test_answer_loss"] > 0


def test_fitted_temperature_folded_into_the_model_leaves_nothing_to_fit(tiny_model_dir, processor, judge_data, tmp_path):
    # The fit reads the eval loop's answer logits; folding its temperature into the weights must give a model
    # whose own fit is T = 1 at the NLL the first fit reached: the fit and the fold describe the same readout.
    from vlm_judge.calibration import fold_temperature
    from vlm_judge.training import prepare_split

    split = prepare_split(judge_data["train"])
    trainer = _trainer(tiny_model_dir, processor, judge_data, tmp_path, per_device_eval_batch_size=8, max_steps=6)
    trainer.train()
    first = trainer.fit_temperature(split)
    assert first.rows == len(split) and first.nll_after <= first.nll_before
    assert abs(math.log(first.temperature)) > 0.05  # six steps at lr 1e-2 leave a readout far from calibrated
    fold_temperature(trainer.model, first.temperature)
    second = trainer.fit_temperature(split)
    assert second.temperature == pytest.approx(1.0, abs=0.01)
    assert second.nll_before == pytest.approx(first.nll_after, abs=1e-5)


# ------------------------------------------------------------------------------------------------ updates


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_two_lora_steps_change_lora_weights_and_nothing_frozen(
    tiny_model_dir, processor, judge_data, tmp_path
):
    from trl import ModelConfig

    model_args = ModelConfig(
        model_name_or_path=str(tiny_model_dir),
        dtype="float32",
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=["q_proj", "v_proj"],
    )
    trainer = _trainer(tiny_model_dir, processor, judge_data, tmp_path, model_args=model_args)
    before = _snapshot(trainer.model)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable, "no trainable parameters"
    assert all("lora_" in n or "merger" in n for n in trainable)
    assert not any("visual.blocks" in n for n in trainable)  # vision tower frozen by default
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all("language_model.layers" in n and ("q_proj" in n or "v_proj" in n) for n in lora)
    trainer.train()
    after = _snapshot(trainer.model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert {n for n in changed if "lora_B" in n}, "LoRA weights did not move"
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"


def test_full_finetune_respects_frozen_vision_tower(tiny_model_dir, processor, judge_data, tmp_path):
    script_args = _script_args(train_vision_tower=False, train_merger=True)
    trainer = _trainer(tiny_model_dir, processor, judge_data, tmp_path, script_args=script_args)
    before = _snapshot(trainer.model)
    trainer.train()
    after = _snapshot(trainer.model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert not {n for n in changed if "visual.blocks" in n or "patch_embed" in n}
    assert {n for n in changed if "visual.merger" in n}
    assert {n for n in changed if "language_model" in n}


def test_gradient_checkpointing_step(tiny_model_dir, processor, judge_data, tmp_path):
    trainer = _trainer(
        tiny_model_dir, processor, judge_data, tmp_path, gradient_checkpointing=True, max_steps=1
    )
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    assert trainer.model.is_gradient_checkpointing


def test_qlora_4bit_step_on_cpu(tiny_model_dir, processor, judge_data, tmp_path):
    # A freshly loaded 4-bit model (no generate() call before training).
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    from trl import ModelConfig

    model_args = ModelConfig(
        model_name_or_path=str(tiny_model_dir),
        dtype="bfloat16",  # as the 7B recipe; TRL casts the trainable (non-4-bit) weights of a quantized model to bf16
        use_peft=True,
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    trainer = _trainer(tiny_model_dir, processor, judge_data, tmp_path, model_args=model_args, max_steps=1)
    import bitsandbytes as bnb

    modules = dict(trainer.model.named_modules())
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in modules.values())
    # The vision side stays unquantized (the merger is trained in full).
    assert not any(isinstance(m, bnb.nn.Linear4bit) for n, m in modules.items() if "visual" in n)
    before = _snapshot(trainer.model)
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    after = _snapshot(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)


# ------------------------------------------------------------------------------------------------ recipes/sft.py


def _load_sft_module():
    spec = importlib.util.spec_from_file_location("recipes_sft", REPO / "recipes" / "sft.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sft_script_writes_test_results_metadata_and_mlflow(tiny_model_dir, synthetic_dir, tmp_path):
    import yaml
    from trl import ModelConfig, SFTConfig, TrlParser

    from vlm_judge.training import JudgeScriptArguments

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(tiny_model_dir),
                "dtype": "float32",
                "dataset_dir": str(synthetic_dir),
                "min_image_side": 64,
                **BOUNDS,
                "train_vision_tower": True,
                "mlflow_tracking_uri": str(tmp_path / "mlruns"),
                "mlflow_experiment": "test",
                "output_dir": str(tmp_path / "run"),
                "max_length": None,
                "bf16": False,
                "use_cpu": True,
                "gradient_checkpointing": False,
                "per_device_train_batch_size": 8,
                "learning_rate": 1e-3,
                "max_steps": 4,
                "logging_steps": 2,
                "eval_strategy": "steps",
                "eval_steps": 2,
                "save_strategy": "steps",
                "save_steps": 2,
                "load_best_model_at_end": True,
                "metric_for_best_model": "roc_auc",
                "report_to": [],
                "disable_tqdm": True,
            }
        )
    )
    sft = _load_sft_module()
    parser = TrlParser((JudgeScriptArguments, SFTConfig, ModelConfig))
    args = parser.parse_args_and_config(["--config", str(recipe)])
    metrics = sft.main(*args, recipe=str(recipe))

    out = tmp_path / "run"
    results = json.loads((out / "test_results.json").read_text())
    assert 0.0 <= results["test_roc_auc"] <= 1.0 and results["test_roc_auc"] == metrics["test_roc_auc"]
    assert {"test_accuracy", "test_brier", "test_n", "best_eval_roc_auc"} <= set(results)
    assert results["test_split"] == "test"
    assert not any(key.startswith("eval_") for key in results)  # eval_* is the validation split only
    # eval_results.json keeps the name and keys other tools read: the same test-split numbers.
    legacy = json.loads((out / "eval_results.json").read_text())
    assert legacy["eval_roc_auc"] == results["test_roc_auc"] and legacy["eval_split"] == "test"
    assert {f"eval_{k[5:]}" for k in results if k.startswith("test_roc_auc_")} <= set(legacy)

    meta = json.loads((out / "judge_training.json").read_text())
    assert meta["pixel_bounds"] == BOUNDS
    assert meta["prompt"]["version"] == load_prompt().version
    assert len(meta["dataset"]["fingerprint"]) == 64
    assert meta["recipe"]["path"] == str(recipe) and "roc_auc" in meta["recipe"]["text"]
    assert meta["metrics"]["test_roc_auc"] == results["test_roc_auc"]
    assert [h["step"] for h in meta["eval_history"]] == [2, 4]

    # The saved processor carries the training pixel bounds.
    from vlm_judge.modeling import pixel_bounds

    assert pixel_bounds(load_processor(out)) == (BOUNDS["min_pixels"], BOUNDS["max_pixels"])

    # load_best_model_at_end really restored the best checkpoint (transformers' own loader silently fails here).
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"])
    from safetensors.torch import load_file

    final, best_weights = load_file(out / "model.safetensors"), load_file(best / "model.safetensors")
    changed = [k for k in best_weights if not torch.equal(final[k], best_weights[k])]
    # ... and the validation-fitted temperature is folded into the final norm, the only weight it touches.
    calibration = meta["calibration"]
    assert calibration["split"] == "validation" and calibration["folded_into_weights"] is True
    assert calibration["nll_after"] <= calibration["nll_before"] and calibration["rows"] > 0
    (norm,) = changed
    assert norm.endswith("norm.weight") and "layers" not in norm and "visual" not in norm
    assert torch.allclose(final[norm], best_weights[norm] / calibration["temperature"], atol=1e-6)

    # MLflow: params, the data fingerprint, the recipe artifact and the eval metrics.
    import mlflow

    from vlm_judge.training.tracking import resolve_tracking_uri

    client = mlflow.MlflowClient(tracking_uri=resolve_tracking_uri(str(tmp_path / "mlruns"))[0])
    experiment = client.get_experiment_by_name("test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["dataset_fingerprint"] == meta["dataset"]["fingerprint"]
    assert "eval_roc_auc" in run.data.metrics and "test_roc_auc" in run.data.metrics
    assert run.data.metrics["calibration_temperature"] == pytest.approx(calibration["temperature"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "recipe")}
    assert "recipe/recipe.yaml" in artifacts


def test_loaded_model_scores_like_the_trained_one(tiny_model_dir, processor, judge_data, tmp_path):
    # What the trainer saves is what serving loads: same p_defect after save -> reload.
    from vlm_judge.modeling import score_images

    trainer = _trainer(tiny_model_dir, processor, judge_data, tmp_path, max_steps=2)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    images = list(judge_data["test"]["image_path"][:4])
    expected = score_images(trainer.model, processor, images)
    reloaded = load_model(tmp_path / "saved", dtype="float32")
    got = score_images(reloaded, load_processor(tmp_path / "saved"), images)
    assert got == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------------------------------------ batches


def test_grouped_sampler_orders_whole_prompts_by_seed():
    from itertools import groupby

    from vlm_judge.training.trainer import GroupedSampler

    prompts = [f"p{i % 7}" for i in range(40)]  # a prompt's rows are scattered through the table
    sampler = GroupedSampler(prompts, seed=3)
    epochs = [list(sampler), list(sampler)]
    for order in epochs:
        assert len(sampler) == 40 and sorted(order) == list(range(40))  # every row once per epoch
        runs = [prompt for prompt, _ in groupby(prompts[i] for i in order)]
        assert sorted(runs) == sorted(set(prompts))  # each prompt's rows come as one run
    assert epochs[0] != epochs[1]  # a new order each epoch
    assert list(GroupedSampler(prompts, seed=3)) == epochs[0]  # the same seed, the same order
    assert list(GroupedSampler(prompts, seed=4)) != epochs[0]


def test_group_batches_by_prompt_puts_every_system_of_a_prompt_in_one_batch(
    tiny_model_dir, processor, judge_data, tmp_path
):
    from collections import Counter

    from vlm_judge.training.trainer import GroupedSampler

    trainer = _trainer(tiny_model_dir, processor, judge_data, tmp_path, group_by="prompt_id")
    prompts = list(trainer.train_dataset["prompt_id"])
    sizes = Counter(prompts)
    assert set(sizes.values()) == {2}  # two systems per prompt: a batch of 4 holds two whole prompts
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, GroupedSampler)
    batches = list(torch.utils.data.BatchSampler(sampler, trainer.args.per_device_train_batch_size, False))
    for batch in batches:
        assert all(n == sizes[prompt] for prompt, n in Counter(prompts[i] for i in batch).items()), batch
    assert sorted(i for batch in batches for i in batch) == list(range(len(prompts)))
    assert not isinstance(_trainer(tiny_model_dir, processor, judge_data, tmp_path)._get_train_sampler(), GroupedSampler)


def test_max_train_samples_keeps_the_first_rows(judge_data):
    from vlm_judge.training import prepare_split

    train = judge_data["train"]
    limited = prepare_split(train, 5)
    assert len(limited) == 5 and limited["prompt_id"] == train["prompt_id"][:5]
    assert len(prepare_split(train, 10_000)) == len(prepare_split(train)) == len(train)
