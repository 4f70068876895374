"""Migration stages from Unleash: an embedded toggles file, or a real server.

``from flags import UnleashStageDecider, FlagSettings`` gives the shim its
decider::

    decider = UnleashStageDecider(settings=FlagSettings.from_env())
    await decider.start()            # in the app's lifespan
    manager = CompatWebSocketManager(decider=decider)
    ...
    await decider.stop()

Modules: ``config`` (settings, environment, the default toggles path),
``toggles`` (the client-features document and its validation), ``edit`` (stage
and kill-switch edits, Unleash import format), ``files`` (atomic write, creation
from the packaged document, change detection), ``resolve`` (the precedence:
override > kill switch > variant > default), ``client`` (building the
UnleashClient), ``provider`` (the decider), ``status`` (stage split), ``cli``
(the ``ws-migration flags`` command).
"""

from .config import (
    DEFAULT_TOGGLES_FILE,
    PACKAGED_TOGGLES_FILE,
    TOGGLES_ENV,
    TOGGLES_FILENAME,
    FlagSettings,
    default_toggles_path,
)
from .edit import (
    Rule,
    default_document,
    endpoint_rules,
    kill_switch_on,
    set_endpoint_stage,
    set_kill_switch,
    to_import_format,
)
from .errors import FlagsConfigError, FlagsError, ToggleEditError, ToggleFileError
from .files import FileWatch, create_if_missing, read_document, write_document
from .provider import UnleashStageDecider
from .resolve import resolve_stage, sample_rate_of
from .status import StageSplit, effective_stages
from .toggles import (
    DEFAULT_ENDPOINTS,
    ENDPOINT_FIELD,
    KILL_SWITCH_TOGGLE,
    STAGE_TOGGLE,
    check_document,
    parse_document,
    toggles_digest,
)

__all__ = [
    "DEFAULT_ENDPOINTS",
    "DEFAULT_TOGGLES_FILE",
    "ENDPOINT_FIELD",
    "KILL_SWITCH_TOGGLE",
    "PACKAGED_TOGGLES_FILE",
    "STAGE_TOGGLE",
    "TOGGLES_ENV",
    "TOGGLES_FILENAME",
    "FileWatch",
    "FlagSettings",
    "FlagsConfigError",
    "FlagsError",
    "Rule",
    "StageSplit",
    "ToggleEditError",
    "ToggleFileError",
    "UnleashStageDecider",
    "check_document",
    "create_if_missing",
    "default_document",
    "default_toggles_path",
    "effective_stages",
    "endpoint_rules",
    "kill_switch_on",
    "parse_document",
    "read_document",
    "resolve_stage",
    "sample_rate_of",
    "set_endpoint_stage",
    "set_kill_switch",
    "to_import_format",
    "toggles_digest",
    "write_document",
]
