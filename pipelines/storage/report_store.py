"""Reports and quarantine records on an object store (S3 or a compatible one), for a UI on another machine.

With `monitoring.report_store` (or $PIPELINE_REPORT_STORE) set to `s3://bucket/prefix`, each folder the night
writes (`reports/ds=...`, `quarantine/ds=...`, `reports/models/<pair>`) is also published there, and the monitoring
plugin serves it from there: the api-server needs no disk shared with the workers. Credentials come from the
environment or the machine's role (boto3's own chain: AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...), never the YAML.

S3 has no rename, so a publish is made atomic by a manifest: the files go under a key of their own
(`<folder>/<version>/<name>`), then one `manifest.json` (a single-object write, atomic on S3) names that version
and each file's SHA-256. A reader only follows the manifest: it sees the old set or the new one, never half of one,
and a file whose bytes are not the ones the manifest names is refused. Older versions are deleted after the swap.

The bucket is a trust boundary: whoever may write it could otherwise serve any HTML as a night's report or add
quarantine records that training trusts. Every manifest is signed (HMAC-SHA256 with the audit key,
$AIRFLOW_VAR_PIPELINE_AUDIT_KEY), and a manifest that is malformed or not signed with this deployment's key is
refused: never served, never counted as a quarantine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.core.config import AUDIT_KEY_ENV_VAR, PipelineConfig, StoreLocation, parse_store_url
from pipelines.core.errors import ReportStoreError
from pipelines.storage.atomic import is_leftover

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_FOLDER = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def location(config: PipelineConfig) -> StoreLocation | None:
    """The configured report store, or None when reports stay on the local data root only."""
    url = config.monitoring.report_store
    return parse_store_url(url) if url else None


def _client() -> Any:
    import boto3

    return boto3.client("s3")  # endpoint, region and keys from the environment (AWS_ENDPOINT_URL for a local store)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key(config: PipelineConfig) -> bytes:
    if not config.audit_key:
        raise ReportStoreError(
            f"the report store's manifests are signed with the audit key: set {AUDIT_KEY_ENV_VAR} (the Airflow "
            "Variable pipeline_audit_key) on every machine that publishes or serves reports"
        )
    return config.audit_key.encode()


def _signature(config: PipelineConfig, manifest: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in manifest.items() if k != "signature"}, sort_keys=True).encode()
    return hmac.new(_key(config), body, hashlib.sha256).hexdigest()


def _verified(config: PipelineConfig, body: bytes, where: str) -> dict[str, Any]:
    """The manifest in `body` if it is well formed and signed with this deployment's key; else ReportStoreError."""
    try:
        manifest = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportStoreError(f"{where} is not a manifest (not JSON: {exc}); republish the folder") from exc
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("sha256"), str) and _NAME.match(str(n)) for n, e in files.items()
    ):
        raise ReportStoreError(f"{where} is not a manifest (no map of file names to digests); republish the folder")
    if not hmac.compare_digest(str(manifest.get("signature", "")), _signature(config, manifest)):
        raise ReportStoreError(
            f"{where} is not signed with this deployment's audit key: it was written by something else than the "
            "pipeline (or with another key) and is refused; republish the folder, and check who may write the bucket"
        )
    return manifest


def _check_folder(folder: str) -> None:
    if not _FOLDER.match(folder) or ".." in folder.split("/"):
        raise ValueError(f"not a report folder: {folder!r}")


def _folder_of(config: PipelineConfig, local: Path) -> str:
    """The key of a folder under the data root (`reports/ds=...`): the store mirrors the data root's layout."""
    folder = local.relative_to(config.work_root).as_posix()
    _check_folder(folder)
    return folder


def _unreachable(where: StoreLocation, action: str, exc: Exception) -> ReportStoreError:
    return ReportStoreError(
        f"could not {action} s3://{where.bucket}/{where.prefix}: {exc}. Check that the object store is up and "
        "reachable (AWS_ENDPOINT_URL for a local one) and that its keys in the environment may read and write the "
        "bucket; then rerun the task (a rerun publishes the folder again)"
    )


