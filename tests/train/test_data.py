"""The trainer's data pipeline on jets made by the real generator (session fixtures)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pytest
import torch

import resim
from resim.dataset import DatasetError
from resim.splits import SPLITS, split_of
from resim.train.data import (
    JetData,
    LabelledJets,
    PretrainBatches,
    Streaming,
    make_loader,
    rank_batches,
    shuffled_order,
)
from resim.train.features import Particles, features
from resim.train.views import ViewPolicy

CARDS = Path(__file__).parent.parent / "cards"


@pytest.fixture(scope="module")
def reordered_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few top events whose card lists other variations in another order (seed first,
    two seed and two nominal realizations, a re-hadronization): codes that must be
    remapped, and groups with several realizations of one variation."""
    from resim.card import load_card
    from resim.generate import generate

    text = (CARDS / "top_small.toml").read_text()
    text = text[:text.index("[variations.nominal]")] + """
[variations.seed]
realizations = 2
[variations.nominal]
realizations = 2
[variations.hadronization]
stage = "hadronization"
settings = { "StringZ:aLund" = 0.9 }
"""
    directory = tmp_path_factory.mktemp("reordered")
    card = directory / "reordered.toml"
    card.write_text(text)
    output = directory / "reordered.h5"
    generate(load_card(card).with_overrides(events=8, output=output), progress=False)
    return output


def jets_of(path: Path) -> ak.Array:
    with resim.open(path) as ds:
        return ds[0:len(ds)]


def reference(data: JetData, rows: np.ndarray, max_particles: int):
    """Features of jets ``rows`` read one file at a time through resim.open (awkward)."""
    parts = []
    for row in rows:
        f = int(np.searchsorted(data.file_start, row, side="right") - 1)
        with resim.open(data.paths[f]) as ds:
            jet = ds[int(row - data.file_start[f])]
        parts.append(Particles.from_awkward(ak.Array([jet.constituents]), max_particles))
    return features(Particles.concatenate(parts))


def all_batches(dataset) -> list[dict[str, torch.Tensor]]:
    return list(dataset)


# -- splits and subsets ---------------------------------------------------------------------
def test_split_hash_gives_the_fractions_and_is_fixed():
    events = np.arange(200_000)
    split = split_of(events)
    assert np.bincount(split, minlength=3) / len(events) == pytest.approx([0.8, 0.1, 0.1],
                                                                         abs=0.005)
    assert np.array_equal(split, split_of(events[::-1])[::-1])  # per event, not positional
    custom = split_of(events, {"train": 0.5, "val": 0.0, "test": 0.5})
    assert np.bincount(custom, minlength=3)[1] == 0
    assert abs(np.mean(custom == 0) - 0.5) < 0.005


def test_splits_are_disjoint_by_hard_event_and_deterministic(top_dataset, qcd_dataset):
    data = JetData([top_dataset, qcd_dataset])
    masks = [data.groups_in(s) for s in SPLITS]
    assert np.array_equal(sum(m.astype(int) for m in masks), np.ones(data.n_groups))
    for f in range(2):
        events = [set(data.group_event[m & (data.group_file == f)]) for m in masks]
        assert all(events), "every split has events"
        assert not (events[0] & events[1] or events[0] & events[2] or events[1] & events[2])
    # What the loaders draw respects the split, and is the same when built again.
    train = PretrainBatches(data, split="train", batch_groups=8)
    test = LabelledJets([top_dataset, qcd_dataset], split="test", variations="all")
    def events(groups: np.ndarray) -> set[tuple[int, int]]:
        return set(zip(data.group_file[groups].tolist(), data.group_event[groups].tolist(),
                       strict=True))

    assert events(train.groups) and events(data.jet_group(test.rows))
    assert not events(train.groups) & events(data.jet_group(test.rows))
    again = PretrainBatches(JetData([top_dataset, qcd_dataset]), split="train", batch_groups=8)
    assert np.array_equal(train.groups, again.groups)
    assert all(np.array_equal(train.batch_rows(i), again.batch_rows(i))
               for i in range(len(train)))


