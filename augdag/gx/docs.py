"""Great Expectations' Data Docs (static HTML) for saved validation results."""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
import sys
import tempfile
import urllib.parse
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from augdag.errors import DataError
from augdag.gx import context
from augdag.gx.suites import read_json

_DOCS_SITE = "augdag"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class _ErrorRecords(logging.Handler):
    """Collects GE's ERROR log records: its site builder logs a page it failed to render and carries on.
    It logs from inside its ``except`` block, so the exception being handled is the cause (else the record's
    own text, without its traceback, is)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        cause = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        text = f"{type(cause).__name__}: {cause}" if cause is not None else record.getMessage()
        self.messages.append(" ".join(text.split())[:500])


def _load_result_file(path: Path, strict: bool) -> dict | None:
    data = read_json(path, "validation result")
    if not (isinstance(data, dict) and isinstance(data.get("results"), list) and data.get("suite_name")):
        if not strict:  # some other JSON file in a results folder
            return None
        raise DataError(
            f"{path} is not a Great Expectations validation result "
            "(a JSON object with 'suite_name' and 'results', as validate_frame/run_suite write)"
        )
    return data


def _result_entries(results: Any) -> list[tuple[str, Path, dict]]:
    if isinstance(results, (str, os.PathLike)):
        folder = Path(results)
        if not folder.is_dir():
            raise DataError(f"validation results folder {folder} does not exist or is not a folder")
        entries = []
        for path in sorted(folder.glob("*.json")):
            data = _load_result_file(path, strict=False) if path.is_file() else None
            if data is not None:
                entries.append((path.stem, path, data))
        if not entries:
            raise DataError(f"validation results folder {folder} holds no validation result (*.json)")
    else:
        entries = []
        for item in results:
            try:
                name, path = item
            except (TypeError, ValueError):
                raise DataError(f"Data Docs: expected (name, result path) pairs, got {item!r}") from None
            path = Path(path)
            entries.append((str(name), path, _load_result_file(path, strict=True)))
        if not entries:
            raise DataError("Data Docs: no validation results given")
    seen: dict[str, Path] = {}
    named = []
    for name, path, data in entries:
        safe = _SAFE_NAME.sub("_", name).strip("._") or "result"
        if safe in seen:
            raise DataError(
                f"Data Docs: validation results {seen[safe]} and {path} have the same name "
                f"'{safe}'; give them distinct names"
            )
        seen[safe] = path
        named.append((safe, path, data))
    return named


def _run_time(path: Path, data: dict) -> datetime:
    """When the validated batch was loaded (GE's batch marker), else the file's mtime."""
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    markers = meta.get("batch_markers") if isinstance(meta.get("batch_markers"), dict) else {}
    stamp = markers.get("ge_load_time")
    if isinstance(stamp, str):
        try:
            return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)


def _suite_from_results(gx: Any, suite_name: str, data: dict) -> Any:
    """An ExpectationSuite rebuilt from a validation result's expectation configs (with the
    parameter values of that run), for the site's suite page."""
    expectations = []
    for r in data["results"]:
        config = r.get("expectation_config") or {}
        kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
        expectations.append({"type": config.get("type"), "kwargs": kwargs, "meta": config.get("meta") or {}})
    return gx.ExpectationSuite(name=suite_name, expectations=expectations)


def _page_path(site: Any, key: Any, site_root: Path) -> Path | None:
    urls = site.get_docs_sites_urls(resource_identifier=key, site_name=_DOCS_SITE, only_if_exists=True)
    url = urls[0].get("site_url") if urls else None
    if not url:
        return None
    parsed = urllib.parse.urlparse(url)
    path = Path(urllib.parse.unquote(parsed.path))
    try:
        path.relative_to(site_root)
    except ValueError:
        return None
    return path if path.is_file() else None


def _static_links(site_root: Path, pages: list[tuple[str, str, bool, Path, Path | None]]) -> None:
    """Add plain links to the validation pages at the end of index.html: GE draws its index table
    with scripts from CDNs, so offline the table stays empty."""
    index = site_root / "index.html"
    items = []
    for name, suite, success, page, suite_page in pages:
        href = urllib.parse.quote(page.relative_to(site_root).as_posix())
        text = f"{suite} / {name}: {'passed' if success else 'failed'}"
        item = f'<li><a href="{html.escape(href)}">{html.escape(text)}</a>'
        if suite_page is not None:
            suite_href = urllib.parse.quote(suite_page.relative_to(site_root).as_posix())
            item += f' (<a href="{html.escape(suite_href)}">suite {html.escape(suite)}</a>)'
        items.append(item + "</li>")
    block = (
        '\n<div class="container" id="augdag-validation-links">\n'
        "<h3>Validation results</h3>\n"
        "<p>Plain links, for when the table above cannot be drawn (its scripts come from CDNs).</p>\n"
        "<ul>\n" + "\n".join(items) + "\n</ul>\n</div>\n"
    )
    text = index.read_text(encoding="utf-8")
    at = text.lower().rfind("</body>")
    text = text[:at] + block + text[at:] if at >= 0 else text + block
    index.write_text(text, encoding="utf-8")


