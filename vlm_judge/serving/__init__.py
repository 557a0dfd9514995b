"""Serving the judge with vLLM, in one place (`python -m vlm_judge.serve` is the command):

- launcher: the command's options, readiness probe, warm-up, ready line, exit codes;
- vllm_command: the vLLM command line a Qwen2-VL judge needs (pixel bounds, token budget, LoRA, served prompt,
  classify labels, the request gate's settings);
- supervisor: vLLM's process as the launcher's child (signals, drain on stop, bounded stop, process group reaped);
- vllm_entry: vLLM's own API server as the launcher runs it (bounded HTTP shutdown);
- gate and media: the request gate vLLM runs in front of its routes (inline images only, bad images a 4xx,
  p_defect in the answer, the drain);
- judge_server: the command as a background process (JudgeServer) for the main job, benchmarks and tests.
"""
