"""Export a biofm encoder as a BioImage Model Zoo (bioimage.io, format 0.5) package.

A package fixes its input channels (names and order), so there is one package per channel
configuration. Its input is one raw tile (batch, channel, y, x) of the card's input size; the
package's preprocessing reproduces biofm's per-image, per-channel percentile scaling
(``ensure_dtype`` float32, ``scale_range`` over y and x with the card's percentiles, ``clip``
to the card's range); its output ``embedding`` is (batch, index) with D entries. Weights ship
as a ``pytorch_state_dict`` (architecture imported from
:mod:`biofm.release.bioimageio_model`) and a traced ``torchscript`` child. Needs
``biofm[bioimageio]``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from biofm._version import __version__
from biofm.core.channels import DEFAULT_VOCAB
from biofm.core.errors import BadInputError, MissingExtraError
from biofm.data.norm_stats import NormStats
from biofm.release.bioimageio_model import (
    SCALE_RANGE_EPS,
    BioimageioEncoder,
    fixed_gain_offset,
    preprocess,
    test_image,
    traced_batch_dynamic,
)
from biofm.release.card import load_state_strict

CHADA_VIT_DOI = "10.48550/arXiv.2311.15264"
CHADA_VIT_TEXT = ("Bourriez et al. ChAda-ViT: Channel Adaptive Attention for Joint "
                  "Representation Learning of Heterogeneous Microscopy Images. CVPR 2024")
TOLERANCE = 1e-3  # absolute and relative, for bioimage.io's reproducibility checks
TAGS = ("fluorescence-light-microscopy", "high-content-imaging", "2d", "cells", "pytorch",
        "feature-extraction", "embedding", "self-supervised", "vision-transformer",
        "channel-adaptive", "biofm")


def export_bioimageio(model: nn.Module, out: str | Path, *, channels: Sequence[str],
                      input_size: int | None = None, sample: np.ndarray | None = None,
                      authors: list[str] | None = None, norm_stats: NormStats | None = None,
                      norm_group: str | None = None) -> Path:
    """Write ``model`` as a bioimage.io zip package at ``out`` for the ``channels`` given (names
    in the order the package takes them); returns the package's path.

    ``input_size`` is the tile side (default: the card's); ``sample`` a raw (C, H, W) image
    for the test tensors (center-cropped to the tile; default: a synthetic image);
    ``authors`` the package's authors. ``norm_stats`` (with ``norm_group`` for per-plate
    statistics) bakes fixed per-channel scaling into the package instead of per-image
    percentiles, so absolute intensity is kept."""
    card, size, names = _check_request(model, channels, input_size)
    if norm_stats is not None:
        norm_stats.check_for(card, card.get("weights_sha256"))
        ranges = norm_stats.ranges(names, norm_group, "--norm-stats")
        if ranges is not None:
            card = {**card, "normalize": {**dict(card.get("normalize") or {}),
                                          "scope": norm_stats.scope,
                                          "fixed_lo": ranges[0].tolist(),
                                          "fixed_hi": ranges[1].tolist()}}  # fmt: skip
    raw = test_image(sample, len(names), size)
    check_bioimageio_environment()
    from bioimageio.spec import save_bioimageio_package

    wrapper = BioimageioEncoder(card["model_name"], card.get("model_kwargs") or {},
                                DEFAULT_VOCAB.ids(names)).eval()
    load_state_strict(wrapper.encoder, model.state_dict(), card["name"])
    norm = dict(card.get("normalize") or {})
    with tempfile.TemporaryDirectory(prefix="biofm-bioimageio-") as tmp:
        d = Path(tmp)
        x = torch.from_numpy(preprocess(raw, norm))[None]  # (1, C, S, S)
        with torch.no_grad():
            emb = wrapper(x)  # (1, D)
            traced = torch.jit.trace(wrapper, x, check_trace=False)
        torch.save(wrapper.state_dict(), d / "weights.pt")
        torch.jit.save(traced, str(d / "weights.torchscript.pt"))
        np.save(d / "test_input.npy", raw[None])
        np.save(d / "test_output.npy", emb.numpy().astype(np.float32))
        _sample_tensors(d, raw, emb[0].numpy())
        (d / "README.md").write_text(_readme(card, names, size, wrapper), encoding="utf-8")
        (d / "environment.yaml").write_text(_environment(), encoding="utf-8")
        _cover(d / "cover.png", x[0].numpy(), emb[0].numpy(), names)
        descr = _describe(card, names, size, wrapper, d, authors)
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(save_bioimageio_package(descr, output_path=target))


def check_bioimageio_environment() -> None:
    """Raise if bioimageio.spec is missing or cannot write descriptions with this pydantic
    (bioimageio.spec 0.5.12 fails to serialise file entries under pydantic >= 2.14)."""
    try:
        import pydantic
        from bioimageio.spec.model import v0_5 as bio
    except ImportError as err:
        raise MissingExtraError("bioimageio.spec", "bioimageio") from err
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.pt"
        probe.write_bytes(b"probe")
        entry = bio.TorchscriptWeightsDescr(source=probe, pytorch_version=bio.Version("2.0"))
        try:
            bio.WeightsDescr(torchscript=entry).model_dump(mode="json", exclude_unset=True)
        except Exception as err:  # pydantic raises its serialisation error types here
            raise BadInputError(
                f"bioimageio.spec cannot write descriptions with pydantic "
                f"{pydantic.VERSION} ({type(err).__name__})",
                "pip install 'pydantic<2.14' (the version bioimageio.spec 0.5.12 supports), "
                "or newer bioimageio.spec and bioimageio.core releases") from err


# ---------------------------------------------------------------------- checks
def _check_request(model: nn.Module, channels: Sequence[str],
                   input_size: int | None) -> tuple[dict[str, Any], int, list[str]]:
    card = dict(getattr(model, "weights_card", None) or {})
    if "model_name" not in card:
        raise BadInputError("the model has no weights card (model.weights_card)",
                            "load it with biofm.load_model, or set model.weights_card = "
                            "make_card(model, name=...)")
    card.setdefault("name", card["model_name"])
    names = [str(c) for c in channels] if not isinstance(channels, str) else [channels]
    if not names or any(not n.strip() for n in names):
        raise BadInputError("no channels (or an empty channel name) for the package",
                            "pass the channel names in input order, e.g. "
                            "channels=['DNA', 'ER', 'RNA', 'AGP', 'Mito']")
    size = int(input_size or card.get("input_size") or 0)
    low = int(getattr(model, "min_size", 1))
    step = int(getattr(model, "size_multiple", 1))
    if size < low or size % step:
        raise BadInputError(
            f"input_size {size} does not fit {card['model_name']} (minimum {low} px, "
            f"a multiple of {step} px)",
            f"pass input_size as a multiple of {step} of at least {low}, e.g. "
            f"{max(low, step * round(max(size, 1) / step))}")
    return card, size, names


# ---------------------------------------------------------------------- package files
def _norm_text(norm: Mapping[str, Any], low: float, high: float, clip: Any) -> str:
    if "fixed_lo" in norm:
        pairs = ", ".join(f"[{a:g}, {b:g}]" for a, b in zip(norm["fixed_lo"], norm["fixed_hi"],
                                                            strict=True))  # fmt: skip
        return ("The package's preprocessing converts to float32, scales each channel with "
                f"fixed statistics (p{low}, p{high}) = {pairs} fitted over many images "
                f"(scope {norm.get('scope')}), so absolute intensity differences between "
                f"images are kept, and clips to [{clip[0]}, {clip[1]}]. Use it on images "
                "acquired like those the statistics were fitted on.")
    return ("The package's preprocessing converts to float32, scales every channel of every "
            f"image by its own percentiles (`(x - p{low}) / (p{high} - p{low})`, over y and x) "
            f"and clips to [{clip[0]}, {clip[1]}]: biofm's scope `image`. It erases absolute "
            "intensity differences between images; export with statistics "
            "(`--norm-stats`) to keep them.")


def _readme(card: Mapping[str, Any], names: list[str], size: int,
            wrapper: BioimageioEncoder) -> str:
    norm = dict(card.get("normalize") or {})
    low, high = norm.get("low", 1.0), norm.get("high", 99.8)
    clip = norm.get("clip", (-0.5, 3.0))
    order = "\n".join(f"{i}. `{n}` (biofm channel id {j})" for i, (n, j) in
                      enumerate(zip(names, wrapper.channel_ids.tolist(), strict=True)))
    evaluation = card.get("evaluation")
    px = card.get("pixel_size_um")
    return f"""# {card['name']}

