"""A synthetic high-content screen: procedural multichannel cell images with known treatments.

Each experiment has its own channel set; every experiment holds the same treatments, spread over
plates, wells and sites. Cells are drawn procedurally (nucleus, cell body, compartment patterns);
plates differ in gain, offset and illumination (batch effect) and each image has camera noise.
Treatment effects are morphological/spatial and hit only a share of the cells:

* ``nuclear_swelling``: larger nuclei with the same DNA content (so dimmer per pixel);
* ``texture``: fragmented, coarser mitochondria (or granular aggregates in the first of
  AGP/actin/RNA/ER/GFP when an experiment has no Mito channel);
* ``intensity``: one compartment channel (GFP > ER > actin > AGP > RNA > Mito) 1.6x brighter
  and relocalised (GFP into the nucleus, ER perinuclear, actin/AGP cortical, RNA nucleolar,
  Mito perinuclear), so it survives per-image per-channel normalisation.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.special import expit

from biofm.core.errors import ConfigError

COMPARTMENTS: tuple[str, ...] = ("dna", "er", "rna", "agp", "actin", "mito", "gfp")
TREATMENTS: tuple[str, ...] = ("control", "nuclear_swelling", "texture", "intensity")
_TEXTURE_ORDER = ("mito", "agp", "actin", "rna", "er", "gfp")
_INTENSITY_ORDER = ("gfp", "er", "actin", "agp", "rna", "mito")
_MAX_ADU = 4095  # 12-bit camera range stored in uint16
_ROWS = "BCDEFGHIJKLMNO"  # interior rows and columns 2..23 of a 384-well plate
_COLS = range(2, 24)


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment: its free-text channel names and the compartment each channel shows."""

    name: str
    channels: tuple[str, ...]
    compartments: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.compartments):
            raise ConfigError(
                f"experiment {self.name!r} has {len(self.channels)} channels but "
                f"{len(self.compartments)} compartments",
                "give one compartment per channel",
            )
        bad = [c for c in self.compartments if c not in COMPARTMENTS]
        if bad or self.compartments.count("dna") != 1 or len(self.compartments) < 2:
            raise ConfigError(
                f"experiment {self.name!r} has compartments {self.compartments}",
                f"use exactly one 'dna' plus 1 or more of {COMPARTMENTS[1:]}",
            )

    def target(self, treatment: str) -> int | None:
        """Index of the channel a ``texture``/``intensity`` treatment acts on (None: none)."""
        order = {"texture": _TEXTURE_ORDER, "intensity": _INTENSITY_ORDER}.get(treatment, ())
        for comp in order:
            if comp in self.compartments:
                return self.compartments.index(comp)
        return None


DEFAULT_EXPERIMENTS: tuple[ExperimentSpec, ...] = (
    ExperimentSpec("expA", ("Hoechst 33342", "Phalloidin"), ("dna", "actin")),
    ExperimentSpec("expB", ("DAPI", "GFP", "MitoTracker Deep Red"), ("dna", "gfp", "mito")),
    ExperimentSpec(
        "expC",
        ("Hoechst 33342", "Concanavalin A", "SYTO 14", "Phalloidin/WGA", "MitoTracker"),
        ("dna", "er", "rna", "agp", "mito"),
    ),
)


