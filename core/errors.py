"""The one exception family of selfloop.

Every error a user can cause (bad config, broken plugin, sandbox failure, damaged archive) is a
``SelfloopError``; the CLI prints its message as one line and exits non-zero, never a traceback.
"""


class SelfloopError(Exception):
    """Base class: the message is a complete, one-line explanation for the user."""


class ConfigError(SelfloopError):
    """A run config is malformed or names something that does not exist."""


class PluginError(SelfloopError):
    """A plugin failed to load, registered something invalid, or raised while running."""


class StageError(PluginError):
    """A component raised while a lifecycle or evolve stage ran it."""

    def __init__(self, stage: str, component: str, plugin: str, cause: BaseException):
        self.stage, self.component, self.plugin, self.cause = stage, component, plugin, cause
        super().__init__(
            f"stage {stage!r}: component {component!r} (plugin {plugin}) raised "
            f"{type(cause).__name__}: {cause}"
        )


class SandboxError(SelfloopError):
    """A sandbox backend is unusable or failed outside the payload's control."""


class ArchiveError(SelfloopError):
    """The variant archive is missing, damaged, or asked for something it does not hold."""


class CheckpointError(SelfloopError):
    """A model checkpoint is missing, corrupt, or does not fit the memory it is given."""


class ProposalError(SelfloopError):
    """A proposer could not produce a usable edit (nothing to mutate, the model's edits never applied)."""
