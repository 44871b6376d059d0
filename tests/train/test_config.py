"""Training configs: shipped ones build, mistakes name file and key, overrides, schedules."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import pytest
import torch

from resim.train.config import (
    ConfigError,
    load_config,
    parse_config,
    resolve_config_path,
    shipped_configs,
)
from resim.train.loop import LRSchedule
from resim.train.pretrain import build_encoder_from, build_pretraining

PRETRAINING = [f"{o}_{e}" for o in ("rs3l", "vicreg") for e in ("part", "transformer",
                                                                "particlenet")]


def test_shipped_configs_are_listed_and_build() -> None:
    names = shipped_configs()
    assert set(PRETRAINING) | {"finetune", "supervised_part"} <= set(names)
    for name in PRETRAINING:
        config = load_config(name)
        method = build_pretraining(config)
        assert method.encoder.__class__.__name__ in ("ParticleTransformer", "ParticleNet")
        objective, encoder = name.split("_")
        assert (config.method.name, config.encoder.name) == (objective, encoder)
        # RS3L's optimiser and batch as published
        assert (config.optimizer.name, config.optimizer.lr, config.data.batch_size) == \
            ("adam", 1e-3, 200)
        assert (config.optimizer.schedule.step_epochs, config.optimizer.schedule.gamma) == \
            (50, 0.5)
    assert build_encoder_from(load_config("supervised_part")).embed_dim == 64
    assert load_config("finetune").encoder is None


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my.toml"
    path.write_text(text)
    return path


GOOD = """
[encoder]
name = "part"
num_layers = 2
[method]
name = "rs3l"
"""


@pytest.mark.parametrize(("text", "key", "words"), [
    (GOOD + "[data]\nbatch_sz = 3\n", "data.batch_sz", "unknown key"),
    (GOOD + "[optimizer]\nlr = 'fast'\n", "optimizer.lr", "must be a number"),
    (GOOD + "[optimizer]\nlr = -0.1\n", "optimizer.lr", "must be > 0"),
    (GOOD + "[run]\nepochs = 0\n", "run.epochs", "integer >= 1"),
    (GOOD + "[run]\nthreads = 100000\n", "run.threads", "integer <= 1024"),
    (GOOD + "[run]\nvalidate = 1\n", "run.validate", "true or false"),
    (GOOD + "[data]\nsplits = [0.5, 0.1, 0.1]\n", "data.splits", "add up to 1"),
    (GOOD + "[data.views]\nmode = 'best'\n", "data.views.mode", "any, nominal_plus"),
    (GOOD + "[data.classes]\ntop = []\nqcd = ['q']\n", "data.classes.top", "at least one"),
    (GOOD + "[optimizer.schedule]\nname = 'linear'\n", "optimizer.schedule.name",
     "step, cosine, constant"),
    (GOOD + "[finetune]\nbackbone = 'frozen'\n", "finetune.backbone", "floating, fixed"),
    (GOOD.replace("num_layers = 2", "num_layer = 2"), "encoder.num_layer",
     "unknown setting 'num_layer'"),
    (GOOD.replace("num_layers = 2", "num_layers = 'two'"), "encoder.num_layers",
     "must be an integer"),
    (GOOD.replace("num_layers = 2", "embed_dims = 64"), "encoder.embed_dims", "must be a list"),
    (GOOD.replace('"part"', '"resnet"'), "encoder.name", "part, particlenet, transformer"),
    (GOOD + "temperature = 'low'\n", "method.temperature", "must be a number"),
    (GOOD + "temprature = 0.2\n", "method.temprature", "unknown setting"),
    (GOOD + "[augment]\nnames = ['rotate', 'twist']\n", "augment", "unknown augmentation"),
    (GOOD + "[augment]\nnames = ['rotate']\n", "data.views.source", "'both'"),
    (GOOD + "[data.views]\nsource = 'both'\n[augment]\nnames = ['soft']\n[augment.soft]\n"
     "count = -3\n", "augment.soft.count", "must be a finite number >= 0, got -3"),
    (GOOD + "[[run]]\nepochs = 1\n", "run", "must be a table"),
    (GOOD + "[data.views]\ncount = 1\n", "data.views.count",
     "method 'rs3l' needs positive pairs"),
    (GOOD.replace('"rs3l"', '"vicreg"') + "[data.views]\ncount = 1\n", "data.views.count",
     "at least 2 views"),
    (GOOD + "[data.views]\ncount = 0\n", "data.views.count", "integer >= 1"),
    (GOOD + "[data.views]\nboost = 100.0\n", "data.views.boost", "must be <= 10.0"),
    ("[encoder\nname = 'part'\n", "", "not valid TOML"),
])
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.source == str(path)
    assert err.value.key == key
    assert words in err.value.message
    assert str(err.value).startswith(f"{path}: {key}: " if key else f"{path}: ")


def test_overrides_are_checked_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    config = load_config(path, ["optimizer.lr=3e-4", "encoder.name=transformer",
                                "data.classes={qcd=['q','g'], top=['top']}",
                                "optimizer.schedule.name=cosine"])
    assert config.optimizer.lr == 3e-4
    assert config.encoder.name == "transformer"  # a bare word is a string
    assert dict(config.data.classes) == {"qcd": ("q", "g"), "top": ("top",)}
    assert config.optimizer.schedule.name == "cosine"
    assert config.overrides[0] == "optimizer.lr=3e-4"
    with pytest.raises(ConfigError) as err:
        load_config(path, ["run.epochs=-2"])
    assert str(err.value) == f"{path} (--set run.epochs=-2): run.epochs: must be an integer " \
        ">= 1, got -2"
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load_config(path, ["run.epochs"])
    # re-reading keeps the earlier overrides
    again = config.with_overrides(["run.epochs=3"])
    assert (again.run.epochs, again.optimizer.lr) == (3, 3e-4)


@pytest.mark.parametrize(("override", "words"), [
    ("encoder.num_heads=0", "integer >= 1, got 0"),
    ("encoder.embed_dims=[]", "one or more layer widths >= 1"),
    ("encoder.embed_dims=[-4, 16]", "layer widths >= 1, got [-4, 16]"),
    ("encoder.pair_embed_dims=[0]", "layer widths >= 1"),
    ("encoder.num_cls_layers=0", "integer >= 1"),
    ("encoder.length_groups=0", "integer >= 1"),
    ("method.temperature=inf", "finite number > 0, got inf"),
    ("method.head_dims=[0]", "layer widths >= 1"),
    ("encoder.name=particlenet|encoder.k=0", "integer >= 1"),
    ("encoder.name=particlenet|encoder.coordinates=100", "between 1 and the 15 input"),
    ("encoder.name=particlenet|encoder.edge_dims=[]", "at least one EdgeConv block"),
    ("method.name=jepa|method.predictor_heads=0", "integer >= 1"),
    ("method.name=mpm|method.decoder_dim=0", "integer >= 1"),
    ("method.name=vicreg|method.eps=inf", "finite number > 0"),
    ("method.var_weight=inf", "finite number >= 0, got inf"),
    ("method.name=vicreg|method.sim_weight=inf", "finite number >= 0, got inf"),
    ("method.name=mpm|method.kind_weight=-1.0", "finite number >= 0, got -1.0"),
])
def test_settings_that_cannot_build_a_network_name_the_key(tmp_path: Path, override: str,
                                                           words: str) -> None:
    """Sizes out of range were a ZeroDivisionError or IndexError ("a bug in resim"), or
    built a network whose output ignores its input (no class-attention block, k = 0)."""
    path = write(tmp_path, GOOD.replace("num_layers = 2", "embed_dims = [16, 16]\nnum_heads = 2"
                                        "\nnum_layers = 1\nnum_cls_layers = 1"))
    *others, bad = override.split("|")
    if "particlenet" in override:
        path = write(tmp_path, "[encoder]\nname = 'particlenet'\n[method]\nname = 'rs3l'\n")
        others = []
    key = bad.partition("=")[0]
    config = load_config(path, [*others, bad])
    with pytest.raises(ConfigError) as err:
        build_pretraining(config)
    assert err.value.key == key
    assert str(err.value).startswith(f"{path} (--set {bad}): {key}: must ")
    assert words in err.value.message


def test_one_view_for_objectives_without_positives() -> None:
    """MPM and JEPA treat every jet on its own: one view per group is allowed for them."""
    for name in ("mpm_part", "jepa_transformer"):
        config = load_config(name, ["data.views.count=1"])
        assert config.data.views.count == 1
    with pytest.raises(ConfigError, match=r"data\.views\.count: method 'simclr' needs positive"):
        load_config("rs3l_part", ["method.name=simclr", "data.views.count=1"])


def test_a_file_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    """--config data.h5 (or `resim configs data.h5`) was a UnicodeDecodeError, "a bug in
    resim"; cards said 'cannot read the card' already."""
    from click.testing import CliRunner

    from resim.cli import main

    binary = tmp_path / "data.h5"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)))
    message = f"{binary}: cannot read the config: not a text (UTF-8) file"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_config(binary)
    result = CliRunner().invoke(main, ["configs", str(binary)])
    assert (result.exit_code, result.stderr) == (2, f"error: {message}\n")


