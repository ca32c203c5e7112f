"""Physically plausible synthetic scenes: land cover, Sentinel-2 L2A reflectance, Sentinel-1 sigma0, clouds.

One call of :func:`make_scene` turns a random generator into one sample (pure arrays, no I/O), so the
same seed always gives the same arrays. The physics, in short (numbers are our choices, inside the
ranges reported for Sentinel data):

- land cover: Voronoi parcels (cropland, grassland, barren land), forest patches from thresholded
  fractal noise, a settlement with a street grid and roads, lakes and a meandering river;
- optics: per-class 12-band L2A spectra; cropland mixes a crop and a soil spectrum by a per-parcel
  vegetation fraction; per-parcel gain, row texture on fields, fractal texture and sensor noise;
- SAR: per-class VV/VH sigma0 in dB with per-parcel moisture/roughness offsets large enough that
  grassland, cropland and barren land overlap, an incidence-angle trend, bright urban scatterers, and
  multiplicative gamma speckle (ENL 4.4) applied in linear power;
- clouds: opaque cumulus with soft edges, haze and streaky cirrus composited over the ground, and
  shadows displaced along the sun azimuth; under an opaque core the ground signal is gone;
- time: a few parcels change class between the SAR date and the optical (label) date.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cloudlulc import schema

WATER, FOREST, GRASS, BARREN, BUILT, CROP = (c.id for c in schema.CLASSES)

# Mean L2A surface reflectance per class, bands in schema.S2_BANDS order.
SPECTRA = np.array(
    [
        [0.060, 0.055, 0.045, 0.030, 0.022, 0.016, 0.013, 0.011, 0.010, 0.006, 0.004, 0.003],  # water
        [0.020, 0.026, 0.048, 0.026, 0.075, 0.205, 0.262, 0.285, 0.295, 0.290, 0.140, 0.065],  # forest
        [0.035, 0.046, 0.082, 0.062, 0.122, 0.238, 0.288, 0.305, 0.318, 0.305, 0.245, 0.142],  # grassland
        [0.095, 0.125, 0.175, 0.225, 0.248, 0.265, 0.278, 0.290, 0.300, 0.298, 0.360, 0.305],  # barren
        [0.090, 0.098, 0.118, 0.132, 0.140, 0.150, 0.160, 0.168, 0.172, 0.170, 0.205, 0.182],  # built-up
        [0.038, 0.048, 0.092, 0.070, 0.160, 0.315, 0.395, 0.425, 0.438, 0.418, 0.262, 0.150],  # crop canopy
    ],
    dtype=np.float32,
)
SOIL = np.array([0.070, 0.090, 0.130, 0.170, 0.190, 0.205, 0.215, 0.225, 0.235, 0.235, 0.300, 0.255], np.float32)
CLOUD_SPECTRUM = np.array([0.62, 0.61, 0.60, 0.60, 0.60, 0.60, 0.60, 0.60, 0.60, 0.55, 0.42, 0.30], np.float32)
HAZE_SPECTRUM = np.array([0.30, 0.27, 0.22, 0.18, 0.16, 0.15, 0.14, 0.13, 0.13, 0.12, 0.07, 0.04], np.float32)
CIRRUS_SPECTRUM = np.array([0.22, 0.22, 0.22, 0.22, 0.22, 0.22, 0.22, 0.22, 0.22, 0.20, 0.17, 0.12], np.float32)
TEXTURE_STRENGTH = np.array([0.04, 0.12, 0.08, 0.10, 0.15, 0.06], np.float32)

# Mean sigma0 in dB (VV, VH) per class and the spread of per-region offsets (soil moisture, roughness).
SAR_MEAN_DB = np.array(
    [[-21.0, -28.0], [-7.5, -13.0], [-11.5, -18.0], [-12.0, -18.8], [-4.5, -11.0], [-11.0, -17.5]], dtype=np.float32
)
SAR_REGION_SPREAD_DB = np.array([2.0, 0.8, 1.8, 1.8, 2.5, 1.8], np.float32)
SPECKLE_LOOKS = 4.4

# Scene archetypes: weights of cropland/grassland/barren among parcels and extent of other covers.
ARCHETYPES = {
    # name: (parcel class weights (crop, grass, barren), forest share, settlement?, water chances)
    "agricultural": ((0.70, 0.22, 0.08), 0.12, 0.35, 0.45),
    "forested": ((0.35, 0.50, 0.15), 0.55, 0.15, 0.50),
    "peri-urban": ((0.45, 0.40, 0.15), 0.10, 1.00, 0.40),
    "arid": ((0.20, 0.35, 0.45), 0.03, 0.25, 0.20),
    "mixed": ((0.45, 0.40, 0.15), 0.30, 0.45, 0.55),
}
ARCHETYPE_WEIGHTS = np.array([0.30, 0.22, 0.16, 0.10, 0.22])


@dataclass(frozen=True)
class Physics:
    """Knobs of the generator's physics, for robustness runs on worlds the models were not tuned on.

    The defaults are the generator's own world (the same bytes as before the knobs existed).
    """

    cloud_thickness: float = 1.0
    """Scales how fast clouds thicken inside their outline: above 1 more of each cloud is opaque."""
    thin_cloud_chance: float = 0.25
    """Chance of a haze layer, and separately of a cirrus layer, over a patch."""
    shadow_offset: float = 1.0
    """Scales the cloud-to-shadow distance (8-45 px at 512 px by default)."""
    sar_separability: float = 1.0
    """Scales the distance of grassland, cropland and barren land's mean backscatter from their common mean."""
    parcel_weights: tuple[float, float, float] | None = None
    """(cropland, grassland, barren) shares among parcels for every scene; None keeps each archetype's."""
    change_rate: float = 0.05
    """Share of parcels whose class changes between the SAR and the optical date (a longer gap, more change)."""

    def __post_init__(self) -> None:
        for name in ("cloud_thickness", "shadow_offset", "sar_separability"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("thin_cloud_chance", "change_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.parcel_weights is not None and (
            len(self.parcel_weights) != 3 or min(self.parcel_weights) < 0 or abs(sum(self.parcel_weights) - 1) > 1e-6
        ):
            raise ValueError(f"parcel_weights must be three shares summing to 1, got {self.parcel_weights}")


DEFAULT_PHYSICS = Physics()


@dataclass
class Scene:
    """One synthetic sample as arrays on a size x size grid."""

    label: np.ndarray  # uint8 [H,W], land cover at the optical date
    sar_land_cover: np.ndarray  # uint8 [H,W], land cover at the SAR date
    clear: np.ndarray  # float32 [12,H,W] reflectance
    cloudy: np.ndarray  # float32 [12,H,W] reflectance
    sar_db: np.ndarray  # float32 [2,H,W] VV, VH sigma0 in dB
    cloud_mask: np.ndarray  # uint8 [H,W] schema.CLOUD_* codes
    archetype: str
    target_cloud_cover: float


def fractal_noise(
    rng: np.random.Generator,
    size: int,
    base_cells: int = 4,
    octaves: int = 5,
    persistence: float = 0.55,
    stretch: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Zero-mean, unit-std value noise: octaves of random grids upsampled with splines.

    ``stretch`` elongates features along rows or columns (cirrus streaks).
    """
    total = np.zeros((size, size), np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        cells = base_cells * 2**octave
        shape = (max(2, int(cells * stretch[0])) + 1, max(2, int(cells * stretch[1])) + 1)
        if min(shape) > size // 2:
            break
        grid = rng.standard_normal(shape).astype(np.float32)
        zoom = (size / shape[0], size / shape[1])
        order = 3 if octave < 2 else 1  # cubic where features are large; linear is 4x cheaper and looks the same
        total += amplitude * ndimage.zoom(grid, zoom, order=order, mode="reflect", grid_mode=True)[:size, :size]
        amplitude *= persistence
    total -= total.mean()
    return total / (total.std() + 1e-6)


def voronoi_parcels(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """Parcel ids [H,W] from nearest jittered seed points (polygonal fields)."""
    seeds = np.zeros((size, size), bool)
    rows = rng.integers(0, size, count)
    cols = rng.integers(0, size, count)
    seeds[rows, cols] = True
    _, (nearest_rows, nearest_cols) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    seed_id = np.full((size, size), -1, np.int32)
    seed_id[rows, cols] = np.arange(count, dtype=np.int32)
    return seed_id[nearest_rows, nearest_cols]


def river_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A meandering river crossing the patch at a random angle."""
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - size / 2
    along = xx * np.cos(angle) + yy * np.sin(angle)
    across = -xx * np.sin(angle) + yy * np.cos(angle)
    centre = rng.uniform(-0.3, 0.3) * size
    for _ in range(3):
        wavelength = rng.uniform(0.3, 1.2) * size
        centre = centre + rng.uniform(0.02, 0.08) * size * np.sin(2 * np.pi * along / wavelength + rng.uniform(0, 6.3))
    half_width = rng.uniform(1.5, 9.0) * size / 512
    return np.abs(across - centre) < max(half_width, 1.0)


def road_mask(rng: np.random.Generator, size: int, count: int, width: float) -> np.ndarray:
    """Straight roads of ``width`` pixels across the patch."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    mask = np.zeros((size, size), bool)
    for _ in range(count):
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(0.1, 0.9) * size
        distance = np.abs((xx - size / 2) * np.sin(angle) - (yy - size / 2) * np.cos(angle) + offset - size / 2)
        mask |= distance < width / 2
    return mask


def land_cover(
    rng: np.random.Generator, size: int, physics: Physics = DEFAULT_PHYSICS
) -> tuple[np.ndarray, np.ndarray, str]:
    """(class map, region id map, archetype); regions carry per-parcel spectral and SAR variation."""
    archetype = str(rng.choice(list(ARCHETYPES), p=ARCHETYPE_WEIGHTS))
    parcel_weights, forest_share, settlement_chance, water_chance = ARCHETYPES[archetype]
    parcel_weights = physics.parcel_weights or parcel_weights
    scale = size / 512
    parcels = voronoi_parcels(rng, size, max(4, int(rng.uniform(40, 110) * scale**2)))
    parcel_count = int(parcels.max()) + 1
    parcel_class = rng.choice([CROP, GRASS, BARREN], size=parcel_count, p=parcel_weights).astype(np.uint8)
    classes = parcel_class[parcels]
    regions = parcels.copy()

    forest_noise = fractal_noise(rng, size, base_cells=3, octaves=5)
    share = float(np.clip(rng.normal(forest_share, 0.08), 0.0, 0.9))
    if share > 0.01:
        classes[forest_noise > np.quantile(forest_noise, 1 - share)] = FOREST

    if rng.random() < settlement_chance:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        cy, cx, radius = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.12, 0.35)
        bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        town = bump + 0.25 * fractal_noise(rng, size, base_cells=6, octaves=3) > 0.6
        block = max(int(rng.uniform(14, 30) * scale), 3)
        streets = (np.arange(size) % block) < max(int(2 * scale), 1)
        built = town & (rng.random((size, size)) < 0.93)
        built |= town & (streets[:, None] | streets[None, :])
        classes[town & ~built] = GRASS  # parks and gardens
        classes[built] = BUILT
    classes[road_mask(rng, size, int(rng.integers(0, 3)), width=max(rng.uniform(2, 4) * scale, 1.5))] = BUILT

    if rng.random() < water_chance:
        lake_noise = fractal_noise(rng, size, base_cells=3, octaves=4)
        classes[lake_noise > np.quantile(lake_noise, 1 - rng.uniform(0.01, 0.12))] = WATER
    if rng.random() < water_chance:
        classes[river_mask(rng, size)] = WATER

    # Non-parcel classes get one region per class so that they vary between scenes, not inside them.
    non_parcel = ~np.isin(classes, [CROP, GRASS, BARREN])
    regions[non_parcel] = parcel_count + classes[non_parcel]
    return classes, regions, archetype


def temporal_change(
    rng: np.random.Generator, classes: np.ndarray, regions: np.ndarray, rate: float = DEFAULT_PHYSICS.change_rate
) -> np.ndarray:
    """Land cover at the SAR date: a few fields harvested, ploughed or sown since (or before) then."""
    sar_classes = classes.copy()
    parcel_ids = np.unique(regions[np.isin(classes, [CROP, GRASS, BARREN])])
    changed = parcel_ids[rng.random(parcel_ids.size) < rate]
    transitions = {CROP: BARREN, BARREN: CROP, GRASS: CROP}
    for parcel in changed:
        inside = regions == parcel
        current = int(np.bincount(classes[inside]).argmax())
        sar_classes[inside & (classes == current)] = transitions.get(current, current)
    return sar_classes


def optical_reflectance(rng: np.random.Generator, classes: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Clear-sky L2A reflectance [12,H,W] from class spectra, per-region variation and texture."""
    size = classes.shape[0]
    region_count = int(regions.max()) + 1
    region_class = np.zeros(region_count, np.uint8)
    region_class[regions.ravel()] = classes.ravel()
    # Per-region spectrum: class mean, crop mixed with soil by vegetation fraction, per-region gain.
    table = SPECTRA[region_class].copy()
    vegetation = rng.uniform(0.45, 1.0, region_count).astype(np.float32)
    grass_cover = rng.uniform(0.75, 1.0, region_count).astype(np.float32)
    crop = region_class == CROP
    grass = region_class == GRASS
    table[crop] = vegetation[crop, None] * SPECTRA[CROP] + (1 - vegetation[crop, None]) * SOIL
    table[grass] = grass_cover[grass, None] * SPECTRA[GRASS] + (1 - grass_cover[grass, None]) * SOIL
    table *= rng.normal(1.0, 0.06, (region_count, 1)).astype(np.float32)
    table *= rng.normal(1.0, 0.025, (region_count, 12)).astype(np.float32)
    reflectance = np.moveaxis(table[regions], -1, 0)  # [12,H,W]

    texture = fractal_noise(rng, size, base_cells=16, octaves=4, persistence=0.6)
    strength = TEXTURE_STRENGTH[classes]
    # Crop rows: stripes with a per-parcel orientation and period.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi, region_count).astype(np.float32)[regions]
    period = rng.uniform(3.0, 8.0, region_count).astype(np.float32)[regions]
    rows = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    modulation = 1 + strength * texture + np.where(classes == CROP, 0.06 * rows, 0.0)
    reflectance *= modulation[None].astype(np.float32)
    reflectance += np.float32(0.004) * rng.standard_normal(reflectance.shape, dtype=np.float32)
    return np.clip(reflectance, 0.0005, 1.0)


def add_clouds(
    rng: np.random.Generator, clear: np.ndarray, target_cover: float, physics: Physics = DEFAULT_PHYSICS
) -> tuple[np.ndarray, np.ndarray]:
    """Composite shadows, haze, cirrus and opaque clouds over ``clear``; return (cloudy, cloud codes)."""
    size = clear.shape[-1]
    alpha_cloud = np.zeros((size, size), np.float32)
    if target_cover > 0.002:
        field = fractal_noise(rng, size, base_cells=int(rng.integers(2, 5)), octaves=6, persistence=0.6)
        threshold = np.quantile(field, 1 - target_cover)
        thickness = (field - threshold) / rng.uniform(0.25, 0.8) * physics.cloud_thickness
        alpha_cloud = np.clip(0.15 + thickness, 0.0, 1.0) * (field > threshold)
    alpha_haze = np.zeros_like(alpha_cloud)
    if rng.random() < physics.thin_cloud_chance:
        haze = fractal_noise(rng, size, base_cells=2, octaves=3)  # patchy: about half the patch
        alpha_haze = np.clip(rng.uniform(0.15, 0.35) * (haze - rng.uniform(-0.3, 0.8)), 0.0, 0.45)
    alpha_cirrus = np.zeros_like(alpha_cloud)
    if rng.random() < physics.thin_cloud_chance:
        stretch = (1.0, 0.2) if rng.random() < 0.5 else (0.2, 1.0)
        streaks = fractal_noise(rng, size, base_cells=10, octaves=3, stretch=stretch)
        alpha_cirrus = np.clip(rng.uniform(0.15, 0.35) * streaks, 0.0, 0.4)

    # Shadows: the thicker part of the clouds, displaced along the sun azimuth.
    azimuth = rng.uniform(0, 2 * np.pi)
    distance = rng.uniform(8, 45) * size / 512 * physics.shadow_offset
    shift = (round(distance * np.sin(azimuth)), round(distance * np.cos(azimuth)))
    shadow = ndimage.shift(np.clip(alpha_cloud * 1.4 - 0.2, 0, 1), shift, order=0, mode="constant")
    ground = clear * (1.0 - 0.65 * shadow)[None]

    cloudy = ground
    for alpha, spectrum in (
        (alpha_haze, HAZE_SPECTRUM),
        (alpha_cirrus, CIRRUS_SPECTRUM),
        (alpha_cloud, CLOUD_SPECTRUM * rng.normal(1.0, 0.06)),
    ):
        cloudy = cloudy * (1 - alpha)[None] + alpha[None] * spectrum[:, None, None]
    cloudy = cloudy + np.float32(0.004) * rng.standard_normal(cloudy.shape, dtype=np.float32)

    total_alpha = 1 - (1 - alpha_cloud) * (1 - alpha_haze) * (1 - alpha_cirrus)
    mask = np.full((size, size), schema.CLOUD_CLEAR, np.uint8)
    mask[(shadow > 0.1) & (total_alpha < 0.1)] = schema.CLOUD_SHADOW
    mask[total_alpha >= 0.1] = schema.CLOUD_THIN
    mask[alpha_cloud >= 0.9] = schema.CLOUD_OPAQUE
    return np.clip(cloudy, 0.0005, 1.0).astype(np.float32), mask


def sar_backscatter(
    rng: np.random.Generator,
    classes: np.ndarray,
    regions: np.ndarray,
    separability: float = DEFAULT_PHYSICS.sar_separability,
) -> np.ndarray:
    """VV/VH sigma0 in dB [2,H,W] with per-region offsets, texture, incidence trend and speckle."""
    size = classes.shape[0]
    region_count = int(regions.max()) + 1
    region_class = np.zeros(region_count, np.uint8)
    region_class[regions.ravel()] = classes.ravel()
    offsets = rng.normal(0.0, 1.0, region_count).astype(np.float32) * SAR_REGION_SPREAD_DB[region_class]
    depolarisation = rng.normal(0.0, 0.7, region_count).astype(np.float32)  # VH/VV ratio varies
    texture = 0.8 * fractal_noise(rng, size, base_cells=12, octaves=3)
    trend = np.linspace(-0.8, 0.8, size, dtype=np.float32)[None, :] * rng.choice([-1.0, 1.0])
    means = SAR_MEAN_DB.copy()
    if separability != 1.0:
        parcels = [GRASS, BARREN, CROP]
        centre = means[parcels].mean(axis=0)
        means[parcels] = centre + separability * (means[parcels] - centre)
    base = means[classes] + (offsets[regions] + texture + trend)[..., None]  # [H,W,2]
    base[..., 1] += depolarisation[regions]
    urban = classes == BUILT
    scatterers = urban & (rng.random((size, size)) < 0.04)
    base[scatterers] += rng.uniform(4, 12, (int(scatterers.sum()), 1)).astype(np.float32)
    power = schema.db_to_linear(np.moveaxis(base, -1, 0))
    speckle = rng.gamma(SPECKLE_LOOKS, 1.0 / SPECKLE_LOOKS, power.shape).astype(np.float32)
    return schema.linear_to_db(power * speckle)


def sample_cloud_cover(rng: np.random.Generator) -> float:
    """Target cloud cover of a patch: spread over 0-100 %, with clear and overcast patches common."""
    draw = rng.random()
    if draw < 0.15:
        return 0.0
    if draw < 0.23:
        return float(rng.uniform(0.95, 1.0))
    return float(rng.uniform(0.0, 1.0) ** 1.4)  # haze and cirrus add thin cover on top


def make_scene(rng: np.random.Generator, size: int = 512, physics: Physics = DEFAULT_PHYSICS) -> Scene:
    """One synthetic sample; deterministic given the generator state and the physics."""
    classes, regions, archetype = land_cover(rng, size, physics)
    sar_classes = temporal_change(rng, classes, regions, physics.change_rate)
    clear = optical_reflectance(rng, classes, regions)
    cover = sample_cloud_cover(rng)
    cloudy, mask = add_clouds(rng, clear, cover, physics)
    sar_db = sar_backscatter(rng, sar_classes, regions, physics.sar_separability)
    return Scene(classes.astype(np.uint8), sar_classes.astype(np.uint8), clear, cloudy, sar_db, mask, archetype, cover)
