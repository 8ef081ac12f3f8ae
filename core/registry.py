"""Finding components: built-in plugins, entry points and plugin directories, all the same way.

Every plugin is a module with ``register_*`` hook implementations. The registry calls each hook
implementation with a ``register`` callback bound to that plugin, so every component knows the
plugin, the file and the source it came from.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError
from .kinds import KINDS, check_component
from .tunable import Tunable, find_tunables, tunable_name

ENTRY_POINT_GROUP = "selfloop"
LOAD_ENV = "SELFLOOP_LOAD_PLUGINS"
BUILTIN_PACKAGE = "selfloop.plugins"
# A plugins directory whose __init__.py sets SURFACE = "selfloop.plugins" is a variant of the
# built-in plugins: it replaces them instead of adding to them (``is_surface``).
SURFACE_MARKER = "SURFACE"


REQUIRED = inspect.Parameter.empty  # the "default" of an option the factory needs


@dataclass(frozen=True)
class Option:
    """One option of a component, from its factory's signature."""

    name: str
    type: str  # the annotation as written ("int", "float | None"); "" when there is none
    default: Any  # REQUIRED when the factory needs it
    tunable: Tunable | None  # the module-level tunable(...) the default is, with its bounds

    def to_dict(self) -> dict[str, Any]:
        t = self.tunable
        return {"name": self.name, "type": self.type, "required": self.default is REQUIRED,
                "default": None if self.default is REQUIRED else self.default,
                "tunable": None if t is None else
                {"name": t.name, "low": t.low, "high": t.high,
                 "choices": list(t.choices) if t.choices is not None else None}}


