"""Benchmark converters (``resim convert``): files built here in the upstream formats.

* JetClass: a ROOT TTree ``tree`` written with uproot — jagged ``part_*`` branches (float32,
  flags int32), one-hot ``label_*`` with the real files' mixed types (float, bool, int32),
  ``jet_*`` and ``aux_*`` floats; ``part_deta``/``part_dphi`` computed as JetClass does
  (Δη flipped for jets at η ≤ 0). (uproot writes counted C arrays, not std::vector
  branches; both read back as the same jagged arrays.) Constituents are written in random
  order, so the converter's pT ordering is exercised.
* Top Tagging: a pandas DataFrame written with ``to_hdf(key="table")`` in both pandas
  layouts, columns ``E_i, PX_i, PY_i, PZ_i`` (i < 200, pT-ordered, zero-padded, float32),
  ``truthE…truthPZ``, ``ttv``, ``is_signal_new`` (int64), as the reference files.

Then: four-momenta, counts and labels round-trip; resim's own features reproduce the
JetClass file's ``part_deta``, ``part_dphi``, tanh(d0val), tanh(dzval), charge and flags;
bad files are refused with their name and the missing branch/column; the output opens with
``resim.open`` and ``resim inspect --json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import resim
from resim.cli import main
from resim.convert import ConvertError, convert_jetclass, convert_toptagging
from resim.convert.jetclass import FLAGS, LABELS
from resim.layout import TABLES
from resim.store import DatasetWriter
from resim.train.features import FEATURES, KINDS, Particles, features

uproot = pytest.importorskip("uproot")

MAX_PARTICLES = 64
# Upstream types of the label branches (JetClass101 notebook's tree.show()).
LABEL_TYPES = {"QCD": np.float32, **dict.fromkeys(("Hbb", "Hcc", "Hgg", "H4q", "Hqql"), bool),
               **dict.fromkeys(("Zqq", "Wqq", "Tbqq", "Tbl"), np.int32)}
PIDS = {"QCD": 21, "Hbb": 25, "Tbqq": 6}


def _wrap(phi):
    return (phi + np.pi) % (2 * np.pi) - np.pi


def jetclass_arrays(classes: tuple[str, ...], n_jets: int, seed: int) -> dict[str, ak.Array]:
    """Branches of a JetClass-like tree: jets at both signs of η and across φ = ±π."""
    rng = np.random.default_rng(seed)
    n = rng.integers(3, 41, n_jets)
    jet_eta = rng.uniform(-2, 2, n_jets)
    jet_phi = rng.uniform(-np.pi, np.pi, n_jets)
    jet_phi[:4] = [np.pi - 0.01, -np.pi + 0.01, 3.1, -3.1]  # constituents straddle ±π
    jet = np.repeat(np.arange(n_jets), n)
    m = len(jet)
    eta = jet_eta[jet] + rng.normal(0, 0.25, m)
    phi = _wrap(jet_phi[jet] + rng.normal(0, 0.25, m))
    pt = rng.exponential(20.0, m) + 0.5
    kind = rng.integers(0, 5, m)  # the order of FLAGS / resim's KINDS
    charge = np.where(np.isin(kind, [0, 3, 4]), rng.choice([-1.0, 1.0], m), 0.0)
    mass = np.select([kind == 0, kind == 1, kind == 3, kind == 4], [0.1396, 0.4976, 5.11e-4,
                                                                   0.1057], 0.0)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    px, py, pz = (a.astype(np.float32) for a in (px, py, pz))
    energy = np.sqrt(px.astype(np.float64) ** 2 + py ** 2 + pz.astype(np.float64) ** 2
                     + mass ** 2).astype(np.float32)
    # JetClass's derived branches, from the stored (float32) momenta and the jet axis.
    s = [np.bincount(jet, weights=c.astype(np.float64)) for c in (px, py, pz, energy)]
    jpt = np.hypot(s[0], s[1])
    j_eta, j_phi = np.arcsinh(s[2] / jpt), np.arctan2(s[1], s[0])
    p_eta = np.arcsinh(pz / np.hypot(px.astype(np.float64), py))
    p_phi = np.arctan2(py.astype(np.float64), px)
    deta = np.where(j_eta[jet] > 0, p_eta - j_eta[jet], -(p_eta - j_eta[jet]))
    dphi = _wrap(p_phi - j_phi[jet])
    charged = charge != 0
    d0 = np.where(charged, rng.normal(0, 0.3, m) * rng.choice([1, 10], m, p=[0.9, 0.1]), 0)
    dz = np.where(charged, rng.normal(0, 0.5, m) * rng.choice([1, 10], m, p=[0.9, 0.1]), 0)
    part = {
        "part_px": px, "part_py": py, "part_pz": pz, "part_energy": energy,
        "part_deta": deta, "part_dphi": dphi, "part_d0val": d0,
        "part_d0err": rng.uniform(0.01, 0.1, m) * charged, "part_dzval": dz,
        "part_dzerr": rng.uniform(0.01, 0.1, m) * charged, "part_charge": charge,
        **{f: (kind == i).astype(np.int32) for i, f in enumerate(FLAGS)},
    }
    # Random order within each jet (the converter must sort by pT).
    shuffle = np.lexsort((rng.random(m), jet))
    out = {k: ak.unflatten(v[shuffle].astype(np.int32 if k in FLAGS else np.float32), n)
           for k, v in part.items()}
    label = np.arange(n_jets) % len(classes)
    for c, t in LABEL_TYPES.items():
        k = classes.index(c) if c in classes else -1
        out[f"label_{c}"] = (label == k).astype(t)
    out |= {"jet_pt": jpt, "jet_eta": j_eta, "jet_phi": j_phi, "jet_energy": s[3],
            "jet_nparticles": n, "jet_sdmass": rng.uniform(10, 200, n_jets),
            **{f"jet_tau{i}": rng.uniform(0, 1, n_jets) for i in range(1, 5)},
            "aux_genpart_pid": np.array([PIDS[classes[k]] for k in label]),
            "aux_genpart_pt": rng.uniform(500, 1000, n_jets), "aux_genpart_eta": jet_eta,
            "aux_genpart_phi": jet_phi, "aux_truth_match": np.ones(n_jets)}
    return {k: v if isinstance(v, ak.Array) or k.startswith("label_")
            else np.asarray(v, np.float32) for k, v in out.items()}


def write_jetclass(path: Path, arrays: dict[str, ak.Array], drop: tuple[str, ...] = ()) -> Path:
    with uproot.recreate(path) as f:
        f.mktree("tree", {k: v for k, v in arrays.items() if k not in drop},
                 counter_name=lambda name: "n" + name.split("_")[0])
    return path


@pytest.fixture(scope="module")
def jetclass_files(tmp_path_factory) -> tuple[list[Path], list[dict[str, ak.Array]]]:
    d = tmp_path_factory.mktemp("jetclass")
    a = jetclass_arrays(("QCD", "Tbqq", "Hbb"), 36, seed=1)
    b = jetclass_arrays(("Hbb", "QCD"), 14, seed=2)
    return [write_jetclass(d / "a.root", a), write_jetclass(d / "b.root", b)], [a, b]


def _concat(arrays: list[dict[str, ak.Array]], key: str):
    """A branch over all files: awkward for part_*, numpy for per-jet branches."""
    joined = ak.concatenate([a[key] for a in arrays])
    return joined if key.startswith("part_") else ak.to_numpy(joined)


def _sorted(arrays: list[dict[str, ak.Array]], key: str) -> ak.Array:
    """A part_* branch in the converter's order: decreasing pT within each jet."""
    pt = np.hypot(_concat(arrays, "part_px"), _concat(arrays, "part_py"))
    return _concat(arrays, key)[ak.argsort(pt, axis=1, ascending=False, stable=True)]


