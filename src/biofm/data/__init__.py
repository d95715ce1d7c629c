"""biofm.data: normalisation, crops, channel-agnostic augmentations, multi-crop views,
packed collation, the manifest dataset and tiling for embedding."""

from biofm.data.badsamples import BadSampleCounter, TooManyBadSamplesError, check_bad_fraction
from biofm.data.collate import Skipped, ViewBatch, collate_images, collate_views
from biofm.data.crops import Crop, PreparedField, find_dna_channel, nucleus_centroids
from biofm.data.dataset import ManifestDataset, add_image_sizes
from biofm.data.normalize import NormalizeConfig, normalize_pixels, normalize_sample
from biofm.data.rng import generator_for
from biofm.data.tiling import TileViews, tiles_for_embedding
from biofm.data.views import MultiCropConfig, MultiCropViews, SingleView, Transform, View

__all__ = [
    "BadSampleCounter",
    "Crop",
    "ManifestDataset",
    "MultiCropConfig",
    "MultiCropViews",
    "NormalizeConfig",
    "PreparedField",
    "SingleView",
    "Skipped",
    "TileViews",
    "TooManyBadSamplesError",
    "Transform",
    "View",
    "ViewBatch",
    "add_image_sizes",
    "check_bad_fraction",
    "collate_images",
    "collate_views",
    "find_dna_channel",
    "generator_for",
    "normalize_pixels",
    "normalize_sample",
    "nucleus_centroids",
    "tiles_for_embedding",
]
