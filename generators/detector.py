"""The detector stage: visible particles in, particle-flow candidates out.

A parametrized detector after Delphes (its CMS card as JetClass used it is the preset,
``cards/detectors/cms.toml``), columnar over every realization of a block at once:

1. **Propagation** (Delphes' ParticlePropagator): a particle made inside the tracker
   follows its helix (charged) or line (neutral) to the tracker's surface, the front of
   the calorimeters. One made beyond the tracker but inside the calorimeters (a K0S or Λ
   decaying there: Pythia decays them anywhere) leaves no track and deposits its energy
   where it is made; one made beyond the calorimeters is not seen.
2. **Tracking** (Efficiency, MomentumSmearing, TrackSmearing): a charged particle made
   inside the tracker is found with its class's efficiency (charged hadron, electron,
   muon) in (|η|, pT); its pT is smeared log-normally, its direction kept; its impact
   parameters d0 and dz (of its helix) are smeared with Gaussian resolutions, which are
   stored as their uncertainties.
3. **Calorimeters** (SimpleCalorimeter, its particle flow): each particle deposits its
   energy shares (by |PDG id|) in an ECAL and an HCAL cell where it arrives;
   :class:`~.calorimeter.Calorimeter` smears the cells, subtracts the tracks pointing at
   them, and turns significant excesses into photons (ECAL) and neutral hadrons (HCAL).
4. **Candidates** (EFlowMerger): the tracks (as charged hadrons, or electrons and muons
   with the identification efficiency), the photons and the neutral hadrons.

Kinematics, energies and resolutions are in single precision (the output stores them so,
and the detector's resolutions are 1e-3 or coarser): numpy's passes over float32 are
about twice as fast, its transcendental functions several times. Double precision stays
where it is needed: a displaced particle's helix (its axis lies ~pT/(0.3 B) from the beam
line, metres for hard tracks, while d0 is measured in microns), the impact parameters, and
the candidates' columns (float64, as the particles').

Random numbers are counter-based (:mod:`.seeds`): a realization's response is a pure
function of its particles and its 64-bit key, however realizations are batched.

Extra particles — pileup, say — pass through with the signal: add them to a realization's
rows with their own vertices. Any input column beyond the standard ones (e.g. ``origin``:
which collision a particle comes from) is carried to the candidates: a track takes its
particle's value, a neutral candidate that of the particle with the largest deposit in
its cell.
"""

from __future__ import annotations

import numpy as np

from resim.detector_spec import DetectorSpec
from resim.layout import CHARGED_HADRON, ELECTRON, MUON, NEUTRAL_HADRON, PHOTON

from .bins import Resolution, TableLookup
from .calorimeter import Calorimeter, Deposits, Measured, lognormal
from .final_state import COLUMNS, FinalState
from .propagation import from_beam_line, helix_impact_parameters, to_cylinder
from .seeds import normal, normal_pair, uniform

#: Columns of the candidates (before any carried extra column).
CANDIDATE_COLUMNS = (*COLUMNS, "d0", "dz", "d0_err", "dz_err", "kind")

#: Particles made closer than this to the beam line (mm) are propagated as if made on it:
#: their calorimeter cell moves by at most this much (cells are ~20 mm wide), and their
#: impact parameters are those of a straight line (curvature changes them by ~1e-9 mm).
ON_AXIS = 1e-3

# Random-number streams (each calorimeter uses three from its own).
_TRACK_FOUND, _TRACK_PT, _TRACK_IP, _LEPTON_ID, _PHOTON_ID = range(5)
_ECAL, _HCAL = 10, 20
_LOOKUP = 4096


