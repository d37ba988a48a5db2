"""A test double of the ClickHouse HTTP interface, backed by chDB in a subprocess.

This is a test double, not a ClickHouse server. It speaks the part of the HTTP interface that
clickhouse-connect uses and hands every statement to chDB, which is the real ClickHouse engine
running in-process. It runs in its own subprocess because chDB allows one data path per process
and the test process already owns one (the embedded store's).

What it proves: ServerStore's SQL, its server-side `{name:Type}` parameter binding, and its arrow
insert and arrow query paths work through the real clickhouse-connect client (its start-up
queries, URL arguments, request bodies, compression and error handling) against the real
ClickHouse parser, analyzer and storage engines. Parameter values travel exactly as the client
sends them (`param_<name>` URL arguments or form fields, in ClickHouse's escaped text form) and
the engine binds them; the double never formats a value into SQL. Like a server, and unlike
bare chDB, it refuses a request holding several statements (`SELECT 1; DROP TABLE t`).

What it does not prove: a real server's networking, TLS, authentication and users (credentials
are ignored), quotas, replication, clusters and multi-node behaviour, or the quirks of any
particular server version. Also not emulated: sessions (`session_id` is accepted, but settings
and temporary tables do not outlive a request), read-only GET queries, ClickHouse's own
block-compressed format (`compress=1` / `decompress=1`), external data, progress headers, query
summaries, the `X-ClickHouse-Format` header, and the client-protocol-version Native framing
(the client's probe sees a plain Native block and falls back to protocol 0, as it does behind
proxies). Every error is answered with HTTP 500, where a server maps some codes to 4xx.

Requests are served one at a time, under one lock, so each can set the current database and its
settings on the single chDB connection (only those that differ from the previous request's, and
putting back to default any it does not name). Responses go out with TCP_NODELAY: a response
written as headers then body otherwise waits ~40 ms on delayed ACKs, every request.

Run it by hand with `python -m tests.clickhouse_double --port 8123 --data-dir DIR --verbose`.
"""

from __future__ import annotations

import argparse
import contextlib
import email.parser
import email.policy
import gzip
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.frame
from backports import zstd  # clickhouse-connect's own zstd dependency before Python 3.14

_REPO_ROOT = Path(__file__).resolve().parents[1]

# HTTP compression, both directions, in the order a ClickHouse server prefers for responses.
_CODECS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "zstd": (zstd.compress, zstd.decompress),
    "lz4": (lz4.frame.compress, lz4.frame.decompress),
    "gzip": (gzip.compress, gzip.decompress),
    "deflate": (zlib.compress, zlib.decompress),
}

# URL arguments the HTTP interface consumes itself; every other non-`param_` argument is a setting.
_TRANSPORT_ARGS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "close_session",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "quota_key",
        "role",
        "user",
        "password",
        "stacktrace",
    }
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An INSERT whose data follows in the body: the statement is one line ending in FORMAT <name>.
_INSERT_WITH_DATA = re.compile(
    rb"\s*(INSERT\s+INTO\s+[^\n]+?)\s+FORMAT\s+([A-Za-z0-9_]+)[ \t]*(?:\r?\n|$)", re.IGNORECASE
)
_CODE = re.compile(r"^Code: (\d+)\.")
_USE = re.compile(r"\s*USE\b", re.IGNORECASE)


class ClickHouseError(Exception):
    """An error to answer the way ClickHouse does: `Code: N. DB::Exception: ...`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def from_engine(cls, exc: Exception) -> ClickHouseError:
        text = str(exc).strip()
        m = _CODE.match(text)
        if m:
            return cls(int(m.group(1)), text)
        return cls(1001, f"Code: 1001. DB::Exception: {text}. (STD_EXCEPTION)")


def _not_supported(what: str) -> ClickHouseError:
    return ClickHouseError(48, f"Code: 48. DB::Exception: {what}. (NOT_IMPLEMENTED)")


def _escape(value: str) -> str:
    """Render a raw string in ClickHouse's escaped text form, as a `param_` value travels."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


