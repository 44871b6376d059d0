"""HepMC3 output of realizations, read back with pyhepmc (HepMC3's own reader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyhepmc

from resim.card import load_card
from resim.generators.final_state import FinalState, visible_final_state
from resim.generators.hepmc import HepMCWriter, files, hepmc_status
from resim.store import parts_dir

CARDS = Path(__file__).parents[1] / "cards"


def hepmc_card(tmp_path: Path, events: int = 3) -> Path:
    """The detector test card with ``[run] hepmc = true``."""
    text = (CARDS / "detector.toml").read_text().replace(
        "[run]\n", "[run]\nhepmc = true\n").replace("events = 6", f"events = {events}")
    path = tmp_path / "hepmc.toml"
    path.write_text(text)
    assert load_card(path).run.hepmc
    return path


def read_all(output: Path) -> list[pyhepmc.GenEvent]:
    events = []
    for path in files(parts_dir(output) / "hepmc"):
        with pyhepmc.open(path) as f:
            events.extend(f)
    return events


def test_realizations_read_back_with_their_particles(tmp_path, generate_card):
    card_path = hepmc_card(tmp_path)
    output = generate_card(card_path)
    events = read_all(output)
    card = load_card(card_path)
    # Every realization Pythia made (detector-stage ones re-use nominal's particles).
    made = sum(v.realizations for v in card.variations if v.stage != "detector")
    assert len(events) == card.run.events * made
    keys = {(e.event_number, str(e.attributes["resim.variation"]),
             int(str(e.attributes["resim.realization"]))) for e in events}
    assert len(keys) == len(events)
    assert {v for _, v, _ in keys} == {"nominal", "fsr_up"}

    # The same realizations regenerated: HepMC's final state is their visible particles
    # (plus neutrinos), momenta exact, production vertices Pythia's.
    from resim.generate import Pipeline

    pipeline = Pipeline(card)
    seen = []
    read = lambda batch, jobs: seen.append((jobs, visible_final_state(batch, pipeline.particles)))  # noqa: E731
    pipeline.resimulator.realize([pipeline.source.event(i) for i in range(card.run.events)],
                                 read=read)
    jobs = [j for js, _ in seen for j in js]
    reference = FinalState.concatenate([fs for _, fs in seen])
    by_key = {(e.event_number, str(e.attributes["resim.variation"]),
               int(str(e.attributes["resim.realization"]))): e for e in events}
    names = card.variation_names
    for k, job in enumerate(jobs):
        event = by_key[(job.event, names[job.variation], job.realization)]
        assert int(str(event.attributes["resim.seed"])) == job.seed
        final = [p for p in event.particles if p.status == 1 and abs(p.pid) not in (12, 14, 16)]
        rows = slice(reference.offsets[k], reference.offsets[k + 1])
        ref = {c: reference.columns[c][rows] for c in ("px", "pz", "vx", "vz", "pid")}
        assert np.array_equal(np.sort([p.momentum.px for p in final]), np.sort(ref["px"]))
        assert np.array_equal(np.sort([p.pid for p in final]), np.sort(ref["pid"]))
        # Decay products (a few mm out): their vertex is where Pythia made them.
        displaced = np.flatnonzero(np.abs(ref["vz"]) > 1.0)
        positions = {p.momentum.pz: p.production_vertex.position.z for p in final}
        for i in displaced:
            assert abs(positions[ref["pz"][i]] - ref["vz"][i]) < 1e-9
        # A graph from the beams: every particle but the two beams has a mother.
        beams = [p for p in event.particles if p.status == 4]
        assert len(beams) == 2
        assert not any(p.production_vertex and p.production_vertex.particles_in for p in beams)
        assert all(p.production_vertex is not None and p.production_vertex.particles_in
                   for p in event.particles if p.status != 4)


def test_status_codes_follow_pythia():
    status = np.array([-12, 1, 83, -83, -84, -91, -62, -23, 91, -21])
    pid = np.array([2212, 211, 111, 111, 221, 310, 21, 6, 22, 21])
    assert hepmc_status(status, pid).tolist() == [4, 1, 1, 2, 2, 2, 62, 23, 1, 21]
    # decayed muons and taus are 2, decayed diquarks (documentation) keep their code
    assert hepmc_status(np.array([-91, -91, -71]), np.array([13, 15, 2101])).tolist() == [
        2, 2, 71]


def test_a_block_made_again_replaces_the_files_of_its_events(tmp_path):
    directory = tmp_path / "hepmc"
    writer = HepMCWriter(directory, {"resim": "test"})
    for first, last in ((0, 10), (10, 20), (20, 30)):
        writer.begin(first, last)
        writer.end()
    (directory / "events-0000000030-0000000040.hepmc3.gz.tmp").write_text("cut short")
    writer.begin(5, 15)  # a resumed run re-makes events 5-14
    writer.end()
    assert [p.name for p in files(directory)] == [
        "events-0000000005-0000000015.hepmc3.gz", "events-0000000020-0000000030.hepmc3.gz"]
    assert not list(directory.glob("*.tmp"))
    with pyhepmc.open(files(directory)[0]) as f:
        assert list(f) == []