def test_fraction_subsets_are_nested_and_deterministic(top_dataset, qcd_dataset):
    paths = [top_dataset, qcd_dataset]
    groups = {}
    for fraction in (0.1, 0.3, 1.0):
        ds = LabelledJets(paths, split="all", fraction=fraction)
        groups[fraction] = set(ds.data.jet_group(ds.rows))
        again = LabelledJets(paths, split="all", fraction=fraction)
        assert np.array_equal(ds.rows, again.rows)
    assert groups[0.1] < groups[0.3] < groups[1.0]
    assert len(groups[0.1]) == pytest.approx(0.1 * len(groups[1.0]), abs=12)
    # max_jets takes whole groups in the same fixed order: nested too.
    small = PretrainBatches(paths, max_jets=40)
    large = PretrainBatches(paths, max_jets=100)
    assert len(small.groups) * 2 <= 40 < (len(small.groups) + 1) * 2
    assert set(small.groups) < set(large.groups)
    # labelled jets: at most max_jets rows, whatever the groups' sizes (the cap used to
    # count another group's rows: --max-jets 10 gave 13 nominal jets)
    data = JetData(paths)
    for variations in ("nominal", "all"):
        every = LabelledJets(data, split="all", variations=variations)
        for cap in (10, 50, every.n_jets - 1):  # groups of up to 4 jets
            capped = LabelledJets(data, split="all", variations=variations, max_jets=cap)
            assert cap - 4 < capped.n_jets <= cap, (variations, cap)


# -- reading --------------------------------------------------------------------------------
@pytest.mark.parametrize("max_particles", [16, 128])
def test_batches_hold_the_features_of_the_chosen_jets(top_dataset, qcd_dataset, max_particles):
    data = JetData([top_dataset, qcd_dataset])
    ds = PretrainBatches(data, batch_groups=6, max_particles=max_particles, seed=3)
    for i in (0, len(ds) - 1):
        rows = ds.batch_rows(i).reshape(-1)
        batch = next(iter(PretrainBatches(data, batch_groups=6, max_particles=max_particles,
                                          seed=3, start_batch=i)))
        x, v = reference(data, rows, max_particles)
        assert batch["x"].shape == (len(rows), max_particles, x.shape[-1])
        assert len(rows) > len(np.unique(data.jet_group(rows)))  # several views of a group
        assert np.array_equal(batch["x"].numpy(), x) and np.array_equal(batch["v"].numpy(), v)
        assert np.array_equal(batch["mask"].numpy(), np.abs(v).sum(-1) > 0)
        assert batch["group"].dtype == batch["label"].dtype == torch.int64


def test_multiple_files_unify_groups_labels_and_variations(top_dataset, qcd_dataset,
                                                           reordered_dataset):
    paths = [qcd_dataset, top_dataset, reordered_dataset]
    data = JetData(paths)
    assert data.labels == ("q", "g", "top")
    assert data.variations == ("nominal", "seed", "fsr_up", "fsr_down", "hadronization")
    assert data.n_groups == len(np.unique(data.group_start)) == sum(
        len(np.unique(jets_of(p).group)) for p in paths)
    # Every jet's names, read through the unified codes, are the file's own.
    truth = [jets_of(p) for p in paths]
    variation = np.concatenate([ak.to_numpy(t.variation).astype(str) for t in truth])
    label = np.concatenate([ak.to_numpy(t.label).astype(str) for t in truth])
    group = data.jet_group(np.arange(data.n_jets))
    assert np.array_equal(np.array(data.variations)[data.jet_variation], variation)
    assert np.array_equal(np.array(data.labels)[data.group_label[group]], label)
    own_id = np.concatenate([ak.to_numpy(t.group) for t in truth])
    assert np.array_equal(data.group_id[group], own_id)
    # Loaders report the class index; a classes mapping merges labels.
    merged = JetData(paths, classes={"signal": ["top"], "background": ["q", "g"]})
    assert merged.classes == ("signal", "background")
    jets = LabelledJets(merged, split="all", variations="all", batch_size=50)
    rows = np.concatenate([jets.batch_rows(i) for i in range(len(jets))])
    got = torch.cat([b["label"] for b in jets]).numpy()
    assert np.array_equal(got, np.where(label[rows] == "top", 0, 1))
    assert np.array_equal(np.sort(rows), np.arange(data.n_jets))
    # A class leaving labels out drops their groups.
    tops = LabelledJets(paths, classes={"top": ["top"]}, split="all")
    assert set(label[tops.rows]) == {"top"}


