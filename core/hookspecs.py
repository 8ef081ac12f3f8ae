"""The hook specifications of selfloop: markers and specs only.

There is one ``register_*`` hook per kind of component. Each receives a ``register`` callback and
calls it once per component it offers::

    from selfloop.core.hookspecs import hookimpl

    @hookimpl
    def register_selector(register):
        register("my_filter", MyFilter, description="drops answers longer than the prompt")

``register(name, factory, *, description="")``: ``factory(**options)`` builds the component from the
options of the run config; it must satisfy the kind's Protocol (``selfloop.core.kinds``). Specs only
ever gain arguments, so a plugin written today keeps loading.

Besides components, a plugin may extend the command line (``register_commands``) and follow the
loops (``on_round_finished``, ``on_variant_archived``): experiment trackers are such plugins. An
event hook's failure is logged and never stops the loop that called it.
"""

import pluggy

PROJECT = "selfloop"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_model(register):
    """Offer model providers: they build a run's base policy and load its checkpoints."""


@hookspec
def register_task(register):
    """Offer tasks: problem generators at a difficulty, with the ground-truth verifier."""


@hookspec
def register_acquirer(register):
    """Offer data acquirers: they produce candidate training examples for a round."""


@hookspec
def register_selector(register):
    """Offer data selectors: they keep, drop or weight examples and report why."""


@hookspec
def register_generator(register):
    """Offer generators: they sample completions from a policy (GRO: generation)."""


@hookspec
def register_rewarder(register):
    """Offer rewarders: they score completions (GRO: reward)."""


@hookspec
def register_optimizer(register):
    """Offer optimizers: they update a policy from examples and rewards (GRO: optimization)."""


@hookspec
def register_refiner(register):
    """Offer refiners: they turn a policy and problems into final answers at inference time."""


@hookspec
def register_evaluator(register):
    """Offer evaluators: they measure a policy on fresh or held-out problems and return metrics."""


@hookspec
def register_proposer(register):
    """Offer proposers: the meta-agent's authors of code edits to plugin files."""


@hookspec
def register_parent_selector(register):
    """Offer parent selectors: they pick which archived variants to build on next."""


@hookspec
def register_commands(cli):
    """Add subcommands to the ``selfloop`` command line: ``cli`` is its click group."""


@hookspec
def on_round_finished(report, run_dir, config):
    """A lifecycle round finished: ``report`` is its entry of ``report.json`` (a dict), ``run_dir``
    the run's directory (a Path), ``config`` the run's config as a dict."""


@hookspec
def on_variant_archived(variant, archive_dir):
    """evolve archived a variant: ``variant`` is its record as a dict (id, parent, kind, scores,
    verdict...), ``archive_dir`` the archive's directory (a Path)."""
