"""Particle trajectories in a solenoid: where they meet the calorimeters, and their
impact parameters. Pure numpy functions over many particles at once.

A particle of charge q leaving (x, y, z) with momentum p in a field Bz along +z follows a
helix of transverse radius pT / (0.2998 |q B|) (m, GeV, T) about an axis parallel to z; a
neutral one, or any particle without a field, a straight line. Positions are in mm.
The geometry is that of Delphes' ParticlePropagator (a cylinder of radius R and
half-length H around the beam line, its surface the front of the calorimeters), solved in
closed form for every particle at once.

Impact parameters follow Delphes' convention (and JetClass's): at the point of closest
approach of the trajectory to the beam line, d0 = (x py − y px) / pT with the momentum
there, dz = z there.
"""

from __future__ import annotations

import numpy as np

#: pT [GeV] = C_LIGHT * |q| * B [T] * radius [m].
C_LIGHT = 0.299792458
_TINY = 1e-12


def impact_parameters(px: np.ndarray, py: np.ndarray, pz: np.ndarray, vx: np.ndarray,
                      vy: np.ndarray, vz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Straight-line (d0, dz) in the vertex units, for momenta p leaving vertices v.

    The track is v + t p; its transverse distance to the beam line is smallest at
    t* = -(vx px + vy py) / pT², where d0 = (vx py - vy px) / pT (the signed distance) and
    dz = vz + t* pz.
    """
    pt2 = np.maximum(px * px + py * py, 1e-8)
    d0 = (vx * py - vy * px) / np.sqrt(pt2)
    dz = vz - (vx * px + vy * py) * pz / pt2
    return d0, dz


class Helices:
    """Helices of charged particles: signed radius r (mm; > 0 turns clockwise seen from
    +z), axis (xc, yc), and the angle θ0 of the start point seen from the axis.

    ``coarse``: angles (arctan2, sine, cosine) in single precision, ~15 times faster in
    numpy; positions then err by ~5e-7 of the radius (0.5 mm for a 1 TeV track: ample
    for finding a calorimeter cell, ~20 mm wide, not for impact parameters)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray,
                 q: np.ndarray, bz: float, coarse: bool = False):
        self.coarse = coarse
        pt = np.sqrt(px * px + py * py)
        self.r = 1000.0 * pt / (C_LIGHT * q * bz)
        self.turn = np.sign(self.r)  # the angle seen from the axis falls by turn * alpha
        phi0 = self._angle(np.arctan2, py, px)
        self.xc = x + self.r * self._angle(np.sin, phi0)
        self.yc = y - self.r * self._angle(np.cos, phi0)
        self.radius = np.abs(self.r)
        self.theta0 = self._angle(np.arctan2, y - self.yc, x - self.xc)
        self.d = np.sqrt(self.xc * self.xc + self.yc * self.yc)  # beam line to axis
        self.theta_c = self._angle(np.arctan2, self.yc, self.xc)
        self.slope = np.divide(1.0, pt, out=np.zeros_like(pt), where=pt > 0)  # 1/pT

    def _angle(self, f: np.ufunc, *args: np.ndarray) -> np.ndarray:
        """``f(*args)``, in single precision if coarse."""
        if not self.coarse:
            return f(*args)
        return f(*(a.astype(np.float32) for a in args)).astype(np.float64)

    def at(self, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Transverse position after turning by ``alpha`` (>= 0)."""
        theta = self.theta0 - self.turn * alpha
        return (self.xc + self.radius * self._angle(np.cos, theta),
                self.yc + self.radius * self._angle(np.sin, theta))

    def to_radius(self, radius: float) -> np.ndarray:
        """Turning angle (0, 2π) at which each helix first reaches ``radius`` (inf: never).
        The start must lie inside."""
        cos = (radius**2 - self.d**2 - self.radius**2) / np.maximum(
            2.0 * self.radius * self.d, _TINY)
        reaches = np.abs(cos) <= 1.0
        a = np.arccos(np.clip(cos, -1.0, 1.0))
        base = self.turn * (self.theta0 - self.theta_c)
        first = np.minimum(remainder(base - self.turn * a, 2 * np.pi),
                           remainder(base + self.turn * a, 2 * np.pi))
        return np.where(reaches, first, np.inf)

    def closest_approach(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, signed turning angle from the start) at the point nearest the beam line."""
        shrink = 1.0 - self.radius / np.maximum(self.d, _TINY)
        x, y = self.xc * shrink, self.yc * shrink
        theta = self.theta_c + np.pi
        alpha = remainder(self.turn * (self.theta0 - theta) + np.pi, 2 * np.pi) - np.pi
        return x, y, alpha


def helix_impact_parameters(x: np.ndarray, y: np.ndarray, z: np.ndarray, px: np.ndarray,
                            py: np.ndarray, pz: np.ndarray, q: np.ndarray, bz: float,
                            on_axis: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(d0, dz) in mm of charged particles leaving (x, y, z) in the field ``bz``; the
    straight-line values without a field, and for particles made within ``on_axis`` (mm)
    of the beam line, where the helix's curvature changes them by less than
    on_axis² / (2 × its radius)."""
    d0, dz = impact_parameters(px, py, pz, x, y, z)
    if bz == 0:
        return d0, dz
    off = np.flatnonzero(x * x + y * y >= on_axis * on_axis)
    if len(off):
        h = Helices(x[off], y[off], px[off], py[off], q[off], bz)
        xa, ya, alpha = h.closest_approach()
        # The momentum's direction at the closest point, and its sine and cosine in
        # single precision (errors of 1e-7 times |(xa, ya)| ~ d0).
        direction = ((h.theta_c + np.pi) - h.turn * np.pi / 2).astype(np.float32)
        d0[off] = xa * np.sin(direction) - ya * np.cos(direction)
        dz[off] = z[off] + h.radius * alpha * pz[off] * h.slope
    return d0, dz


def from_beam_line(z: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray,
                   q: np.ndarray, bz: float, radius: float,
                   half_length: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(η, φ, reaches) of the point where particles leaving the beam line at z meet the
    cylinder's surface: :func:`to_cylinder` in closed form for this common case (a helix
    from the axis turns by α = 2 asin(R / 2r) to the barrel; its chord points at
    φ0 − α/2, turning clockwise for r > 0, and has length 2|r| sin(α/2)).

    Computed in the momenta's precision: float32 is ample (η and φ to ~1e-7 for cells
    ~0.02 wide; every step is well conditioned, unlike :meth:`Helices.to_radius`'s) and
    several times faster."""
    pt = np.sqrt(px * px + py * py)
    tiny = _tiny(pt.dtype)
    phi = np.arctan2(py, px)
    moving = pt > 1e-9
    bent = (q != 0) & moving & (bz != 0)
    charged = np.flatnonzero(bent)
    # Lines from the axis keep their direction (a particle at z != 0 sees another η).
    lines = ~bent & moving & (z != 0)
    line = np.flatnonzero(lines)
    # The momentum's η is the answer only for the rest (few: most are bent or lines).
    eta = np.empty(len(pt), pt.dtype)
    rest = np.flatnonzero(~(bent | lines))
    eta[rest] = np.arcsinh(pz.take(rest) / np.maximum(pt.take(rest), tiny))
    if len(line):
        z_l, pz_l, pt_l = z.take(line), pz.take(line), pt.take(line)
        s_r = radius / pt_l  # steps of p to the barrel, and to an endcap
        s = np.minimum(s_r, _to_endcap(z_l, pz_l, half_length))
        eta[line] = np.arcsinh((z_l + s * pz_l) / (s * pt_l))
    reaches = moving.copy()
    if len(charged):
        pt_c = pt.take(charged)
        r = 1000.0 * pt_c / (C_LIGHT * q.take(charged).astype(pt.dtype) * bz)
        radius_h = np.abs(r)
        half_chord = radius / (2.0 * radius_h)
        alpha_r = np.where(half_chord <= 1.0, 2.0 * np.arcsin(np.minimum(half_chord, 1.0)),
                           np.inf)
        rise = pz.take(charged) / pt_c * radius_h  # dz per unit turning angle
        z_c = z.take(charged)
        alpha = np.minimum(alpha_r, _to_endcap(z_c, rise, half_length))
        ok = np.isfinite(alpha)
        alpha[~ok] = 0.0
        half_sine = np.sin(0.5 * alpha)  # < 0 after more than a full turn (to an endcap)
        rho = 2.0 * radius_h * np.abs(half_sine)
        zc = z_c + alpha * rise
        eta[charged] = np.arcsinh(zc / np.maximum(rho, tiny))
        pi = pt.dtype.type(np.pi)  # (a Python float times booleans would be float64)
        chord = phi.take(charged) - np.copysign(0.5, r) * alpha + pi * (half_sine < 0)
        # into [-π, π] by whole turns (rounding: fewer passes than remainder)
        chord -= np.rint(chord * (0.5 / np.pi)) * (2 * np.pi)
        phi[charged] = chord
        reaches[charged] = ok
    return eta, phi, reaches


def to_cylinder(x: np.ndarray, y: np.ndarray, z: np.ndarray, px: np.ndarray, py: np.ndarray,
                pz: np.ndarray, q: np.ndarray, bz: float, radius: float, half_length: float,
                coarse: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where particles starting inside the cylinder (radius, half_length) cross its
    surface: (x, y, z, reaches). ``reaches`` is False for a particle that never does (at
    rest, or circling at constant z). ``coarse``: the helices' angles in single precision
    (:class:`Helices`)."""
    ox, oy, oz = np.array(x, float), np.array(y, float), np.array(z, float)
    pt2 = px * px + py * py
    moving = pt2 > 1e-18
    charged = (q != 0) & (bz != 0) & moving
    straight = ~charged & moving

    # Straight lines, x + t p: the barrel at the positive root of a quadratic, the endcap
    # where z reaches ±H.
    s = np.flatnonzero(straight)
    if len(s):
        sx, sy, sz = x[s], y[s], z[s]
        b = sx * px[s] + sy * py[s]
        c = sx * sx + sy * sy - radius * radius
        t_r = (-b + np.sqrt(np.maximum(b * b - pt2[s] * c, 0.0))) / pt2[s]
        t_z = _to_endcap(sz, pz[s], half_length)
        t = np.minimum(t_r, t_z)
        ox[s], oy[s], oz[s] = sx + t * px[s], sy + t * py[s], sz + t * pz[s]

    # Helices: the turning angle to the barrel, or to the endcap, whichever comes first.
    h_i = np.flatnonzero(charged)
    reaches = straight.copy()
    if len(h_i):
        h = Helices(x[h_i], y[h_i], px[h_i], py[h_i], q[h_i], bz, coarse)
        alpha_r = h.to_radius(radius)
        # z advances by radius * alpha * pz / pT per turning angle alpha
        alpha_z = _to_endcap(z[h_i], pz[h_i] * h.slope * h.radius, half_length)
        alpha = np.minimum(alpha_r, alpha_z)
        ok = np.isfinite(alpha)
        alpha = np.where(ok, alpha, 0.0)
        ox[h_i], oy[h_i] = h.at(alpha)
        oz[h_i] = z[h_i] + alpha * h.radius * pz[h_i] * h.slope
        reaches[h_i] = ok
    return ox, oy, oz, reaches


def _to_endcap(z: np.ndarray, dz_per_step: np.ndarray, half_length: float) -> np.ndarray:
    """Steps (>= 0) until z + step * dz_per_step reaches ±half_length (inf if never)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = (np.copysign(half_length, dz_per_step) - z) / dz_per_step
    steps[dz_per_step == 0] = np.inf
    return steps


def _tiny(dtype: np.dtype) -> float:
    """A floor for divisors: tiny, yet its reciprocal times a momentum stays finite."""
    return 1e-300 if dtype == np.float64 else 1e-30


def remainder(x: np.ndarray, period: float) -> np.ndarray:
    """``np.mod(x, period)`` for period > 0, bit for bit, but several times faster:
    numpy's goes through ``fmod``, slow beyond one period; here |x| < 2 periods (every
    angle sum in this module) takes at most two exact subtractions (Sterbenz) and the
    addition numpy itself makes for negative x."""
    p = x.dtype.type(period)  # in x's precision (times booleans: float64 otherwise)
    m = x - p * (x >= p) + p * (x < -p)
    m += p * (m < 0)  # also makes -0.0 +0.0, as numpy does
    far = np.flatnonzero(~(np.abs(x) < 2 * p))  # and NaN
    if len(far):
        m[far] = np.mod(x[far], p)
    return m


__all__ = ["C_LIGHT", "Helices", "from_beam_line", "helix_impact_parameters",
           "impact_parameters", "remainder", "to_cylinder"]