A channel-adaptive image encoder from [biofm](https://pypi.org/project/biofm/) {__version__}
(architecture `{card['model_name']}`, ChAda-ViT family). It turns one multichannel
microscopy tile into one {wrapper.embed_dim}-dimensional embedding for profiling,
retrieval, clustering or linear probes. It does not segment or classify.

## Input
One tensor `image` with axes (batch, channel, y, x): {len(names)} channels in this order,
tiles of exactly {size} x {size} px{f' at about {px} um per pixel' if px else ''}:

{order}

Feed raw intensities (any numeric type). {_norm_text(norm, low, high, clip)} Larger
fields: cut them into {size} px tiles and average the embeddings.

## Output
One tensor `embedding` with axes (batch, index): {wrapper.embed_dim} floats per image
({_pooling(card)}). Compare embeddings with cosine similarity.

## Weights
`pytorch_state_dict` (module `biofm.release.bioimageio_model.BioimageioEncoder`, needs
`pip install biofm=={__version__}`) and `torchscript` (traced, any batch size where the
architecture allows it). Licence: {card.get('license', 'unknown')}.
{_training_lines(card)}{_evaluation_lines(evaluation)}
## Validation
The package's test tensors were computed with the package's own preprocessing; the
embedding matches `biofm.eval.embed_samples` on the same tile up to percentile rounding.
Check with `bioimageio test <package> --runtime-env currently-active`.

## Citation
{CHADA_VIT_TEXT}. https://doi.org/{CHADA_VIT_DOI}
"""


def _pooling(card: Mapping[str, Any]) -> str:
    pool = dict(card.get("config") or {}).get("pool", "cls")
    return "mean of the final-norm patch tokens" if pool == "mean" else "final-norm CLS token"


def _evaluation_lines(evaluation: Any) -> str:
    return f"\n## Evaluation\n```\n{evaluation}\n```\n" if evaluation else ""


def _training_lines(card: Mapping[str, Any]) -> str:
    training = card.get("training")
    if not isinstance(training, Mapping):
        return ""
    sources = training.get("sources") or []
    rows = "".join(f"- {s.get('dataset', s.get('source'))}: {s.get('images', '?')} images "
                   f"({s.get('licence', 'licence unknown')})\n"
                   for s in sources if isinstance(s, Mapping))
    head = f"Objective: {training.get('objective', 'unknown')}; steps: " \
           f"{training.get('steps', 'unknown')}.\n"
    return f"\n## Training\n{head}{rows}"


def _sample_tensors(d: Path, raw: np.ndarray, embedding: np.ndarray) -> None:
    """TIFF copies of the test tensors for viewers (bioimage.io's ``sample_tensor``)."""
    import tifffile

    tifffile.imwrite(d / "sample_input.tif", raw, photometric="minisblack")
    tifffile.imwrite(d / "sample_output.tif", embedding[None].astype(np.float32),
                     photometric="minisblack")


def _environment() -> str:
    torch_v = torch.__version__.split("+")[0]
    return ("name: biofm\nchannels:\n  - conda-forge\n  - nodefaults\ndependencies:\n"
            f"  - python>=3.10\n  - pytorch>={torch_v.rsplit('.', 1)[0]}\n  - pip\n"
            f"  - pip:\n      - biofm=={__version__}\n")


def _cover(path: Path, image: np.ndarray, embedding: np.ndarray, names: list[str]) -> None:
    """2:1 PNG: the normalised test channels, then the embedding as a strip."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    c = len(names)
    fig = plt.figure(figsize=(8, 4), dpi=80)
    grid = fig.add_gridspec(2, c, height_ratios=(3, 1))
    for i in range(c):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(image[i], cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(names[i], fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    ax.imshow(embedding[None], aspect="auto", cmap="coolwarm")
    ax.set_title(f"embedding ({embedding.size} dims)", fontsize=9)
    ax.axis("off")
    fig.savefig(path, format="png")
    plt.close(fig)


# ---------------------------------------------------------------------- description
def _scaling(bio: Any, norm: Mapping[str, Any]) -> Any:
    """Per-image percentiles (``scale_range``), or fixed statistics (``scale_linear`` along
    the channel axis: gain 1 / (hi - lo), offset -lo / (hi - lo))."""
    if "fixed_lo" not in norm:
        return bio.ScaleRangeDescr(kwargs=bio.ScaleRangeKwargs(
            axes=[bio.AxisId("y"), bio.AxisId("x")], eps=SCALE_RANGE_EPS,
            min_percentile=float(norm.get("low", 1.0)),
            max_percentile=float(norm.get("high", 99.8))))  # fmt: skip
    gain, offset = fixed_gain_offset(norm)
    return bio.ScaleLinearDescr(kwargs=bio.ScaleLinearAlongAxisKwargs(
        axis=bio.AxisId("channel"), gain=gain.tolist(), offset=offset.tolist()))  # fmt: skip


def _describe(card: Mapping[str, Any], names: list[str], size: int,
              wrapper: BioimageioEncoder, d: Path, authors: list[str] | None) -> Any:
    from bioimageio.spec.model import v0_5 as bio

    norm = dict(card.get("normalize") or {})
    clip = norm.get("clip", (-0.5, 3.0))
    # a trace that freezes the batch size is declared with batch size 1
    def batch() -> Any:
        return bio.BatchAxis() if traced_batch_dynamic(wrapper) else bio.BatchAxis(size=1)

    prep: list[Any] = [bio.EnsureDtypeDescr(kwargs=bio.EnsureDtypeKwargs(dtype="float32")),
                       _scaling(bio, norm),
                       bio.ClipDescr(kwargs=bio.ClipKwargs(min=float(clip[0]),
                                                           max=float(clip[1])))]  # fmt: skip
    image = bio.InputTensorDescr(
        id=bio.TensorId("image"), description="raw tile, channels in the listed order",
        axes=[batch(), bio.ChannelAxis(channel_names=names),
              bio.SpaceInputAxis(id=bio.AxisId("y"), size=size),
              bio.SpaceInputAxis(id=bio.AxisId("x"), size=size)],
        test_tensor=bio.FileDescr(source=d / "test_input.npy"),
        sample_tensor=bio.FileDescr(source=d / "sample_input.tif"), preprocessing=prep)
    embedding = bio.OutputTensorDescr(
        id=bio.TensorId("embedding"), description=f"image embedding ({_pooling(card)})",
        axes=[batch(), bio.IndexOutputAxis(size=wrapper.embed_dim)],
        test_tensor=bio.FileDescr(source=d / "test_output.npy"),
        sample_tensor=bio.FileDescr(source=d / "sample_output.tif"))
    torch_v = bio.Version(torch.__version__.split("+")[0])
    arch = bio.ArchitectureFromLibraryDescr(
        callable=bio.Identifier("BioimageioEncoder"), import_from="biofm.release.bioimageio_model",
        kwargs={"model_name": card["model_name"],
                "model_kwargs": dict(card.get("model_kwargs") or {}),
                "channel_ids": wrapper.channel_ids.tolist()})
    weights = bio.WeightsDescr(
        pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
            source=d / "weights.pt", architecture=arch, pytorch_version=torch_v,
            dependencies=bio.FileDescr(source=d / "environment.yaml")),
        torchscript=bio.TorchscriptWeightsDescr(
            source=d / "weights.torchscript.pt", pytorch_version=torch_v,
            parent="pytorch_state_dict", comment="torch.jit.trace of the state-dict model"))
    return bio.ModelDescr(
        name=_package_name(str(card["name"]), names),
        description=(f"biofm {card['model_name']} encoder: {len(names)}-channel "
                     f"({', '.join(names)}) {size} px microscopy tiles -> "
                     f"{wrapper.embed_dim}-d embeddings"),
        authors=[bio.Author(name=a) for a in (authors or ["biofm contributors"])],
        cite=[bio.CiteEntry(text=CHADA_VIT_TEXT, doi=bio.Doi(CHADA_VIT_DOI))],
        license=_spdx(str(card.get("license") or "apache-2.0")),
        documentation=bio.FileDescr(source=d / "README.md"),
        covers=[bio.FileDescr(source=d / "cover.png")], tags=list(TAGS),
        inputs=[image], outputs=[embedding], weights=weights, version=bio.Version(__version__),
        config=bio.Config(bioimageio=bio.BioimageioConfig(
            reproducibility_tolerance=[bio.ReproducibilityTolerance(
                absolute_tolerance=TOLERANCE, relative_tolerance=TOLERANCE)]),
            **_biofm_config(card, names)))


def _biofm_config(card: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """``config.biofm``: what biofm needs to map the package back to its card."""
    return {"biofm": {"model_name": card["model_name"], "channels": names,
                      "normalize": dict(card.get("normalize") or {}),
                      "biofm_version": __version__}}


def _package_name(name: str, names: list[str]) -> str:
    text = f"{name} {len(names)}ch".replace("/", "-").replace("_", "-")
    return text[:128]


def _spdx(license_text: str) -> Any:
    """The SPDX id spelled as the spec lists it (the card may use lower case)."""
    from typing import get_args

    from bioimageio.spec._internal._generated_spdx_license_literals import LicenseId as Ids
    from bioimageio.spec._internal.license_id import LicenseId

    known = {str(x).lower(): str(x) for x in get_args(Ids)}
    spdx = known.get(license_text.lower())
    if spdx is None:
        raise BadInputError(f"licence {license_text!r} in the card is not an SPDX id",
                            "set the card's license to an SPDX id, e.g. Apache-2.0")
    return LicenseId(spdx)
