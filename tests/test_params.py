import pytest

from augdag.errors import ParamsError
from augdag.params import Params, dotted_to_nested, load_params, parse_params, write_overrides
from helpers import REPO


def test_repo_params_file_is_valid_and_matches_defaults():
    p = load_params(REPO / "params.yaml")
    assert p == Params(), "params.yaml and the schema defaults should agree"


@pytest.mark.parametrize("data, key, fragment", [
    ({"ingest": {"n_per_clas": 5}}, "ingest.n_per_clas", "unknown key"),
    ({"traditional": {"ops": {"rotation": {"degrees": 400}}}}, "traditional.ops.rotation.degrees = 400",
     "less than or equal to 180"),
    ({"traditional": {"ops": {"hflip": {"p": 1.5}}}}, "traditional.ops.hflip.p = 1.5", "less than or equal to 1"),
    ({"traditional": {"ops": {"affine": {"scale": [1.2, 0.9]}}}}, "traditional.ops.affine", "min <= max"),
    ({"ingest": {"channels": 2}}, "ingest.channels = 2", "1 or 3"),
    ({"finetune": {"freeze": "half"}}, "finetune.freeze = 'half'", "'none' or 'backbone'"),
    ({"merge": {"weights": {"traditional": -1}}}, "merge.weights.traditional = -1", "greater than or equal to 0"),
    ({"strategy": {"mix": {"multiplier": -2}}}, "strategy.mix.multiplier = -2", "greater than or equal to 0"),
])
def test_bad_values_name_key_value_and_allowed(data, key, fragment):
    with pytest.raises(ParamsError) as e:
        parse_params(data, "params.yaml")
    msg = str(e.value)
    assert msg.startswith("params.yaml")
    assert key in msg and fragment in msg, msg


def test_top_level_must_be_mapping_and_yaml_must_parse(tmp_path):
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        parse_params([1, 2])
    bad = tmp_path / "params.yaml"
    bad.write_text("ingest: {n_per_class: [\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_dotted_overrides_and_write_back_keep_comments(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    nested = dotted_to_nested(["traditional.ops.rotation.degrees=20", "finetune.steps=7"])
    assert nested == {"traditional": {"ops": {"rotation": {"degrees": 20}}}, "finetune": {"steps": 7}}
    p = write_overrides(path, nested)
    assert p.traditional.ops.rotation.degrees == 20 and p.finetune.steps == 7
    text = path.read_text()
    assert "# augdag params" in text and "degrees: 20" in text
    assert load_params(path).finetune.steps == 7
    before = path.read_text()
    with pytest.raises(ParamsError, match="finetune.steps"):
        write_overrides(path, {"finetune": {"steps": 0}})
    assert path.read_text() == before, "a rejected override must leave params.yaml untouched"
    with pytest.raises(ParamsError, match="KEY=VALUE"):
        dotted_to_nested(["finetune.steps"])


def test_words_yaml_1_1_reads_as_booleans_are_written_back_as_strings(tmp_path):
    """`off` is False to a YAML 1.1 reader: `augdag tune --apply` once wrote quality.modes.psnr: off, and the
    next load failed."""
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    modes = {"psnr": "off", "ssim": "off", "label_consistency": "filter", "outlier": "off"}
    p = write_overrides(path, {"quality": {"modes": modes}, "text": {"ingest": {"classes": ["yes", "no", "1.5"]}}})
    assert p.quality.modes == modes and load_params(path) == p
    raw = yaml.safe_load(path.read_text())
    assert raw["quality"]["modes"] == modes and raw["text"]["ingest"]["classes"] == ["yes", "no", "1.5"]
    assert "psnr: 'off'" in path.read_text() and "label_consistency: filter" in path.read_text()
    # a user who types the mode unquoted, in params.yaml or in --set, gets the mode
    assert parse_params(yaml.safe_load("quality: {modes: {psnr: off}}")).quality.modes["psnr"] == "off"
    assert parse_params(dotted_to_nested(["quality.modes.ssim=off"])).quality.modes["ssim"] == "off"
    with pytest.raises(ParamsError, match="quality.modes.psnr"):
        parse_params({"quality": {"modes": {"psnr": True}}})


def test_small_floats_are_written_back_as_floats(tmp_path):
    """1e-05 is a string to a YAML 1.1 reader (PyYAML, as DVC and load_params read params.yaml)."""
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    write_overrides(path, dotted_to_nested(["finetune.lr=0.00001", "finetune.weight_decay=2e-7"]))
    raw = yaml.safe_load(path.read_text())["finetune"]
    assert raw["lr"] == 1e-05 and isinstance(raw["lr"], float)
    assert raw["weight_decay"] == 2e-07 and isinstance(raw["weight_decay"], float)


def test_set_keeps_the_rest_of_params_yaml_as_written(tmp_path):
    """--set rewrites only what it sets: long flow mappings stay on one line, nulls stay null, comments stay."""
    from augdag.params import write_overrides
    from helpers import REPO

    path = tmp_path / "params.yaml"
    original = (REPO / "params.yaml").read_text()
    path.write_text(original)
    write_overrides(path, {"modality": "image"})  # the value it already has
    assert path.read_text() == original
    write_overrides(path, {"modality": "text", "text": {"finetune": {"steps": 5}}})
    changed = [(a, b) for a, b in zip(original.splitlines(), path.read_text().splitlines()) if a != b]
    assert len(path.read_text().splitlines()) == len(original.splitlines())
    assert [b.split("#")[0].strip() for _, b in changed] == ["modality: text", "steps: 5"]


def test_reading_params_imports_no_torch_and_no_model_module():
    """Reading params.yaml (the CLI, `dvc params`-like tools, the flow's planning) must not pay for torch:
    GeneratorConfig lived in augdag/generative.py, so `import augdag.params` imported torch (~1-2 s)."""
    import subprocess
    import sys

    heavy = ["torch", "torchvision", "transformers", "augdag.generative", "augdag.models"]
    code = ("import sys, augdag.params\n"
            "print(' '.join(m for m in %r if m in sys.modules))" % heavy)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import augdag.params imported {out.stdout.strip()}"
    from augdag.generative import GeneratorConfig
    from augdag.params import GenerativeParams

    assert GenerativeParams().model.__class__ is GeneratorConfig, "augdag.generative.GeneratorConfig is the params one"


def test_a_params_set_file_becomes_overrides_that_validate(tmp_path):
    from augdag.params import deep_merge, dotted_to_nested, read_yaml, set_file_overrides

    pairs = set_file_overrides(REPO / "configs" / "gpu-224.yaml")
    p = parse_params(deep_merge(read_yaml(REPO / "params.yaml"), dotted_to_nested(pairs)))
    assert (p.device.default, p.device.mixed_precision, p.finetune.image_size, p.ingest.n_per_class) == \
        ("auto", True, 224, None)
    assert p.traditional == parse_params(read_yaml(REPO / "params.yaml")).traditional  # untouched sections stay
    odd = tmp_path / "odd.yaml"
    odd.write_text("merge: {weights: {raw: 2.0}, extra_sources: {}}\nfinetune: {lr: 1.0e-05}\n")
    assert set_file_overrides(odd) == ["merge.weights.raw=2.0", "merge.extra_sources={}", "finetune.lr=1e-05"]
    assert parse_params(dotted_to_nested(set_file_overrides(odd))).finetune.lr == 1e-05
    for text in ("[1, 2]\n", "", "finetune: [\n"):
        odd.write_text(text)
        with pytest.raises(ParamsError, match=str(odd)):
            set_file_overrides(odd)
