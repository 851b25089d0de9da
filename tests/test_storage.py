import numpy as np
import pytest

from augdag.storage import StageData, StageWriter, atomic_dir, content_hash, read_manifest


def test_atomic_dir_keeps_last_good_output_on_failure(tmp_path):
    final = tmp_path / "stage"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert (final / "a.txt").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"], "no temporary folder left behind"


def test_shards_are_bounded_and_manifest_round_trips_exact_seeds(tmp_path):
    w = StageWriter(tmp_path, shard_size=4)
    imgs = [np.full((5, 6, 1), i, np.uint8) for i in range(10)]
    big_seed = 2**63 - 25
    for i, im in enumerate(imgs):
        w.add(im, sample_id=f"s{i}", split="train", branch="raw", label=i % 3, parent_ids=[],
              seed=big_seed - i if i % 2 else None)
    w.close()
    shards = sorted((tmp_path / "shards").iterdir())
    assert [np.load(s).shape[0] for s in shards] == [4, 4, 2]
    m = read_manifest(tmp_path)
    assert m.seed.iloc[1] == big_seed - 1, "63-bit seeds must survive the manifest exactly"
    assert m.seed.isna().sum() == 5
    data = StageData(tmp_path)
    for i, (_, r) in enumerate(m.iterrows()):
        np.testing.assert_array_equal(data.image(r), imgs[i])
        assert r.content_hash == content_hash(imgs[i])


def test_content_hash_sees_shape_and_bytes():
    a = np.zeros((4, 4, 1), np.uint8)
    assert content_hash(a) != content_hash(a.reshape(2, 8, 1))
    b = a.copy()
    b[0, 0, 0] = 1
    assert content_hash(a) != content_hash(b)


def test_content_hash_is_the_documented_sha256_for_every_shape_and_view():
    """sha256 of "shape|dtype|" then the C-order bytes (the recipe manifests record; the per-shape prefix is cached)."""
    import hashlib

    r = np.random.default_rng(0)
    for shape in [(28, 28, 1), (5, 7, 3), (28, 28, 1)]:
        x = r.integers(0, 256, shape, dtype=np.uint8)
        for view in (x, x[:, ::-1], x.transpose(1, 0, 2)):
            want = hashlib.sha256(f"{view.shape}|{view.dtype}|".encode() + np.ascontiguousarray(view).tobytes())
            assert content_hash(view) == want.hexdigest()
    assert content_hash(np.zeros((2, 2, 1), ">u2")) != content_hash(np.zeros((2, 2, 1), "<u2"))


