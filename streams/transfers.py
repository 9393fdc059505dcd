"""Transfers between sites of a cluster in the live twin: whose tonnes they are.

The twin's rule (``twin.emissions``): a transfer is metered at the sender, and
  * a fuel or process CO2 that MOVES is the receiver's scope 1 (it burns the fuel / holds the
    CO2) and the sender is credited the same tonnes: net zero at cluster level;
  * electricity, steam, heat, shore power and hydrogen are INTERNAL: the receiver's scope 2
    (3 for hydrogen) in its site view, eliminated at cluster level (the sender's scope 1
    already holds them).

The sender's site stage windows a transfer meter apart from its other meters of the same
carrier, under the key ``transfer_key(carrier, mode, to_site)``, with the tonnes the
receiver is attributed (the twin's coefficient, positive). Everything that shows a window
turns that one vector into the views: the two site views (``site_views``) and the cluster's
share (``cluster_share``: the energy, no tonnes). So the site views agree with
``clustertwin twin show`` and the cluster total is the one it always was:
``sum(site views) - eliminations == cluster view``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

MOVES: Final = "moves"
INTERNAL: Final = "internal"
_SEP: Final = ">"
#: The transfer tag of a receiver's point of energy a neighbour already counted as scope 1:
#: a cluster total summed from site windows leaves these out (the eliminations).
ELIMINATED_TAG_PREFIX: Final = f"{INTERNAL}<"


def transfer_key(carrier: str, mode: str, to_site: str) -> str:
    """The site-window key of a transfer meter's flow (never a carrier name: carriers have
    no ``>``)."""
    return f"{carrier}{_SEP}{mode}{_SEP}{to_site}"


def parse_key(key: str) -> tuple[str, str, str] | None:
    """(carrier, mode, receiving site) of a transfer key; None for a plain carrier."""
    if _SEP not in key:
        return None
    carrier, mode, to_site = key.split(_SEP, 2)
    return carrier, mode, to_site


def base_carrier(key: str) -> str:
    return key.split(_SEP, 1)[0]


def _tonnes(vec: Sequence[int], sign: int, metered: bool) -> list[int]:
    """The vector with its tonnes (every figure between the energy and the count) times
    ``sign``; its energy and reading count kept where the flow is ``metered``, else 0 (so
    summing any view's counts counts each reading once)."""
    out = [int(v) * sign for v in vec]
    out[0] = int(vec[0]) if metered else 0
    out[-1] = int(vec[-1]) if metered else 0
    return out


def cluster_share(key: str, vec: Sequence[int]) -> list[int]:
    """What a site window counts at cluster level: all of it, or a transfer's energy only."""
    if _SEP not in key:
        return list(vec)
    return _tonnes(vec, 0, True)


def site_views(site: str, key: str, vec: Sequence[int]) -> list[tuple[str, str, str, list[int]]]:
    """(site, carrier, transfer tag, vector) of each site view a window of ``site`` counts in.

    A plain carrier's window is its site's, tag ``""``. A transfer's is, for the sender,
    its energy, its readings and (moves) the credit, tag ``"<mode>><receiver>"``; for the
    receiver, the tonnes it is attributed (no energy, no readings: those are counted where
    they are metered), tag ``"<mode><<sender>"``.
    """
    parsed = parse_key(key)
    if parsed is None:
        return [(site, key, "", list(vec))]
    carrier, mode, to_site = parsed
    sender = _tonnes(vec, -1 if mode == MOVES else 0, True)
    receiver = _tonnes(vec, 1, False)
    return [
        (site, carrier, f"{mode}>{to_site}", sender),
        (to_site, carrier, f"{mode}<{site}", receiver),
    ]


def key_of_tag(carrier: str, tag: str) -> str | None:
    """The site-window key a stored site-window point stands for, from its carrier and
    transfer tag; None for a receiver's point (the sender's point stands for the window)."""
    if not tag:
        return carrier
    mode, sep, to_site = tag.partition(_SEP)
    if sep and mode in (MOVES, INTERNAL):
        return transfer_key(carrier, mode, to_site)
    return None


# carrier key -> site -> vector: how the cluster stage holds one window or year to date
Held = Mapping[str, Mapping[str, Sequence[int]]]


def _add(into: dict[str, dict[str, list[int]]], carrier: str, site: str, vec: list[int]) -> None:
    got = into.setdefault(carrier, {}).get(site)
    if got is None:
        into[carrier][site] = vec
    else:
        got[:] = [a + b for a, b in zip(got, vec, strict=True)]


def cluster_view(held: Held) -> dict[str, dict[str, list[int]]]:
    """carrier -> site -> what it counts at cluster level (transfers: their energy)."""
    out: dict[str, dict[str, list[int]]] = {}
    for key, per_site in held.items():
        for site, vec in per_site.items():
            _add(out, base_carrier(key), site, cluster_share(key, vec))
    return out


def attributed(held: Held) -> dict[str, dict[str, list[int]]]:
    """carrier -> site -> the site's view (transfers: the sender's credit, the receiver's
    tonnes), as ``clustertwin twin show`` counts it."""
    out: dict[str, dict[str, list[int]]] = {}
    for key, per_site in held.items():
        for site, vec in per_site.items():
            for s, carrier, _tag, v in site_views(site, key, vec):
                _add(out, carrier, s, v)
    return out


def own_view(site: str, items: Iterable[tuple[str, Sequence[int]]]) -> list[list[int]]:
    """The parts of one site's own windows (key, vector) that are in its own view."""
    return [v for key, vec in items for s, _c, _t, v in site_views(site, key, vec) if s == site]
