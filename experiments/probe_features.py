"""Linear probes on a judge's features: is the ranking lost in the vision tower or in the language model's readout?

    python experiments/probe_features.py MODEL_DIR [DATASET_DIR]

For every image of the dataset (default data/synthetic-224) it takes (a) the merger's 64 visual tokens pooled
(mean, max, std: 384 numbers) and (b) the language model's last hidden state at the answer position (128), fits a
logistic regression on the train split (C chosen on validation) and prints the test ROC-AUC, overall and per
defect type (that type's images against the clean ones). A probe far above the judge's own AUC would say the
readout loses what the tower sees; a probe at or below it, that the tower's features are the limit.
"""

import csv
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from vlm_judge.modeling import build_judge_inputs, load_model, load_processor


def main(model_dir: str, dataset_dir: str = "data/synthetic-224") -> None:
    torch.set_num_threads(2)
    model = load_model(model_dir, dtype="float32").eval()
    processor = load_processor(model_dir)
    with open(Path(dataset_dir) / "labels.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    captured: dict[str, torch.Tensor] = {}
    model.model.visual.merger.register_forward_hook(lambda _m, _i, out: captured.__setitem__("tokens", out))
    pooled, readout = [], []
    with torch.inference_mode():
        for start in range(0, len(rows), 32):
            batch = rows[start : start + 32]
            images = [Image.open(Path(dataset_dir) / r["image"]).convert("RGB") for r in batch]
            out = model(**build_judge_inputs(processor, images), output_hidden_states=True, logits_to_keep=1)
            tokens = captured["tokens"].reshape(len(batch), -1, captured["tokens"].shape[-1])
            pooled.append(torch.cat([tokens.mean(1), tokens.amax(1), tokens.std(1)], -1).numpy())
            readout.append(out.hidden_states[-1][:, -1].numpy())
    labels = np.array([int(r["label"]) for r in rows])
    split = np.array([r["split"] for r in rows])
    defect = np.array([r["defect"] for r in rows])
    for name, chunks in (("pooled visual tokens", pooled), ("LM answer position", readout)):
        x = np.concatenate(chunks)
        scaler = StandardScaler().fit(x[split == "train"])
        fits = []
        for c in (0.003, 0.01, 0.03, 0.1, 0.3, 1.0):
            clf = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(x[split == "train"]), labels[split == "train"])
            val = roc_auc_score(labels[split == "validation"], clf.decision_function(scaler.transform(x[split == "validation"])))
            fits.append((val, c, clf))
        val, c, clf = max(fits, key=lambda fit: fit[0])
        test = split == "test"
        score, truth, kind = clf.decision_function(scaler.transform(x[test])), labels[test], defect[test]
        per_type = {
            str(t): round(roc_auc_score(truth[(kind == t) | (truth == 0)], score[(kind == t) | (truth == 0)]), 3)
            for t in sorted(set(kind) - {"none"})
        }
        print(f"{name}: C={c} val {val:.3f} test {roc_auc_score(truth, score):.3f} {per_type}")


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 3:
        sys.exit(__doc__.splitlines()[2].strip())
    if not (Path(sys.argv[1]) / "config.json").is_file():
        sys.exit(f"MODEL_DIR {sys.argv[1]!r} is not a model folder (no config.json)")
    if len(sys.argv) == 3 and not (Path(sys.argv[2]) / "labels.csv").is_file():
        sys.exit(f"DATASET_DIR {sys.argv[2]!r} has no labels.csv")
    main(*sys.argv[1:])