def test_writer_refuses_non_uint8(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        StageWriter(tmp_path).add(np.zeros((2, 2, 1), np.float32), sample_id="x")


def test_writer_streams_row_groups_and_frames_write_like_rows(tmp_path):
    """The writer appends one row group per shard (no rows kept); a manifest written from a frame (quality,
    merge: column-wise) holds the same table as one written from its rows."""
    import pyarrow.parquet as pq

    from augdag.storage import write_manifest

    w = StageWriter(tmp_path / "s", shard_size=3)
    for i in range(7):
        w.add(np.full((2, 2, 1), i, np.uint8), sample_id=f"s{i}", split="train", branch="mix", label=i % 2,
              soft_label=[0.25, 0.75] if i % 2 else None, parent_ids=[f"p{i}", f"q{i}"], op_params='{"lam": 0.5}',
              seed=2**62 + i if i % 3 else None, weight=0.1 * i if i else None, gate="kept" if i % 2 else None)
        assert w.count == 3 * ((i + 1) // 3)
    m = w.close()
    assert pq.ParquetFile(tmp_path / "s" / "manifest.parquet").num_row_groups == 3
    assert len(m) == 7 and m.sample_id.tolist() == [f"s{i}" for i in range(7)]
    m["psnr"] = 1.0  # extra columns are dropped
    write_manifest(tmp_path / "frame.parquet", m)
    write_manifest(tmp_path / "rows.parquet", m.to_dict("records"))
    a, b = pq.read_table(tmp_path / "frame.parquet"), pq.read_table(tmp_path / "rows.parquet")
    assert a.equals(b) and a.column_names == b.column_names
    assert a.column("soft_label").to_pylist()[:2] == [None, [0.25, 0.75]]
    assert a.column("seed").to_pylist()[:2] == [None, 2**62 + 1]
    empty = StageWriter(tmp_path / "e")
    assert empty.close().empty and empty.count == 0


def test_manifest_writer_appends_frames_and_writes_an_empty_manifest(tmp_path):
    from augdag.errors import DataError
    from augdag.storage import (
        ManifestWriter,
        manifest_frame,
        manifest_rows,
        read_manifest,
        read_table,
        row,
        table_chunks,
    )

    rows = [row(sample_id=f"s{i}", split="train", branch="raw", label=i % 3, shard="shard-00000.npy", index=i,
                height=2, width=2, channels=1, weight=0.5, seed=None if i % 2 else 2**62 + i) for i in range(10)]
    w = ManifestWriter(tmp_path / "manifest.parquet")
    for a, b in ((0, 4), (4, 4), (4, 10)):
        w.write(manifest_frame(rows[a:b]))
    w.close()
    got = read_manifest(tmp_path)
    assert list(got.sample_id) == [f"s{i}" for i in range(10)] and manifest_rows(tmp_path) == 10
    assert got.seed.iloc[0] == 2**62 and got.seed.isna().iloc[1], "63-bit seeds and nulls survive the chunks"
    chunks = list(table_chunks(read_table(tmp_path / "manifest.parquet"), 4))
    assert [len(c) for c in chunks] == [4, 4, 2] and list(chunks[2].index) == [0, 1]
    (tmp_path / "empty").mkdir()
    w = ManifestWriter(tmp_path / "empty" / "manifest.parquet")
    w.write(manifest_frame([]))
    w.close()
    assert read_manifest(tmp_path / "empty").empty and manifest_rows(tmp_path / "empty") == 0
    with pytest.raises(DataError, match="manifest not found"):
        manifest_rows(tmp_path / "nowhere")


def test_parquet_chunks_cut_a_file_into_equal_frames_across_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from augdag.storage import parquet_chunks, read_columns

    path = tmp_path / "t.parquet"
    with pq.ParquetWriter(path, pa.schema([("a", pa.int64()), ("b", pa.string())])) as w:
        for start in range(0, 23, 5):  # row groups of 5 rows, the last of 3
            w.write_table(pa.table({"a": list(range(start, min(start + 5, 23))),
                                    "b": [str(i) for i in range(start, min(start + 5, 23))]}))
    frames = list(parquet_chunks(path, 7))
    assert [len(f) for f in frames] == [7, 7, 7, 2]
    assert [list(f.a) for f in frames][1] == list(range(7, 14)) and list(frames[1].index) == list(range(7))
    assert sum((list(f.a) for f in frames), []) == list(range(23))
    assert [len(f) for f in parquet_chunks(path, 100)] == [23]
    assert list(read_columns(path, ["b"]).columns) == ["b"]


def test_stage_data_keeps_only_a_budget_of_shards_mapped(tmp_path, monkeypatch):
    from augdag.storage import shards  # StageData reads the budget there (augdag.storage re-exports it)

    w = StageWriter(tmp_path, shard_size=4)
    imgs = [np.full((5, 6, 1), i, np.uint8) for i in range(40)]
    for i, im in enumerate(imgs):
        w.add(im, sample_id=f"s{i}", split="train", branch="raw", label=0, parent_ids=[])
    m = w.close()
    monkeypatch.setattr(shards, "MAPPED_BYTES", 3 * 4 * 30)  # three shards of four 5x6x1 images
    data = StageData(tmp_path)
    for rows in (m, m.iloc[::-1], m.iloc[::7]):  # forwards, backwards, skipping: shards reopened as needed
        for _, r in rows.iterrows():
            np.testing.assert_array_equal(data.image(r), imgs[int(r.sample_id[1:])])
            assert len(data._cache) <= 3 and data._mapped == sum(a.nbytes for a in data._cache.values())
    data.image(m.iloc[0])
    assert list(data._cache)[-1] == m.shard.iloc[0], "the shard just read is the most recently used"


def test_iter_tables_reads_checked_chunks_and_names_the_file_row(tmp_path):
    import pyarrow as pa

    from augdag.errors import DataError
    from augdag.storage import iter_tables, read_table, row, write_manifest

    rows = [row(sample_id=f"s{i}", split="train", branch="raw", label=i % 3, parent_ids=[], shard="shard-00000.npy",
                index=i, height=1, width=1, channels=1) for i in range(10)]
    path = tmp_path / "m.parquet"
    write_manifest(path, rows)
    chunks = list(iter_tables(path, 4))
    assert [t.num_rows for t in chunks] == [4, 4, 2]
    assert pa.concat_tables(chunks).equals(read_table(path))
    rows[9]["label"] = -1
    write_manifest(path, rows)
    with pytest.raises(DataError, match=r"column 'label', row 9 \(sample 's9'\)"):
        list(iter_tables(path, 4))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="junk.parquet: not a readable Parquet manifest"):
        list(iter_tables(tmp_path / "junk.parquet", 4))


def _stage_of_ten(tmp_path):
    w = StageWriter(tmp_path, shard_size=4)
    imgs = [np.full((5, 6, 1), i, np.uint8) + np.arange(30, dtype=np.uint8).reshape(5, 6, 1) for i in range(10)]
    for i, im in enumerate(imgs):
        w.add(im, sample_id=f"s{i}", split="train", branch="raw", label=i % 3, parent_ids=[], source=f"f{i}.png")
    return imgs, w.close()


LOOKUP = ["sample_id", "label", "source", "shard", "index", "height", "width", "channels"]


def test_lookup_and_images_of_read_what_image_reads_in_the_asked_order(tmp_path):
    imgs, m = _stage_of_ten(tmp_path)
    data = StageData(tmp_path)
    ids = ["s7", "s0", "s9", "s3", "s7", "s4"]  # across all three shards, out of order, one id twice
    rows = data.lookup(ids, LOOKUP)
    assert list(rows["sample_id"]) == ids
    assert list(rows["label"]) == [int(i[1:]) % 3 for i in ids]
    assert list(rows["source"]) == [f"f{i[1:]}.png" for i in ids]
    got = data.images_of(rows)
    by_id = m.set_index("sample_id")
    for sid, img in zip(ids, got):
        np.testing.assert_array_equal(img, imgs[int(sid[1:])])
        np.testing.assert_array_equal(img, data.image(by_id.loc[sid].rename(sid)))
    assert data.images_of(data.lookup([], LOOKUP)) == []


def test_lookup_and_images_of_name_what_is_wrong(tmp_path):
    from augdag.errors import DataError

    imgs, m = _stage_of_ten(tmp_path)
    data = StageData(tmp_path)
    with pytest.raises(DataError, match=r"no row for sample id\(s\) 'nope'"):
        data.lookup(["s1", "nope"], LOOKUP)
    rows = data.lookup(["s1", "s6"], LOOKUP)
    for column, value, match in [("index", 9, r"sample 's6' points at index 9 of .*, which holds 4 images"),
                                 ("index", -1, r"sample 's6' points at index -1"),
                                 ("height", 4, r"sample 's6' is 4x6x1 in the manifest but 5x6x1 in"),
                                 ("shard", None, r"sample 's6' has no shard, index or shape")]:
        bad = {k: v.copy() for k, v in rows.items()}
        bad[column] = bad[column].astype(object)
        bad[column][1] = value
        with pytest.raises(DataError, match=match):
            data.images_of(bad)
        if column != "shard":  # image() says the same of the same row
            r = m.set_index("sample_id").loc["s6"].copy()
            r[column] = value
            with pytest.raises(DataError, match=match):
                data.image(r.rename("s6"))


def test_the_package_re_exports_each_layer():
    """augdag/storage.py became a package of one module per layer; callers import every name from augdag.storage."""
    import importlib

    import augdag.storage as storage

    layers = {m: importlib.import_module(f"augdag.storage.{m}") for m in ("publish", "schema", "manifest", "shards")}
    for name in storage.__all__ + ["_out_of_space"]:
        homes = [m for m, mod in layers.items() if name in vars(mod) and vars(mod)[name] is getattr(storage, name)]
        assert homes, f"augdag.storage.{name} is not a layer's {name}"
    assert storage.StageData.__module__ == "augdag.storage.shards"
    assert storage.atomic_dir.__module__ == "augdag.storage.publish"


def test_atomic_dir_keeps_dvcs_gitignore_of_a_folder_of_file_outputs(tmp_path):
    """DVC writes a .gitignore beside file outputs (data/strategy/), and git tracks it: a rewrite keeps it."""
    from augdag.storage import atomic_dir

    out = tmp_path / "strategy"
    out.mkdir()
    (out / ".gitignore").write_text("/plan.json\n")
    (out / "plan.json").write_text("old")
    with atomic_dir(out) as tmp:
        (tmp / "plan.json").write_text("new")
    assert (out / ".gitignore").read_text() == "/plan.json\n" and (out / "plan.json").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == [".gitignore", "plan.json"]
