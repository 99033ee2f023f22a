"""``speechprune device serve``: the latency agent on the board (:mod:`speechprune.device.agent`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from speechprune.cli.options import positive_int


def _serve(args: argparse.Namespace) -> int:
    from common.errors import SpeechpruneError
    from speechprune.device.agent import serve

    token = None
    if args.token_file is not None:
        if not args.token_file.is_file():
            raise SpeechpruneError(f"{args.token_file}: no such token file")
        token = args.token_file.read_text(encoding="utf-8").strip()
        if len(token) < 16:
            raise SpeechpruneError(f"{args.token_file}: a token must have at least 16 characters")
    serve(args.host, args.port, token, args.max_request_mb * 1024 * 1024, args.threads)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    device = commands.add_parser("device", help="run on the device: the latency agent")
    actions = device.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = actions.add_parser(
        "serve",
        help="answer latency measurements (exported models, decoder settings, calibration audio) over HTTP",
        description="Times the exported models it is sent with onnxruntime and the given decoder, one "
        "measurement at a time, and answers interleaved medians, decoded texts and the device's "
        "description. A token is required unless it listens on loopback only; request bodies are capped; "
        "only ONNX, JSON and raw audio arrays are accepted (nothing is unpickled or executed).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8750, help="port (default: 8750; 0 = any free one)")
    serve.add_argument(
        "--token-file", type=Path, help="file holding the shared token (required off loopback)"
    )
    serve.add_argument("--threads", type=positive_int, default=1, help="threads measurements may use")
    serve.add_argument("--max-request-mb", type=positive_int, default=256, help="largest request body")
    serve.set_defaults(handler=_serve)
