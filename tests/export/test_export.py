"""`resim export`: resim data sets read by the trainers people use, checked with their own
code — weaver-core's data loader (and ParT on its output), OmniLearned's dataloader (and a
training run of each) — against the features resim's own trainer computes."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import awkward as ak
import click
import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import resim
from resim.cli import main
from resim.convert import convert_jetclass
from resim.convert.jetclass import LABELS as JETCLASS_LABELS
from resim.export import ExportError, export_omnilearned, export_weaver
from resim.layout import ADDED_IN
from resim.splits import split_of
from resim.store import merge
from resim.train.features import FEATURES, Particles, features

JETCLASS_PARTICLE = ("part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi",
                     "part_d0val", "part_d0err", "part_dzval", "part_dzerr", "part_charge",
                     "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton",
                     "part_isElectron", "part_isMuon")
JETCLASS_JET = ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_nparticles", "jet_sdmass",
                "jet_tau1", "jet_tau2", "jet_tau3", "jet_tau4")


def reference(paths: list[Path]) -> dict[tuple[int, int, str, int], dict]:
    """Per jet, keyed (file, group, variation name, realization): what resim's trainer sees."""
    out = {}
    for f, path in enumerate(paths):
        ds = resim.open(path)
        jets = ds[:]
        p = Particles.from_awkward(jets.constituents, int(ak.max(jets.n_constituents)))
        x, v = features(p)
        variation = ak.to_list(jets.variation)
        for i in range(len(jets)):
            key = (f, int(jets.group[i]), variation[i], int(jets.realization[i]))
            n = int(jets.n_constituents[i])
            out[key] = {"x": x[i, :n], "v": v[i, :n], "kind": p.kind[i, :n],
                        "charge": p.charge[i, :n], "label": str(jets.label[i]),
                        "pt": float(jets.pt[i]), "mass": float(jets.mass[i]),
                        "event": int(jets.event[i])}
    return out


def key_of(directory: Path, file, group, variation, realization) -> tuple[int, int, str, int]:
    """The reference key of an exported jet (its group id carries the file in high bits)."""
    names = json.loads((directory / "resim_export.json").read_text())["variations"]
    assert int(group) >> 40 == int(file)
    return int(file), int(group) & ((1 << 40) - 1), names[int(variation)], int(realization)


@pytest.fixture(scope="module")
def sources(top_dataset: Path, qcd_dataset: Path) -> list[Path]:
    return [top_dataset, qcd_dataset]


@pytest.fixture(scope="module")
def expected(sources) -> dict:
    return reference(sources)


