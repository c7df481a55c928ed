"""A reward server for any reward function: `python -m rlhf.rewards.server --function module:fn`.

POST /score  {"prompts": [...], "responses": [...], "columns": {...}}  ->  {"scores": [...]}
GET  /health                                         ->  {"ok": true, "function": "module:fn"}

The function is imported like `reward.function` (working directory or PYTHONPATH) and
called as fn(prompts=[...], responses=[...], **columns) with what its signature takes
(`columns`, optional: the data rows' other fields as lists). Bad requests get 400, a wrong or missing
bearer token 401, a function that raises or returns a wrong count / non-numbers 500,
all with a JSON {"error": ...}. It binds to 127.0.0.1 unless told otherwise; with
`--api-key-env VAR` it requires `Authorization: Bearer $VAR`.
"""
from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from rlhf.rewards.columns import call_with_accepted
from rlhf.rewards.function import import_function

logger = logging.getLogger("rlhf.rewards.server")


def parse_request(body) -> tuple[list[str], list[str], dict[str, list]]:
    """(prompts, responses, columns) of a request body, or ValueError saying what is wrong with it."""
    if not isinstance(body, dict):
        raise ValueError("request must be a JSON object with 'prompts' and 'responses'")
    prompts, responses = body.get("prompts"), body.get("responses")
    for key, value in (("prompts", prompts), ("responses", responses)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"'{key}' must be a list of strings")
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    columns = body.get("columns") or {}
    if not isinstance(columns, dict) or not all(isinstance(v, list) and len(v) == len(responses)
                                                for v in columns.values()):
        raise ValueError("'columns' must map each field name to a list of one value per response")
    return prompts, responses, columns


def call_function(fn: Callable, spec: str, prompts: list[str], responses: list[str],
                  columns: Optional[dict[str, list]] = None) -> list[float]:
    """fn's scores as floats, or RuntimeError naming the function and what it got wrong."""
    try:
        kwargs = {**(columns or {}), "prompts": prompts, "responses": responses}
        scores = [float(s) for s in call_with_accepted(fn, **kwargs)]
    except Exception as err:
        raise RuntimeError(f"{spec} failed: {type(err).__name__}: {err}") from None
    if len(scores) != len(responses):
        raise RuntimeError(f"{spec} returned {len(scores)} scores for {len(responses)} responses")
    return scores


def make_handler(fn: Callable, spec: str, api_key: Optional[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/health":
                self._reply(200, {"ok": True, "function": spec})
            else:
                self._reply(404, {"error": f"no route {self.path}; POST /score or GET /health"})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/score":
                return self._reply(404, {"error": f"no route {self.path}; POST /score"})
            if api_key is not None:
                sent = self.headers.get("Authorization", "")
                if not hmac.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
                    return self._reply(401, {"error": "missing or wrong bearer token"})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except (ValueError, UnicodeDecodeError):
                return self._reply(400, {"error": "body is not JSON"})
            try:
                prompts, responses, columns = parse_request(body)
            except ValueError as err:
                return self._reply(400, {"error": str(err)})
            try:
                scores = call_function(fn, spec, prompts, responses, columns)
            except RuntimeError as err:  # the user's function failed: the client retries, then reports
                logger.error("%s", err)
                return self._reply(500, {"error": str(err)})
            # NaN/inf pass through (Python's json writes them): the trainer masks and counts such samples.
            self._reply(200, {"scores": scores})

        def log_message(self, fmt: str, *args) -> None:  # one quiet line per request, not stderr noise
            logger.debug("%s %s", self.address_string(), fmt % args)

    return Handler


def serve(spec: str, host: str = "127.0.0.1", port: int = 8000, api_key_env: Optional[str] = None) -> ThreadingHTTPServer:
    """A started-but-not-serving server (call `serve_forever`); port 0 picks a free port."""
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise SystemExit(f"--api-key-env {api_key_env}: the variable is not set")
    fn = import_function(spec)
    server = ThreadingHTTPServer((host, port), make_handler(fn, spec, api_key))
    server.daemon_threads = True
    return server


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.rewards.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--function", required=True, help="module:function to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key-env", default=None, help="require this variable's value as a bearer token")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = serve(args.function, args.host, args.port, args.api_key_env)
    host, port = server.server_address[:2]
    print(f"serving {args.function} on http://{host}:{port}/score", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
