"""Synthetic trigger-cell charges for one HGCAL module per sample (a toy simulation).

The ECON-T autoencoder sees, for one module and one bunch crossing, the 48
trigger-cell charges after zero suppression, divided by their sum. We do not
have CMS simulation here, so each module gets 0-3 showers with:

* a centre anywhere on the module or up to ``CENTRE_MARGIN`` outside its corners
  (showers next door leak their tails in);
* an energy from a falling power law ``dN/dE ~ E**-2`` (MIP_T units);
* a transverse profile core + tail: a Gaussian core and an exponential tail
  whose 90 % containment radius is Moliere-like (~2-3 cm for electromagnetic
  showers, about twice that and a larger tail share for hadronic ones), with
  shower-to-shower width fluctuations;
* deposits integrated per trigger cell by sampling its four sensor cells (the
  Gaussian core is widened by the sensor cell's box variance so this sampling
  approximates the cell integral);

then stochastic sampling fluctuations, a few isolated pile-up hits, Gaussian
electronics noise and zero suppression. Modules with no shower carry only
noise and pile-up, and are often completely empty.
"""

from __future__ import annotations

import numpy as np

from accel.errors import AccelError
from accel.zoo.autoencoder import geometry

SHOWER_COUNT_P = (0.2, 0.45, 0.25, 0.1)  # P(0, 1, 2, 3 showers in the module)
CENTRE_MARGIN = 2.0  # cm outside the module's circumradius
E_MIN, E_MAX = 8.0, 3000.0  # MIP_T, power-law range
HADRONIC_P = 0.35
#                core sigma, tail lambda (cm), tail energy share
EM_PROFILE = (0.5, 0.9, 0.25)
HAD_PROFILE = (1.2, 2.0, 0.5)
WIDTH_SPREAD = 0.25  # log-normal sigma of the per-shower width scale
STOCHASTIC = 0.3  # MIP_T: sampling fluctuation sigma = sqrt(STOCHASTIC * charge)
PILEUP_P, PILEUP_MEAN = 0.03, 1.5  # per-cell chance and mean MIP_T of an isolated hit
NOISE_SIGMA = 0.35  # MIP_T per trigger cell
THRESHOLD = 1.0  # MIP_T, zero suppression


def _showers(rng: np.random.Generator, m: int) -> np.ndarray:
    """Deposits (m, 48) of ``m`` independent showers."""
    r = (geometry.MODULE_SIDE + CENTRE_MARGIN) * np.sqrt(rng.random(m))
    phi = rng.uniform(0.0, 2 * np.pi, m)
    centre = np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1)
    energy = np.minimum(E_MIN / (1.0 - rng.random(m)), E_MAX)  # Pareto, alpha = 1
    hadronic = rng.random(m) < HADRONIC_P
    sigma, lam, tail = np.where(hadronic[:, None], HAD_PROFILE, EM_PROFILE).T
    scale = np.exp(rng.normal(0.0, WIDTH_SPREAD, m))
    sigma, lam = sigma * scale, lam * scale
    # A sensor cell (side h) is a box of variance h**2 / 12 per axis.
    var = (sigma**2 + (geometry.CELL_EDGE / 2) ** 2 / 12)[:, None]
    lam = lam[:, None]
    dep = np.zeros((m, geometry.N_CELLS))
    for s in range(geometry.SUBCELL_XY.shape[1]):
        d = geometry.SUBCELL_XY[None, :, s, :] - centre[:, None, :]
        r2 = np.einsum("mcx,mcx->mc", d, d)
        core = np.exp(-0.5 * r2 / var) / (2 * np.pi * var)
        halo = np.exp(-np.sqrt(r2) / lam) / (2 * np.pi * lam**2)
        dep += (1 - tail)[:, None] * core + tail[:, None] * halo
    return dep * (energy * geometry.SUBCELL_AREA)[:, None]


def make_modules(n: int, seed: int) -> dict[str, np.ndarray]:
    """Generate ``n`` modules: ``charge`` (n, 48) in MIP_T and ``normalized`` (n, 48).

    ``normalized`` is each module's charges over their sum (an all-zero module
    stays zero), the encoder's input. Deterministic for a given ``seed``;
    vectorised over modules.
    """
    if n < 0:
        raise AccelError(f"number of modules must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    n_showers = rng.choice(len(SHOWER_COUNT_P), size=n, p=SHOWER_COUNT_P)
    charge = np.zeros((n, geometry.N_CELLS))
    for slot in range(len(SHOWER_COUNT_P) - 1):
        rows = np.flatnonzero(n_showers > slot)
        charge[rows] += _showers(rng, len(rows))
    charge += rng.normal(size=charge.shape) * np.sqrt(STOCHASTIC * charge)
    pileup = rng.random(charge.shape) < PILEUP_P
    charge += pileup * rng.exponential(PILEUP_MEAN, charge.shape)
    charge += rng.normal(0.0, NOISE_SIGMA, charge.shape)
    charge = np.where(charge >= THRESHOLD, charge, 0.0)
    total = charge.sum(axis=1, keepdims=True)
    normalized = np.divide(charge, total, out=np.zeros_like(charge), where=total > 0)
    return {"charge": charge, "normalized": normalized}
