"""Free-text DICOM tags shown without what could identify a patient.

DICOM PS3.15 (Annex E, the Basic Application Level Confidentiality Profile) removes free-text
tags such as SeriesDescription, StudyDescription and ImageComments when it de-identifies,
because people type names and record numbers into them ("CHEST SMITH J 0012345"). lunglib only
ever shows SeriesDescription -- it is how a user tells two reconstructions of one study apart --
and shows it through :func:`safe_description`, an allow-list: a word is kept only when it is
CT vocabulary (``CHEST``, ``Thorax``, ``Routine``; CamelCase is split, so ``ThoraxRoutine``
counts) or a short technical code (a kernel ``B70f``, ``8.0.0``, ``1.25mm``); everything else
becomes ``…``, as do runs of four or more digits (record numbers, dates) and DICOM person names
(``LAST^FIRST``). The de-identification toolkits of the field (``deid``, ``dicognito``) rewrite
whole files; this is the much smaller job of showing one tag, written out here on purpose.
"""

from __future__ import annotations

import re

#: Words of CT series descriptions (lower case) that are kept as they are.
CT_VOCABULARY = frozenset("""
    abdomen abd and angio arterial ax axial body bone brain chest cor coronal ct cta contrast
    ce delayed dose exp expiration fast full helical high hr hrct inspiration insp iv kernel ld ldct
    localizer low lung lungs mediastinal mediastinum mip mpr no non oral pe pelvis pet phase
    portal protocol recon reconstruction resolution routine sag sagittal scout screening series
    sharp short slice slices smooth soft spiral standard std synthetic test thick thin thin-slice
    thoracic thorax tissue topogram venous vol volume w wo with without window
""".split())

_HIDDEN = "…"
_WORD = re.compile(r"\S+")
_CAMEL_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_LONG_NUMBER = re.compile(r"\d{4,}")


def _safe_word(word: str) -> bool:
    """A word of the allow-list: CT vocabulary, or a short code that holds a digit."""
    if "^" in word or _LONG_NUMBER.search(word):
        return False
    bare = word.strip("()[],;:-_/")
    if not bare:
        return True
    if bare.lower() in CT_VOCABULARY:
        return True
    if any(ch.isdigit() for ch in bare):  # kernels (B70f, FC51), versions (8.0.0), 1.25mm
        return len(bare) <= 8
    parts = _CAMEL_PART.findall(bare)
    return bool(parts) and "".join(parts) == bare and all(
        p.lower() in CT_VOCABULARY for p in parts)


def safe_description(text: object) -> str:
    """``text`` with every word outside the allow-list replaced by ``…`` (see the module)."""
    words = [w if _safe_word(w) else _HIDDEN for w in _WORD.findall(str(text or ""))]
    collapsed = re.sub(rf"(?:{_HIDDEN} )+{_HIDDEN}", _HIDDEN, " ".join(words))
    return collapsed
