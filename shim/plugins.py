"""Load an app's translation rules from a ``package.module:callable`` spec.

Adopters' rules are not the toolkit's: ``ws-migration compare --rules
myapp.migration:rules`` imports ``myapp.migration``, calls ``rules()`` with no
arguments and uses what it returns, an iterable of
:class:`~shim.translate.TranslationRule` or a :class:`~shim.translate.Translator`
(whose ``rules`` are taken; each replay builds its own translator, so counters
never mix). The current directory is importable, as with ``python -m``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from .translate import TranslationRule, Translator

__all__ = ["RulesSpecError", "load_rules"]


class RulesSpecError(ValueError):
    """A ``--rules`` spec that cannot give rules; ``spec`` is it, the message says why."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(f"--rules {spec!r}: {reason}")
        self.spec = spec
        self.reason = reason


def load_rules(spec: str) -> tuple[TranslationRule, ...]:
    """Import, call and check the rules named by ``spec``; raise :class:`RulesSpecError`."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise RulesSpecError(spec, "expected package.module:callable")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.append(cwd)  # after site-packages: never shadows an installed module
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises at import
        raise RulesSpecError(spec, f"cannot import {module_name}: {exc}") from exc
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise RulesSpecError(spec, f"{module_name} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise RulesSpecError(spec, f"{attribute} is not callable")
    try:
        produced = target()
    except Exception as exc:
        raise RulesSpecError(spec, f"{attribute}() raised {type(exc).__name__}: {exc}") from exc
    if isinstance(produced, Translator):
        return produced.rules
    if isinstance(produced, str | bytes) or not hasattr(produced, "__iter__"):
        raise RulesSpecError(
            spec,
            f"{attribute}() returned {type(produced).__name__}, "
            "not an iterable of TranslationRule or a Translator",
        )
    rules = tuple(produced)
    wrong = [type(rule).__name__ for rule in rules if not isinstance(rule, TranslationRule)]
    if wrong:
        raise RulesSpecError(
            spec, f"{attribute}() returned non-rules ({', '.join(sorted(set(wrong)))})"
        )
    if not rules:
        raise RulesSpecError(spec, f"{attribute}() returned no rules")
    try:
        Translator(rules=rules)  # duplicate names, clashing discriminators, ...
    except ValueError as exc:
        raise RulesSpecError(spec, str(exc)) from exc
    return rules