# -- views ----------------------------------------------------------------------------------
def test_views_of_a_batch_share_a_group_and_differ_in_realization(top_dataset,
                                                                   reordered_dataset):
    paths = [top_dataset, reordered_dataset]
    realization = np.concatenate([ak.to_numpy(jets_of(p).realization) for p in paths])
    for views in (2, 3):
        ds = PretrainBatches(paths, batch_groups=5, views=views, seed=1)
        data = ds.data
        seen = []
        for i, batch in enumerate(ds):
            rows = ds.batch_rows(i)
            group = batch["group"].numpy().reshape(-1, views)
            assert (group == group[:, :1]).all()
            assert np.array_equal(group[:, 0], data.jet_group(rows[:, 0]))
            key = data.jet_variation[rows] * 100 + realization[rows]
            assert all(len(set(k)) == views for k in key)
            x = batch["x"].numpy().reshape(len(rows), views, *batch["x"].shape[1:])
            assert all(not np.array_equal(x[g, 0], x[g, 1]) for g in range(len(rows)))
            seen.extend(group[:, 0])
        assert sorted(seen) == sorted(ds.groups)  # an epoch is every usable group once
        # Groups with fewer jets than views are the skipped ones.
        in_split = data.groups_in("train")
        assert ds.skipped_groups == int((in_split & (data.group_size < views)).sum()) > 0


@pytest.mark.parametrize(("policy", "allowed_first", "allowed_others"), [
    ({"mode": "nominal_plus"}, {"nominal"}, {"seed", "fsr_up", "fsr_down"}),
    ({"mode": "nominal_plus", "variations": ("seed",)}, {"nominal"}, {"seed"}),
    ({"mode": "any", "variations": ("fsr_up", "fsr_down")}, {"fsr_up", "fsr_down"},
     {"fsr_up", "fsr_down"}),
])
def test_policies_and_ablations_draw_only_allowed_variations(top_dataset, qcd_dataset, policy,
                                                             allowed_first, allowed_others):
    ds = PretrainBatches([top_dataset, qcd_dataset], batch_groups=7, **policy)
    names = np.array(ds.data.variations)
    first, others = set(), set()
    for batch in ds:
        var = names[batch["variation"].numpy().reshape(-1, 2)]
        first |= set(var[:, 0])
        others |= set(var[:, 1])
    if policy["mode"] == "nominal_plus":
        assert first == allowed_first and others == allowed_others
    else:
        assert first | others == allowed_first
    # Skipped = groups of the split lacking what the policy needs, counted independently.
    data = ds.data
    group = data.jet_group(np.arange(data.n_jets))
    var = names[data.jet_variation]
    allowed = np.isin(var, list(allowed_others))
    n_allowed = np.bincount(group[allowed], minlength=data.n_groups)
    has_nominal = np.bincount(group[var == "nominal"], minlength=data.n_groups) > 0
    need = (has_nominal & (n_allowed >= 1)) if policy["mode"] == "nominal_plus" \
        else n_allowed >= 2
    assert ds.skipped_groups == int((data.groups_in("train") & ~need).sum())
    assert len(ds.groups) == int((data.groups_in("train") & need).sum())