@dataclass(frozen=True)
class SyntheticScreenConfig:
    """Size and layout of the screen. Images of one treatment are split evenly over plates,
    then filled well by well with ``fields_per_well`` sites. ``effect_strength`` scales every
    treatment effect (0 makes all treatments look like ``control``)."""

    seed: int = 0
    image_size: int = 64
    n_images_per_treatment: int = 36
    n_plates: int = 2
    fields_per_well: int = 6
    cells_per_image: tuple[int, int] = (3, 8)
    treatments: tuple[str, ...] = TREATMENTS
    experiments: tuple[ExperimentSpec, ...] = DEFAULT_EXPERIMENTS
    pixel_size_um: float = 0.65
    effect_strength: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (self.image_size >= 32, f"image_size={self.image_size}", "use 32 or more"),
            (self.n_images_per_treatment >= 1 and self.n_plates >= 1
             and self.fields_per_well >= 1, "counts below 1", "use counts of 1 or more"),
            (1 <= self.cells_per_image[0] <= self.cells_per_image[1],
             f"cells_per_image={self.cells_per_image}", "use (lo, hi) with 1 <= lo <= hi"),
            (set(self.treatments) <= set(TREATMENTS) and len(set(self.treatments))
             == len(self.treatments) >= 1, f"treatments={self.treatments}",
             f"use distinct names from {TREATMENTS}"),
            (len(self.experiments) >= 1 and len({e.name for e in self.experiments})
             == len(self.experiments), "experiments are empty or share names",
             "give 1 or more experiments with distinct names"),
            (self.pixel_size_um > 0 and self.effect_strength >= 0,
             "pixel_size_um <= 0 or effect_strength < 0", "use positive values"),
            (len(self.treatments) * self.wells_per_treatment <= len(_ROWS) * len(_COLS),
             "more wells per plate than a 384-well plate's interior",
             "lower n_images_per_treatment or raise n_plates / fields_per_well"),
        ]
        for ok, problem, fix in checks:
            if not ok:
                raise ConfigError(f"SyntheticScreenConfig: {problem}", fix)

    @property
    def wells_per_treatment(self) -> int:
        """Wells per treatment on each plate."""
        per_plate = -(-self.n_images_per_treatment // self.n_plates)
        return -(-per_plate // self.fields_per_well)


class SyntheticImage(NamedTuple):
    """One site: (C, H, W) uint16 pixels, channel names, metadata (id, experiment, plate,
    well, site, treatment)."""

    pixels: np.ndarray
    channels: list[str]
    meta: dict[str, Any]


def generate_screen(config: SyntheticScreenConfig | None = None) -> list[SyntheticImage]:
    """All images of the screen, ordered by experiment, plate, well and site (deterministic)."""
    cfg = config or SyntheticScreenConfig()
    out: list[SyntheticImage] = []
    for e, spec in enumerate(cfg.experiments):
        plates = [_plate_effects(np.random.default_rng([cfg.seed, 1, e, p]), cfg, spec)
                  for p in range(cfg.n_plates)]
        for meta, t, k in _layout(cfg, e):
            rng = np.random.default_rng([cfg.seed, 2, e, t, k])
            pixels = _render_image(rng, cfg, spec, meta["treatment"], plates[k % cfg.n_plates])
            out.append(SyntheticImage(pixels, list(spec.channels), meta))
    return out


def _layout(cfg: SyntheticScreenConfig, e: int) -> list[tuple[dict[str, Any], int, int]]:
    """(meta, treatment index, image index) of every image of experiment ``e``."""
    name = cfg.experiments[e].name
    wells = [f"{r}{c:02d}" for r in _ROWS for c in _COLS]
    rng = np.random.default_rng([cfg.seed, 3, e])
    perms = [rng.permutation(len(wells)) for _ in range(cfg.n_plates)]
    rows = []
    for t, treatment in enumerate(cfg.treatments):
        for k in range(cfg.n_images_per_treatment):
            p, j = k % cfg.n_plates, k // cfg.n_plates
            well = wells[perms[p][t * cfg.wells_per_treatment + j // cfg.fields_per_well]]
            plate, site = f"{name}_P{p + 1}", j % cfg.fields_per_well + 1
            meta = {"id": f"{plate}_{well}_s{site}", "experiment": name, "plate": plate,
                    "well": well, "site": site, "treatment": treatment}
            rows.append((meta, t, k))
    rows.sort(key=lambda r: (r[0]["plate"], r[0]["well"], r[0]["site"]))
    return rows


def _plate_effects(
    rng: np.random.Generator, cfg: SyntheticScreenConfig, spec: ExperimentSpec
) -> dict[str, np.ndarray]:
    """Per-plate batch effect: channel gains and offsets, and an illumination falloff."""
    c, n = len(spec.channels), cfg.image_size
    yy, xx = np.mgrid[0:n, 0:n] / n - 0.5
    cy, cx = rng.uniform(-0.15, 0.15, 2)
    illum = 1.0 - rng.uniform(0.1, 0.35) * ((yy - cy) ** 2 + (xx - cx) ** 2) * 2.0
    return {"gain": np.exp(rng.normal(0.0, 0.25, c)), "offset": rng.uniform(80, 140, c),
            "illum": illum}


def _render_image(
    rng: np.random.Generator, cfg: SyntheticScreenConfig, spec: ExperimentSpec,
    treatment: str, plate: dict[str, np.ndarray],
) -> np.ndarray:
    """Cells, treatment, per-plate and per-image nuisance, camera noise -> (C, H, W) uint16."""
    scale = (cfg.image_size / 64.0) ** 2
    lo, hi = (max(1, round(v * scale)) for v in cfg.cells_per_image)
    n_cells = int(rng.integers(lo, hi + 1))
    responds = rng.random(n_cells) < 0.85
    strength = responds * rng.uniform(0.7, 1.3, n_cells) * cfg.effect_strength
    targets = {kind: (spec.target(kind) if treatment == kind else None)
               for kind in ("texture", "intensity")}
    swell = strength if treatment == "nuclear_swelling" else np.zeros(n_cells)
    planes = _render_planes(rng, cfg.image_size, spec.compartments, n_cells, strength, swell,
                           targets["texture"], targets["intensity"])
    gain = plate["gain"] * np.exp(rng.normal(0.0, 0.1, len(planes)))
    signal = planes * (gain[:, None, None] * plate["illum"][None])
    electrons = rng.poisson(np.clip(signal, 0.0, None) / 2.0) * 2.0  # 2 ADU per electron
    adu = electrons + plate["offset"][:, None, None] + rng.normal(0.0, 4.0, signal.shape)
    return np.clip(np.rint(adu), 0, _MAX_ADU).astype(np.uint16)


def write_screen(out_dir: str | Path, config: SyntheticScreenConfig | None = None) -> Path:
    """Write every image as an OME-TIFF and ``manifest.csv``; returns the manifest's path."""
    cfg = config or SyntheticScreenConfig()
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for img in generate_screen(cfg):
        m = img.meta
        rel = Path("images", m["experiment"], m["plate"], f"{m['well']}_s{m['site']}.ome.tif")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _write_ome_tiff(root / rel, img.pixels, img.channels, cfg.pixel_size_um)
        rows.append({"id": m["id"], "paths": rel.as_posix(), "channels": ";".join(img.channels),
                     "source": f"synthetic:{m['experiment']}", "pixel_size_um": cfg.pixel_size_um,
                     "experiment": m["experiment"], "plate": m["plate"], "well": m["well"],
                     "site": m["site"], "treatment": m["treatment"], "label": m["treatment"]})
    manifest = root / "manifest.csv"
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            pd.DataFrame(rows).to_csv(fh, index=False)
        os.replace(tmp, manifest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return manifest


def _write_ome_tiff(path: Path, pixels: np.ndarray, names: list[str], px_um: float) -> None:
    import tifffile

    metadata = {"axes": "CYX", "Channel": {"Name": list(names)},
                "PhysicalSizeX": px_um, "PhysicalSizeY": px_um,
                "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
    tifffile.imwrite(path, pixels, ome=True, metadata=metadata)


# ---------------------------------------------------------------------------- cell rendering
_AMP = {"dna": 1500.0, "er": 900.0, "rna": 800.0, "agp": 900.0, "actin": 1000.0,
        "mito": 1100.0, "gfp": 800.0}  # peak ADU of each compartment at unit gain
_NUC_R, _CELL_R = 4.6, 9.5  # mean nucleus / cell radius in pixels


@dataclass
class _Geometry:
    """Cells of one image: per-cell parameters (length n) and per-pixel maps (H, W)."""

    centre: np.ndarray  # (n, 2) cell centre (y, x)
    nuc_centre: np.ndarray  # (n, 2)
    nuc_r: np.ndarray  # (n,) mean nucleus radius
    dna: np.ndarray  # (n,) DNA content (2 for cells in G2)
    nuc_each: np.ndarray  # (n, H, W) soft nucleus masks
    rho_n: np.ndarray  # (n, H, W) normalised radius in each nucleus' ellipse
    own: np.ndarray  # (H, W) index of the cell a pixel belongs to
    inside: np.ndarray  # (H, W) bool, pixel belongs to some cell
    cell: np.ndarray  # (H, W) soft cell-body mask
    nuc: np.ndarray  # (H, W) soft nucleus mask
    dist: np.ndarray  # (H, W) distance in pixels from the own nucleus' edge

    @property
    def cyto(self) -> np.ndarray:
        return self.cell * (1.0 - self.nuc)

    def pm(self, per_cell: np.ndarray) -> np.ndarray:
        """A per-cell value as a per-pixel map (0 outside cells)."""
        return np.where(self.inside, per_cell[self.own], 0.0)


def _noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return f / (f.std() + 1e-8)


def _splat(size: int, ys: np.ndarray, xs: np.ndarray, w: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian spots of peak ~``w`` at (ys, xs)."""
    img = np.zeros((size, size))
    iy, ix = np.rint(ys).astype(int), np.rint(xs).astype(int)
    ok = (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size)
    np.add.at(img, (iy[ok], ix[ok]), w[ok])
    return ndimage.gaussian_filter(img, sigma) * (2.0 * np.pi * sigma**2)


def _place(rng: np.random.Generator, size: int, radii: np.ndarray) -> np.ndarray:
    """Centres that keep cells apart where possible (best of 40 candidates each)."""
    pts: list[np.ndarray] = []
    for i, r in enumerate(radii):
        cand = rng.uniform(2.0, size - 2.0, (40, 2))
        if not pts:
            pts.append(cand[0])
            continue
        d = np.linalg.norm(cand[:, None] - np.array(pts)[None], axis=-1)
        score = (d / (0.8 * (r + radii[:i])[None])).min(axis=1)
        ok = np.flatnonzero(score >= 1.0)
        pts.append(cand[ok[0]] if ok.size else cand[int(np.argmax(score))])
    return np.array(pts)


def _ellipse_rho(
    rng: np.random.Generator, grid: np.ndarray, centre: np.ndarray, r: np.ndarray,
    aspect: np.ndarray, wobble: float,
) -> np.ndarray:
    """(n, H, W) normalised radius of randomly oriented, radially perturbed ellipses."""
    n = len(r)
    d = grid[None] - centre[:, :, None, None]  # (n, 2, H, W)
    th = rng.uniform(0, np.pi, n)[:, None, None]
    u = d[:, 1] * np.cos(th) + d[:, 0] * np.sin(th)
    v = -d[:, 1] * np.sin(th) + d[:, 0] * np.cos(th)
    s = np.sqrt(aspect)[:, None, None]
    rho = np.hypot(u / (r[:, None, None] * s), v * s / r[:, None, None])
    phi = np.arctan2(v, u)
    pert = np.ones_like(rho)
    for k in (2, 3, 4, 5):
        amp = rng.normal(0, wobble, n)[:, None, None]
        pert += amp * np.cos(k * phi + rng.uniform(0, 2 * np.pi, n)[:, None, None])
    return rho / pert


def _geometry(rng: np.random.Generator, size: int, n: int, swell: np.ndarray) -> _Geometry:
    g2 = rng.random(n) < 0.2
    nuc_r = _NUC_R * np.exp(rng.normal(0, 0.1, n)) * np.where(g2, 1.12, 1.0) * (1 + 0.28 * swell)
    cell_r = np.maximum(_CELL_R * np.exp(rng.normal(0, 0.12, n)), 1.6 * nuc_r)
    centre = _place(rng, size, cell_r)
    ang = rng.uniform(0, 2 * np.pi, n)
    nuc_centre = centre + (rng.uniform(0, 0.15, n) * cell_r)[:, None] * np.stack(
        [np.sin(ang), np.cos(ang)], 1)
    grid = np.mgrid[0:size, 0:size].astype(float)
    rho_c = _ellipse_rho(rng, grid, centre, cell_r, rng.uniform(1.0, 1.4, n), 0.06)
    rho_n = _ellipse_rho(rng, grid, nuc_centre, nuc_r, rng.uniform(1.0, 1.3, n), 0.02)
    nuc_each = expit((1.0 - rho_n) * nuc_r[:, None, None] * 2.5)
    in_nuc = nuc_each.max(0) > 0.05
    own = np.where(in_nuc, nuc_each.argmax(0), rho_c.argmin(0))
    inside = in_nuc | (rho_c.min(0) < 1.0)
    rho_c_own = np.take_along_axis(rho_c, own[None], 0)[0]
    rho_n_own = np.take_along_axis(rho_n, own[None], 0)[0]
    cell = np.where(inside, np.maximum(expit((1.0 - rho_c_own) * 7.0), nuc_each.max(0)), 0.0)
    dist = np.clip(rho_n_own - 1.0, 0, None) * nuc_r[own]
    return _Geometry(centre, nuc_centre, nuc_r, np.where(g2, 1.9, 1.0), nuc_each, rho_n, own,
                     inside, cell, nuc_each.max(0), dist)


def _sample_in(rng: np.random.Generator, weight: np.ndarray, n: int) -> np.ndarray:
    """(n, 2) sub-pixel positions drawn with probability proportional to ``weight``."""
    w = weight.ravel()
    if n < 1 or w.sum() <= 0:
        return np.zeros((0, 2))
    idx = rng.choice(w.size, n, p=w / w.sum())
    yx = np.stack(np.unravel_index(idx, weight.shape), 1).astype(float)
    return yx + rng.uniform(-0.5, 0.5, yx.shape)


def _dna(rng: np.random.Generator, g: _Geometry, tex: np.ndarray, rel: np.ndarray) -> np.ndarray:
    density = g.dna * (_NUC_R / g.nuc_r) ** 2  # same DNA over a larger area: dimmer
    dome = 0.7 + 0.3 * np.sqrt(np.clip(1.0 - g.rho_n**2, 0, None))
    nuclei = (g.nuc_each * dome * density[:, None, None]).sum(0)
    size = g.own.shape[0]
    return nuclei * (1.0 + 0.25 * _noise(rng, size, 0.7) + 0.15 * _noise(rng, size, 1.8)) * 0.6


def _er(rng: np.random.Generator, g: _Geometry, tex: np.ndarray, rel: np.ndarray) -> np.ndarray:
    ridges = np.exp(-((_noise(rng, g.own.shape[0], 1.0) / 0.45) ** 2))  # reticular network
    lam = 3.5 / (1.0 + 1.2 * g.pm(rel))  # relocalisation: tighter around the nucleus
    body = g.cyto * (0.2 + np.exp(-g.dist / lam)) * (0.3 + 0.7 * ridges)
    rim = (np.exp(-(((g.rho_n - 1.0) * g.nuc_r[:, None, None] / 0.8) ** 2))).max(0)
    return body + 0.5 * rim * g.cell


def _rna(rng: np.random.Generator, g: _Geometry, tex: np.ndarray, rel: np.ndarray) -> np.ndarray:
    k = rng.integers(1, 4, len(g.nuc_r))
    cell = np.repeat(np.arange(len(k)), k)
    ang, rad = rng.uniform(0, 2 * np.pi, cell.size), 0.45 * np.sqrt(rng.random(cell.size))
    off = (rad * g.nuc_r[cell])[:, None] * np.stack([np.sin(ang), np.cos(ang)], 1)
    yx = g.nuc_centre[cell] + off
    size = g.own.shape[0]
    spots = _splat(size, yx[:, 0], yx[:, 1], 0.8 * (1.0 + 1.5 * rel[cell]), 0.9)
    return spots + 0.25 * g.nuc + 0.15 * g.cyto * (1.0 + 0.3 * _noise(rng, size, 1.5))


def _cortex_fibres(rng: np.random.Generator, g: _Geometry, rel: np.ndarray,
                   fibre_w: float) -> np.ndarray:
    lab = np.where(g.inside, g.own + 1, 0)
    edge = np.zeros(lab.shape, bool)
    for ax in (0, 1):
        diff = np.diff(lab, axis=ax) != 0
        edge[tuple(slice(1, None) if a == ax else slice(None) for a in (0, 1))] |= diff
        edge[tuple(slice(None, -1) if a == ax else slice(None) for a in (0, 1))] |= diff
    cortex = ndimage.gaussian_filter(edge.astype(float), 0.7) * 1.6 * (lab > 0)
    phi = g.pm(rng.uniform(0, np.pi, len(g.nuc_r)))
    yy, xx = np.mgrid[0:lab.shape[0], 0:lab.shape[1]]
    t = (xx - g.pm(g.centre[:, 1])) * np.cos(phi) + (yy - g.pm(g.centre[:, 0])) * np.sin(phi)
    stripes = ((1.0 + np.cos(2 * np.pi * t / 3.2 + 1.5 * _noise(rng, lab.shape[0], 2.0))) / 2) ** 6
    return (0.8 + 1.0 * g.pm(rel)) * cortex + fibre_w * stripes * g.cyto + 0.12 * g.cyto


def _actin(rng: np.random.Generator, g: _Geometry, tex: np.ndarray,
           rel: np.ndarray) -> np.ndarray:
    return _cortex_fibres(rng, g, rel, 0.7)


def _agp(rng: np.random.Generator, g: _Geometry, tex: np.ndarray, rel: np.ndarray) -> np.ndarray:
    ang = rng.uniform(0, 2 * np.pi, len(g.nuc_r))
    yx = g.nuc_centre + (1.2 * g.nuc_r)[:, None] * np.stack([np.sin(ang), np.cos(ang)], 1)
    golgi = _splat(g.own.shape[0], yx[:, 0], yx[:, 1], np.full(len(ang), 0.8), 1.4)
    return _cortex_fibres(rng, g, rel, 0.3) + golgi * g.cell


def _mito(rng: np.random.Generator, g: _Geometry, tex: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Filaments; under ``texture`` fragmented into coarse, perinuclear puncta."""
    yx = _sample_in(rng, g.cyto * np.exp(-g.dist / 6.0), int(g.cyto.sum() / 5.0))
    cell = g.own[np.clip(np.rint(yx[:, 0]).astype(int), 0, g.own.shape[0] - 1),
                 np.clip(np.rint(yx[:, 1]).astype(int), 0, g.own.shape[1] - 1)]
    frag = rng.random(len(cell)) < np.clip(tex[cell], 0, 1)
    pull = np.clip(0.3 * tex[cell] + 0.4 * rel[cell], 0, 0.6)[:, None]
    yx = yx + pull * (g.nuc_centre[cell] - yx)
    size = g.own.shape[0]
    fy, fx = yx[~frag, 0], yx[~frag, 1]
    th, length = rng.uniform(0, np.pi, fy.size), rng.uniform(3.0, 7.0, fy.size)
    t = np.linspace(-0.5, 0.5, 6)[None] * length[:, None]
    ys, xs = fy[:, None] + t * np.sin(th)[:, None], fx[:, None] + t * np.cos(th)[:, None]
    fil = _splat(size, ys.ravel(), xs.ravel(), np.full(ys.size, 0.45), 0.6)
    puncta = _splat(size, yx[frag, 0], yx[frag, 1], np.full(int(frag.sum()), 0.9), 1.1)
    return (fil + puncta) * g.cell * (0.3 + 0.7 * (1.0 - g.nuc))


def _gfp(rng: np.random.Generator, g: _Geometry, tex: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Diffuse cytoplasm; ``intensity`` moves it into the nucleus (translocation)."""
    in_nuc = (g.nuc_each * (0.3 + 1.0 * rel)[:, None, None]).sum(0)
    diffuse = 1.0 + 0.2 * _noise(rng, g.own.shape[0], 2.0)
    return (g.cyto * (1.0 - 0.4 * g.pm(rel)) + in_nuc) * diffuse


def _granules(rng: np.random.Generator, g: _Geometry, tex: np.ndarray) -> np.ndarray:
    weight = g.cyto * g.pm(tex)
    yx = _sample_in(rng, weight, int(weight.sum() / 10.0))
    return _splat(g.own.shape[0], yx[:, 0], yx[:, 1], np.full(len(yx), 0.9), 1.1)


_RENDER = {"dna": _dna, "er": _er, "rna": _rna, "agp": _agp, "actin": _actin,
           "mito": _mito, "gfp": _gfp}


def _render_planes(
    rng: np.random.Generator, size: int, compartments: tuple[str, ...], n_cells: int,
    strength: np.ndarray, swell: np.ndarray, texture: int | None, intensity: int | None,
) -> np.ndarray:
    """(C, H, W) float signal in ADU: one plane per compartment, treatment effects applied to
    the channels ``texture``/``intensity`` (indices or None) with per-cell ``strength``."""
    g = _geometry(rng, size, n_cells, swell)
    none = np.zeros(n_cells)
    out = np.empty((len(compartments), size, size))
    for c, comp in enumerate(compartments):
        tex, rel = (strength if c == texture else none), (strength if c == intensity else none)
        plane = _RENDER[comp](rng, g, tex, rel)
        if comp != "mito" and tex.any():  # granular aggregates replace part of the pattern
            plane = plane * (1.0 - 0.6 * g.pm(tex)) + _granules(rng, g, tex)
        bright = g.pm(np.exp(rng.normal(0, 0.25, n_cells)) * (1.0 + 0.6 * rel))
        autofluor = 0.03 * np.exp(0.3 * _noise(rng, size, 6.0))
        out[c] = _AMP[comp] * (plane * bright + autofluor)
    return out

__all__ = ["DEFAULT_EXPERIMENTS", "TREATMENTS", "ExperimentSpec", "SyntheticImage",
           "SyntheticScreenConfig", "generate_screen", "write_screen"]
