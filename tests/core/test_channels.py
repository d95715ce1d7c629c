"""ChannelVocab: canonical order, matching rules, real dataset and IDR channel names."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from biofm.core.channels import CANONICAL, DEFAULT_VOCAB, VOCAB_VERSION, ChannelVocab, classify
from biofm.core.errors import BadInputError

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CATALOG = SHARED / "idr" / "catalog"

# The first entries are frozen: models store these ids. Append-only.
FROZEN_PREFIX = (
    "unknown", "DNA", "ER", "RNA", "AGP", "Mito", "brightfield", "phase", "darkfield", "DIC",
    "tubulin", "membrane", "cytoplasm", "extracellular", "protein", "mitosis", "DNA_damage",
    "EdU", "rgb_red", "rgb_green", "rgb_blue",
)  # fmt: skip

# Channel names of the datasets in shared/data/README.md and what that README says they are.
README_NAMES = {
    "Hoechst": "DNA", "DAPI": "DNA", "ERSyto": "ER", "ERSytoBleed": "RNA", "Ph_golgi": "AGP",
    "Mito": "Mito", "brightfield": "brightfield", "AGP": "AGP", "RNA": "RNA", "DNA": "DNA",
    "ER": "ER", "actin/Golgi/membrane": "AGP", "nucleoli": "RNA", "PH3": "mitosis",
    "γH2AX": "DNA_damage", "cell body": "cytoplasm", "GFP": "unknown", "RFP": "unknown",
    "d0": "unknown", "ch2": "unknown",
}  # fmt: skip

# Every IDR channel string in the catalog that is not unknown, with its expected stain.
IDR_EXPECTED = {
    "405:erkktr-bfp": "protein",  # ERK kinase-translocation reporter fused to BFP
    "488 long:nucleoli and cytoplasmic rna": "RNA",
    "53bp1/alexa fluor 488:53bp1": "DNA_damage",
    "561:h2b-rfp": "DNA",
    "cascade blue:growth media": "extracellular",  # dye in the medium, cells by exclusion
    "gfp:endogenous alpha tubulin 2": "tubulin",
    "af 488:actin": "AGP",
    "af 555:perforin": "protein",
    "af 647:lfa-1": "protein",
    "alexa 488:edu": "EdU",
    "alexa 488:fus": "protein",
    "alexa 488:hnrnpk": "protein",
    "alexa 488:sfpq": "protein",
    "alexa 488:target protein": "protein",
    "alexa 488:tubulin": "tubulin",
    "alexa 555:microtubules": "tubulin",
    "alexa 568:caspase-3": "protein",
    "alexa 568:hnrnpa1": "protein",
    "alexa 568:pabp": "protein",
    "alexa 568:tdp-43": "protein",
    "alexa 647:tubulin": "tubulin",
    "alexa-488: nf-kappab": "protein",
    "alexa647 phalloidin:f-actin": "AGP",
    "alexafluor568:alphatubulin": "tubulin",
    "alexafluor647:yap/taz": "protein",
    "and plasma membrane ):agp": "AGP",  # tail of "actin, golgi (and plasma membrane ):agp"
    "anti-alpha-tubulin: microtubules": "tubulin",
    "anti-ser10 phosphohistone h3: mitotic nuclei": "mitosis",
    "bf:brightfield": "brightfield",
    "bright field/transmitted:cell": "brightfield",
    "brightfield:cell outline": "brightfield",
    "cellmask:plasma membrane": "membrane",
    "ch1 : nuclei:blue": "DNA",
    "ch2 : er:green": "ER",
    "ch3 : nucleoli/cytoplasmic rna:yellow": "RNA",
    "ch4 : actin/golgi/membrane:orange": "AGP",
    "ch5 : mitochondria:red": "Mito",
    "concanavalin a  alexafluor488 conjugate:endoplasmic reticulumn:con a": "ER",
    "concanavalin a/alexa 488:endoplasmic reticulum": "ER",
    "concanavalin a/alexafluor488 conjugate:endoplasmic reticulum": "ER",
    "cy3:actin": "AGP",
    "cy3:red blood cell": "membrane",  # host red-cell surface stain (malaria screen)
    "cy5:mitochondria": "Mito",
    "dapi/hoechst 33258: dna": "DNA",
    "dapi: dna": "DNA",
    "dapi: nuclei": "DNA",
    "dapi:dna": "DNA",
    "dapi:nuclei": "DNA",
    "dextran alexa 647: cell outline": "extracellular",  # fluid-phase dye outlining cells
    "dic: whole cell": "DIC",
    "dic:cell structure": "DIC",
    "dihydroethidium: cell bodies:dhe": "cytoplasm",
    "draq5:dna": "DNA",
    "egfp:nuclear lamina and report on nuclear envelope breakdown": "protein",
    "egfp:protein of interest": "protein",
    "fitc-filterwheel:alpha-tubulin": "tubulin",
    "fitc:alpha-tubulin": "tubulin",
    "gfp: a different gfp-tagged protein as indicated by the expressed sgrna.": "protein",
    "gfp: core histone 2b tagged with gfp to monitor chromosomes": "DNA",
    "gfp:cytosolic gfp": "cytoplasm",
    "gfp:infection": "protein",  # fluorescent-protein reporter of infection
    "gfp:tagged protein": "protein",
    "h2b- mcherry/cy3:chromatin": "DNA",
    "h2b-mcherry:cytosol": "DNA",  # the fused histone decides, not the target text
    "hoechst 33342:dna": "DNA",
    "hoechst 33342:nucleus": "DNA",
    "hoechst: nuclei": "DNA",
    "hoechst: nuclei.": "DNA",
    "hoechst:dna": "DNA",
    "hoechst:nuclei": "DNA",
    "hoescht: nuclei": "DNA",
    "mitotracker deep red/alexa 647:mitochondria": "Mito",
    "mitotracker deep red: mitochondria": "Mito",
    "mitotracker deep red:mitochondria": "Mito",
    "mouse anti-yap/taz plus alexa488 anti-mouse:yap/taz": "protein",
    "mrfp1:spc42": "protein",
    "phallodin:f-actin": "AGP",
    "phalloidin alexafluor594 conjugate:f-actin": "AGP",
    "phalloidin alexafluorafluor594 conjugate: f-actin": "AGP",
    "phalloidin/alexafluor594 conjugate:f_actin": "AGP",
    "phalloidin488: f-actin": "AGP",
    "pm-647: cell surface tso45g": "protein",
    "rabbit anti-cd44 plus alexa568 anti-rabbit:cd44": "protein",
    "rabbit anti-yap/taz plus alexa568 anti-rabbit:yap/taz": "protein",
    "rfp: whole cell": "cytoplasm",
    "sac6-tdtomato: actin patch": "protein",  # fusion protein, not an actin stain
    "sac6-yegfp: actin patch": "protein",
    "sla1-rfp: endocytic patch": "protein",
    "sla1-yegfp: endocytic patch": "protein",
    "snf7-yegfp: late endosome": "protein",
    "syto 14 green fluorescent nucleic acid stain:nucleoli": "RNA",
    "syto14 green fluorescent nucleic acid stain:nucleoli and cytoplasmic rna": "RNA",
    "tagyfp:dad4": "protein",
    "tirtc-filterwheel:phallodin/f-actin": "AGP",
    "tritc2:phallodin/f-actin": "AGP",
    "tritc:actin": "AGP",
    "tritc:ha_flag tagged protein": "protein",
    "tritc:phallodin/f-actin": "AGP",
    "vph1-rfp: vacuole": "protein",
    "vph1-yegfp: vacuole": "protein",
    "vsvg-cfp: cfp-tso45g": "protein",
    "wheat germ agglutinin  alexafluor594 conjugate:golgi apparatus and plasma membrane:wga": "AGP",
    "wheat germ agglutinin/alexafluor594 conjugate :golgi apparatus and plasma membrane:wga": (
        "AGP"
    ),
    "yfp:dad4": "protein",
    "yfp:rad52-yfp protein": "protein",
}
# The only catalog strings that carry no stain identity.
IDR_UNKNOWN = {"exp1cam2:various"}


def test_canonical_order_is_append_only() -> None:
    assert CANONICAL[: len(FROZEN_PREFIX)] == FROZEN_PREFIX
    assert len(set(CANONICAL)) == len(CANONICAL)
    assert DEFAULT_VOCAB.names == CANONICAL
    assert len(DEFAULT_VOCAB) == len(CANONICAL)


@pytest.mark.parametrize(("name", "stain"), sorted(README_NAMES.items()))
def test_readme_dataset_names(name: str, stain: str) -> None:
    assert DEFAULT_VOCAB.canonical(name) == stain


@pytest.mark.parametrize(
    ("name", "stain"),
    [
        ("hoechst 33342", "DNA"), ("HOECHST33342", "DNA"), ("  dapi ", "DNA"),
        ("H2B-GFP", "DNA"), ("H2B-mCherry", "DNA"), ("DRAQ5", "DNA"), ("chromatin", "DNA"),
        ("ConA", "ER"), ("Concanavalin A", "ER"), ("endoplasmic reticulum", "ER"),
        ("SYTO14", "RNA"), ("cytoplasmic RNA", "RNA"), ("Phalloidin", "AGP"), ("WGA", "AGP"),
        ("F-actin", "AGP"), ("MitoTracker Deep Red", "Mito"), ("mitochondria", "Mito"),
        ("mitotic nuclei", "mitosis"), ("phosphohistone H3", "mitosis"), ("BF", "brightfield"),
        ("bright field", "brightfield"), ("Phase contrast", "phase"), ("dark field", "darkfield"),
        ("DIC", "DIC"), ("alpha-tubulin", "tubulin"), ("α-tubulin", "tubulin"),
        ("CellMask", "membrane"), ("plasma membrane", "membrane"), ("53BP1", "DNA_damage"),
        ("gammaH2AX", "DNA_damage"), ("EdU", "EdU"), ("red", "rgb_red"), ("G", "rgb_green"),
        ("Blue", "rgb_blue"), ("Sla1-GFP", "protein"), ("GFP:tagged protein", "protein"),
        ("Alexa 488", "unknown"), ("Cy3", "unknown"), ("OrigDNA", "DNA"), ("Nile red", "unknown"),
    ],
)  # fmt: skip
def test_synonyms_and_rules(name: str, stain: str) -> None:
    assert DEFAULT_VOCAB.canonical(name) == stain


def test_none_empty_unseen_are_unknown() -> None:
    for name in (None, "", "   ", "::", "d0", "w1", "totally new stain"):
        assert DEFAULT_VOCAB.id(name) == 0
        assert DEFAULT_VOCAB.canonical(name) == "unknown"
    assert DEFAULT_VOCAB.ids(["DAPI", None, "Mito"]) == [1, 0, 5]


def test_classify_is_deterministic() -> None:
    assert all(classify(n) == classify(n) for n in IDR_EXPECTED)


def test_user_synonyms_take_precedence() -> None:
    vocab = ChannelVocab(synonyms={"GFP": "ER", "w1": "DNA"})
    assert vocab.canonical("gfp") == "ER"
    assert vocab.canonical("W1") == "DNA"
    assert vocab.canonical("RFP") == "unknown"
    with pytest.raises(BadInputError, match="not a vocab name"):
        ChannelVocab(synonyms={"x": "nope"})


def test_short_vocab_maps_newer_stains_to_unknown() -> None:
    vocab = ChannelVocab(("unknown", "DNA", "ER"))
    assert vocab.canonical("DAPI") == "DNA"
    assert vocab.id("MitoTracker") == 0
    with pytest.raises(BadInputError, match="unknown"):
        ChannelVocab(("DNA", "unknown"))
    with pytest.raises(BadInputError, match="repeat"):
        ChannelVocab(("unknown", "DNA", "DNA"))


def test_dict_round_trip() -> None:
    vocab = ChannelVocab(synonyms={"w2": "ER"})
    d = vocab.to_dict()
    assert d["version"] == VOCAB_VERSION
    assert d["names"] == list(CANONICAL)
    again = ChannelVocab.from_dict(d)
    assert again == vocab
    assert again.canonical("w2") == "ER"
    with pytest.raises(BadInputError, match="names"):
        ChannelVocab.from_dict({"version": "1"})


def _catalog_channels() -> set[str]:
    if not CATALOG.is_dir():
        pytest.skip(f"IDR catalog {CATALOG} is absent (shared reference folder not present)")
    found: set[str] = set()
    with open(CATALOG / "channel_count_per_screen.tsv", newline="") as f:
        found.update(r["channel"] for r in csv.DictReader(f, delimiter="\t") if r["channel"])
    with open(CATALOG / "plate_details_per_screen.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            found.update(p for p in (row["channels"] or "").split(";") if p.strip())
    return found


def test_every_idr_catalog_channel_maps() -> None:
    channels = _catalog_channels()
    expected = {k.strip().lower(): v for k, v in IDR_EXPECTED.items()}
    got = {c: DEFAULT_VOCAB.canonical(c) for c in channels}
    unknown = {c for c, stain in got.items() if stain == "unknown"}
    assert unknown == IDR_UNKNOWN, f"unexpected unknown channels: {unknown - IDR_UNKNOWN}"
    wrong = {
        c: (stain, expected.get(c.strip().lower()))
        for c, stain in got.items()
        if stain != "unknown" and expected.get(c.strip().lower()) != stain
    }
    assert not wrong, f"channel -> (got, expected): {wrong}"
    assert len(unknown) <= 0.02 * len(channels)