@dataclass(frozen=True)
class Registration:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    source: str  # "builtin", "entrypoint", or "directory"
    location: str  # the file the plugin module was loaded from
    description: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind, "name": self.name, "plugin": self.plugin, "source": self.source,
            "location": self.location, "description": self.description,
        }

    def options(self) -> list[Option] | None:
        """The options the factory takes, declared once: by its signature (name, annotation,
        default), or, for a factory taking ``**options``, by the pydantic model it names as
        ``OPTIONS``. Each comes with the module-level tunable its default is
        (``tunable.tunable_name``). None when neither can say."""
        declared = {t.name: t for t in _module_tunables(self.factory)}

        def option(name, annotation, default):
            t = declared.get(tunable_name(name))
            linked = t is not None and default is not REQUIRED and t.value == default
            return Option(name, _type_name(annotation), default, t if linked else None)

        try:
            parameters = list(inspect.signature(self.factory).parameters.values())
        except (TypeError, ValueError):
            return None
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            model = getattr(self.factory, "OPTIONS", None)
            if not (inspect.isclass(model) and hasattr(model, "model_fields")):
                return None
            return [option(name, field.annotation,
                           REQUIRED if field.is_required() else field.get_default(call_default_factory=True))
                    for name, field in model.model_fields.items()]
        return [option(p.name, "" if p.annotation is p.empty else p.annotation,
                       REQUIRED if p.default is p.empty else p.default)
                for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def option_names(self) -> list[str] | None:
        """The names of ``options()``, in order (None when it cannot say)."""
        options = self.options()
        return None if options is None else [o.name for o in options]

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise ConfigError naming the first option the factory does not take, and the valid ones."""
        valid = self.option_names()
        unknown = [key for key in options if valid is not None and key not in valid]
        if not unknown:
            return
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        raise ConfigError(
            f"{self.kind} {self.name!r} (plugin {self.plugin}) takes no option {unknown[0]!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; valid options: {', '.join(valid) or 'none'}"
        )


class Registry:
    """All components known to one run, by kind and name."""

    def __init__(self, plugin_manager: pluggy.PluginManager, registrations: Iterable[Registration],
                 plugins_dirs: Iterable[str | os.PathLike] = ()):
        self._pm = plugin_manager
        self.plugins_dirs = [str(d) for d in plugins_dirs]  # to load the same plugins elsewhere
        self._by_kind: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        for reg in registrations:
            self._by_kind[reg.kind][reg.name] = reg

    def notify(self, event: str, *, log=None, **kwargs) -> None:
        """Call every plugin's ``event`` hook (``on_round_finished``...); a hook that raises is
        logged with its plugin's name and never stops the caller."""
        for impl in getattr(self._pm.hook, event).get_hookimpls():
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception as exc:  # noqa: BLE001 - an observer must not break the loop it observes
                message = f"plugin {impl.plugin_name}: {event} failed: {type(exc).__name__}: {exc}"
                (log or (lambda m: print(m, file=sys.stderr)))(message)

    def add_commands(self, cli) -> None:
        """Let every plugin add its subcommands to the click group ``cli``."""
        self._pm.hook.register_commands(cli=cli)

    def all(self) -> list[Registration]:
        return [reg for kind in KINDS for reg in self._by_kind[kind].values()]

    def names(self, kind: str) -> list[str]:
        return sorted(self._by_kind[kind])

    def get(self, kind: str, name: str) -> Registration:
        try:
            return self._by_kind[kind][name]
        except KeyError:
            valid = ", ".join(self.names(kind)) or "none registered"
            raise ConfigError(f"unknown {kind} {name!r}; valid {kind} names: {valid}") from None

    def create(self, kind: str, name: str, options: dict[str, Any] | None = None) -> Any:
        """Build a component from its registered factory and the config's options."""
        reg = self.get(kind, name)
        try:
            component = reg.factory(**(options or {}))
        except TypeError as exc:
            raise ConfigError(f"{kind} {name!r} (plugin {reg.plugin}): bad options: {exc}") from None
        except Exception as exc:
            raise PluginError(
                f"{kind} {name!r} (plugin {reg.plugin}, {reg.location}) failed to build: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        check_component(kind, component, f"{kind} {name!r} (plugin {reg.plugin}, {reg.location})")
        return component


def load_registry(
    plugins_dirs: Sequence[str | os.PathLike] = (),
    *,
    builtins: bool = True,
    entry_points: bool = True,
) -> Registry:
    """Load built-in plugins, entry-point plugins and plugin directories into one registry.

    ``SELFLOOP_LOAD_PLUGINS`` limits entry points to a comma list of distributions (empty: none).
    A plugins directory that is a variant of the built-in surface replaces the built-ins.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    origins: dict[str, tuple[str, str]] = {}  # plugin name -> (source, location)

    dir_modules = []
    for directory in plugins_dirs:
        modules, surface = _import_directory(Path(directory))
        builtins = builtins and not surface
        dir_modules += modules
    entry_point_plugins = _entry_point_plugins() if entry_points else []
    # an installed surface variant (an exported archive variant) replaces the built-ins too
    builtins = builtins and not any(is_surface(d) for _, module, _ in entry_point_plugins
                                    if (d := _package_dir(module)) is not None)
    if builtins:
        for module in _walk_package(importlib.import_module(BUILTIN_PACKAGE)):
            _register(pm, module, module.__name__, "builtin", origins)
    for name, module, dist in entry_point_plugins:
        _register(pm, module, name, "entrypoint", origins, dist=dist)
    for module in dir_modules:
        _register(pm, module, module.__name__, "directory", origins)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        plugin = exc.plugin if isinstance(exc.plugin, ModuleType) else None
        where = _module_file(plugin) if plugin else "a plugin"
        raise PluginError(f"{where}: {exc}") from None
    return Registry(pm, _collect(pm, origins), plugins_dirs)


def is_surface(directory: str | os.PathLike) -> bool:
    """Whether a plugins directory is a variant of the built-in plugins (an archived variant,
    materialized or exported): its ``__init__.py`` assigns ``SURFACE = "selfloop.plugins"`` at
    module level, as ``plugins/__init__.py`` does. Such a directory replaces the built-ins instead
    of adding to them. Read, not imported, so a caller may ask before loading anything."""
    try:
        tree = ast.parse((Path(directory) / "__init__.py").read_bytes())
    except (OSError, SyntaxError, ValueError):
        return False
    return any(isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
               and node.value.value == BUILTIN_PACKAGE
               and any(isinstance(t, ast.Name) and t.id == SURFACE_MARKER for t in node.targets)
               for node in tree.body)


def _package_dir(module: ModuleType) -> Path | None:
    """The directory of the top-level package a module belongs to (None: not a package)."""
    top = sys.modules.get(module.__name__.split(".")[0])
    file = getattr(top, "__file__", None)
    return Path(file).parent if file and Path(file).name == "__init__.py" else None


def _type_name(annotation) -> str:
    """An annotation as written: a string under ``from __future__ import annotations``."""
    if isinstance(annotation, str):
        return annotation
    if annotation is None:
        return ""
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _module_tunables(factory) -> list[Tunable]:
    """The module-level tunables of the file a factory is defined in (none when unreadable)."""
    try:
        path = inspect.getsourcefile(factory)
        return find_tunables(Path(path).read_text()) if path else []
    except (TypeError, OSError, SyntaxError, ValueError):
        return []


def _register(pm, module, name, source, origins, dist: str | None = None) -> None:
    if not any(n.startswith(("register_", "on_")) for n in vars(module)):
        return
    if pm.get_plugin(name) is not None:
        raise PluginError(f"{_module_file(module)}: a plugin named {name!r} is already loaded")
    try:
        pm.register(module, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{_module_file(module)}: {exc}") from None
    origins[name] = (source, dist or _module_file(module))


def _collect(pm: pluggy.PluginManager, origins: dict[str, tuple[str, str]]) -> list[Registration]:
    registrations: dict[tuple[str, str], Registration] = {}
    for kind in KINDS:
        caller = getattr(pm.hook, f"register_{kind}")
        for impl in caller.get_hookimpls():
            source, location = origins.get(impl.plugin_name, ("builtin", "?"))

            def register(name, factory, *, description="", _kind=kind, _impl=impl,
                         _source=source, _location=location):
                where = f"{_location} (plugin {_impl.plugin_name})"
                if not isinstance(name, str) or not name.isidentifier():
                    raise PluginError(f"{where}: component name {name!r} is not an identifier")
                if not callable(factory):
                    raise PluginError(f"{where}: factory for {_kind} {name!r} is not callable")
                previous = registrations.get((_kind, name))
                if previous is not None:
                    raise PluginError(
                        f"{where}: duplicate {_kind} name {name!r}, already registered by plugin "
                        f"{previous.plugin} ({previous.location})"
                    )
                if inspect.isclass(factory):
                    check_component(_kind, factory, f"{where}: {_kind} {name!r}")
                registrations[(_kind, name)] = Registration(
                    _kind, name, factory, _impl.plugin_name, _source, _location, description
                )

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"{location} (plugin {impl.plugin_name}): register_{kind} raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
    return list(registrations.values())


def _entry_point_plugins() -> list[tuple[str, ModuleType, str]]:
    wanted = os.environ.get(LOAD_ENV)
    allowed = None if wanted is None else {_norm(d) for d in wanted.split(",") if d.strip()}
    found: dict[str, list] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        found.setdefault(_norm(dist), []).append((ep, dist))
    if allowed is not None:
        missing = sorted(allowed - set(found))
        if missing:
            raise PluginError(
                f"{LOAD_ENV} names {', '.join(missing)}, which provide no {ENTRY_POINT_GROUP!r} "
                f"entry point; installed plugin distributions: {', '.join(sorted(found)) or 'none'}"
            )
    plugins = []
    for key in sorted(found):
        if allowed is not None and key not in allowed:
            continue
        for ep, dist in found[key]:
            try:
                module = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"entry point {ep.name!r} of {dist} ({ep.value}) failed to import: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            plugins.append((ep.name, module, f"{dist} {ep.dist.version if ep.dist else ''}".strip()))
    return plugins


def _import_directory(directory: Path) -> tuple[list[ModuleType], bool]:
    """Import a plugins directory. Returns its modules and whether it is a built-in surface variant.

    A directory with ``__init__.py`` is imported as a package (its modules may import each other
    relatively); otherwise each ``*.py`` file is imported on its own.
    """
    directory = directory.resolve()
    if not directory.is_dir():
        raise PluginError(f"{directory}: plugins directory does not exist")
    tag = hashlib.sha1(str(directory).encode()).hexdigest()[:10]
    package_name = f"selfloop_dir_{tag}"
    for loaded in [m for m in sys.modules if m == package_name or m.startswith(package_name + ".")]:
        del sys.modules[loaded]  # reload on every call: the files may have changed
    if (directory / "__init__.py").exists():
        package = _import_file(package_name, directory / "__init__.py", package=True)
        return [package, *_walk_package(package)], is_surface(directory)
    namespace = ModuleType(package_name)
    namespace.__path__ = []
    sys.modules[package_name] = namespace
    modules = [
        _import_file(f"{package_name}.{path.stem}", path)
        for path in sorted(directory.glob("*.py"))
        if not path.name.startswith("_")
    ]
    return modules, False


def _import_file(name: str, path: Path, package: bool = False) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise PluginError(f"{path}:{exc.lineno}: syntax error in plugin: {exc.msg}") from None
    except Exception as exc:
        del sys.modules[name]
        raise PluginError(f"{path}: plugin failed to import: {type(exc).__name__}: {exc}") from None
    return module


def _walk_package(package: ModuleType) -> list[ModuleType]:
    """Every module below a package, in a stable order (import errors name the file)."""
    modules = []
    for info in sorted(pkgutil.walk_packages(package.__path__, package.__name__ + "."),
                       key=lambda i: i.name):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        if info.name in sys.modules:
            modules.append(sys.modules[info.name])
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except SyntaxError as exc:
            path = exc.filename or _module_path(info)
            raise PluginError(f"{path}:{exc.lineno}: syntax error in plugin: {exc.msg}") from None
        except Exception as exc:
            raise PluginError(
                f"{_module_path(info)}: plugin failed to import: {type(exc).__name__}: {exc}"
            ) from None
    return modules


def _module_path(info: pkgutil.ModuleInfo) -> str:
    """The file of a module found by walk_packages (looked up only to name it in an error)."""
    spec = info.module_finder.find_spec(info.name, None)
    return spec.origin if spec and spec.origin else info.name


def _module_file(module: ModuleType) -> str:
    return getattr(module, "__file__", None) or module.__name__


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")
