"""CLI: python -m emulator --host 127.0.0.1 --port 8001 --tokens-per-second 100 ..."""

from __future__ import annotations

import argparse

import uvicorn

from emulator.app import create_app
from emulator.config import EmulatorConfig, parse_effort_map


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--tokens-per-second", type=float, default=100.0, help="0 = unpaced")
    parser.add_argument("--chunk-tokens", type=int, default=1)
    parser.add_argument("--think-ms", default="", help="e.g. low=300,medium=800,high=2000")
    parser.add_argument("--reasoning-tokens", default="", help="e.g. low=64,medium=256,high=1024")
    parser.add_argument("--reply-tokens", type=int, default=60)
    parser.add_argument("--azure", action="store_true", help="Azure shapes on the /v1 paths too")
    parser.add_argument(
        "--timestamps", action="store_true", help="bench mode: deltas carry send times"
    )
    parser.add_argument(
        "--deployment",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="Azure deployment mapping",
    )
    parser.add_argument(
        "--retire", action="append", default=[], metavar="MODEL", help="answer 404 for MODEL"
    )
    parser.add_argument("--log-level", default="warning")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    config = EmulatorConfig(
        tokens_per_second=args.tokens_per_second,
        chunk_tokens=args.chunk_tokens,
        reply_tokens=args.reply_tokens,
        azure=args.azure,
        timestamps=args.timestamps,
        retired_models=list(args.retire),
    )
    changes: dict[str, object] = {}
    if args.think_ms:
        changes["think_ms"] = parse_effort_map(args.think_ms)
    if args.reasoning_tokens:
        changes["reasoning_tokens"] = parse_effort_map(args.reasoning_tokens)
    if args.deployment:
        changes["deployments"] = dict(item.split("=", 1) for item in args.deployment)
    config.update(changes)
    return config


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    app = create_app(config_from_args(args))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        access_log=False,
        log_level=args.log_level,
        lifespan="off",
        backlog=4096,
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