@pytest.fixture(scope="module")
def weaver_dir(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("weaver") / "export"
    export_weaver(sources, out, progress=False)
    return out


@pytest.fixture(scope="module")
def omni_dir(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("omni") / "export"
    export_omnilearned(sources, out, progress=False)
    return out


def _weaver_dataset(directory: Path, files: list[str]):
    from weaver.utils.dataset import SimpleIterDataset

    return SimpleIterDataset({"data": files}, str(directory / "data_config.yaml"),
                             for_training=False, load_range_and_fraction=((0, 1), 1, 1),
                             fetch_by_files=True, fetch_step=len(files), name="test")


def test_weaver_reads_the_export_with_jetclass_branches(weaver_dir, expected, sources):
    import uproot

    files = sorted(glob.glob(str(weaver_dir / "*" / "*.root")))
    assert {Path(f).parent.name for f in files} <= {"train", "val", "test"}
    tree = uproot.open(files[0])["tree"]
    assert set(JETCLASS_PARTICLE + JETCLASS_JET) <= set(tree.keys())
    assert {"aux_group", "aux_variation", "aux_realization", "aux_genpart_pid"} <= set(tree.keys())

    dataset = _weaver_dataset(weaver_dir, files)
    config = dataset.config
    assert list(config.input_names) == ["pf_points", "pf_features", "pf_vectors", "pf_mask"]
    assert config.label_value == ["label_top", "label_q", "label_g"]
    classes = ["top", "q", "g"]
    seen = 0
    for X, y, Z in torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=0):
        for i in range(len(y["_label_"])):
            key = key_of(weaver_dir, Z["aux_file"][i], Z["aux_group"][i],
                         Z["aux_variation"][i], Z["aux_realization"][i])
            want = expected[key]
            n = min(len(want["x"]), 128)
            assert int(X["pf_mask"][i].sum()) == n
            np.testing.assert_allclose(X["pf_points"][i, :, :n].numpy().T,
                                       want["x"][:n, :2], atol=1e-5)
            np.testing.assert_allclose(X["pf_vectors"][i, :, :n].numpy().T, want["v"][:n],
                                       rtol=1e-5, atol=1e-4)
            # pf_features row 5 is part_charge, rows 6-10 the particle-type flags.
            np.testing.assert_array_equal(X["pf_features"][i, 5, :n].numpy(), want["charge"][:n])
            flags = X["pf_features"][i, 6:11, :n].numpy().argmax(axis=0)
            np.testing.assert_array_equal(flags, want["kind"][:n])
            assert classes[int(y["_label_"][i])] == want["label"]
            assert float(Z["jet_pt"][i]) == pytest.approx(want["pt"], rel=1e-5)
            assert float(Z["jet_sdmass"][i]) <= want["mass"] * 1.0001 + 1e-3
            seen += 1
    assert seen == len(expected)  # every jet, once


def test_particle_transformer_runs_on_weavers_batches(weaver_dir):
    from weaver.nn.model.ParticleTransformer import ParticleTransformer

    files = sorted(glob.glob(str(weaver_dir / "test" / "*.root")))
    dataset = _weaver_dataset(weaver_dir, files)
    config = dataset.config
    X, y, _ = next(iter(torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=0)))
    # As ParT's example network builds it from the data config (smaller, for a CPU test).
    model = ParticleTransformer(input_dim=len(config.input_dicts["pf_features"]),
                                num_classes=len(config.label_value), pair_input_dim=4,
                                embed_dims=[32, 64, 32], pair_embed_dims=[16, 16, 16],
                                num_heads=4, num_layers=2, num_cls_layers=1, fc_params=[])
    out = model(X["pf_features"], v=X["pf_vectors"], mask=X["pf_mask"])
    assert out.shape == (len(y["_label_"]), 3) and torch.isfinite(out).all()


NETWORK = '''
import torch
from weaver.nn.model.ParticleTransformer import ParticleTransformer


class Wrapper(torch.nn.Module):  # the interface of ParT's networks/example_ParticleTransformer.py
    def __init__(self, **kwargs):
        super().__init__()
        self.mod = ParticleTransformer(**kwargs)

    def forward(self, points, features, lorentz_vectors, mask):
        return self.mod(features, v=lorentz_vectors, mask=mask)


def get_model(data_config, **kwargs):
    cfg = dict(input_dim=len(data_config.input_dicts["pf_features"]),
               num_classes=len(data_config.label_value), pair_input_dim=4,
               embed_dims=[32, 64, 32], pair_embed_dims=[16, 16, 16], num_heads=4,
               num_layers=2, num_cls_layers=1, fc_params=[])
    shapes = {k: ((1,) + s[1:]) for k, s in data_config.input_shapes.items()}
    axes = {k: {0: "N", 2: "n_" + k.split("_")[0]} for k in data_config.input_names}
    return Wrapper(**cfg), {"input_names": list(data_config.input_names),
                            "input_shapes": shapes, "output_names": ["softmax"],
                            "dynamic_axes": {**axes, "softmax": {0: "N"}}}


def get_loss(data_config, **kwargs):
    return torch.nn.CrossEntropyLoss()
'''


