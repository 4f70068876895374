"""Compatibility shim between a legacy WebSocket manager and WebSocketService.

Everything a migrating backend uses is importable from here::

    from shim import CompatWebSocketManager, TranslationRule, FieldMap, migration_router
"""

from .diff import DiffConfig, Differ, ExpectedDifference, MismatchKind, Side
from .manager import LEGACY_CODEC, CompatWebSocketManager
from .ops import migration_router
from .scope import ProducerScope
from .stages import FixedStages, RoutingDecision, Stage, StageDecider
from .translate import (
    DEFAULT_UNTRANSLATED_TOPIC,
    EXTRA_KEY,
    LEGACY_KEY,
    OMITTED_KEY,
    TEXT_KEY,
    VALUE_KEY,
    FieldMap,
    Translation,
    TranslationError,
    TranslationRule,
    Translator,
)
from .wire import WireFormat

__all__ = [
    "DEFAULT_UNTRANSLATED_TOPIC",
    "EXTRA_KEY",
    "LEGACY_CODEC",
    "LEGACY_KEY",
    "OMITTED_KEY",
    "TEXT_KEY",
    "VALUE_KEY",
    "CompatWebSocketManager",
    "DiffConfig",
    "Differ",
    "ExpectedDifference",
    "FieldMap",
    "FixedStages",
    "MismatchKind",
    "ProducerScope",
    "RoutingDecision",
    "Side",
    "Stage",
    "StageDecider",
    "Translation",
    "TranslationError",
    "TranslationRule",
    "Translator",
    "WireFormat",
    "migration_router",
]
