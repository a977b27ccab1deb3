"""GP116 unpublished-param: a parameter set by a readable name whose DBID key the vendor
has not published (Resync Periodic, Upgrade Rule, …; see `gitprov params`), for a device
whose model binds no key for it.

gitprov never invents a DBID key: a guessed key would be silently ignored by the device.
Once the key is known (for example from a configuration file exported by the device), the
model binds it (`bindings:` in models/NAME.yaml, with its `source:`), and its devices may
set the parameter by name. A fleet or profile value is an error when it reaches a device
of a model that binds no key for it.

Fails:   `params: {provision.resync_periodic: 86400}` for a device of a model without a
         binding
Passes:  the same, with `bindings: {provision.resync_periodic: {key: DBID_…, source: "…"}}`
         in the device's model
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.inventory import DEVICE, FLEET, PROFILE, stem
from gitprov.rules import RuleContext, get
from gitprov.rules._bindings import model_bindings
from gitprov.yamldoc import Document

CODE = "GP116"
NAME = "unpublished-param"

_ELSEWHERE = {
    "provision.config_file_name": "set `config_file_name:` in models/NAME.yaml instead",
}


def _names(ctx: RuleContext, doc: Document) -> tuple[str, ...]:
    """The unpublished names `doc` sets (not unsets) under `params:`."""

    def names() -> tuple[str, ...]:
        params = get(doc.data, "params")
        if not isinstance(params, dict):
            return ()
        return tuple(
            n
            for n, v in params.items()
            if v is not None and ctx.catalog.unpublished_named(n) is not None
        )

    return ctx.facts.memo((NAME, doc.path, doc.oid, ctx.catalog.digest), names)


def _bind_hint(name: str, model: str) -> str:
    return _ELSEWHERE.get(
        name,
        f"bind it in models/{model}.yaml to the key its devices use, read e.g. from a "
        f'configuration exported by one: bindings: {{{name}: {{key: DBID_…, source: "…"}}}}',
    )


def check(ctx: RuleContext) -> Iterator[Problem]:
    bindings = model_bindings(ctx)
    anywhere = {n for b in bindings.values() for n in b}

    # Entries are plain facts (where a name is set), never the document: an index is kept
    # on disk between processes (gitprov.checkcache), and a document in it is the whole
    # file kept again for every device.
    def devices(doc: Document) -> Iterator[tuple[tuple[str, ...], tuple[int, int] | None]]:
        model, profile = get(doc.data, "model"), get(doc.data, "profile")
        if not isinstance(model, str):
            return
        yield ("use", model, profile if isinstance(profile, str) else ""), None
        for name in _names(ctx, doc):
            yield ("own", model, name), doc.pos(("params", name), key=True)

    index = ctx.index(NAME, (DEVICE,), ctx.catalog.digest, devices)
    # Models, fleet and profiles set names for the devices they reach: which models don't
    # bind them, and one device of each for the message.
    unbound: dict[tuple[str, str], dict[str, str]] = {}
    for key in sorted(index.keys()):
        if key[0] != "use" or key[1] not in bindings:
            continue
        _, model, profile = key
        layers = [*ctx.of(FLEET), *ctx.profile_chain(profile)] if profile else [*ctx.of(FLEET)]
        for layer in layers:
            for name in _names(ctx, layer):
                if name not in bindings[model]:
                    (example, _), _ = index.first(key)
                    unbound.setdefault((layer.path, name), {}).setdefault(model, example)
    for layer in [*ctx.of(FLEET), *ctx.of(PROFILE)]:
        for name in _names(ctx, layer):
            yield from _layer_problem(ctx, layer, name, anywhere, unbound.get((layer.path, name)))
    for doc in ctx.models:
        model = stem(doc.path)
        for name in _names(ctx, doc):
            if name not in bindings.get(model, {}):
                yield _problem(
                    ctx,
                    doc,
                    name,
                    f"models/{model}.yaml binds no DBID key for it",
                    _bind_hint(name, model),
                )
    for key in sorted(index.keys()):
        if key[0] == "own" and key[1] in bindings and key[2] not in bindings[key[1]]:
            _, model, name = key
            for (path, _), at in index.members(key):
                assert at is not None
                yield _problem_at(
                    ctx,
                    path,
                    at,
                    name,
                    f"its model {model} binds no DBID key for it",
                    _bind_hint(name, model),
                )


def _layer_problem(
    ctx: RuleContext,
    layer: Document,
    name: str,
    anywhere: set[str],
    unbound: dict[str, str] | None,
) -> Iterator[Problem]:
    if name not in anywhere:
        yield _problem(
            ctx, layer, name, "no model binds a DBID key for it", _bind_hint(name, "NAME")
        )
    elif unbound:
        model, device = min(unbound.items())
        others = f" (and {len(unbound) - 1} more models)" if len(unbound) > 1 else ""
        yield _problem(
            ctx,
            layer,
            name,
            f"it reaches devices of model {model}{others}, e.g. {stem(device)}, whose "
            "model binds no DBID key for it",
            _bind_hint(name, model) + "; or set it only for the models that bind it",
        )


def _problem(ctx: RuleContext, doc: Document, name: str, why: str, hint: str) -> Problem:
    return _problem_at(ctx, doc.path, doc.pos(("params", name), key=True), name, why, hint)


def _problem_at(
    ctx: RuleContext, path: str, at: tuple[int, int], name: str, why: str, hint: str
) -> Problem:
    u = ctx.catalog.unpublished_named(name)
    label = f" ({u.label})" if u is not None and u.label else ""
    return error(
        path,
        *at,
        CODE,
        f"{name}{label}: the vendor has not published its DBID key and {why}, so gitprov "
        "cannot write it",
        hint,
    )
