"""A Hugging Face Hub stand-in on localhost (HF_ENDPOINT) that serves model folders and counts every file it sends.

Only what huggingface_hub's `model_info`, `snapshot_download`, `hf_hub_download` and transformers' `from_pretrained`
ask for: `GET /api/models/<repo>/revision/<rev>` (commit and file list) and `HEAD`/`GET /<repo>/resolve/<rev>/<file>`
(commit, ETag and size headers; the bytes). A test reads `downloads` to tell whether a pod fetched a model again.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    """Serves `repos` (repo id -> folder) at `url`; `downloads` counts file bodies sent, by (repo, file)."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = repos
        self.commits = {repo: hashlib.sha1(repo.encode()).hexdigest() for repo in repos}
        self.downloads: Counter[tuple[str, str]] = Counter()
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                hub._answer(self, body=True)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def file_downloads(self, repo: str) -> int:
        return sum(count for (name, _), count in self.downloads.items() if name == repo)

    def _repo_of(self, parts: list[str]) -> str | None:
        repo = "/".join(parts[:2])
        return repo if repo in self.repos else None

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(handler.path).path).strip("/").split("/")
        self.requests.append(f"{handler.command} /{'/'.join(path)}")
        if path[:2] == ["api", "models"] and len(path) >= 4 and (repo := self._repo_of(path[2:4])):
            folder = self.repos[repo]
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            if len(path) > 4 and path[4] == "tree":  # snapshot_download's file list
                answer: object = [
                    {
                        "type": "file",
                        "path": str(p.relative_to(folder)),
                        "size": p.stat().st_size,
                        "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                    }
                    for p in files
                ]
            else:  # model_info
                siblings = [{"rfilename": str(p.relative_to(folder))} for p in files]
                answer = {"id": repo, "sha": self.commits[repo], "siblings": siblings}
            self._send(handler, 200, json.dumps(answer).encode(), {"Content-Type": "application/json"}, body)
            return
        if len(path) >= 5 and path[2] == "resolve" and (repo := self._repo_of(path[:2])):
            name = "/".join(path[4:])
            target = self.repos[repo] / name
            if not target.is_file():
                self._send(handler, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
                return
            data = target.read_bytes()
            headers = {
                "X-Repo-Commit": self.commits[repo],
                "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                "Content-Type": "application/octet-stream",
            }
            if body:
                self.downloads[(repo, name)] += 1
            self._send(handler, 200, data, headers, body)
            return
        self._send(handler, 404, b"", {"X-Error-Code": "RepoNotFound"}, body)

    @staticmethod
    def _send(handler, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)
