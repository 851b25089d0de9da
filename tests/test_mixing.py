import json

import numpy as np
import pytest
import torch

from augdag import mixing, tasks
from augdag.errors import ParamsError
from augdag.params import MixParams, OnlineMixParams, parse_params
from augdag.storage import read_manifest
from augdag.tasks import run_stage


def imgs():
    a = np.full((28, 28, 1), 200, np.uint8)
    b = np.full((28, 28, 1), 10, np.uint8)
    return a, b


@pytest.mark.parametrize("seed", range(20))
def test_cutmix_label_matches_pixels_and_mixup_is_linear(seed):
    a, b = imgs()
    g = np.random.default_rng(seed)
    p = mixing.draw(MixParams(mode="cutmix"), g, 28, 28)
    out = mixing.apply(a, b, p)
    assert np.isclose((out == 200).mean(), p["lam"]), "CutMix λ must equal the share of pixels kept from a"
    q = mixing.draw(MixParams(mode="mixup", mixup_alpha=0.4), g, 28, 28)
    m = mixing.apply(a, b, q)
    assert abs(int(m[0, 0, 0]) - (200 * q["lam"] + 10 * (1 - q["lam"]))) <= 0.5
    y = mixing.soft_label(3, 5, p["lam"], 10)
    assert np.isclose(sum(y), 1.0) and np.isclose(y[3], p["lam"])


def test_draw_is_deterministic_and_modes_mix():
    g1, g2 = np.random.default_rng(1), np.random.default_rng(1)
    cfg = MixParams(mode="both", cutmix_prob=0.5)
    d1 = [mixing.draw(cfg, g1, 28, 28) for _ in range(200)]
    assert d1 == [mixing.draw(cfg, g2, 28, 28) for _ in range(200)]
    share = np.mean([d["op"] == "cutmix" for d in d1])
    assert 0.35 < share < 0.65


def test_pairing_modes_respect_classes():
    labels = np.array([0, 0, 1, 1, 2, 2])
    g = np.random.default_rng(0)
    for i in range(len(labels)):
        for _ in range(20):
            assert labels[mixing.pick_partner("same_class", i, labels, g)] == labels[i]
            assert labels[mixing.pick_partner("cross_class", i, labels, g)] != labels[i]
            assert mixing.pick_partner("any", i, labels, g) != i


def test_partner_pools_draw_what_the_definition_draws():
    """Precomputed pools pick exactly pool[j] of the definition (allowed indices, ascending, without
    the sample itself), so replacing the per-sample scan kept every mixed sample's bytes."""
    r = np.random.default_rng(1)
    for t in range(10):
        labels = r.integers(0, 4, size=int(r.integers(3, 40)))
        for pairing, allowed in (("any", lambda i: labels == labels),
                                 ("same_class", lambda i: labels == labels[i]),
                                 ("cross_class", lambda i: labels != labels[i])):
            pools = mixing.PartnerPools(pairing, labels)
            for i in range(len(labels)):
                pool = np.flatnonzero(allowed(i))
                pool = pool[pool != i]
                if len(pool) == 0:
                    with pytest.raises(ValueError, match="no partner"):
                        pools.pick(i, np.random.default_rng(i))
                    continue
                want = int(pool[np.random.default_rng(i + 100 * t).integers(0, len(pool))])
                assert pools.pick(i, np.random.default_rng(i + 100 * t)) == want


