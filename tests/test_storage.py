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


def test_writer_refuses_non_uint8(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        StageWriter(tmp_path).add(np.zeros((2, 2, 1), np.float32), sample_id="x")