class Detector:
    """A :class:`~resim.detector_spec.DetectorSpec` made ready to simulate."""

    def __init__(self, spec: DetectorSpec):
        self.spec = spec
        self.ecal = Calorimeter(spec.ecal, _ECAL)
        self.hcal = Calorimeter(spec.hcal, _HCAL)
        tr = spec.tracking
        # Track classes by |PDG id| (0: charged hadrons): efficiencies, pT resolutions.
        classes = {0: tr.charged_hadron, 11: tr.electron, 13: tr.muon}
        f4 = np.float32
        self._efficiency = {code: TableLookup(c.efficiency, f4) for code, c in classes.items()}
        self._resolution = {code: Resolution(c.resolution, f4) for code, c in classes.items()}
        self._d0, self._dz = (TableLookup(t, f4) for t in (tr.d0_resolution, tr.dz_resolution))
        ident = spec.identification
        self._identified = {11: TableLookup(ident.electron, f4),
                            13: TableLookup(ident.muon, f4)}
        self._photon = TableLookup(ident.photon, f4)
        # Shares by |PDG id|: a table for ids below _LOOKUP (every stable hadron), the
        # listed ids beyond it (e.g. neutralinos) looked up one by one.
        self._ecal_share, self._hcal_share = (np.full(_LOOKUP, float(f), np.float32)
                                              for f in spec.default_fraction)
        self._beyond = []
        for pid, ecal, hcal in spec.fractions:
            if pid < _LOOKUP:
                self._ecal_share[pid], self._hcal_share[pid] = ecal, hcal
            else:
                self._beyond.append((pid, ecal, hcal))

    def shares(self, pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ECAL, HCAL) energy shares of particles with PDG ids ``pid``."""
        apid = np.abs(pid)
        # Clipping to the last row: ids beyond the table are set below.
        ecal = self._ecal_share.take(apid, mode="clip")
        hcal = self._hcal_share.take(apid, mode="clip")
        large = np.flatnonzero(apid >= _LOOKUP)
        if len(large):
            ecal[large], hcal[large] = self.spec.default_fraction
            for code, e, h in self._beyond:
                which = large[apid[large] == code]
                ecal[which], hcal[which] = e, h
        return ecal, hcal

    def simulate(self, particles: FinalState, keys: np.ndarray,
                 pt_min: float = 0.0) -> FinalState:
        """Candidates of every realization of ``particles`` (realization i drawing its
        random numbers with ``keys[i]``, uint64), in the same realization order; those
        below ``pt_min`` (GeV) are left out."""
        geo = self.spec.geometry
        c = particles.columns
        event = particles.event_index()
        # The random-number counter of a particle: its row within its realization.
        index = np.arange(len(event), dtype=np.int64) - particles.offsets[event]
        if geo.particle_pt_min > 0:
            rows = np.flatnonzero(c["px"] * c["px"] + c["py"] * c["py"]
                                  >= geo.particle_pt_min**2)
            c = {name: v[rows] for name, v in c.items()}
            event, index = event[rows], index[rows]
        keys = np.asarray(keys, np.uint64)
        f4 = np.float32
        px, py, pz, energy, vx, vy, vz = (np.asarray(c[k], f4) for k in (
            "px", "py", "pz", "E", "vx", "vy", "vz"))
        kinematics = {"px": px, "py": py, "pz": pz, "E": energy}
        pt = np.sqrt(px * px + py * py)
        pid, charge = np.asarray(c["pid"]), np.asarray(c["charge"])

        # 1. Where each particle meets the calorimeters.
        made_at = np.sqrt(vx * vx + vy * vy)
        in_tracker = (made_at < geo.tracker_radius) & (np.abs(vz) < geo.tracker_half_length)
        in_calo = (~in_tracker & (made_at < geo.calorimeter_radius)
                   & (np.abs(vz) < geo.calorimeter_half_length))
        at_eta, at_phi = np.zeros(len(pt), f4), np.zeros(len(pt), f4)
        seen = in_calo.copy()
        inside = np.flatnonzero(in_calo)  # deposits where it is made
        at_eta[inside] = np.arcsinh(vz[inside] / made_at[inside])
        at_phi[inside] = np.arctan2(vy[inside], vx[inside])
        # Particles from the beam line (Pythia's primary particles and, within a micron,
        # most decay products) take the closed form; the others follow their helices.
        axis = in_tracker & (made_at < ON_AXIS)
        a = np.flatnonzero(axis)
        # (take: gathers by an index array ~1.4 times as fast as indexing does)
        at_eta[a], at_phi[a], seen[a] = from_beam_line(
            vz.take(a), px.take(a), py.take(a), pz.take(a), charge.take(a),
            geo.magnetic_field, geo.tracker_radius, geo.tracker_half_length)
        # Their helices in double precision (axes far from the beam line: their angles in
        # single precision place them within ~0.5 mm), from the particles' own columns.
        d = np.flatnonzero(in_tracker & ~axis)
        vx64, vy64, vz64, px64, py64, pz64 = (np.asarray(c[k], float).take(d) for k in (
            "vx", "vy", "vz", "px", "py", "pz"))
        x, y, z, seen[d] = to_cylinder(vx64, vy64, vz64, px64, py64, pz64, charge.take(d),
                                       geo.magnetic_field, geo.tracker_radius,
                                       geo.tracker_half_length, coarse=True)
        x, y, z = x.astype(f4), y.astype(f4), z.astype(f4)
        at_eta[d] = np.arcsinh(z / np.maximum(np.sqrt(x * x + y * y), 1e-9))
        at_phi[d] = np.arctan2(y, x)

        # 2. Tracks.
        tracks = self._tracks(np.flatnonzero(in_tracker & (charge != 0)), kinematics, pid,
                              pt, event, index, keys)
        tr = tracks["row"]

        # 3. Calorimeters: particles deposit their shares where they arrive; tracks are
        # subtracted in the same cells, and scaled where the cells measure them better.
        e_share, h_share = self.shares(pid)
        leading = len(c) > len(COLUMNS)  # extra columns to carry to neutral candidates
        measured = []
        for calo, share in ((self.ecal, e_share), (self.hcal, h_share)):
            dep = np.flatnonzero(seen & (share > 0))
            cell = calo.grid.cell(at_eta.take(dep), at_phi.take(dep))
            if (cell < 0).any():
                hit = np.flatnonzero(cell >= 0)
                dep, cell = dep[hit], cell[hit]
            position = np.full(len(pt), -1, np.int64)  # of each particle among the deposits
            position[dep] = np.arange(len(dep))
            trk = np.flatnonzero(position[tr] >= 0)
            track_e = tracks["E"][trk] * share[tr[trk]]
            m = calo.measure(Deposits(
                event=event.take(dep), cell=cell, energy=energy.take(dep) * share.take(dep),
                track_of=position[tr[trk]], track_energy=track_e,
                track_sigma2=(tracks["resolution"][trk] * track_e) ** 2),
                keys, leading)
            _scale_tracks(tracks, trk, m.track_scale)
            if leading:
                m.leading = np.where(m.leading >= 0, dep[np.maximum(m.leading, 0)], -1)
            measured.append(m)

        # 4. Candidates, per realization: tracks, then photons, then neutral hadrons.
        photons, neutrals = measured
        return self._candidates(tracks, photons, neutrals, c, event, index, keys,
                                len(particles), pt_min)

    def _tracks(self, rows: np.ndarray, c: dict[str, np.ndarray], pid: np.ndarray,
                pt: np.ndarray, event: np.ndarray, index: np.ndarray,
                keys: np.ndarray) -> dict[str, np.ndarray]:
        """Tracks of the charged particles ``rows`` (``c``: the particles' four-momenta):
        found and smeared. Returns columns over the found ones (``row``: their particle);
        :meth:`_impact_parameters` adds theirs."""
        tr = self.spec.tracking
        apid = np.abs(pid.take(rows))
        pt = pt.take(rows)
        abs_eta = np.abs(np.arcsinh(c["pz"].take(rows) / np.maximum(pt, 1e-12)))
        ev = event.take(rows)

        def by_class(tables: dict[int, TableLookup] | dict[int, Resolution]) -> np.ndarray:
            out = tables[0](pt, abs_eta)
            for code in (11, 13):
                lepton = np.flatnonzero(apid == code)
                if len(lepton):
                    out[lepton] = tables[code](pt[lepton], abs_eta[lepton])
            return out

        efficiency = np.minimum(by_class(self._efficiency) * tr.efficiency_scale, 1.0)
        # Uniform numbers are > 0: only particles with an efficiency need a draw.
        found = np.flatnonzero(efficiency > 0)
        found = found[uniform(keys, _TRACK_FOUND, index.take(rows.take(found)), ev.take(found),
                              single=True) < efficiency.take(found)]
        rows, pt, abs_eta, ev, apid = (v.take(found) for v in (rows, pt, abs_eta, ev, apid))
        resolution = np.minimum(by_class(self._resolution) * tr.resolution_scale, 1.0)
        smeared = lognormal(pt, resolution * pt,
                            normal(keys, _TRACK_PT, index.take(rows), ev, single=True))
        px, py, pz, e = (c[name].take(rows) for name in ("px", "py", "pz", "E"))
        mass2 = np.maximum(e * e - px * px - py * py - pz * pz, 0.0)
        scale = smeared / pt
        px, py, pz = px * scale, py * scale, pz * scale
        return {"row": rows, "px": px, "py": py, "pz": pz,
                "E": np.sqrt(px * px + py * py + pz * pz + mass2), "mass2": mass2,
                "resolution": resolution, "smeared": smeared, "abs_eta": abs_eta}

    def _impact_parameters(self, tracks: dict[str, np.ndarray],
                           particle: dict[str, np.ndarray], event: np.ndarray,
                           index: np.ndarray, keys: np.ndarray) -> dict[str, np.ndarray]:
        """Smeared d0, dz of ``tracks`` (of their particles' helices: ``particle``, the
        columns of each track's particle) and their uncertainties (at the tracker's pT,
        before any calorimeter rescaling)."""
        tr, rows = self.spec.tracking, tracks["row"]
        smeared, abs_eta = tracks["smeared"], tracks["abs_eta"]
        vx, vy, vz, px, py, pz, charge = (np.asarray(particle[name], float) for name in (
            "vx", "vy", "vz", "px", "py", "pz", "charge"))
        d0, dz = helix_impact_parameters(vx, vy, vz, px, py, pz, charge,
                                         self.spec.geometry.magnetic_field, ON_AXIS)
        bin_d0 = self._d0.index(smeared, abs_eta)
        bin_dz = bin_d0 if self._dz.same_bins(self._d0) else self._dz.index(smeared, abs_eta)
        d0_err = self._d0.at(bin_d0) * tr.impact_parameter_scale
        dz_err = self._dz.at(bin_dz) * tr.impact_parameter_scale
        z0, z1 = normal_pair(keys, _TRACK_IP, index[rows], event[rows], single=True)
        return {"d0": d0 + d0_err * z0, "dz": dz + dz_err * z1, "d0_err": d0_err,
                "dz_err": dz_err}

    def _candidates(self, tracks: dict[str, np.ndarray], photons: Measured,
                    neutrals: Measured, c: dict[str, np.ndarray], event: np.ndarray,
                    index: np.ndarray, keys: np.ndarray, n_events: int,
                    pt_min: float) -> FinalState:
        """The tracks, photons and neutral hadrons from ``pt_min`` on (as
        ``resim.pipeline._above`` would keep them: pT² >= pt_min²), interleaved by
        realization: its tracks, then its photons, then its neutral hadrons. What only
        the kept ones need (identification, impact parameters, the neutrals' momenta) is
        worked out for them alone."""
        # Charged candidates: cut as their float64 columns will be.
        px, py = tracks["px"].astype(np.float64), tracks["py"].astype(np.float64)
        pt2 = px * px + py * py
        if pt_min > 0:  # (their calorimeter terms are spent)
            hard = np.flatnonzero(pt2 >= pt_min * pt_min)
            tracks = {name: tracks[name].take(hard) for name in (
                "row", "px", "py", "pz", "E", "smeared", "abs_eta")}
            pt2 = pt2[hard]
        tr = tracks["row"]
        # The particles' columns the kept tracks need, gathered once.
        particle = {name: c[name].take(tr) for name in (
            "vx", "vy", "vz", "px", "py", "pz", "charge", "pid")}
        charge = np.asarray(particle["charge"])
        sign = 1 - 2 * (charge < 0)
        apid = np.abs(particle["pid"])
        kind = np.full(len(tr), CHARGED_HADRON, np.int8)
        pid = 211 * sign
        for code, lepton in ((11, ELECTRON), (13, MUON)):
            table = self._identified[code]
            sel = np.flatnonzero(apid == code)
            pt = np.sqrt(pt2[sel])
            abs_eta = np.abs(np.arcsinh(tracks["pz"][sel] / np.maximum(pt, 1e-12)))
            passed = uniform(keys, _LEPTON_ID, index[tr[sel]], event[tr[sel]],
                             single=True) < table(pt, abs_eta)
            kind[sel[passed]] = lepton
            pid[sel[passed]] = -code * sign[sel[passed]]
        charged = {"px": tracks["px"], "py": tracks["py"], "pz": tracks["pz"],
                   "E": tracks["E"], "pid": pid, "charge": charge, "vx": particle["vx"],
                   "vy": particle["vy"], "vz": particle["vz"], "kind": kind,
                   **self._impact_parameters(tracks, particle, event, index, keys)}

        # Neutral candidates: photons (ECAL), then neutral hadrons (HCAL).
        n_p = len(photons.energy)
        eta = np.concatenate([photons.eta, neutrals.eta])
        phi = np.concatenate([photons.phi, neutrals.phi])
        e = np.concatenate([photons.energy, neutrals.energy])
        owner = np.concatenate([photons.event, neutrals.event])
        leading = np.concatenate([photons.leading, neutrals.leading])
        source = np.arange(len(e))  # < n_p: that photon; else that neutral hadron + n_p
        npt = e / np.cosh(eta)
        if pt_min > 0:  # cos² + sin² is 1 within a few float32 ulp: only these can be kept
            hard = np.flatnonzero(npt >= pt_min * (1 - 1e-5))
            eta, phi, e, owner, leading, source, npt = (
                v[hard] for v in (eta, phi, e, owner, leading, source, npt))
        npx, npy = npt * np.cos(phi), npt * np.sin(phi)
        if pt_min > 0:  # as their float64 columns will be cut
            x, y = npx.astype(np.float64), npy.astype(np.float64)
            hard = np.flatnonzero(x * x + y * y >= pt_min * pt_min)
            eta, phi, e, owner, leading, source, npt, npx, npy = (
                v[hard] for v in (eta, phi, e, owner, leading, source, npt, npx, npy))
        from_ecal = source < n_p
        ecal = np.flatnonzero(from_ecal)
        neutral_kind = np.full(len(e), NEUTRAL_HADRON, np.int8)
        is_photon = uniform(keys, _PHOTON_ID, photons.cell[source[ecal]], owner[ecal],
                            single=True) < self._photon(npt[ecal], np.abs(eta[ecal]))
        neutral_kind[ecal[is_photon]] = PHOTON
        neutral = {"px": npx, "py": npy, "pz": npt * np.sinh(eta), "E": e,
                   "pid": np.where(neutral_kind == PHOTON, 22, 130), "kind": neutral_kind}

        position, counts = _interleave(
            [event[tr], owner[from_ecal], owner[~from_ecal]], n_events)
        at_c, at_n = position[0], np.concatenate(position[1:])
        n = int(counts.sum())

        def column(of_charged: np.ndarray, of_neutral: np.ndarray | None,
                   double: bool = False) -> np.ndarray:
            dtype = np.result_type(of_charged, np.float64 if of_neutral is None else of_neutral)
            if double and dtype.kind == "f":
                dtype = np.dtype(np.float64)
            out = (np.empty if of_neutral is not None else np.zeros)(n, dtype)
            # (converted first: numpy scatters with a conversion half as fast)
            out[at_c] = of_charged.astype(dtype, copy=False)
            if of_neutral is not None:
                out[at_n] = of_neutral.astype(dtype, copy=False)
            return out

        columns = {name: column(charged[name], neutral.get(name), True)
                   for name in CANDIDATE_COLUMNS}
        for name in c:
            if name not in columns:  # carried along: from the track's or leading particle
                columns[name] = column(c[name][tr], c[name][leading])
        return FinalState(columns, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))


def _interleave(parts: list[np.ndarray], n_events: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Where the entries of ``parts`` (each in realization order; entry i of part j
    belongs to realization ``parts[j][i]``) go when each realization takes its entries
    of part 0, then of part 1, ...; and each realization's count. No sort."""
    per = [np.bincount(e, minlength=n_events) for e in parts]
    counts = sum(per, np.zeros(n_events, np.int64))
    start = np.cumsum(counts) - counts  # of each realization's entries
    position = []
    for e, n in zip(parts, per, strict=True):
        rank = np.arange(len(e)) - (np.cumsum(n) - n)[e]  # within its realization
        position.append(start[e] + rank)
        start = start + n
    return position, counts


def _scale_tracks(tracks: dict[str, np.ndarray], which: np.ndarray, scale: np.ndarray) -> None:
    """Scale the momenta of tracks ``which`` by ``scale`` (pT, keeping direction and mass)."""
    for name in ("px", "py", "pz"):
        tracks[name][which] *= scale
    p2 = tracks["px"][which] ** 2 + tracks["py"][which] ** 2 + tracks["pz"][which] ** 2
    tracks["E"][which] = np.sqrt(p2 + tracks["mass2"][which])


__all__ = ["CANDIDATE_COLUMNS", "Detector"]
