"""The lifecycle's composition as an editable file: ``pipeline.toml`` in a plugin tree.

Which acquirers and selectors run, in which order, which rewarder and optimizer, and with which
options: the run config's ``[[acquire]]``, ``[[select]]``, ``[rewarder]`` and ``[optimizer]``
sections. When evolve targets ``"pipeline"`` it writes them into the seed tree as this file, and
proposers edit it like any other (add, remove or reorder a selector, swap a component for another
registered one, set an option). Wherever a tree's plugins run (the round's training, the judge's
payloads), ``apply`` lays the tree's pipeline over the run config; a name no registry knows is the
variant's load failure, one line.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError

PIPELINE_FILE = "pipeline.toml"
LISTS = ("acquire", "select")  # sections holding several components, in order
SINGLES = ("rewarder", "optimizer")
HEADER = ("# The lifecycle's training pipeline (selfloop.core.pipeline): laid over the run config\n"
          "# wherever this plugin tree runs. Sections: [[acquire]], [[select]] (in order),\n"
          "# [rewarder], [optimizer]; each a registered name and its options.\n")


def render(config) -> str:
    """The config's pipeline sections as TOML."""
    return render_sections({section: getattr(config, section).model_dump(mode="json")
                            if section in SINGLES else [c.model_dump(mode="json") for c in getattr(config, section)]
                            for section in (*LISTS, *SINGLES)})


def render_sections(sections: dict[str, Any]) -> str:
    """Pipeline sections ({"select": [{"name": ..., "options": {...}}], "optimizer": {...}}) as TOML."""
    parts = [HEADER]
    for section in (*LISTS, *SINGLES):
        if section not in sections:
            continue
        items = sections[section]
        for item in (items if section in LISTS else [items]):
            header = f"[[{section}]]" if section in LISTS else f"[{section}]"
            parts.append(f"\n{header}\nname = {json.dumps(item['name'])}\n")
            if item.get("options"):
                parts.append(f"options = {_inline(item['options'])}\n")
    return "".join(parts)


def parse(text: str) -> dict[str, Any]:
    """The sections of a pipeline text; ConfigError (one line) when it is not a valid one."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{PIPELINE_FILE}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(LISTS) - set(SINGLES))
    if unknown:
        raise ConfigError(f"{PIPELINE_FILE}: unknown section(s) {', '.join(unknown)}; "
                          f"it holds {', '.join((*LISTS, *SINGLES))}")
    for section in LISTS:
        if section in data and not isinstance(data[section], list):
            raise ConfigError(f"{PIPELINE_FILE}: [{section}] must be a list of tables ([[{section}]])")
    if "acquire" in data and not data["acquire"]:
        raise ConfigError(f"{PIPELINE_FILE}: no acquirer left: a round needs at least one")
    return data


def apply(config, text: str | None):
    """``config`` with a pipeline text's sections in place of its own (``text`` None: unchanged)."""
    if text is None:
        return config
    from pydantic import ValidationError

    data = config.model_dump(mode="json")
    data.update(parse(text))
    try:
        return type(config).model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{PIPELINE_FILE}: {where}: {first['msg']}") from None


def apply_tree(config, plugins_dir: Path | None):
    """``config`` with the pipeline of the plugin tree at ``plugins_dir``, if it has one."""
    path = Path(plugins_dir) / PIPELINE_FILE if plugins_dir else None
    return apply(config, path.read_text() if path is not None and path.is_file() else None)


def unknown_components(config, registry) -> list[str]:
    """The pipeline's components no registration provides, as "kind 'name'"."""
    known = {(r.kind, r.name) for r in registry.all()}
    kinds = {"acquire": "acquirer", "select": "selector", "rewarder": "rewarder", "optimizer": "optimizer"}
    out = []
    for section, kind in kinds.items():
        items = getattr(config, section)
        for item in (items if isinstance(items, list) else [items]):
            if (kind, item.name) not in known:
                out.append(f"{kind} {item.name!r}")
    return out


def _inline(value) -> str:
    """A TOML inline value (tables inline, as ``{ key = value }``)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)