@pytest.mark.slow
def test_weaver_trains_and_predicts_on_the_export(weaver_dir, tmp_path):
    import uproot

    network = tmp_path / "network.py"
    network.write_text(NETWORK)
    weaver = Path(sys.executable).with_name("weaver")
    run = subprocess.run(
        [str(weaver), "--data-train", f"{weaver_dir}/train/*.root",
         "--data-val", f"{weaver_dir}/val/*.root", "--data-test", f"{weaver_dir}/test/*.root",
         "--data-config", str(weaver_dir / "data_config.yaml"), "--network-config",
         str(network), "--model-prefix", str(tmp_path / "model" / "net"), "--num-epochs", "1",
         "--batch-size", "16", "--samples-per-epoch", "64", "--samples-per-epoch-val", "32",
         "--num-workers", "0", "--gpus", "", "--fetch-step", "1",
         "--predict-output", str(tmp_path / "pred.root")],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    predicted = uproot.open(tmp_path / "pred.root")["Events"].arrays(library="np")
    assert {"score_label_top", "aux_group", "aux_variation"} <= set(predicted)
    # The test split's groups come back with their ids: pairs survive the round trip.
    assert len(np.unique(predicted["aux_group"])) < len(predicted["aux_group"])


def test_jetclass_preset_round_trips_through_resim_convert(sources, tmp_path, expected):
    out = tmp_path / "export"
    summary = export_weaver(sources, out, classes=["jetclass"], progress=False)
    assert list(summary["classes"]) == list(JETCLASS_LABELS)
    files = sorted(glob.glob(str(out / "*" / "*.root")))
    back = tmp_path / "back.h5"
    convert_jetclass(files, back, progress=False)
    jets = resim.open(back)[:]
    labels = ak.to_list(jets.label)
    assert labels.count("Tbqq") == sum(e["label"] == "top" for e in expected.values())
    assert labels.count("QCD") == sum(e["label"] in ("q", "g") for e in expected.values())
    # The converter's particle kinds and momenta are resim's again.
    pts = sorted(round(e["pt"], 2) for e in expected.values())
    assert sorted(np.round(ak.to_numpy(jets.pt), 2).tolist()) == pytest.approx(pts, abs=0.02)


def _omni_files(directory: Path, split: str) -> list[Path]:
    return sorted((directory / "custom" / split).glob("*.h5"))


def test_omnilearned_dataloader_reads_the_export(omni_dir, expected):
    from omnilearned.dataloader import load_data

    classes = ["top", "q", "g"]
    seen = 0
    for split in ("train", "val", "test"):
        files = _omni_files(omni_dir, split)
        assert len(files) == 2  # one per input, also where a split has none of its jets
        loader = load_data("custom", str(omni_dir), batch=32, dataset_type=split,
                           distributed=False, use_cond=True, use_pid=True, pid_idx=4,
                           use_add=True, num_add=4, num_workers=0, shuffle=False)
        # The loader lists files in directory order and reads them in that order.
        rows = []
        for f in map(Path, loader.dataset.file_paths):
            with h5py.File(f) as h5:
                rows += [(f, i) for i in range(len(h5["pid"]))]
        at = 0
        for batch in loader:
            for i in range(len(batch["y"])):
                path, row = rows[at]
                at += 1
                with h5py.File(path) as h5:
                    key = key_of(omni_dir, h5["file"][row], h5["group"][row],
                                 h5["variation"][row], h5["realization"][row])
                want = expected[key]
                n = min(len(want["x"]), 128)
                assert classes[int(batch["y"][i])] == want["label"]
                x = batch["X"][i].numpy()
                assert np.count_nonzero(x[:, 2]) == n
                columns = [FEATURES.index(c) for c in ("deta", "dphi", "log_pt", "log_e")]
                np.testing.assert_allclose(x[:n], want["x"][:n, columns], atol=1e-5)
                # OmniLearned's README rule: the experimental PDG ids in sorted order, from 1.
                sign = np.sign(want["charge"][:n]).astype(int)
                pdg = np.choose(want["kind"][:n], [211 * sign, np.full(n, 130), np.full(n, 22),
                                                   -11 * sign, -13 * sign])
                order = [-211, -13, -11, 11, 13, 22, 130, 211]
                np.testing.assert_array_equal(batch["pid"][i, :n].numpy(),
                                              1 + np.searchsorted(order, pdg))
                add = batch["add_info"][i, :n].numpy()
                tanh_d0 = want["x"][:n, FEATURES.index("tanh_d0")]
                np.testing.assert_allclose(add[:, 0], tanh_d0, atol=1e-6)
                assert np.all(add[:, [1, 3]] == 0)  # particle level: no detector errors
                cond = batch["cond"][i].numpy()
                assert cond[0] == pytest.approx(want["pt"], rel=1e-5) and cond[3] == n
                seen += 1
        assert at == len(rows)
    assert seen == len(expected)


@pytest.mark.slow
def test_omnilearned_trains_on_the_export(omni_dir, tmp_path):
    omnilearned = Path(sys.executable).with_name("omnilearned")
    run = subprocess.run(
        [str(omnilearned), "train", "-o", str(tmp_path / "run"), "--save-tag", "resim",
         "--dataset", "custom", "--path", str(omni_dir), "--size", "small", "--epoch", "1",
         "--iterations", "2", "--batch", "8", "--num-workers", "0", "--num-classes", "3",
         "--use-pid", "--use-add", "--num-add", "4", "--conditional", "--num-cond", "4"],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:])
    assert "Training Complete" in run.stdout
    assert (tmp_path / "run" / "best_model_resim.pt").is_file()