def _padded(a: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.fill_none(ak.pad_none(a, MAX_PARTICLES, clip=True), 0)).astype(
        np.float64)


def test_jetclass_round_trip_and_features(jetclass_files, tmp_path):
    files, arrays = jetclass_files
    out = tmp_path / "jetclass.h5"
    summary = convert_jetclass(files, out, split="test", progress=False, step=10)
    ds = resim.open(out)
    assert len(ds) == 50 and summary["n_jets"] == 50
    assert ds.labels == LABELS and ds.variations == ("nominal",)
    assert ds.attrs["split"] == "test" and ds.attrs["source_format"] == "jetclass"
    jets = ds[:]

    # Labels: the class whose one-hot branch is set.
    onehot = np.stack([_concat(arrays, f"label_{c}").astype(float) for c in LABELS], axis=1)
    assert list(jets.label) == [LABELS[i] for i in onehot.argmax(1)]
    assert summary["labels"] == {c: int(onehot[:, i].sum()) for i, c in enumerate(LABELS)}
    assert summary["labels"]["Tbqq"] == 12 and summary["labels"]["Hcc"] == 0

    # Each jet its own group and hard event, in file order.
    assert np.array_equal(ds.column("jets", "event"), np.arange(50))
    assert np.array_equal(ds.column("jets", "group"), 16 * np.arange(50))
    assert set(jets.variation) == {"nominal"}
    assert np.array_equal(ds.column("groups", "n_jets"), np.ones(50))

    # Four-momenta exactly, counts, pT order.
    c = jets.constituents
    assert np.array_equal(ds.column("jets", "n_constituents"), _concat(arrays, "jet_nparticles"))
    for mine, theirs in (("px", "part_px"), ("py", "part_py"), ("pz", "part_pz"),
                         ("E", "part_energy")):
        assert ak.all(c[mine] == _sorted(arrays, theirs)), mine
    pt = np.hypot(c.px, c.py)
    assert ak.all(pt[:, :-1] >= pt[:, 1:])
    # The jet is the constituent sum, as JetClass's jet_pt/eta/phi (built so here).
    assert np.allclose(jets.pt, _concat(arrays, "jet_pt"), rtol=1e-5)
    assert np.allclose(jets.eta, _concat(arrays, "jet_eta"), atol=1e-5)

    # resim's features reproduce JetClass's own per-particle inputs.
    x, _ = features(Particles.from_awkward(c, MAX_PARTICLES))
    col = {name: x[..., i] for i, name in enumerate(FEATURES)}
    mask = _padded(ak.ones_like(c.px)) > 0
    assert np.allclose(col["deta"], _padded(_sorted(arrays, "part_deta")), atol=2e-5)
    assert np.allclose(col["dphi"], _padded(_sorted(arrays, "part_dphi")), atol=2e-5)
    assert np.allclose(col["tanh_d0"], np.tanh(_padded(_sorted(arrays, "part_d0val"))),
                       atol=1e-5)
    assert np.allclose(col["tanh_dz"], np.tanh(_padded(_sorted(arrays, "part_dzval"))),
                       atol=1e-5)
    assert np.array_equal(col["charge"], _padded(_sorted(arrays, "part_charge")))
    for kind, flag in zip(KINDS, FLAGS, strict=True):
        assert np.array_equal(col[f"is_{kind}"], _padded(_sorted(arrays, flag))), flag
    log_pt_rel = np.log(np.where(mask, np.hypot(_padded(_sorted(arrays, "part_px")),
                                                _padded(_sorted(arrays, "part_py"))), 1)
                        / _concat(arrays, "jet_pt")[:, None])
    assert np.allclose(col["log_pt_rel"][mask], log_pt_rel[mask], atol=1e-4)
    # Synthesised PDG ids carry the charge's sign as particles do (e⁻ = 11, π⁺ = 211).
    pid, q = (ak.to_numpy(ak.flatten(c[f])) for f in ("pid", "charge"))
    assert set(np.unique(np.abs(pid))) == {11, 13, 22, 130, 211}
    lepton, hadron = np.isin(np.abs(pid), (11, 13)), np.abs(pid) == 211
    assert np.all(np.sign(pid[lepton]) == -q[lepton]) and np.all(np.sign(pid[hadron]) == q[hadron])
    # The test data cover what the conventions are about: both η hemispheres, large |d0|.
    assert np.any(jets.eta < 0) and np.any(jets.eta > 0)
    assert (np.abs(col["tanh_d0"]) > 0.99).any()

    # Truth objects from the aux_genpart_* branches.
    assert np.array_equal(ds.column("groups", "pid"), _concat(arrays, "aux_genpart_pid"))
    assert np.allclose(ds.column("groups", "pt"), _concat(arrays, "aux_genpart_pt"))