def test_the_nominal_anchor_is_the_first_nominal_realization(reordered_dataset):
    jets = jets_of(reordered_dataset)
    variation = ak.to_numpy(jets.variation).astype(str)
    realization = ak.to_numpy(jets.realization)
    group = ak.to_numpy(jets.group)
    nominal = variation == "nominal"
    # The lowest nominal realization that made a jet in each group (realization 0 may not).
    first = {g: realization[nominal & (group == g)].min() for g in set(group[nominal])}
    others, second = set(), {}
    for epoch in range(30):
        ds = PretrainBatches(reordered_dataset, split="all", batch_groups=4,
                             mode="nominal_plus", epoch=epoch)
        for i in range(len(ds)):
            rows = ds.batch_rows(i)
            assert (variation[rows[:, 0]] == "nominal").all()
            assert [realization[r] for r in rows[:, 0]] == [first[g] for g in group[rows[:, 0]]]
            others |= set(zip(variation[rows[:, 1]], realization[rows[:, 1]].tolist(),
                              strict=True))
            for g, r in zip(group[rows[:, 0]], rows[:, 1], strict=True):
                second.setdefault(g, set()).add(r)
    assert ("nominal", 1) in others and ("seed", 1) in others
    # The other view is drawn uniformly from the rest (a second nominal realization too).
    sizes = {g: int((group == g).sum()) for g in second}
    assert all(len(second[g]) == sizes[g] - 1 for g in second if sizes[g] <= 5)
    augmented = PretrainBatches(reordered_dataset, split="all", batch_groups=4,
                                source="augment", augment=shift_phi)
    rows = augmented.batch_rows(0)[:, 0]
    assert (variation[rows] == "nominal").all()
    assert [realization[r] for r in rows] == [first[g] for g in group[rows]]


def shift_phi(p: Particles, rng: np.random.Generator) -> Particles:
    """A trivial augmentation for the tests: rotate every jet by its own random angle."""
    angle = rng.uniform(0.1, 1.0, size=(len(p), 1))
    c, s = np.cos(angle), np.sin(angle)
    px, py = p.px * c - p.py * s, p.px * s + p.py * c
    return Particles(px=px.astype(np.float32), py=py.astype(np.float32), pz=p.pz,
                     energy=p.energy, charge=p.charge, kind=p.kind, d0=p.d0, dz=p.dz,
                     mask=p.mask)


def test_augment_source_replicates_the_nominal_jet_and_augments_each_view(top_dataset):
    ds = PretrainBatches(top_dataset, batch_groups=6, views=3, source="augment",
                         augment=shift_phi)
    data = ds.data
    batch = next(iter(ds))
    rows = ds.batch_rows(0)
    assert (rows == rows[:, :1]).all()
    assert set(np.array(data.variations)[batch["variation"].numpy()]) == {"nominal"}
    v = batch["v"].numpy().reshape(6, 3, -1, 4)
    x_ref, v_ref = reference(data, rows[:, 0], ds.max_particles)
    pt = np.hypot(v[..., 0], v[..., 1])
    assert np.allclose(pt, np.hypot(v_ref[:, None, :, 0], v_ref[:, None, :, 1]), rtol=1e-5)
    assert not np.allclose(v[:, 0, :, 0], v[:, 1, :, 0])  # each view its own rotation
    # Augmentation rotates the jet axis with the particles: relative features unchanged.
    assert np.allclose(batch["x"].numpy().reshape(6, 3, *x_ref.shape[1:])[:, 2],
                       x_ref, atol=1e-4)
    # Re-simulated views with an augmentation on top.
    plain = next(iter(PretrainBatches(top_dataset, batch_groups=6)))
    augmented = next(iter(PretrainBatches(top_dataset, batch_groups=6, augment=shift_phi)))
    assert torch.equal(plain["group"], augmented["group"])
    assert not torch.equal(plain["v"], augmented["v"])