def publish(config: PipelineConfig, local: Path, names: list[str] | None = None) -> str | None:
    """Publish a folder under the work root (e.g. `reports/ds=2026-09-01`) to the same key; return its manifest's key.

    Nothing happens without a report store. A publish that stops half-way leaves the previous manifest and its
    files in place; a rerun publishes a new version and removes the older ones. With `names`, only those files of
    the folder are published and the others the store holds stay (a step that adds its reports to a night another
    machine wrote, such as the realised-performance report: this machine's copy of the rest may be stale).
    """
    where = location(config)
    if where is None:
        return None
    folder = _folder_of(config, local)
    from botocore.exceptions import BotoCoreError, ClientError

    client, version = _client(), f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
    entries = {}
    key = where.key(folder, MANIFEST)
    try:
        for path in sorted(local.iterdir()):
            if is_leftover(path) or not path.is_file():  # an interrupted writer's temporary file, or a folder
                continue
            if names is not None and path.name not in names:
                continue
            if not _NAME.match(path.name):
                raise ValueError(f"not a report file name: {path.name!r}")
            data = path.read_bytes()
            client.put_object(Bucket=where.bucket, Key=where.key(folder, version, path.name), Body=data)
            entries[path.name] = {"sha256": _digest(data), "bytes": len(data), "version": version}
        if names is not None:
            before = _manifest(config, client, where, folder) or {"files": {}}
            kept = {n: {"version": before.get("version"), **e} for n, e in before["files"].items() if n not in entries}
            entries = kept | entries
        manifest: dict[str, Any] = {
            "version": version,
            "published_at": datetime.now(UTC).isoformat(),
            "files": entries,
        }
        manifest["signature"] = _signature(config, manifest)
        client.put_object(Bucket=where.bucket, Key=key, Body=json.dumps(manifest, indent=1).encode())
        # a publisher of the same folder that swapped its manifest in meanwhile keeps its files: only versions
        # older than ours go, and only while the manifest still names ours
        if (_manifest(config, client, where, folder) or {}).get("version") == version:
            kept_versions = {str(entry["version"]) for entry in entries.values()}
            _delete_versions(client, where, folder, older_than=version, keep=kept_versions)
    except (BotoCoreError, ClientError) as exc:
        raise _unreachable(where, f"publish {folder} to", exc) from exc
    log.info("published %d file(s) of %s to s3://%s/%s", len(entries), folder, where.bucket, key)
    return key


def withdraw(config: PipelineConfig, local: Path) -> None:
    """Remove the published copy of a folder under the data root (its manifest first: no reader follows it half-deleted)."""
    where = location(config)
    if where is None:
        return
    from botocore.exceptions import BotoCoreError, ClientError

    folder = _folder_of(config, local)
    client = _client()
    try:
        client.delete_object(Bucket=where.bucket, Key=where.key(folder, MANIFEST))
        _delete_versions(client, where, folder, older_than=None)
    except (BotoCoreError, ClientError) as exc:
        raise _unreachable(where, f"withdraw {folder} from", exc) from exc


