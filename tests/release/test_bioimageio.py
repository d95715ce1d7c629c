"""bioimage.io export: the package validates, bioimageio.core reproduces its test tensors with
both weight formats, the traced wrapper takes any batch size, bad requests name the fix, and
the package's pipeline gives biofm's own embedding on a real Cell Painting tile."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import biofm
from biofm.core.batch import PackedBatch
from biofm.core.errors import BadInputError
from biofm.release.bioimageio_model import BioimageioEncoder

pytest.importorskip("bioimageio.spec")
pytest.importorskip("bioimageio.core")

from biofm.release.bioimageio import check_bioimageio_environment, export_bioimageio
from biofm.release.card import make_card

SIZE = 32
CHANNELS = ["DNA", "ER", "Mito"]
CELLPAINTING = ["Hoechst", "ERSyto", "ERSytoBleed", "Ph_golgi", "Mito"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")


def _model(size: int = SIZE) -> torch.nn.Module:
    torch.manual_seed(0)
    model = biofm.create_model("biovit_tiny", depth=2).eval()
    model.weights_card = make_card(model, name="biofm-test", base={"input_size": size})
    return model


def _spec_ok() -> None:
    try:
        check_bioimageio_environment()
    except BadInputError as err:
        pytest.skip(f"bioimageio.spec cannot write packages in this environment: {err}")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")
    _spec_ok()
    out = tmp_path_factory.mktemp("bioimageio") / "pkg.zip"
    return export_bioimageio(_model(), out, channels=CHANNELS, authors=["Test Author"])


def test_package_validates(package: Path) -> None:
    from bioimageio.spec import load_description
    from bioimageio.spec.model import v0_5

    descr = load_description(package)
    assert isinstance(descr, v0_5.ModelDescr), descr.validation_summary.display()
    assert descr.validation_summary.status == "valid-format"
    assert not [e for d in descr.validation_summary.details for e in d.errors]
    (image,), (embedding,) = descr.inputs, descr.outputs
    assert [str(a.type) for a in image.axes] == ["batch", "channel", "space", "space"]
    assert image.axes[1].channel_names == CHANNELS
    assert [a.size for a in image.axes[2:]] == [SIZE, SIZE]
    assert [p.id for p in image.preprocessing][:3] == ["ensure_dtype", "scale_range", "clip"]
    assert image.preprocessing[1].kwargs.max_percentile == pytest.approx(99.8)
    assert str(embedding.id) == "embedding" and embedding.axes[1].size == 192
    assert str(descr.license) == "Apache-2.0" and str(descr.version) == biofm.__version__
    assert descr.cite[0].doi is not None and "2311.15264" in str(descr.cite[0].doi)
    assert descr.weights.torchscript is not None
    assert descr.weights.torchscript.parent == "pytorch_state_dict"
    arch: Any = descr.weights.pytorch_state_dict.architecture  # type: ignore[union-attr]
    assert arch.import_from == "biofm.release.bioimageio_model"
    assert arch.kwargs["channel_ids"] == biofm.core.channels.DEFAULT_VOCAB.ids(CHANNELS)


@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript"])
def test_bioimageio_core_test_model_passes(package: Path, weight_format: str) -> None:
    from bioimageio.core import test_description

    summary = test_description(package, weight_format=weight_format,  # type: ignore[arg-type]
                               devices=["cpu"], runtime_env="currently-active")
    failed = [d.name for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    assert any("Reproduce test outputs" in d.name for d in summary.details)


def test_state_dict_keys_are_the_encoders_with_a_prefix() -> None:
    model = _model()
    wrapper = BioimageioEncoder("biovit_tiny", {"depth": 2}, [1, 2, 5])
    wrapper.encoder.load_state_dict(model.state_dict(), strict=True)
    assert set(wrapper.state_dict()) == {f"encoder.{k}" for k in model.state_dict()}
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = model(PackedBatch.from_images(list(x), [[1, 2, 5]] * 2))
        assert torch.allclose(wrapper.eval()(x), ref, atol=1e-6)


def test_traced_wrapper_takes_any_batch_size() -> None:
    wrapper = BioimageioEncoder("biovit_tiny", {"depth": 2}, [1, 2, 5]).eval()
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(1, 3, SIZE, SIZE, generator=g), torch.randn(2, 3, SIZE, SIZE, generator=g)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, x1, check_trace=False)
        for x in (x1, x2, 3.0 * x2 + 1.0, torch.randn(4, 3, SIZE, SIZE, generator=g)):
            eager = wrapper(x)
            assert eager.shape == (x.shape[0], 192)
            assert torch.allclose(traced(x), eager, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"channels": []}, "no channels"),
    ({"channels": ["DNA", "ER", "Mito"], "sample": np.ones((2, 40, 40))}, "2 channels"),
    ({"channels": ["DNA"], "sample": np.ones((40, 40))}, "2-D per channel"),
    ({"channels": ["DNA", "ER"], "sample": np.full((2, 40, 40), np.nan)}, "NaN"),
    ({"channels": ["DNA"], "sample": np.ones((1, 20, 20))}, "smaller than"),
    ({"channels": ["DNA"], "input_size": 8}, "minimum 16"),
    ({"channels": ["DNA"], "input_size": 40}, "multiple of 16"),
])
def test_bad_requests_name_the_fix(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(BadInputError, match=match) as err:
        export_bioimageio(_model(), tmp_path / "pkg.zip", **kwargs)
    assert "Fix:" in str(err.value)
    assert not (tmp_path / "pkg.zip").exists()


def test_model_without_card_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no weights card") as err:
        export_bioimageio(biofm.create_model("biovit_tiny", depth=1), tmp_path / "p.zip",
                          channels=["DNA"])
    assert "load_model" in err.value.fix


def test_package_matches_embed_samples_on_a_real_tile(shared_data: Path, tmp_path: Path) -> None:
    from bioimageio.core import predict

    from biofm.core.sample import Sample
    from biofm.eval.sample_embed import embed_samples
    from biofm.io.images import read_image

    folder = shared_data / "cellpainting_site_bbbc022"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    _spec_ok()
    image = np.concatenate([read_image(folder / f"{n}.tif").pixels for n in CELLPAINTING])
    tile = image[:, 200:200 + SIZE, 300:300 + SIZE]
    model = _model()
    pkg = export_bioimageio(model, tmp_path / "cp.zip", channels=CELLPAINTING, sample=tile)
    ours = embed_samples(model, [Sample(tile, CELLPAINTING)], input_size=SIZE)
    theirs = predict(model=str(pkg), inputs=tile[None].astype(np.float32))
    out = theirs.members["embedding"].data.values  # type: ignore[index]
    assert out.shape == ours.shape == (1, 192)
    assert np.abs(out - ours).max() < 1e-4


def test_package_with_fixed_statistics_keeps_intensity(tmp_path: Path) -> None:
    """Statistics baked in as scale_linear: bioimageio.core's pipeline gives biofm's own
    embedding with the same statistics, and a dimmer copy of the tile embeds differently."""
    from bioimageio.core import predict
    from bioimageio.spec import load_description

    from biofm.core.sample import Sample
    from biofm.data.norm_fit import fit_sample_stats
    from biofm.eval.sample_embed import embed_samples

    _spec_ok()
    rng = np.random.default_rng(0)
    tiles = [rng.gamma(2.0, 300.0 * (k + 1), (3, SIZE, SIZE)).astype(np.uint16)
             for k in range(20)]  # 20 x 32² px: enough to fit
    stats = fit_sample_stats([Sample(t, CHANNELS) for t in tiles], "reference")
    model = _model()
    pkg = export_bioimageio(model, tmp_path / "fixed.zip", channels=CHANNELS, sample=tiles[3],
                            norm_stats=stats)  # fmt: skip
    (image,) = load_description(pkg).inputs  # type: ignore[union-attr]
    assert [p.id for p in image.preprocessing][:3] == ["ensure_dtype", "scale_linear", "clip"]
    for tile in (tiles[3], tiles[3] // 3):
        ours = embed_samples(model, [Sample(tile, CHANNELS)], input_size=SIZE, norm_stats=stats)
        theirs = predict(model=str(pkg), inputs=tile[None].astype(np.float32))
        out = theirs.members["embedding"].data.values  # type: ignore[index]
        assert np.abs(out - ours).max() < 1e-4
    bright, dim = (embed_samples(model, [Sample(t, CHANNELS)], input_size=SIZE, norm_stats=stats)
                   for t in (tiles[3], tiles[3] // 3))  # fmt: skip
    assert np.abs(bright - dim).max() > 1e-3
    other = fit_sample_stats([Sample(t, ["GFP", "RFP", "CFP"]) for t in tiles], "reference")
    with pytest.raises(BadInputError, match="has no normalisation statistics"):
        export_bioimageio(model, tmp_path / "x.zip", channels=CHANNELS, norm_stats=other)
