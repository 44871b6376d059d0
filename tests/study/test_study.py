"""``resim study``: the study config and its errors, the plan of stages and their
fingerprints, and (slow) the shipped tiny study end to end, rerun after a kill."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from resim.card import load_card
from resim.cli import main
from resim.study.cards import restrict_variations, shard_events, study_card
from resim.study.plan import plan
from resim.study.run import run_study
from resim.study.spec import load_study, parse_study, resolve_study_path
from resim.train.config import ConfigError
from resim.train.loop import RunError

TINY = resolve_study_path("tiny")
DOC = Path(__file__).parents[2] / "docs" / "study.md"


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def tiny_text() -> str:
    return TINY.read_text()


def edited(old: str, new: str) -> str:
    text = tiny_text()
    assert old in text, old
    return text.replace(old, new)


# ------------------------------------------------------------------------- config


def test_shipped_studies_parse_and_plan(tmp_path: Path) -> None:
    for name in ("small", "tiny"):
        study = load_study(name)
        stages = plan(study, tmp_path / name)
        shards = sum(s.shards + (s.test_shards if s.test_events else 0)
                     for s in study.samples)
        runs = len(study.rows) * len(study.fractions) * len(study.seeds)
        kinds = [s.kind for s in stages]
        assert kinds.count("generate") == shards
        pretrainings = len(study.objectives) * len(study.seeds) * len(study.sizes)
        assert kinds.count("pretrain") == kinds.count("probe") == pretrainings
        assert kinds.count("finetune") == kinds.count("evaluate") == runs
        assert len({s.fingerprint for s in stages}) == len(stages)
        # every stage is listed after the stages it needs
        seen: set[str] = set()
        for s in stages:
            assert set(s.needs) <= seen, s.name
            seen.add(s.name)
    small = load_study("small")
    assert set(small.objectives) == {"rs3l", "simclr_aug", "vicreg", "mpm", "jepa"}
    assert small.fractions == (0.01, 0.1, 1.0)
    assert small.variations == ("nominal", "seed", "fsr_up", "fsr_down", "vincia")


@pytest.mark.parametrize(("old", "new", "key"), [
    ("[evaluate]", "[evaluate]\nsplits = 3", "evaluate.splits"),
    ('reference = "nominal"', 'reference = "tune"', "study.reference"),
    ("fractions = [0.2, 0.5, 1.0]", "fractions = [0.2, 1.5]", "finetune.fractions"),
    ("fractions = [0.2, 0.5, 1.0]", 'fractions = ["all"]', "finetune.fractions"),
    ("events = 20", "events = 0", "samples.w.events"),
    ('card = "wqq"', 'card = "no_such_card"', "samples.w.card"),
    ('baseline = "scratch"', 'baseline = "rs3l"', "finetune.baseline"),
    ("seeds = [0]", "seeds = [1, 1]", "study.seeds"),
])
def test_config_errors_name_the_key(old: str, new: str, key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        plan(parse_study(edited(old, new), "my_study.toml"), tmp_path)
    assert err.value.source == "my_study.toml"
    assert err.value.key == key, str(err.value)


@pytest.mark.parametrize(("old", "new", "key", "detail"), [
    # a bad key in an override of the training configs: the study key and the config key
    ('"data.batch_size=40"]', '"data.batch_sise=40"]', "pretrain.objectives.rs3l",
     "data.batch_sise"),
    ('jepa = "jepa_part"', 'jepa = "finetune"', "pretrain.objectives.jepa",
     "finetune.toml"),
    ('top = ["top"]', 'top = ["tops"]', "classes.top", "'tops' is in no sample"),
    ('set = ["run.validate=false"]', 'set = ["finetune.head=\\"deep\\""]', "finetune.set",
     "finetune.head"),
])
def test_plan_errors_name_the_key(old: str, new: str, key: str, detail: str | None,
                                  tmp_path: Path) -> None:
    text = edited(old, new)
    with pytest.raises(ConfigError) as err:
        plan(parse_study(text, "my_study.toml"), tmp_path)
    assert err.value.key == key, str(err.value)
    if detail:
        assert detail in str(err.value)


def test_objectives_must_share_the_encoder(tmp_path: Path) -> None:
    text = resolve_study_path("small").read_text()
    text = text.replace('jepa = "jepa_part"', 'jepa = "jepa_transformer"')
    with pytest.raises(ConfigError, match=r"differs from rs3l's.*same encoder") as err:
        plan(parse_study(text, "s.toml"), tmp_path)
    assert err.value.key == "pretrain.objectives.jepa"


def test_cli_prints_a_study_and_refuses_bad_arguments(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(main, ["study", "--config", "small", "--print"])
    assert shown.exit_code == 0 and shown.output == resolve_study_path("small").read_text()
    for args, message in ((["--config", "small"], "give --output"),
                          (["--config", "nope", "--output", str(tmp_path)], "no shipped study"),
                          (["--config", "tiny", "--output", str(tmp_path), "--jobs", "0"],
                           "--jobs: must be >= 1")):
        result = runner.invoke(main, ["study", *args])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_variation_no_card_has_is_an_error(tmp_path: Path) -> None:
    study = parse_study(edited('"vincia"]', '"vincia", "herwig"]'), "s.toml")
    with pytest.raises(ConfigError, match="has no variation herwig") as err:
        plan(study, tmp_path)
    assert err.value.key == "study.variations"


@pytest.mark.parametrize("name", ["top", "wqq", "qcd"])
def test_study_cards_keep_everything_but_other_variations(name: str, tmp_path: Path) -> None:
    study = load_study("small")
    sample = next(s for s in study.samples if s.card == name)
    k = sample.shards - 1  # the last shard
    card, text = study_card(study, sample, k, tmp_path / "x.h5")
    original = load_card(name)
    assert card.variation_names == study.variations
    assert [v for v in original.variations if v.name in study.variations] == \
        list(card.variations)
    for part in ("beams", "hard_process", "objects", "jets", "pythia", "decays"):
        assert getattr(card, part) == getattr(original, part), part
    # shard k of the sample: its share of the events, the card's seed + k
    assert card.run.events == shard_events(sample.events, sample.shards)[k]
    assert card.run.seed == (sample.seed if sample.seed is not None
                             else original.run.seed) + k
    assert card.run.output == tmp_path / "x.h5"
    # the text written beside the data reads back as the same card
    raw = tomllib.loads(text)
    assert list(raw["variations"]) == list(study.variations)


def test_restrict_variations_leaves_array_lines_alone() -> None:
    text = ("[decays.6]\nmatch = [\n[5, 24],\n]\n[variations.a]\nrealizations = 1\n"
            "[variations.b]\nsettings = { x = 1 }\n[variations.b.more]\ny = 2\n[jets]\nr = 1\n")
    out = tomllib.loads(restrict_variations(text, ["a"]))
    assert out == {"decays": {"6": {"match": [[5, 24]]}}, "variations": {"a": {
        "realizations": 1}}, "jets": {"r": 1}}


def test_shard_events() -> None:
    assert shard_events(10, 3) == [4, 3, 3]
    assert sum(shard_events(1801, 4)) == 1801


def test_fingerprints_follow_what_a_stage_reads(tmp_path: Path) -> None:
    before = {s.name: s.fingerprint for s in plan(load_study(TINY), tmp_path)}
    study = parse_study(edited("[pretrain]\nepochs = 1", "[pretrain]\nepochs = 2"), str(TINY))
    after = {s.name: s.fingerprint for s in plan(study, tmp_path)}
    changed = {name for name in before if before[name] != after[name]}
    assert not any(n.startswith("data/") for n in changed)
    assert {n for n in before if n.startswith("pretrain/")} <= changed
    # the baseline reads no pre-training: its fine-tuning and evaluation stay valid
    assert not any("scratch" in n for n in changed)
    assert {n for n in before if "rs3l-" in n} <= changed


# ------------------------------------------------------------------------- end to end


def test_the_committed_report_names_its_command_and_figures() -> None:
    """docs/study.md: made by a real `resim study` command line from a shipped study, with
    every objective x fraction in its table and every figure it shows committed."""
    text = DOC.read_text()
    command = re.search(r"```sh\n(resim study [^\n]+)\n```", text).group(1)
    words = shlex.split(command)[1:]
    study_command = main.get_command(click.Context(main), words[0])
    with study_command.make_context(words[0], words[1:]) as ctx:
        study = load_study(ctx.params["config_name"])
    rows = table_rows(text, "| objective | labelled | accuracy")
    assert {(r[0], r[1]) for r in rows} == {(row, f"{100 * f:g} %") for row in study.rows
                                            for f in study.fractions}
    for png in re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", text):
        assert (DOC.parent / png).is_file(), png
    assert "<!-- discussion -->\n*(What the study shows" not in text  # it was written


def table_rows(report: str, header: str, contains: str = "") -> list[list[str]]:
    """The cells of the first Markdown table whose header row starts with ``header`` (and
    holds ``contains``)."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith(header) and contains in line)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_tiny_study_end_to_end_and_rerun(tmp_path: Path) -> None:
    """The shipped tiny study (every stage: five variations incl. Vincia, five objectives,
    three fractions, a baseline, shift evaluation) through the command line; the report
    has every objective x fraction and its plots; a rerun after a kill redoes only what
    is missing, with the same results."""
    out = tmp_path / "study"
    result = CliRunner().invoke(main, ["study", "--config", "tiny", "--output", str(out)])
    assert result.exit_code == 0, result.output
    study = load_study("tiny")
    report = (out / "report.md").read_text()
    assert "resim study --config tiny --output" in report

    rows = table_rows(report, "| objective | labelled | accuracy")
    got = {(r[0], r[1]) for r in rows}
    want = {(row, f"{100 * f:g} %") for row in study.rows for f in study.fractions}
    assert got == want and len(rows) == len(want)
    for r in rows:
        accuracy = float(r[2].split("±")[0])
        assert 0.0 <= accuracy <= 1.0
    assert len(table_rows(report, "| objective | labelled |", "top vs qcd: AUC")) == len(want)
    # robustness: JS distance per variation for every row and fraction
    js = table_rows(report, "| objective | labelled | seed | fsr_up | fsr_down | vincia")
    assert len(js) >= len(want)
    assert all(c != "n/a" for r in js for c in r)
    # every distance with its counting floor beside it
    assert all(re.fullmatch(r"\d\.\d{3}( \[\d\.\d{3}\])? / \d\.\d{3}", c)
               for r in js for c in r[2:]), js[0]
    # the frozen probe of every objective at both pre-training sizes, and random init
    probes = table_rows(report, "| objective | pre-training | kNN acc.")
    assert {(r[0], r[1]) for r in probes} == {
        (o, f"{100 * size:g} %") for o in [*study.objectives, "random init"]
        for size in study.sizes}
    assert all(0 <= float(r[3].split()[0]) <= 1 for r in probes)  # linear probe AUC
    probe = json.loads((out / "probe/rs3l-s0/probe.json").read_text())
    assert set(probe) >= {"encoder", "baseline"} and probe["labelled"]
    # the test-only sample: its own seed, all of it in the test split
    import h5py

    with h5py.File(out / "data/top-test-0/top-test-0.h5") as f:
        assert f.attrs["split"] == "test"
    shard = next(s for s in plan(study, out) if s.name == "data/top-test-0")
    assert shard.params["card"].run.seed == load_card("top").run.seed + 10_000
    metrics = json.loads((out / "evaluate/rs3l-100pct-s0/nominal/metrics.json").read_text())
    assert metrics["class_counts"]["top"] > 6  # the test-only tops are evaluated

    pngs = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", report)
    names = {Path(p).name for p in pngs}
    assert {f"roc_top_vs_qcd_{100 * f:g}pct.png" for f in study.fractions} <= names
    assert {f"robustness_{100 * f:g}pct.png" for f in study.fractions} <= names
    assert "vs_fraction_auc.png" in names
    for p in pngs:
        assert (out / p).is_file() and (out / p).stat().st_size > 10_000, p

    # A kill during the last fine-tuning: its record says unfinished, its evaluation
    # never ran. The rerun does exactly those two stages, and the numbers agree.
    metrics = json.loads((out / "evaluate/rs3l-100pct-s0/nominal/metrics.json").read_text())
    record_path = out / "finetune/rs3l-100pct-s0/stage.json"
    record = json.loads(record_path.read_text())
    record["complete"] = False
    record_path.write_text(json.dumps(record))
    for f in (out / "evaluate/rs3l-100pct-s0").rglob("*"):
        if f.is_file():
            f.unlink()
    lines: list[str] = []
    run_study(study, out, echo=lines.append)
    started = [line.split(" start ")[1] for line in lines if " start " in line]
    assert started == ["finetune/rs3l-100pct-s0", "evaluate/rs3l-100pct-s0"]
    again = json.loads((out / "evaluate/rs3l-100pct-s0/nominal/metrics.json").read_text())
    assert again["accuracy"] == metrics["accuracy"] and again["auc"] == metrics["auc"]

    # Other settings in the same output: refused, naming the stages.
    changed = parse_study(tiny_text().replace("[pretrain]\nepochs = 1",
                                              "[pretrain]\nepochs = 2"), str(TINY))
    with pytest.raises(RunError, match=r"made with other settings.*pretrain/rs3l-s0"):
        run_study(changed, out, echo=lines.append)