def prune(config: PipelineConfig, local: Path, drop: Callable[[str], bool]) -> list[str]:
    """Remove the files `drop` names from a published folder; return their names (none without a report store).

    A new signed manifest without them goes first, so no reader follows it to a removed file; then their objects.
    """
    where = location(config)
    if where is None:
        return []
    from botocore.exceptions import BotoCoreError, ClientError

    folder, client = _folder_of(config, local), _client()
    try:
        manifest = _manifest(config, client, where, folder)
        if manifest is None:
            return []
        gone = sorted(name for name in manifest["files"] if drop(name))
        if not gone:
            return []
        files = {n: {"version": manifest["version"], **e} for n, e in manifest["files"].items() if n not in gone}
        kept: dict[str, Any] = {
            "version": manifest["version"],
            "published_at": manifest["published_at"],
            "files": files,
        }
        kept["signature"] = _signature(config, kept)
        client.put_object(
            Bucket=where.bucket, Key=where.key(folder, MANIFEST), Body=json.dumps(kept, indent=1).encode()
        )
        for name in gone:
            entry = manifest["files"][name]
            client.delete_object(
                Bucket=where.bucket, Key=where.key(folder, entry.get("version") or manifest["version"], name)
            )
    except (BotoCoreError, ClientError) as exc:
        raise _unreachable(where, f"prune {folder} in", exc) from exc
    return gone


def published(config: PipelineConfig, area: str) -> set[str] | None:
    """The folders of an area (`quarantine`) that hold a published manifest, e.g. {"ds=2026-09-01"}; None without
    a report store. The store is what every machine sees, so it speaks for the area, not this machine's copy; a
    manifest that is malformed or not signed with the audit key is left out (and logged), never trusted."""
    where = location(config)
    if where is None:
        return None
    _check_folder(area)
    from botocore.exceptions import BotoCoreError, ClientError

    prefix, found, client = where.key(area) + "/", set(), _client()
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=where.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                folder, _, name = item["Key"][len(prefix) :].partition("/")
                if name != MANIFEST or not _FOLDER.match(folder):
                    continue
                try:
                    _manifest(config, client, where, f"{area}/{folder}")
                except ReportStoreError as exc:
                    log.error("%s", exc)
                    continue
                found.add(folder)
    except (BotoCoreError, ClientError) as exc:
        raise _unreachable(where, f"list {area} in", exc) from exc
    return found


def _delete_versions(
    client: Any,
    where: StoreLocation,
    folder: str,
    older_than: str | None,
    keep: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Delete the versions of `folder` older than `older_than` (versions sort by time) but those in `keep`, or all."""
    prefix = where.key(folder) + "/"
    doomed = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=where.bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            rest = item["Key"][len(prefix) :]
            version = rest.split("/", 1)[0]
            if "/" in rest and version not in keep and (older_than is None or version < older_than):
                doomed.append({"Key": item["Key"]})
    for start in range(0, len(doomed), 1000):
        client.delete_objects(Bucket=where.bucket, Delete={"Objects": doomed[start : start + 1000], "Quiet": True})


def _manifest(config: PipelineConfig, client: Any, where: StoreLocation, folder: str) -> dict[str, Any] | None:
    key = where.key(folder, MANIFEST)
    try:
        body = client.get_object(Bucket=where.bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return _verified(config, body, f"s3://{where.bucket}/{key}")


def fetch(config: PipelineConfig, folder: str, name: str) -> bytes | None:
    """Return a published file's bytes, or None when no manifest names it (or it fails its digest).

    ReportStoreError when the store cannot be read or its manifest is malformed or not signed with the audit key.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    where = location(config)
    if where is None:
        return None
    _check_folder(folder)
    try:
        return _fetch(config, _client(), where, folder, name)
    except (BotoCoreError, ClientError) as exc:
        raise _unreachable(where, f"read {folder}/{name} from", exc) from exc


def _fetch(config: PipelineConfig, client: Any, where: StoreLocation, folder: str, name: str) -> bytes | None:
    for _ in range(2):  # a publish that swapped the manifest and removed the old version meanwhile: read it again
        manifest = _manifest(config, client, where, folder)
        entry = (manifest or {}).get("files", {}).get(name)
        if manifest is None or entry is None:
            return None
        try:
            key = where.key(folder, entry.get("version") or manifest["version"], name)
            data = client.get_object(Bucket=where.bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            continue
        if _digest(data) != entry["sha256"]:
            log.error("s3://%s/%s is not the file its manifest names (SHA-256 differs): refused", where.bucket, key)
            return None
        return data
    return None
