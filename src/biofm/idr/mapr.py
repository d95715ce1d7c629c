"""Key/value annotations and mapr look-ups on IDR (which screens, plates and images carry a
gene, compound, cell line, phenotype, ...).

IDR attaches the columns of each study's curated annotation file to its images as *map
annotations*: ``values`` is a list of ``[key, value]`` pairs (keys may repeat), grouped by
namespace (``openmicroscopy.org/mapr/gene``, ``.../mapr/compound``, ...; the rest under
``openmicroscopy.org/omero/bulk_annotations``; study-level facts on the screen or project under
``idr.openmicroscopy.org/study/info``). mapr (``/mapr/api/{menu}/``) searches those values:

    >>> with IDRClient() as client:                                         # doctest: +SKIP
    ...     anns = map_annotations(client, image=122770)
    ...     annotation_values(anns, MENUS["gene"].ns)    # [("Gene Symbol", "ECT2"), ...]
    ...     screens = mapr_screens(client, "gene", "CDC20")
    ...     plates = mapr_plates(client, "gene", "CDC20", screens[0]["id"])
    ...     images = mapr_images(client, "gene", "CDC20", plates[0]["id"])
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from biofm.core.errors import BadInputError
from biofm.idr.http import WEBCLIENT_PAGE, IDRClient

STUDY_INFO_NS = "idr.openmicroscopy.org/study/info"
BULK_NS = "openmicroscopy.org/omero/bulk_annotations"
TARGETS = ("screen", "plate", "well", "image", "project", "dataset", "acquisition")


@dataclass(frozen=True)
class Menu:
    """One mapr menu: the namespace of its map annotations and the keys its search matches."""

    ns: str
    keys: tuple[str, ...]


_MAPR = "openmicroscopy.org/mapr/"
MENUS: dict[str, Menu] = {
    "gene": Menu(_MAPR + "gene", ("Gene Symbol", "Gene Identifier")),
    "sirna": Menu(_MAPR + "sirna", ("siRNA Identifier", "siRNA Pool Identifier")),
    "phenotype": Menu(_MAPR + "phenotype", ("Phenotype", "Phenotype Term Accession")),
    "compound": Menu(_MAPR + "compound", ("Compound Name",)),
    "organism": Menu(_MAPR + "organism", ("Organism",)),
    "antibody": Menu(_MAPR + "antibody", ("Antibody Name", "Antibody Identifier")),
    "cellline": Menu(_MAPR + "cell_line", ("Cell Line",)),
    "orf": Menu(_MAPR + "orf", ()),
    "protein": Menu(_MAPR + "protein", ()),
}
"""IDR's mapr menus. ``keys`` are the map-annotation keys each search matches (empty where
biofm does not know them; the real IDR still answers those menus)."""

_COUNT = re.compile(r"\s\((\d+)\)$")


def check_menu(menu: str) -> str:
    """``menu`` lower-cased, or `BadInputError` naming IDR's menus."""
    key = str(menu).strip().lower()
    if key not in MENUS:
        raise BadInputError(f"{menu!r} is not an IDR mapr menu", f"use one of {', '.join(MENUS)}")
    return key


def map_annotations(
    client: IDRClient, ns: str | None = None, **target: int
) -> list[dict[str, Any]]:
    """Map annotations on one object: ``map_annotations(client, image=122770)``.

    Exactly one keyword of screen, plate, well, image, project, dataset, acquisition. Returns
    IDR's annotation dicts (``id``, ``ns``, ``link``, ...) with ``values`` as a list of
    ``(key, value)`` tuples; ``ns`` keeps only that namespace.
    """
    if len(target) != 1 or next(iter(target)) not in TARGETS:
        raise BadInputError(
            f"map_annotations got targets {sorted(target)}",
            f"pass exactly one of {', '.join(TARGETS)} (e.g. image=122770)",
        )
    ((kind, oid),) = target.items()
    params: dict[str, Any] = {"type": "map", kind: int(oid)}
    if ns:
        params["ns"] = ns
    answer = client.get_json("/webclient/api/annotations/", params)
    out = []
    for ann in answer.get("annotations", []):
        if ns and ann.get("ns") != ns:
            continue
        values = [(str(k), str(v)) for k, v in ann.get("values") or []]
        out.append({**ann, "values": values})
    return out


def annotation_values(anns: list[dict[str, Any]], ns: str | None = None) -> list[tuple[str, str]]:
    """All ``(key, value)`` pairs of ``anns`` in order (only namespace ``ns`` when given)."""
    return [
        (str(k), str(v))
        for ann in anns
        if ns is None or ann.get("ns") == ns
        for k, v in ann.get("values") or []
    ]


def _pages(client: IDRClient, path: str, params: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Every item under ``key`` over mapr's ``page``/``limit`` pages (stop on a short or stale
    page, so a server that ignores paging is read once)."""
    items: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for page in range(1, 100_000):
        batch = client.get_json(path, {**params, "page": page, "limit": WEBCLIENT_PAGE})[key]
        new = [item for item in batch if item.get("id") not in seen]
        seen.update(item.get("id") for item in new)
        items.extend(new)
        if len(batch) < WEBCLIENT_PAGE or not new:
            break
    return items


def _params(value: str, case_sensitive: bool) -> dict[str, Any]:
    if not str(value).strip():
        raise BadInputError("empty mapr value", "pass the gene, compound, ... to look up")
    params: dict[str, Any] = {"value": value}
    if not case_sensitive:
        params["case_sensitive"] = "false"
    return params


def mapr_screens(
    client: IDRClient, menu: str, value: str, case_sensitive: bool = True
) -> list[dict[str, Any]]:
    """Screens with images annotated ``value`` in ``menu``: ``[{"id", "name", "images"}]``.

    IDR names them ``"<screen name> (<n images>)"``; the count is moved to ``images``.
    ``case_sensitive=False`` matches any case.
    """
    path = f"/mapr/api/{check_menu(menu)}/"
    out = []
    for item in _pages(client, path, _params(value, case_sensitive), "screens"):
        name = str(item.get("name", ""))
        counter = (item.get("extra") or {}).get("counter")
        found = _COUNT.search(name)
        if counter is None and found is not None:
            counter = int(found.group(1))
        out.append(
            {
                "id": int(item["id"]),
                "name": _COUNT.sub("", name),
                "images": int(counter) if counter is not None else None,
            }
        )
    return out


def mapr_plates(
    client: IDRClient, menu: str, value: str, screen_id: int, case_sensitive: bool = True
) -> list[dict[str, Any]]:
    """Plates of ``screen_id`` holding matching images: ``[{"id", "name", "images"}]``."""
    params = {**_params(value, case_sensitive), "id": int(screen_id)}
    items = _pages(client, f"/mapr/api/{check_menu(menu)}/plates/", params, "plates")
    return [
        {"id": int(p["id"]), "name": str(p.get("name", "")), "images": p.get("childCount")}
        for p in items
    ]


def mapr_images(
    client: IDRClient, menu: str, value: str, plate_id: int, case_sensitive: bool = True
) -> list[dict[str, Any]]:
    """Matching images of ``plate_id``: ``[{"id", "name"}]``."""
    params = {**_params(value, case_sensitive), "node": "plate", "id": int(plate_id)}
    items = _pages(client, f"/mapr/api/{check_menu(menu)}/images/", params, "images")
    return [{"id": int(i["id"]), "name": str(i.get("name", ""))} for i in items]