def build_data_docs(results: str | Path | Sequence[tuple[str, str | Path]], site_dir: str | Path) -> Path:
    """Render Great Expectations' own Data Docs (static HTML) for saved validation results into
    ``site_dir``; returns the path of its index.html.

    ``results`` is a list of (name, path of a validation result JSON written by validate_frame or
    run_suite), or a folder: every ``*.json`` in it that is a validation result, named by its
    file stem (JSON files there that are not validation results are skipped; unreadable ones
    raise DataError). Only the JSON files are needed: a fresh
    ephemeral GE context gets a filesystem Data Docs site, the results go into its (in-memory)
    validation results store under run name = batch identifier = the name (made path-safe),
    run time = GE's batch load time from the result, and ``build_data_docs`` of that context renders the
    site: an index, one page per validation result and one page per suite (rebuilt from the
    expectation configs of the suite's latest result, so with that run's parameter values).
    GE logs, rather than raises, a page it cannot render; here that is a DataError.

    Building needs no network, and the site is built in a temporary sibling of ``site_dir`` that
    then replaces it (an old site is renamed away first, then deleted), so a reader never sees a
    half-built site.

    The pages reference CSS and JavaScript on CDNs (bootstrap, jQuery, bootstrap-table, Font
    Awesome, vega from unpkg.com, cdnjs, jsdelivr, code.jquery.com, bootstrapcdn) and GE's logo on
    S3; GE's own stylesheet, fonts and images are copied under ``static/``. Offline the pages
    still open: the validation and suite pages are rendered HTML, unstyled, with every result
    readable. GE's index table, however, is drawn by bootstrap-table from a CDN, so offline it
    stays empty; therefore a plain list of links to every validation page (and its suite page)
    is added at the end of index.html.
    """
    site_dir = Path(site_dir)
    entries = _result_entries(results)
    if site_dir.exists() and not site_dir.is_dir():
        raise DataError(f"Data Docs folder {site_dir} exists and is not a folder")
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{site_dir.name}.", suffix=".tmp", dir=site_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        _render_site(entries, tmp)
        old = None
        if site_dir.exists():
            old = site_dir.parent / f".{site_dir.name}.old-{uuid.uuid4().hex}"
            os.rename(site_dir, old)
        try:
            os.rename(tmp, site_dir)
        except BaseException:
            if old is not None:
                os.rename(old, site_dir)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return site_dir / "index.html"


def _render_site(entries: list[tuple[str, Path, dict]], site_root: Path) -> None:
    with context.lock():
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context import set_context
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        site = gx.get_context(mode="ephemeral")  # also becomes GE's "current" context
        try:
            site.add_data_docs_site(
                _DOCS_SITE,
                {
                    "class_name": "SiteBuilder",
                    "show_how_to_buttons": False,
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(site_root),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "site_section_builders": {
                        "profiling": "None",  # GE's spelling of "no such section"
                        # By default, run names containing "profiling" are left out.
                        "validations": {"run_name_filter": {"matches_regex": ".*"}},
                    },
                },
            )
            store = site.validation_results_store
            keyed = []
            latest: dict[str, tuple[datetime, dict]] = {}
            for name, path, data in entries:
                try:
                    result = store.deserialize(data)
                except Exception as exc:  # marshmallow ValidationError, TypeError...
                    raise DataError(f"{path} is not a valid Great Expectations validation result: {exc}") from None
                run_time = _run_time(path, data)
                key = ValidationResultIdentifier(
                    expectation_suite_identifier=ExpectationSuiteIdentifier(name=result.suite_name),
                    run_id=RunIdentifier(run_name=name, run_time=run_time),
                    batch_identifier=name,
                )
                store.set(key, result)
                keyed.append((name, result.suite_name, bool(result.success), key))
                if result.suite_name not in latest or run_time >= latest[result.suite_name][0]:
                    latest[result.suite_name] = (run_time, data)
            for suite_name, (_, data) in latest.items():
                try:
                    suite = _suite_from_results(gx, suite_name, data)
                except Exception:  # the suite page is a convenience; the validation page has it all
                    continue
                site.suites.add(suite)

            errors = _ErrorRecords()
            gx_logger = logging.getLogger("great_expectations")
            gx_logger.addHandler(errors)
            try:
                site.build_data_docs(site_names=[_DOCS_SITE])
            finally:
                gx_logger.removeHandler(errors)
            if errors.messages:
                raise DataError(f"Great Expectations could not render Data Docs: {errors.messages[0]}")
            if not (site_root / "index.html").is_file():
                raise DataError("Great Expectations wrote no Data Docs index.html")
            pages = []
            for name, suite_name, success, key in keyed:
                page = _page_path(site, key, site_root)
                if page is None:
                    raise DataError(f"Great Expectations wrote no Data Docs page for validation result '{name}'")
                suite_page = _page_path(site, ExpectationSuiteIdentifier(name=suite_name), site_root)
                pages.append((name, suite_name, success, page, suite_page))
        finally:
            if context.current() is not None:  # give back GE's current context
                set_context(context.current())
    _static_links(site_root, pages)
