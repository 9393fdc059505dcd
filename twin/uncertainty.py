"""Uncertainty of an inventory's totals: IPCC 2006 Vol. 1 Ch. 3, Approach 1 (error propagation).

Every uncertainty here is the half-width of the 95 % confidence interval as a percentage of
the value (how the IPCC tables, the EU ETS MRR tiers and the Open Emission Factors DB state
them). Inputs are taken as uncorrelated, which is Approach 1's assumption:

* a product (emissions = activity x factor, tonnes of a gas x its GWP): Eq. 3.1,
  ``U = sqrt(U_1**2 + U_2**2 + ...)``;
* a sum (the lines of a site, the sites of a cluster): Eq. 3.2,
  ``U = sqrt((U_1 x_1)**2 + (U_2 x_2)**2 + ...) / |x_1 + x_2 + ...|``.

Approach 1 is a first-order approximation. The Guidelines (Vol. 1 Ch. 3, §3.2.3.1) warn that
it is not valid for uncertainties above about 60 %, or for a sum whose terms cancel (a credit
against an emission); the result then says so (``approximate``) so that a report can point
to Approach 2 (Monte Carlo) instead of printing a false precision. An input whose uncertainty
is not declared makes the result's uncertainty unknown (``None``), never zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["APPROACH_1_LIMIT_PCT", "Uncertain", "product", "total"]

# Vol. 1 Ch. 3 §3.2.3.1: Approach 1 holds for a standard deviation below about 30 % of the
# mean, i.e. a 95 % half-width below about 60 %
APPROACH_1_LIMIT_PCT = 60.0


@dataclass(frozen=True)
class Uncertain:
    """A value with the half-width of its 95 % interval in percent (``None``: not declared)."""

    value: float
    pct: float | None
    # True when Approach 1 is outside its validity (see the module docstring)
    approximate: bool = False

    def __post_init__(self) -> None:
        if self.pct is not None and (self.pct < 0 or not math.isfinite(self.pct)):
            raise ValueError(f"uncertainty must be a finite percentage >= 0, got {self.pct}")

    @property
    def absolute(self) -> float | None:
        """The half-width in the value's own unit."""
        return None if self.pct is None else abs(self.value) * self.pct / 100.0

    def interval(self) -> tuple[float, float] | None:
        """The 95 % interval, or None when the uncertainty is unknown."""
        half = self.absolute
        return None if half is None else (self.value - half, self.value + half)


def _flag(pct: float | None, approximate: bool) -> bool:
    return approximate or (pct is not None and pct > APPROACH_1_LIMIT_PCT)


def product(*terms: Uncertain) -> Uncertain:
    """The uncertainty of the product of uncorrelated terms (Eq. 3.1)."""
    value = math.prod(t.value for t in terms)
    if any(t.pct is None for t in terms):
        return Uncertain(value, None, any(t.approximate for t in terms))
    pct = math.sqrt(sum(t.pct**2 for t in terms if t.pct is not None))
    approximate = any(_flag(t.pct, t.approximate) for t in terms)
    return Uncertain(value, pct, _flag(pct, approximate))


def total(terms: Iterable[Uncertain]) -> Uncertain:
    """The uncertainty of the sum of uncorrelated terms (Eq. 3.2).

    A term of value zero adds nothing whatever its uncertainty. Terms of both signs (a
    credit against an emission) make the result approximate: the relative uncertainty of a
    difference grows without bound as the difference goes to zero.
    """
    items = list(terms)
    value = math.fsum(t.value for t in items)
    approximate = any(_flag(t.pct, t.approximate) for t in items)
    signs = {math.copysign(1.0, t.value) for t in items if t.value != 0}
    approximate = approximate or len(signs) > 1
    if any(t.pct is None and t.value != 0 for t in items):
        return Uncertain(value, None, approximate)
    if value == 0:
        return Uncertain(0.0, 0.0 if all(t.value == 0 for t in items) else None, approximate)
    spread = math.sqrt(math.fsum((t.absolute or 0.0) ** 2 for t in items))
    pct = 100.0 * spread / abs(value)
    return Uncertain(value, pct, _flag(pct, approximate))