class Engine:
    """The one chDB connection, used by one request at a time."""

    def __init__(self, data_dir: str) -> None:
        self._conn = chdb.connect(data_dir)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self.version, self.timezone, compression = (
            self._conn.query(
                "SELECT version(), timezone(), toUInt8(getSetting('enable_http_compression'))",
                "TSV",
            )
            .bytes()
            .decode()
            .split()
        )
        self.http_compression_default = compression
        # What earlier requests left on the connection: the current database and the settings
        # set away from their defaults (name -> value, None if its SET failed). Each request
        # changes only what differs.
        self._database: str | None = None
        self._applied: dict[str, str | None] = {}

    def run(
        self,
        sql: bytes,
        *,
        database: str,
        settings: dict[str, str],
        params: dict[str, str],
        default_format: str,
    ) -> bytes:
        with self._lock:
            self._use(database)
            self._apply(settings)
            insert = _INSERT_WITH_DATA.match(sql)
            if insert:
                if params:
                    raise _not_supported("query parameters in an INSERT with data")
                self._insert(insert[1].decode(), insert[2].decode(), sql[insert.end() :])
                return b""
            text = sql.decode()
            self._refuse_multi_statements(text)
            if _USE.match(text):
                self._database = None  # it lasts for this request only
            return self._query(text, default_format, params)

    def _use(self, database: str) -> None:
        if database != self._database:
            self._database = None  # unknown until USE succeeds
            self._query("USE {db:Identifier}", params={"db": _escape(database)})
            self._database = database

    def _apply(self, settings: dict[str, str]) -> None:
        """Make the connection's settings this request's: set the ones it names, and put back
        to default the ones an earlier request set and this one does not name. (A setting
        already at the wanted value is left as is: every request still sees only its own.)"""
        for name in [n for n in self._applied if n not in settings]:
            with contextlib.suppress(Exception):
                self._conn.query(f"SET {name} = DEFAULT")
            del self._applied[name]
        for name, value in settings.items():
            if self._applied.get(name) == value:
                continue
            if not _NAME.fullmatch(name):
                text = f"Code: 115. DB::Exception: Unknown setting {name!r}."
                raise ClickHouseError(115, f"{text} (UNKNOWN_SETTING)")
            self._applied[name] = None  # unknown until SET succeeds
            self._query(f"SET {name} = {{v:String}}", params={"v": _escape(value)})
            self._applied[name] = value

    def _query(self, sql: str, fmt: str = "TSV", params: dict[str, str] | None = None) -> bytes:
        try:
            result = self._conn.query(sql, fmt, params=params or {})
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from exc
        return result.bytes() if result is not None else b""

    def _insert(self, statement: str, fmt: str, data: bytes) -> None:
        try:
            inserter = self._conn.send_insert(statement, fmt)
            inserter.append(data)
            inserter.finish()
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from exc

    def _refuse_multi_statements(self, sql: str) -> None:
        # A server's HTTP interface refuses `a; b`; chDB runs both. Ask the engine's own parser
        # (only when there is a `;`: without one, there is one statement).
        if ";" not in sql:
            return
        try:
            self._conn.query("SELECT formatQuery({q:String})", "Null", params={"q": _escape(sql)})
        except Exception as exc:
            if "Multi-statements are not allowed" in str(exc):
                raise ClickHouseError.from_engine(exc) from exc


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no ~40 ms delayed-ACK stall between headers and body
    engine: Engine
    verbose = False

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in ("/", "/ping") and not url.query:
            self._answer(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
        else:
            self._fail(_not_supported("the test double serves queries by POST only"))

    def do_POST(self) -> None:
        try:
            body = self._read_body()
            url = urlsplit(self.path)
            if url.path != "/":
                raise ClickHouseError(1000, f"Code: 1000. DB::Exception: no handler for {url.path}")
            args = dict(parse_qsl(url.query, keep_blank_values=True))
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("multipart/form-data"):
                args.update(_form_fields(content_type, body))
                body = b""
            encoding = self.headers.get("Content-Encoding")
            if encoding:
                if encoding not in _CODECS:
                    raise _not_supported(f"Content-Encoding {encoding}")
                body = _CODECS[encoding][1](body)
            if args.get("compress") == "1" or args.get("decompress") == "1":
                raise _not_supported("ClickHouse's block-compressed format")
            if self.verbose:
                shown = {k: v[:200] for k, v in args.items()}
                print(f"{dict(self.headers)} {shown} {body[:200]!r}", file=sys.stderr)
            query = args.get("query", "")
            sql = (query.encode() + b"\n" if query else b"") + body
            result = self.engine.run(
                sql,
                database=args.get("database", "default"),
                settings={
                    k: v
                    for k, v in args.items()
                    if k not in _TRANSPORT_ARGS and not k.startswith("param_")
                },
                params={k[6:]: v for k, v in args.items() if k.startswith("param_")},
                default_format=args.get("default_format", "TabSeparated"),
            )
        except ClickHouseError as exc:
            self._fail(exc)
            return
        except Exception as exc:
            self._fail(ClickHouseError.from_engine(exc))
            return
        headers = {
            "Content-Type": "application/octet-stream",
            "X-ClickHouse-Query-Id": args.get("query_id") or str(uuid.uuid4()),
            "X-ClickHouse-Timezone": self.engine.timezone,
        }
        if args.get("enable_http_compression", self.engine.http_compression_default) == "1":
            accepted = self.headers.get("Accept-Encoding", "")
            chosen = next((name for name in _CODECS if name in accepted), None)
            if chosen:
                result = _CODECS[chosen][0](result)
                headers["Content-Encoding"] = chosen
        self._answer(200, result, headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def _fail(self, exc: ClickHouseError) -> None:
        text = f"{exc} (version {self.engine.version})\n".encode()
        headers = {"Content-Type": "text/plain; charset=UTF-8"}
        self._answer(500, text, headers | {"X-ClickHouse-Exception-Code": str(exc.code)})

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a multipart/form-data body (the client's path for long parameters)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields = {}
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_filename():
            raise _not_supported("external data")
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload.decode()
    return fields


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ClickHouse HTTP test double over chDB")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--parent-pid", type=int, default=os.getppid(), help="exit when it dies")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    threading.Thread(target=_exit_with_parent, args=(args.parent_pid,), daemon=True).start()
    _Handler.engine = Engine(args.data_dir)
    _Handler.verbose = args.verbose
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


@contextlib.contextmanager
def running_double(timeout: float = 60.0) -> Iterator[str]:
    """Start the double in a subprocess on a free loopback port; yield its URL; stop it."""
    with tempfile.TemporaryDirectory(prefix="clickhouse-double-") as data_dir:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.clickhouse_double", "--data-dir", data_dir),
                *("--port", "0", "--parent-pid", str(os.getpid())),
            ],
            cwd=_REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            yield _wait_until_ready(proc, time.monotonic() + timeout)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


def _wait_until_ready(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    url = proc.stdout.readline().strip() if ready else ""
    while url and proc.poll() is None and time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/ping", timeout=2) as response,
        ):
            if response.read() == b"Ok.\n":
                return url
        time.sleep(0.1)
    raise RuntimeError(f"the ClickHouse test double did not start (exit code {proc.poll()})")


if __name__ == "__main__":
    main()