def test_splits_are_by_hard_event_and_keep_groups_whole(omni_dir, expected, sources, tmp_path):
    where = {}
    for s, split in enumerate(("train", "val", "test")):
        for path in _omni_files(omni_dir, split):
            with h5py.File(path) as h5:
                for f, g, e in zip(h5["file"][:], h5["group"][:], h5["event"][:], strict=True):
                    assert where.setdefault((int(f), int(g)), s) == s  # a group in one split
                    assert split_of(np.array([e]))[0] == s  # the trainer's split of its event
    assert len(where) == len({(k[0], k[1]) for k in expected})
    # A file whose split attribute says test goes to test whole.
    marked = tmp_path / "marked.h5"
    merge(sources[1], marked)
    with h5py.File(marked, "r+") as h5:
        h5.attrs["split"] = "test"
    summary = export_omnilearned([marked], tmp_path / "out", progress=False)
    assert sum(summary["jets"]["train"].values()) == sum(summary["jets"]["val"].values()) == 0


def test_classes_refine_labels_per_jet_and_presets(sources, tmp_path):
    summary = export_omnilearned(sources[1:], tmp_path / "a", progress=False,
                                 classes=["quark=q", "gluon_gg=g:g_gg", "gluon_split=g:g_qq,"
                                          "g:g_cc,g:g_bb"])
    counts = {c: sum(summary["jets"][s][c] for s in summary["jets"]) for c in summary["classes"]}
    jets = resim.open(sources[1])[:]
    gluon = ak.to_numpy(jets.label == "g")
    split = ak.to_numpy(jets.splitting)
    assert counts["quark"] == int(np.sum(ak.to_numpy(jets.label == "q")))
    assert counts["gluon_gg"] == int(np.sum(gluon & (split == 21)))
    assert counts["gluon_split"] == int(np.sum(gluon & np.isin(split, [1, 4, 5])))
    summary = export_omnilearned(sources, tmp_path / "b", progress=False, classes=["rs3l"])
    assert len(summary["classes"]) == 11 and "g_bb" in summary["classes"]


def test_detector_columns_are_exported_when_present(top_dataset, tmp_path):
    import uproot

    path = tmp_path / "detector.h5"
    merge(top_dataset, path)
    rng = np.random.default_rng(1)
    with h5py.File(path, "r+") as h5:
        n = len(h5["constituents/px"])
        # A format-2 file has these columns at particle level too: overwritten, they stand
        # for a detector's measurement.
        for column in ("d0", "dz", "d0_err", "dz_err"):
            h5["constituents"][column][...] = rng.normal(size=n).astype("f4")
        h5["constituents/kind"][...] = np.full(n, 2, np.int8)  # photons
        h5["jets/level"][...] = np.ones(len(h5["jets/pt"]), np.int8)
        d0_err = h5["constituents/d0_err"][:]
    summary = export_weaver([path], tmp_path / "out", progress=False)
    assert summary["impact_parameter_errors"] == "from the inputs' detector columns"
    trees = [uproot.open(f)["tree"].arrays(["part_d0err", "part_isPhoton", "aux_level"])
             for f in sorted(glob.glob(str(tmp_path / "out" / "*" / "*.root")))]
    got = np.concatenate([ak.to_numpy(ak.flatten(t.part_d0err)) for t in trees])
    assert np.isin(got, d0_err).all() and len(got) == len(d0_err)
    assert all(ak.all(t.part_isPhoton == 1) and ak.all(t.aux_level == 1) for t in trees)