def test_missing_config_lists_shipped_ones() -> None:
    with pytest.raises(ConfigError, match=r"shipped: .*rs3l_part"):
        resolve_config_path("rs3l_nothing")
    assert resolve_config_path("rs3l_part.toml").name == "rs3l_part.toml"


def test_missing_sections_are_named() -> None:
    config = parse_config("[run]\nepochs = 2\n", "x.toml")
    with pytest.raises(ConfigError, match=r"^x\.toml: encoder: missing section"):
        build_pretraining(config)


def test_rs3l_step_schedule_halves_every_50_epochs() -> None:
    s = LRSchedule("step", steps_per_epoch=10, total_steps=2000, step_epochs=50, gamma=0.5)
    assert [s(0), s(499), s(500), s(999), s(1000)] == [1, 1, 0.5, 0.5, 0.25]


def test_cosine_with_warmup() -> None:
    s = LRSchedule("cosine", steps_per_epoch=10, total_steps=100, warmup_steps=10,
                   min_lr_ratio=0.1)
    assert s(0) == pytest.approx(0.1) and s(4) == pytest.approx(0.5)
    assert s(9) == pytest.approx(1.0)
    assert s(99) == pytest.approx(0.1)
    middle = 10 + (99 - 10) / 2
    assert s(middle) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    values = [s(i) for i in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_schedule_drives_torch_optimizer() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule("step", 2, 20, step_epochs=1))
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])