def test_bad_alpha_and_unsatisfiable_pairing_fail_clearly():
    with pytest.raises(ParamsError, match=r"mix.mixup_alpha = 0"):
        parse_params({"mix": {"mixup_alpha": 0}})
    with pytest.raises(ParamsError, match=r"finetune.online_mix.cutmix_alpha = -1"):
        parse_params({"finetune": {"online_mix": {"cutmix_alpha": -1}}})
    with pytest.raises(ParamsError, match="at least two classes"):
        mixing.check_pairing("cross_class", np.array([0, 0, 0]), ["only"])
    with pytest.raises(ParamsError, match="classes with one: \\['b'\\]"):
        mixing.check_pairing("same_class", np.array([0, 0, 1]), ["a", "b"])


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 32])
def test_online_mix_any_batch_size(batch):
    x = torch.randn(batch, 3, 8, 8)
    y = torch.nn.functional.one_hot(torch.arange(batch) % 4, 4).float()
    mx, my = mixing.mix_batch(x, y, OnlineMixParams(enabled=True, mode="both"), np.random.default_rng(0))
    assert mx.shape == x.shape and torch.allclose(my.sum(1), torch.ones(batch))
    same, _ = mixing.mix_batch(x, y, OnlineMixParams(enabled=True, prob=0.0), np.random.default_rng(0))
    assert torch.equal(same, x)
    if batch >= 3:
        assert not torch.equal(mx, x)


def test_mix_branch_end_to_end_with_replay_and_online_finetune(tmp_path):
    p = parse_params({
        "ingest": {"n_per_class": 2, "n_val_per_class": 1, "n_test_per_class": 1},
        "strategy": {"traditional": {"enabled": False}, "mix": {"enabled": True, "multiplier": 2},
                     "generative": {"enabled": False}},
        "mix": {"pairing": "cross_class"},
        "finetune": {"steps": 2, "batch_size": 5, "image_size": 32, "eval_every": 1,
                     "online_mix": {"enabled": True, "mode": "both"}},
    })
    for stage in ["ingest", "strategy", "traditional", "mix", "generative", "crossdomain",
                  "quality", "merge", "finetune"]:
        run_stage(stage, p, tmp_path)
    m = read_manifest(tmp_path / "data" / "mix")
    assert len(m) == 40
    assert all(len(x) == 2 for x in m.parent_ids)
    raw = read_manifest(tmp_path / "data" / "ingest").set_index("sample_id")
    for _, r in m.iterrows():
        la, lb = (raw.label[q] for q in r.parent_ids)
        assert la != lb
        soft = np.asarray(r.soft_label)
        assert len(soft) == 10 and np.isclose(soft.sum(), 1.0)
        lam = json.loads(r.op_params)["lam"]
        assert np.isclose(soft[la], lam, atol=1e-6)
    merged = read_manifest(tmp_path / "data" / "merge")
    assert set(merged.branch) == {"raw", "mix"}
    for sid in m.sample_id[:3]:
        res = tasks.replay(tmp_path, sid, p)
        assert res["match"] and res["params_redrawn_match"], res
    chain = tasks.chain(tmp_path, m.sample_id.iloc[0])
    assert len(chain) == 3 and {c["stage"] for c in chain} == {"mix", "ingest"}
    assert (tmp_path / "data" / "finetune" / "model.safetensors").exists()


def test_a_mix_chunk_reads_its_parents_at_once_and_makes_make_variants_bytes(tmp_path):
    """The stage's chunk (parents and partners in one indexed read per shard) equals the replayable unit,
    make_variant, sample by sample, over raw shards of a few images each."""
    from augdag.storage import StageData
    from augdag.tasks import mix

    p = parse_params({"ingest": {"n_per_class": 3, "n_val_per_class": 1, "n_test_per_class": 1, "shard_size": 4},
                      "mix": {"mode": "both"}})
    for stage in ("ingest", "strategy"):
        run_stage(stage, p, tmp_path)
    raw, train = mix._train(tmp_path)
    assert raw.manifest.shard.nunique() > 3
    items = [(sid, k) for sid in train.sample_id for k in range(2)]
    got = mix._chunk((p, tmp_path, items))
    index = mix.TrainIndex(p, train, 10)
    want = [mix.make_variant(p, sid, k, index, StageData(tmp_path / "data" / "ingest")) for sid, k in items]
    assert len(got) == len(want) == 60
    for (gi, gf), (wi, wf) in zip(got, want):
        assert gi.tobytes() == wi.tobytes() and gf == wf
    assert {json.loads(f["op_params"])["op"] for _, f in got} == {"mixup", "cutmix"}