def test_pileup_columns_are_exported(pileup_dataset, tmp_path):
    """Per jet its pileup collisions, per particle its vertex, mitigation weight and origin,
    as stored (weaver); OmniLearned gets the per-jet count."""
    import uproot

    ds = resim.open(pileup_dataset)
    jets = ds[:]
    stored = {}
    for i, (g, v, r, level) in enumerate(zip(*(ak.to_list(jets[f]) for f in (
            "group", "variation", "realization", "level")), strict=True)):
        c = jets.constituents[i]
        stored[(g, ds.variations.index(v), r, ds.levels.index(level))] = (
            int(jets.n_pileup[i]), *(ak.to_numpy(c[f]) for f in ("vertex", "weight", "pileup")))
    export_weaver([pileup_dataset], tmp_path / "weaver", progress=False)
    branches = ["aux_group", "aux_variation", "aux_realization", "aux_level", "aux_n_pileup",
                "part_vertex", "part_weight", "part_pileup"]
    seen = 0
    for f in glob.glob(str(tmp_path / "weaver" / "*" / "*.root")):
        t = uproot.open(f)["tree"].arrays(branches)
        for i in range(len(t)):
            key = tuple(int(t[b][i]) & ((1 << 40) - 1) for b in branches[:4])
            n_pileup, vertex, weight, pileup = stored[key]
            assert int(t.aux_n_pileup[i]) == n_pileup
            for got, want in ((t.part_vertex[i], vertex), (t.part_weight[i], weight),
                              (t.part_pileup[i], pileup)):
                assert np.array_equal(ak.to_numpy(got), want.astype(np.float32))
            seen += 1
    assert seen == len(jets)
    assert max(n for n, *_ in stored.values()) > 30  # there was pileup to carry
    export_omnilearned([pileup_dataset], tmp_path / "omni", progress=False)
    got = np.concatenate([h5py.File(f)["n_pileup"][:] for s in ("train", "val", "test")
                          for f in _omni_files(tmp_path / "omni", s)])
    assert np.array_equal(np.sort(got), np.sort(ds.column("jets", "n_pileup")))


def test_version_1_files_without_flavour_columns_export(qcd_dataset, tmp_path):
    path = tmp_path / "old.h5"
    merge(qcd_dataset, path)
    with h5py.File(path, "r+") as h5:  # made a format-1 file: what later versions added goes
        for version in (2, 3):
            for table, columns in ADDED_IN[version].items():
                for column in columns:
                    del h5[table][column]
        h5.attrs["format_version"] = 1
    out = tmp_path / "out"
    summary = export_omnilearned([path], out, progress=False)
    assert sum(sum(s.values()) for s in summary["jets"].values()) == len(resim.open(path))
    with h5py.File(_omni_files(out, "train")[0]) as h5:
        assert np.all(h5["splitting"][:] == -1) and np.all(h5["n_pileup"][:] == 0)
    # A class that needs the per-jet splitting finds no such jet there.
    summary = export_omnilearned([path], tmp_path / "none", progress=False,
                                 classes=["gg=g:g_gg", "q=q"])
    assert sum(s["gg"] for s in summary["jets"].values()) == 0


def test_substructure_tells_tops_from_qcd(weaver_dir):
    import uproot

    branches = ["jet_sdmass", "jet_tau2", "jet_tau3", "label_top"]
    arrays = [uproot.open(f)["tree"].arrays(branches, library="np")
              for f in glob.glob(str(weaver_dir / "*" / "*.root"))]
    a = {b: np.concatenate([x[b] for x in arrays]) for b in branches}
    top = a["label_top"] == 1
    tau32 = a["jet_tau3"] / np.maximum(a["jet_tau2"], 1e-9)
    assert np.median(tau32[top]) < np.median(tau32[~top])  # three prongs
    assert 120 < np.median(a["jet_sdmass"][top]) < 200
    assert np.median(a["jet_sdmass"][~top]) < 80