# -- determinism: workers, resumption, ranks ------------------------------------------------
def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_same_batches_for_any_number_of_workers(top_dataset, qcd_dataset):
    ds = PretrainBatches([top_dataset, qcd_dataset], batch_groups=9, seed=5, epoch=2)
    global_rng = torch.get_rng_state()
    serial = list(make_loader(ds, num_workers=0))
    parallel = list(make_loader(ds, num_workers=2))
    # The loaders leave the global torch RNG alone (dropout masks, exact resumption).
    assert torch.equal(torch.get_rng_state(), global_rng)
    assert len(serial) == len(ds) >= 4
    assert_same_batches(serial, parallel)
    ds.set_epoch(3)
    assert not torch.equal(next(iter(ds))["group"], serial[0]["group"])  # a new epoch order


def test_resuming_gives_the_tail_of_the_epoch_without_reading_the_skipped_batches(
        top_dataset, qcd_dataset, monkeypatch):
    paths = [top_dataset, qcd_dataset]
    full = all_batches(PretrainBatches(paths, batch_groups=9, seed=5, epoch=1))
    resumed = PretrainBatches(paths, batch_groups=9, seed=5, epoch=0)
    resumed.set_epoch(1, start_batch=3)
    read: list[np.ndarray] = []
    original = JetData.particles
    monkeypatch.setattr(JetData, "particles",
                        lambda self, rows, n: read.append(rows) or original(self, rows, n))
    tail = list(make_loader(resumed, num_workers=0))
    assert len(tail) == len(resumed) == len(full) - 3
    assert_same_batches(tail, full[3:])
    skipped = {int(g) for b in full[:3] for g in b["group"]}
    read_groups = set(resumed.data.jet_group(np.concatenate(read)).tolist())
    assert len(read) == len(full) - 3 and not read_groups & skipped


def test_ddp_rank_shares_are_disjoint_equal_and_cover_the_epoch(top_dataset, qcd_dataset):
    paths = [top_dataset, qcd_dataset]
    data = JetData(paths)
    one = PretrainBatches(data, batch_groups=7, seed=2)
    whole = [one.batch_rows(i) for i in range(len(one))]
    n = len(whole)
    for world, drop_last in ((3, False), (3, True), (n, False), (2, True)):
        shares = [PretrainBatches(data, batch_groups=7, seed=2, rank=r, world_size=world,
                                  drop_last=drop_last) for r in range(world)]
        assert len({len(s) for s in shares}) == 1, "every rank the same number of batches"
        taken = [int(b) for s in shares for b in s.batches()]
        if drop_last:
            # at most the partial batch and world - 1 full ones are dropped
            assert len(taken) == len(set(taken)) >= n - world
            full = n - (len(whole[-1]) < 7)  # drop_last also drops the partial batch
            assert set(taken) == set(range(full - full % world))
        else:
            assert set(taken) == set(range(n))
            assert len(taken) - len(set(taken)) == (-n) % world  # only the padding repeats
        for s in shares:  # what a rank yields is the whole-epoch batch of that index
            for i, b in enumerate(s.batches()[:2]):
                assert np.array_equal(s.batch_rows(i), whole[b])
    batches = list(PretrainBatches(data, batch_groups=7, seed=2, rank=1, world_size=3))
    assert np.array_equal(batches[0]["group"].numpy(),
                          data.jet_group(whole[1].reshape(-1)))


def test_rank_batches_and_shuffled_order_are_pure():
    assert rank_batches(7, 1, 3, "pad").tolist() == [1, 4, 0]
    assert rank_batches(7, 2, 3, "drop").tolist() == [2, 5]
    assert rank_batches(7, 0, 3, "keep").tolist() == [0, 3, 6]
    streaming = Streaming(run=4, block=16, mix=2)
    a = shuffled_order(1000, np.random.default_rng(1), streaming)
    assert np.array_equal(np.sort(a), np.arange(1000))
    assert np.array_equal(a, shuffled_order(1000, np.random.default_rng(1), streaming))
    assert not np.array_equal(a, shuffled_order(1000, np.random.default_rng(2), streaming))
    steps = np.diff(a)
    assert np.mean(steps == 1) > 0.6  # runs of consecutive groups: chunk-friendly reads
    assert np.abs(a[:100] - np.arange(100)).mean() > 100  # yet spread over the whole split


