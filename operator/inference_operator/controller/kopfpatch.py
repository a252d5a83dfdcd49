"""One fix to kopf, applied by the CLI (cli.py) before kopf runs.

Kopf's index barrier holds every object's worker until every indexed object of every watched kind
has been indexed once: each worker makes a toggle in one ToggleSet, drops it once indexed, and
waits for the set to turn on. Kopf wakes every waiter on every drop (``notify_all``), though the
set can turn on only at the last one: with M objects, M × M wake-ups, each taking the set's lock in
turn. At a thousand InferenceServices (about 6,000 objects with children and pods) a restart spent
minutes of CPU there before the first pass, while a new InferenceService waited.

The fix: making or dropping a toggle wakes the waiters only when the set's state changes, the
only thing they wait for (a toggle's own waiters are woken by ``Toggle.turn_to``, unchanged).
Applied only to the kopf release and ToggleSet this was written against; otherwise kopf is left
as it is, and ``applied()`` says so (a unit test fails then, so an upgrade of kopf is looked at).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import kopf

try:  # a private module: a kopf that moved it runs unpatched (slower starts), never fails to start
    from kopf._cogs.aiokits import aiotoggles
except ImportError:  # pragma: no cover - depends on the kopf installed
    aiotoggles = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
_MARK = "_inference_operator_notifies_on_change"
# The kopf releases whose ToggleSet this was read against (the lock pins one of them). Another
# release runs unpatched until someone reads its ToggleSet again: tests/test_kopfpatch.py fails.
TESTED = ("1.45.",)


async def _notify_on_change(self: Any, change: Callable[[], None]) -> None:
    """Change the set's toggles; wake its waiters only if that turned the set on or off."""
    async with self._condition:
        before = self.is_on()
        change()
        if self.is_on() != before:
            self._condition.notify_all()


async def _make_toggle(self: Any, __val: bool = False, *, name: Optional[str] = None) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    await _notify_on_change(self, lambda: self._toggles.add(toggle))
    return toggle


async def _drop_toggle(self: Any, toggle: aiotoggles.Toggle) -> None:
    await _notify_on_change(self, lambda: self._toggles.discard(toggle))


async def _drop_toggles(self: Any, toggles: Any) -> None:
    await _notify_on_change(self, lambda: self._toggles.difference_update(toggles))


def _fits() -> bool:
    """The ToggleSet this fix was written against: a tested kopf, the methods and their fields."""
    if aiotoggles is None or not str(getattr(kopf, "__version__", "")).startswith(TESTED):
        return False
    probe = aiotoggles.ToggleSet(all)
    return all(hasattr(aiotoggles.ToggleSet, m) for m in ("make_toggle", "drop_toggle", "drop_toggles", "is_on")) \
        and all(hasattr(probe, f) for f in ("_condition", "_toggles", "_fn"))


def apply() -> bool:
    if applied():
        return True
    if not _fits():
        log.warning("kopf's ToggleSet is not the one the start-up fix was written for; left as it is")
        return False
    aiotoggles.ToggleSet.make_toggle = _make_toggle  # type: ignore[method-assign]
    aiotoggles.ToggleSet.drop_toggle = _drop_toggle  # type: ignore[method-assign]
    aiotoggles.ToggleSet.drop_toggles = _drop_toggles  # type: ignore[method-assign]
    setattr(aiotoggles.ToggleSet, _MARK, True)
    return True


def applied() -> bool:
    return aiotoggles is not None and bool(getattr(aiotoggles.ToggleSet, _MARK, False))
