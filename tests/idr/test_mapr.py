"""Map annotations and mapr look-ups against the stand-in IDR (answers built from the study)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

pytest.importorskip("httpx")

from biofm.core.errors import BadInputError
from biofm.idr._standin_extra import map_key
from biofm.idr._standin_study import StandInStudy
from biofm.idr.http import IDRError
from biofm.idr.mapr import (
    BULK_NS,
    MENUS,
    STUDY_INFO_NS,
    annotation_values,
    map_annotations,
    mapr_images,
    mapr_plates,
    mapr_screens,
)
from biofm.idr.testing import status

from .helpers import Served, served_study


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with served_study(plates=1, wells=8, fields=1, size=128) as server:
        yield server


def _compound(study: StandInStudy) -> str:
    """The most common compound of the study's wells."""
    names = Counter(w.annotations["Compound Name"] for w in study.wells.values())
    return names.most_common(1)[0][0]


def test_image_annotations_are_its_wells_columns(served: tuple) -> None:
    _, study, client = served
    image = next(iter(study.images.values()))
    well = study.wells[image.well_id]
    anns = map_annotations(client, image=image.id)
    expected = sorted(
        (map_key(k), v)
        for k, v in well.annotations.items()
        if v.strip() and k not in ("Plate", "Well")
    )
    assert sorted(annotation_values(anns)) == expected
    assert annotation_values(anns, MENUS["compound"].ns) == [
        ("Compound Name", well.annotations["Compound Name"])
    ]
    assert {a["ns"] for a in anns} >= {MENUS["compound"].ns, BULK_NS}
    assert all(a["link"]["parent"]["id"] == image.id for a in anns)
    cell_line = well.annotations.get("Characteristics [Cell Line]")
    if cell_line:
        assert annotation_values(anns, MENUS["cellline"].ns) == [("Cell Line", cell_line)]
    well_anns = map_annotations(client, well=well.id)
    assert annotation_values(well_anns) == annotation_values(anns)


def test_screen_carries_study_info(served: tuple) -> None:
    _, study, client = served
    anns = map_annotations(client, screen=study.screen_id)
    assert [a["ns"] for a in anns] == [STUDY_INFO_NS]
    assert annotation_values(anns, STUDY_INFO_NS) == list(study.info)
    assert map_annotations(client, screen=study.screen_id, ns=BULK_NS) == []
    with pytest.raises(BadInputError, match="exactly one"):
        map_annotations(client, image=1, well=2)


def test_compound_lookup_matches_the_study(served: tuple) -> None:
    _, study, client = served
    compound = _compound(study)
    wells = [w for w in study.wells.values() if w.annotations["Compound Name"] == compound]
    expected = sorted(i for w in wells for i in w.images)
    screens = mapr_screens(client, "compound", compound)
    assert screens == [{"id": study.screen_id, "name": study.screen_name, "images": len(expected)}]
    plates = mapr_plates(client, "compound", compound, study.screen_id)
    assert [p["id"] for p in plates] == sorted({w.plate_id for w in wells})
    images = mapr_images(client, "Compound", compound, plates[0]["id"])
    assert sorted(i["id"] for i in images) == expected
    assert {i["name"] for i in images} == {study.images[i].name for i in expected}


def test_case_sensitivity(served: tuple) -> None:
    _, study, client = served
    names = {w.annotations["Compound Name"] for w in study.wells.values()}
    mixed = next(n for n in names if n.swapcase() != n)
    assert mapr_screens(client, "compound", mixed.swapcase()) == []
    loose = mapr_screens(client, "compound", mixed.swapcase(), case_sensitive=False)
    assert loose == mapr_screens(client, "compound", mixed)
    assert mapr_screens(client, "compound", "no such compound") == []


def test_bad_menu_and_empty_value(served: tuple) -> None:
    _, _, client = served
    with pytest.raises(BadInputError, match="compound") as err:
        mapr_screens(client, "drug", "DMSO")
    assert "gene" in str(err.value) and "cellline" in str(err.value)
    with pytest.raises(BadInputError, match="empty"):
        mapr_images(client, "gene", " ", 1)


def test_503_is_retried(served: tuple) -> None:
    idr, study, client = served
    compound = _compound(study)
    before = idr.hits["/mapr/api/compound/"]
    idr.faults.add("/mapr/api/compound/", status(503))
    assert mapr_screens(client, "compound", compound)[0]["id"] == study.screen_id
    assert idr.hits["/mapr/api/compound/"] == before + 2
    idr.faults.add("/webclient/api/annotations/", status(503))
    assert map_annotations(client, screen=study.screen_id)
    with pytest.raises(IDRError) as err:
        mapr_plates(client, "compound", compound, 999)
    assert err.value.status == 404
