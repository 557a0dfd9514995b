"""Evaluation harness: judges from baselines/*.yaml scored through one client, metrics, SbS, report.

python -m eval.compare --dataset DIR --judges baselines/A.yaml ... --output reports/NAME
"""