def test_jetclass_cli_inspect_and_bad_files(jetclass_files, tmp_path):
    files, arrays = jetclass_files
    out = tmp_path / "out.h5"
    run = CliRunner().invoke
    result = run(main, ["convert", "jetclass", *map(str, files), "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "50 jets" in result.output
    result = run(main, ["inspect", str(out), "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["n_jets"] == 50 and d["variations"] == {"nominal": 50}
    assert d["labels"]["QCD"] + d["labels"]["Hbb"] + d["labels"]["Tbqq"] == 50
    assert d["group_sizes"] == {"1": 50} and d["card"] == f"jetclass {files[0]} and 1 more"
    # An existing output is not replaced without --overwrite.
    result = run(main, ["convert", "jetclass", str(files[0]), "-o", str(out)])
    assert result.exit_code == 2 and "exists" in result.stderr
    # A file given twice was converted twice; an output that is an input was replaced.
    result = run(main, ["convert", "jetclass", str(files[0]), str(files[1]), str(files[0]),
                        "-o", str(tmp_path / "twice.h5")])
    assert (result.exit_code, result.stderr) == (2, f"error: {files[0]} and {files[0]}: the "
                                                 "same file given twice\n")
    before = files[1].read_bytes()
    result = run(main, ["convert", "jetclass", str(files[0]), str(files[1]), "-o",
                        str(files[1]), "--overwrite"])
    assert (result.exit_code, result.stderr) == (2, f"error: {files[1]}: is also an input; "
                                                 "write the data set elsewhere\n")
    assert files[1].read_bytes() == before and not (tmp_path / "twice.h5").exists()

    # A file lacking a branch: the error names the file and the branch; nothing is written.
    bad = write_jetclass(tmp_path / "no_d0.root", arrays[0], drop=("part_d0val",))
    target = tmp_path / "bad.h5"
    result = run(main, ["convert", "jetclass", str(files[0]), str(bad), "-o", str(target)])
    assert result.exit_code == 2
    assert str(bad) in result.stderr and "part_d0val" in result.stderr
    assert not target.exists() and not Path(str(target) + ".tmp").exists()
    # Labels that are not one-hot: named with the entry.
    two = dict(arrays[1])
    two["label_Wqq"] = np.ones(14, np.int32)
    with pytest.raises(ConvertError, match=r"two\.root: entry 0: label_\* .* not one-hot"):
        convert_jetclass([write_jetclass(tmp_path / "two.root", two)], target,
                         progress=False)
    assert not target.exists() and not Path(str(target) + ".tmp").exists()
    # Not a ROOT file at all; a ROOT file without `tree`.
    with pytest.raises(ConvertError, match="not a readable ROOT file"):
        convert_jetclass([out], target, progress=False)
    with uproot.recreate(tmp_path / "other.root") as f:
        f.mktree("events", {"x": np.zeros(3)})
    with pytest.raises(ConvertError, match=r"other\.root: no TTree 'tree'"):
        convert_jetclass([tmp_path / "other.root"], target, progress=False)


# ------------------------------------------------------------------------- Top Tagging

N_SLOTS = 200


def toptagging_frame(n_jets: int, seed: int):
    """A DataFrame laid out as the reference files: per-constituent E, PX, PY, PZ columns."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 80, n_jets)
    n[0] = N_SLOTS  # a jet that fills every slot
    slots = np.arange(N_SLOTS)
    real = slots < n[:, None]
    pt = np.where(real, -np.sort(-rng.exponential(15.0, (n_jets, N_SLOTS)), axis=1) + 0.1, 0)
    eta = rng.uniform(-2, 2, n_jets)[:, None] + rng.normal(0, 0.3, (n_jets, N_SLOTS))
    phi = rng.uniform(-np.pi, np.pi, n_jets)[:, None] + rng.normal(0, 0.3, (n_jets, N_SLOTS))
    p = {"PX": pt * np.cos(phi), "PY": pt * np.sin(phi), "PZ": pt * np.sinh(eta)}
    p["E"] = np.sqrt(p["PX"] ** 2 + p["PY"] ** 2 + p["PZ"] ** 2)
    data = {f"{k}_{i}": np.where(real[:, i], p[k][:, i], 0).astype(np.float32)
            for i in range(N_SLOTS) for k in ("E", "PX", "PY", "PZ")}
    top = (np.arange(n_jets) % 3 == 0).astype(np.int64)
    tpt, teta, tphi = rng.uniform(550, 650, n_jets), eta[:, 0], phi[:, 0]
    tp = np.stack([tpt * np.cos(tphi), tpt * np.sin(tphi), tpt * np.sinh(teta)])
    te = np.sqrt((tp ** 2).sum(0) + 173.0 ** 2)
    for k, v in zip(("truthE", "truthPX", "truthPY", "truthPZ"), (te, *tp), strict=True):
        data[k] = np.where(top == 1, v, 0).astype(np.float32)
    data["ttv"] = np.zeros(n_jets, np.int64)
    data["is_signal_new"] = top
    return pd.DataFrame(data)


@pytest.fixture(scope="module", params=["fixed", "table"])
def toptagging_file(request, tmp_path_factory):
    pytest.importorskip("tables")
    df = toptagging_frame(45, seed=3)
    path = tmp_path_factory.mktemp("top") / f"test-{request.param}.h5"
    df.to_hdf(path, key="table", format=request.param)
    return path, df


def test_toptagging_round_trip(toptagging_file, tmp_path):
    path, df = toptagging_file
    out = tmp_path / "top.h5"
    summary = convert_toptagging(path, out, split="val", progress=False, rows=16)
    ds = resim.open(out)
    assert ds.labels == ("qcd", "top") and len(ds) == 45
    assert summary["labels"] == {"qcd": 30, "top": 15}
    jets = ds[:]
    assert list(jets.label) == [("qcd", "top")[s] for s in df["is_signal_new"]]
    e = df[[f"E_{i}" for i in range(N_SLOTS)]].to_numpy()
    assert np.array_equal(ds.column("jets", "n_constituents"), (e > 0).sum(1))
    for mine, theirs in (("E", "E"), ("px", "PX"), ("py", "PY"), ("pz", "PZ")):
        padded = df[[f"{theirs}_{i}" for i in range(N_SLOTS)]].to_numpy()
        assert np.array_equal(ak.flatten(jets.constituents[mine]).to_numpy(), padded[e > 0])
    # Only four-momenta: every particle is a neutral hadron at the origin.
    c = ak.flatten(jets.constituents)
    assert ak.all(c.pid == 0) and ak.all(c.charge == 0) and ak.all(c.vx == 0)
    x, _ = features(Particles.from_awkward(jets.constituents, N_SLOTS))
    real = x[..., FEATURES.index("log_pt")] != 0
    assert np.all(x[..., FEATURES.index("is_neutral_hadron")][real] == 1)
    assert np.all(x[..., FEATURES.index("tanh_d0")] == 0)
    # Truth: the top quark (m = 173 GeV) for signal, nothing for QCD.
    pid, pt, mass = (ds.column("groups", c) for c in ("pid", "pt", "mass"))
    top = df["is_signal_new"].to_numpy() == 1
    assert np.allclose(mass[top], 173.0, atol=0.5) and np.all(pid[top] == 6)
    assert np.all(pt[~top] == 0) and np.all(pid[~top] == 0)
    assert ds.attrs["split"] == "val"


def test_toptagging_bad_files(tmp_path):
    pytest.importorskip("tables")
    df = toptagging_frame(10, seed=4).drop(columns=["PY_3", "is_signal_new"])
    path = tmp_path / "train.h5"
    df.to_hdf(path, key="table", format="table")
    out = tmp_path / "out.h5"
    result = CliRunner().invoke(main, ["convert", "toptagging", str(path), "-o", str(out)])
    assert result.exit_code == 2
    assert str(path) in result.stderr and "PY_3" in result.stderr
    assert "is_signal_new" in result.stderr and not out.exists()
    # An HDF5 file pandas did not write (here: a resim data set).
    with DatasetWriter(tmp_path / "resim.h5") as w:
        w.finish({})
    with pytest.raises(ConvertError, match=r"resim\.h5: no key 'table'"):
        convert_toptagging(tmp_path / "resim.h5", out, progress=False)
    # A label that is not 0/1.
    df = toptagging_frame(10, seed=5)
    df.loc[7, "is_signal_new"] = 2
    df.to_hdf(tmp_path / "val.h5", key="table", format="fixed")
    with pytest.raises(ConvertError, match=r"val\.h5: row 7: is_signal_new is 2"):
        convert_toptagging(tmp_path / "val.h5", out, progress=False)
    assert not out.exists()
    # What a user may hand over by mistake: one line naming it, saying what it is.
    (tmp_path / "notes.h5").write_text("not HDF5")
    (tmp_path / "cut.h5").write_bytes((tmp_path / "val.h5").read_bytes()[:2000])
    (tmp_path / "folder").mkdir()
    for name, words in (("notes.h5", "not an HDF5 file: empty, text or another format"),
                        ("cut.h5", "truncated HDF5 file (2000 of its"),
                        ("folder", "a folder, not a file")):
        result = CliRunner().invoke(main, ["convert", "toptagging", str(tmp_path / name),
                                           "-o", str(out)])
        assert result.exit_code == 2
        assert result.stderr.startswith(f"error: {tmp_path / name}: {words}")
        assert "\n" not in result.stderr.strip()


def test_dataset_writer_is_all_or_nothing(tmp_path):
    target = tmp_path / "x.h5"
    rows = {t: {c: np.zeros(3, dt) for c, dt in cols.items()} for t, cols in TABLES.items()}
    with pytest.raises(RuntimeError), DatasetWriter(target) as w:
        w.append(rows)
        raise RuntimeError("interrupted")
    assert not target.exists() and not Path(str(target) + ".tmp").exists()
    with DatasetWriter(target) as w, pytest.raises(KeyError, match="jets"):
        w.append({"jets": {"pt": np.zeros(3)}})
    with DatasetWriter(target) as w:
        w.append(rows)
        w.append({"constituents": rows["constituents"]})
        w.finish({"labels": ["a"], "variations": ["nominal"]})
    with h5py.File(target) as f:
        assert f["constituents/px"].shape == (6,) and f["jets/pt"].shape == (3,)
        assert f.attrs["format"] == "resim-jets"