def test_a_test_only_shard_is_marked_and_not_remade(tmp_path: Path) -> None:
    """The generate stage of a test-only shard marks its file as the test split; a rerun
    of the stage keeps the marked file (resuming it would be refused), and a shard killed
    before its file existed (only its segments) resumes."""
    import h5py

    from resim.store import parts_dir
    from resim.study.work import run_generate

    card = load_card(Path(__file__).parents[1] / "cards" / "top_small.toml")
    out = tmp_path / "t.h5"
    card = card.with_overrides(events=3, output=out)
    args = {"card": card, "card_text": "# card\n", "card_copy": str(tmp_path / "c.toml")}
    first = run_generate(tmp_path, split="test", **args)
    with h5py.File(out) as f:
        assert f.attrs["split"] == "test"
    again = run_generate(tmp_path, split="test", **args)
    assert again["split"] == "test" and out.stat().st_size > 0
    assert first["events"] == again["events"] == 3
    # killed before the data set file was written: the segments alone resume
    out.unlink()
    assert parts_dir(out).is_dir()
    run_generate(tmp_path, split="test", **args)
    with h5py.File(out) as f:
        assert f.attrs["split"] == "test"


def test_a_study_file_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    """It was a UnicodeDecodeError, "a bug in resim", with --print or without."""
    binary = tmp_path / "data.h5"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)))
    for extra in (["--print"], ["--output", str(tmp_path / "out")]):
        result = CliRunner().invoke(main, ["study", "--config", str(binary), *extra])
        assert (result.exit_code, result.stderr) == (
            2, f"error: {binary}: cannot read the study: not a text (UTF-8) file\n"), extra
    assert not (tmp_path / "out").exists()
