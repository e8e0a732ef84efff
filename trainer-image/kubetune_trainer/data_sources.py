"""Load the raw rows of a dataset from wherever the spec points: the Hub, a volume, a ConfigMap, or https.

Files are read with the `datasets` builders (JSONL/JSON, CSV, Parquet), so large files stream into Arrow
instead of Python lists. Every failure becomes an InvalidInputError that says which source and why.
"""

from __future__ import annotations

import codecs
import json
import os
import shutil
import tempfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from kubetune.api.finetunejob import DatasetSource, HfDataset
from kubetune.api.runtime import ENV_HF_TOKEN, configmap_file_path, resolve_pvc_path

from .errors import InvalidInputError, NetworkError, TrainerFailure
from .retries import with_retries, with_retries_or
from .safe_fetch import AddressPolicy, UnsafeUrlError, open_public_https, public_only

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
URL_TIMEOUT_SECONDS = 60
TEXT_BUILDERS = {"json", "csv"}
UTF8_CHECK_CHUNK = 1 << 20
ADDRESS_POLICY: AddressPolicy = public_only
"""The addresses a dataset URL may reach: public ones (tests with a loopback https server widen it)."""


@dataclass(frozen=True)
class RawData:
    """Rows as found in the source; `eval` is set only when the spec names an evaluation split."""

    train: Dataset
    eval: Dataset | None
    description: str


def load_raw_data(
    spec: DatasetSource, download_dir: Path | None = None, *, eval_split: str | None = None, where: str = "dataset"
) -> RawData:
    """Dispatch on the one source `spec` sets (a dataset, or one source of its mix named `where` in errors).
    `eval_split` defaults to the dataset's evalSplit."""
    if eval_split is None:
        eval_split = getattr(spec, "eval_split", None)
    if spec.hf is not None:
        return _load_hub(spec.hf, eval_split, where)
    if spec.pvc is not None:
        path = Path(resolve_pvc_path(spec.pvc))
        return RawData(load_files(path, f"{where}.pvc"), None, spec.describe())
    if spec.config_map is not None:
        path = Path(configmap_file_path(spec.config_map.name, spec.config_map.key))
        return RawData(load_files(path, f"{where}.configMap"), None, spec.describe())
    assert spec.url is not None  # the API guarantees exactly one source
    target = download(spec.url, download_dir or Path(tempfile.mkdtemp(prefix="kubetune-data-")), field=f"{where}.url")
    return RawData(load_files(target, f"{where}.url"), None, spec.url)


def _load_hub(hf: HfDataset, eval_split: str | None, where: str) -> RawData:
    from datasets import load_dataset

    token = os.environ.get(ENV_HF_TOKEN) or None

    def split(name: str) -> Dataset:
        def load() -> Dataset:
            return load_dataset(hf.name, hf.config, split=name, revision=hf.revision, token=token)  # type: ignore[return-value]

        return with_retries_or(  # datasets raises many types (FileNotFoundError, ValueError, HfHubHTTPError)
            f"{where}.hf: loading {hf.name!r} split {name!r}",
            load,
            lambda error: InvalidInputError(
                f"{where}.hf: cannot load {hf.name!r} (config {hf.config!r}, split {name!r}): "
                f"{type(error).__name__}: {error}"
            ),
        )

    eval_rows = split(eval_split) if eval_split else None
    return RawData(split(hf.split), eval_rows, f"hf:{hf.name}")


def data_files(path: Path, field: str) -> tuple[str, list[str]]:
    """The builder name and the files of `path` (a file, or a folder of files of one supported type)."""
    if path.is_file():
        builder = BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise InvalidInputError(
                f"{field}: {path.name!r} has an unsupported extension; use one of {', '.join(BUILDERS)}"
            )
        return builder, [str(path)]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in BUILDERS)
        builders = {BUILDERS[p.suffix.lower()] for p in files}
        if not files:
            raise InvalidInputError(f"{field}: folder {path} holds no {', '.join(BUILDERS)} files")
        if len(builders) > 1:
            raise InvalidInputError(f"{field}: folder {path} mixes file types ({', '.join(sorted(builders))})")
        return builders.pop(), [str(p) for p in files]
    raise InvalidInputError(f"{field}: {path} does not exist (is the volume mounted and the path right?)")