# -- labelled jets --------------------------------------------------------------------------
def test_labelled_jets_per_variation_in_fixed_or_shuffled_order(top_dataset, qcd_dataset):
    paths = [top_dataset, qcd_dataset]
    data = JetData(paths)
    names = np.array(data.variations)
    nominal = LabelledJets(data, split="all", batch_size=40)
    assert set(names[data.jet_variation[nominal.rows]]) == {"nominal"}
    assert np.array_equal(nominal.rows, np.flatnonzero(names[data.jet_variation] == "nominal"))
    batches = list(nominal)
    assert [len(b["x"]) for b in batches][:-1] == [40] * (len(batches) - 1)
    assert np.array_equal(torch.cat([b["variation"] for b in batches]).numpy(),
                          data.jet_variation[nominal.rows])  # file order, each jet once
    fsr = LabelledJets(data, split="test", variations=["fsr_up", "fsr_down"])
    assert set(names[data.jet_variation[fsr.rows]]) == {"fsr_up", "fsr_down"}
    every = LabelledJets(data, split="test", variations="all")
    assert set(fsr.rows) < set(every.rows)
    train = LabelledJets(data, split="train", shuffle=True, batch_size=16, seed=4)
    assert train.drop_last and len(train) == len(train.rows) // 16
    e0 = np.concatenate([train.batch_rows(i, epoch=0) for i in range(len(train))])
    e1 = np.concatenate([train.batch_rows(i, epoch=1) for i in range(len(train))])
    assert not np.array_equal(e0, e1) and set(e0) <= set(train.rows)
    first = next(iter(train))
    assert np.array_equal(first["group"].numpy(), data.jet_group(train.batch_rows(0)))


def test_a_split_attribute_puts_the_whole_file_in_that_split(top_dataset, qcd_dataset,
                                                            tmp_path):
    """``resim convert --split test`` marks a file as an upstream test set: every group of
    it is in the test split (and none in train/val), while unmarked files keep the hash."""
    marked = tmp_path / top_dataset.name
    shutil.copy(top_dataset, marked)
    shutil.copytree(top_dataset.parent / f"{top_dataset.name}.parts",
                    tmp_path / f"{top_dataset.name}.parts")
    with h5py.File(marked, "r+") as f:
        f.attrs["split"] = "test"
    data = JetData([marked, qcd_dataset])
    plain = JetData([top_dataset, qcd_dataset])
    top = data.group_file == 0
    assert data.groups_in("test")[top].all()
    assert not data.groups_in("train")[top].any() and not data.groups_in("val")[top].any()
    for split in SPLITS:  # the unmarked file is split as before
        assert np.array_equal(data.groups_in(split)[~top], plain.groups_in(split)[~top])
    jets = LabelledJets([marked], split="test", variations="all")
    assert jets.n_jets == data.file_start[1]  # evaluate reads every jet of the file
    with pytest.raises(ValueError, match="selects no jets"):
        LabelledJets([marked], split="train")
    with h5py.File(marked, "r+") as f:
        f.attrs["split"] = "testing"
    with pytest.raises(DatasetError, match=r"top_small\.h5: its split attribute is 'testing'"):
        JetData(marked)


# -- errors ---------------------------------------------------------------------------------
def test_bad_paths_and_files_give_clear_errors(top_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.h5"):
        JetData(tmp_path / "nowhere.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(DatasetError, match=r"notes\.h5.*not a resim data set"):
        JetData([top_dataset, text])
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(DatasetError, match=r"other\.h5.*not a resim data set"):
        JetData(other)
    moved = tmp_path / "moved.h5"
    shutil.copy(top_dataset, moved)  # without its .parts directory
    with pytest.raises(DatasetError, match=r"moved\.h5: its segments are missing"):
        JetData(moved)
    (tmp_path / "running.h5.parts").mkdir()  # a run still going (or killed)
    with pytest.raises(DatasetError, match=r"running\.h5.*not finished"):
        JetData(tmp_path / "running.h5")
    with pytest.raises(ValueError, match="no data set paths"):
        JetData([])
    again = top_dataset.parent / "." / top_dataset.name  # its jets counted twice, silently
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(top_dataset))} and "
                                           rf"{re.escape(str(again))}: the same data set given"):
        JetData([top_dataset, again])