def test_cli_export_errors_name_the_problem_and_write_nothing(sources, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["export", "--format", "omnilearned", *map(str, sources), "-o",
                              str(tmp_path / "o"), "--quiet"])
    assert ok.exit_code == 0, ok.output
    assert "train" in ok.output and "3 classes (top, q, g)" in ok.output
    cases = [
        (["-o", str(tmp_path / "o")], "exists; remove it or pass --overwrite"),
        (["-o", str(tmp_path / "x"), "--classes", "top=tau"], "unknown label 'tau'"),
        (["-o", str(tmp_path / "x"), "--classes", "jetclas"], "not a preset"),
        (["-o", str(tmp_path / "x"), "--classes", "a=g:g_xx"], "unknown splitting 'g_xx'"),
        (["-o", str(tmp_path / "x"), "--classes", "a=g", "--classes", "b=g:g_bb"],
         "'g:g_bb' overlaps class 'a'"),
        (["-o", str(tmp_path / "x"), "--fractions", "0.5,0.5"], "--fractions 0.5,0.5"),
        (["-o", str(tmp_path / "x"), "--max-particles", "0"], "--max-particles must be >= 1"),
    ]
    for extra, message in cases:
        result = runner.invoke(main, ["export", "--format", "weaver", *map(str, sources),
                                      *extra])
        assert result.exit_code == 2 and message in result.output, (extra, result.output)
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    result = runner.invoke(main, ["export", "--format", "weaver", str(bad), "-o",
                                  str(tmp_path / "x")])
    assert result.exit_code == 2 and "bad.h5" in result.output
    copy = tmp_path / "copy"
    copy.mkdir()
    merge(sources[0], copy / sources[0].name)
    with pytest.raises(ExportError, match="two inputs named"):
        export_weaver([sources[0], copy / sources[0].name], tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.tmp").exists()
    # --overwrite replaces an earlier export only: it made an input data set a directory
    # (and deleted any directory given as -o)
    before = sources[0].read_bytes()
    for target in (sources[0], copy):
        result = runner.invoke(main, ["export", "--format", "omnilearned", str(sources[0]),
                                      "-o", str(target), "--overwrite", "--quiet"])
        assert (result.exit_code, result.stderr) == (2, f"error: {target} is not an export "
                                                     "(no resim_export.json); --overwrite "
                                                     "replaces only an earlier export: remove "
                                                     "it yourself or write elsewhere\n")
    assert sources[0].read_bytes() == before and (copy / sources[0].name).is_file()
    result = runner.invoke(main, ["export", "--format", "omnilearned", *map(str, sources), "-o",
                                  str(tmp_path / "o"), "--overwrite", "--quiet"])
    assert result.exit_code == 0, result.output


DOC = Path(__file__).parents[2] / "docs" / "export.md"


def doc_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in text.splitlines()
            if line.strip().startswith("resim ")]


def test_the_export_doc_walks_through_both_formats():
    found = doc_commands()
    assert any("--format weaver" in c for c in found)
    assert any("--format omnilearned" in c for c in found)


@pytest.mark.parametrize("line", doc_commands())
def test_export_doc_commands_parse(line: str):
    words = shlex.split(line)[1:]
    command = main.get_command(click.Context(main), words[0])
    assert command is not None, f"no command {words[0]!r}"
    with command.make_context(words[0], words[1:], resilient_parsing=False):
        pass


@pytest.mark.parametrize("fmt", ["weaver", "omnilearned"])
def test_export_imports_no_torch(fmt, sources, tmp_path):
    # A physicist exporting for another trainer need not install (or wait for) torch: the
    # split hash lives in resim.splits, the features in torch-free resim.train.features.
    script = ("import sys\nfrom resim.cli import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit as end:\n    assert not end.code\n"
              "print('torch imported:', 'torch' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", script, "export", "--format", fmt,
                          *map(str, sources), "-o", str(tmp_path / "out"), "--quiet"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torch imported: False" in run.stdout, run.stdout
    assert (tmp_path / "out" / "resim_export.json").is_file()


def test_the_split_of_hard_events_is_unchanged():
    # Frozen: exports, trained models and studies made before agree on which events are
    # test events. The hash moved from resim.train.data to resim.splits bit for bit.
    events = np.arange(40)
    assert split_of(events).tolist() == [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 2, 1, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 2, 1]
    assert split_of(events, {"train": 0.5, "val": 0.25, "test": 0.25}).tolist() == [
        0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 2, 1, 0, 2, 2, 2, 2, 1, 1,
        0, 0, 1, 0, 2, 2, 2, 1, 1, 2, 1, 0, 1, 0, 2, 0, 0, 0, 2, 2]
    codes = split_of(np.arange(100_000)).astype(np.int64).tobytes()
    assert hashlib.sha256(codes).hexdigest() == ("10f3e899725068361aeac241b47b4fb5734ca584250"
                                                 "ad7907540c2ecf7d6cee8")
