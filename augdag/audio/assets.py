"""The default audio dataset: English spoken digits synthesised at setup by espeak-ng (Debian package).

No recorded multi-speaker speech and no pretrained sound classifier install here without a download
(docs/audio.md), so `make setup` synthesises the ten words "zero".."nine" in 7 English accents x 4 voice
variants x 3 speeds x 3 pitches (252 clips a word, 2,520 in all, ~40 s on 2 cores) as 22,050 Hz 16-bit WAV files
in .cache/spoken-digits/<word>/<accent>_<variant>_s<speed>_p<pitch>.wav. espeak-ng's output is the same bytes
run to run; `digest()` hashes the folder so a run records which synthesis it read.

Limits: one synthesiser, so "speakers" are formant voices, not people; no room, microphone or background;
words in isolation. The ingest's folder source takes recorded data the same way.

    python -m augdag.audio.assets prepare    # what make setup runs
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from augdag.errors import DataError

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m3", "f2", "f4")
SPEEDS = (140, 175, 210)  # words per minute
PITCHES = (35, 50, 65)  # espeak-ng's 0-99 scale
FOLDER = Path(os.environ.get("AUGDAG_SPOKEN_DIGITS",
                             Path(__file__).resolve().parents[2] / ".cache" / "spoken-digits"))
DONE = ".complete"


def clips() -> list[tuple[str, str, list[str]]]:
    """(word, file name, espeak-ng arguments) of every clip, in a fixed order."""
    out = []
    for word in WORDS:
        for accent in ACCENTS:
            for variant in VARIANTS:
                for speed in SPEEDS:
                    for pitch in PITCHES:
                        name = f"{accent}_{variant}_s{speed}_p{pitch}.wav"
                        out.append((word, name, ["-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch)]))
    return out


def folder() -> Path:
    """The synthesised dataset's folder; a DataError saying how to make it when it is not there."""
    if not (FOLDER / DONE).is_file():
        raise DataError(f"{FOLDER}: the spoken-digits dataset is not there. Make it with `make setup` (it installs "
                        "espeak-ng) or `python -m augdag.audio.assets prepare`, or set audio.ingest.source to a "
                        "folder of WAV/FLAC files, one subfolder per class")
    return FOLDER


def prepare(dest: Path = FOLDER, workers: int = 4) -> Path:
    """Synthesise every clip into `dest` (a temporary sibling renamed into place: all or nothing)."""
    if (dest / DONE).is_file():
        return dest
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError("espeak-ng is not installed: sudo apt-get install espeak-ng (make setup does it as root)")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for word in WORDS:
        (tmp / word).mkdir(parents=True)

    def one(item):
        word, name, args = item
        subprocess.run([exe, *args, "-w", str(tmp / word / name), word], check=True, capture_output=True)

    todo = clips()
    with ThreadPoolExecutor(workers) as pool:
        for i, _ in enumerate(pool.map(one, todo), 1):
            if i % 500 == 0 or i == len(todo):
                print(f"spoken digits: {i}/{len(todo)} clips", file=sys.stderr, flush=True)
    (tmp / DONE).write_text(digest(tmp) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def digest(root: Path = FOLDER) -> str:
    """sha256 over the dataset's relative paths and bytes, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.wav")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


if __name__ == "__main__":
    if sys.argv[1:] != ["prepare"]:
        sys.exit("usage: python -m augdag.audio.assets prepare")
    print(prepare())