def load_files(path: Path, field: str) -> Dataset:
    """Read JSONL/JSON/CSV/Parquet file(s) into one Dataset."""
    from datasets import load_dataset

    builder, files = data_files(path, field)
    if all(Path(name).stat().st_size == 0 for name in files):
        raise InvalidInputError(f"{field}: {path} is empty: it has no rows")
    if builder in TEXT_BUILDERS:
        # Arrow reads bytes that are not UTF-8 without complaint and fails only when a row is read, deep in
        # the formatting step, with a bare UnicodeDecodeError: check the encoding first, naming file and fix.
        for name in files:
            check_utf8(Path(name), field)
    try:
        return load_dataset(builder, data_files=files, split="train")  # type: ignore[return-value]
    except Exception as error:  # parse errors surface as several exception types
        where = locate_json_error([Path(name) for name in files]) if builder == "json" else None
        raise InvalidInputError(
            f"{field}: cannot parse {path} as {builder}: {where or f'{type(error).__name__}: {error}'}"
        ) from error


def check_utf8(path: Path, field: str) -> None:
    """Raise InvalidInputError naming the file, the first bad byte's line and the iconv command that fixes it."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    with path.open("rb") as stream:
        while chunk := stream.read(UTF8_CHECK_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                line = lines + chunk.count(b"\n", 0, error.start)
                raise InvalidInputError(_not_utf8_message(path, field, offset + max(error.start, 0), line)) from None
            lines += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InvalidInputError(_not_utf8_message(path, field, offset, lines)) from None


def _not_utf8_message(path: Path, field: str, offset: int, line: int) -> str:
    """Korean Windows (Excel's "CSV" and Notepad's "ANSI") writes CP949: say so when the bytes decode as CP949."""
    with path.open("rb") as stream:
        sample = stream.read(UTF8_CHECK_CHUNK)
    try:
        sample.decode("cp949")
        source, guess = "cp949", " It looks like CP949/EUC-KR, what Excel and Notepad on Korean Windows write."
    except UnicodeDecodeError:
        source, guess = "<its encoding>", ""
    fixed = path.with_name(f"{path.stem}.utf8{path.suffix}").name
    return (
        f"{field}: {path.name} is not UTF-8 text (byte offset {offset}, line {line}).{guess} "
        f"Convert it to UTF-8, e.g. `iconv -f {source} -t utf-8 {path.name} > {fixed}`, and use the new file "
        '(or save it from Excel as "CSV UTF-8").'
    )


def locate_json_error(files: list[Path]) -> str | None:
    """File and line of the first malformed line of JSON Lines files (or the error position of one JSON document);
    the `datasets` error gives only a position inside a block of bytes."""
    for path in files:
        text = path.read_text(encoding="utf-8")
        try:
            json.loads(text)
            continue  # a whole JSON document (array or object) parses: not the culprit
        except ValueError as whole:
            if text.lstrip().startswith("["):
                return f"{path.name} line {whole.lineno} column {whole.colno}: {whole.msg}"
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                return f"{path.name} line {number} is not valid JSON ({error.msg} at column {error.colno})"
            if not isinstance(row, dict):
                return f'{path.name} line {number} is not a JSON object (one row per line: {{"field": ...}})'
    return None


def download(url: str, target_dir: Path, policy: AddressPolicy | None = None, field: str = "dataset.url") -> Path:
    """Fetch an https dataset file (system CA bundle, honouring SSL_CERT_FILE) into `target_dir`: https at every
    redirect, public addresses only (safe_fetch.py; `policy` defaults to ADDRESS_POLICY)."""
    name = Path(url.split("?", 1)[0].rstrip("/")).name or "dataset.jsonl"
    if Path(name).suffix.lower() not in BUILDERS:
        raise InvalidInputError(f"{field}: {url!r} must end in one of {', '.join(BUILDERS)} to tell its type")
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / name

    def fetch() -> None:
        response = open_public_https(url, URL_TIMEOUT_SECONDS, policy or ADDRESS_POLICY)
        with response, target.open("wb") as out:
            shutil.copyfileobj(response, out)

    try:
        with_retries(f"{field}: downloading {url}", fetch)
    except NetworkError:
        raise
    except UnsafeUrlError as error:
        raise UnsafeUrlError(f"{field}: {error}") from None
    except urllib.error.HTTPError as error:
        # 429 and 5xx were retried above and ended as NetworkError; any other status will not fix itself.
        message = f"{field}: cannot download {url}: HTTP {error.code} {error.reason}"
        raise InvalidInputError(message) from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise TrainerFailure(f"{field}: cannot download {url}: {reason}") from error
    return target