def test_a_file_without_jets_is_named(top_dataset, tmp_path, generate_card):
    """A data set whose cuts kept no jet was reported as files of "different levels"."""
    card = tmp_path / "nothing.toml"
    card.write_text((CARDS / "top_small.toml").read_text().replace(
        "pt_min = 500.0\npt_max = 1000.0", "pt_min = 6000.0\npt_max = 7000.0"))
    empty = generate_card(card, events=2)
    for paths in (empty, [top_dataset, empty]):
        with pytest.raises(DatasetError, match=rf"^{re.escape(str(empty))}: holds no jets$"):
            JetData(paths)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"views": 0}, "views"),
    ({"mode": "pairs"}, "mode"),
    ({"source": "herwig"}, "source"),
    ({"source": "augment"}, "augment"),
    ({"augment": 3}, "augment"),
    ({"variations": ("vincia",)}, "vincia"),
    ({"batch_groups": 0}, "batch_groups"),
    ({"max_particles": 0}, "max_particles"),
    ({"max_jets": 0}, "max_jets"),
    ({"split": "training"}, "split"),
    ({"fractions": {"train": 0.9, "val": 0.2, "test": 0.1}}, "fractions"),
    ({"fractions": {"train": 1.0}}, "fractions"),
    ({"rank": 2, "world_size": 2}, "rank"),
    ({"seed": -1}, "seed"),
    ({"start_batch": 1.5}, "start_batch"),
    ({"classes": {"signal": ["tops"]}}, "classes.signal.*tops"),
    ({"classes": {"a": ["top"], "b": ["top"]}}, "classes.b.*already"),
    ({"views": 5}, r"no group with 5 .*; data\.views: 5 views of any variation, mode 'any', "
                   r"source 'resim'\)$"),
])
def test_bad_pretraining_arguments_name_the_argument(top_dataset, kwargs, message):
    with pytest.raises(ValueError, match=message):
        PretrainBatches(top_dataset, **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fraction": 0.0}, "fraction"),
    ({"fraction": 1.5}, "fraction"),
    ({"variations": ["vincia"]}, "variations.*vincia"),
    ({"variations": ["all", "nominal"]}, r"^variations: 'all' stands alone.*\(all, nominal\)$"),
    ({"batch_size": 0}, "batch_size"),
    ({"split": "validation"}, "split"),
])
def test_bad_labelled_arguments_name_the_argument(top_dataset, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LabelledJets(top_dataset, **kwargs)


def test_a_fraction_selecting_nothing_is_an_error(top_dataset):
    data = JetData(top_dataset)
    tiny = float(data.subset_key().min()) / 2
    with pytest.raises(ValueError, match="selects no jets"):
        LabelledJets(data, split="all", fraction=tiny)
    with pytest.raises(ValueError, match="views"):
        ViewPolicy(views=True)


def test_a_max_jets_below_the_first_group_is_named(top_dataset):
    """It was reported as the split, fraction or variations selecting no jets."""
    data = JetData(top_dataset)
    with pytest.raises(ValueError, match=r"^max_jets = 1 holds no whole group .*the first "
                                         r"has [2-9] jets\)$"):
        LabelledJets(data, split="all", variations="all", max_jets=1)
    with pytest.raises(ValueError, match=r"^max_jets = 1 holds no whole group .*has 2 jets"):
        PretrainBatches(data, max_jets=1)
    assert LabelledJets(data, split="all", max_jets=1).n_jets == 1  # nominal: 1 a group

