"""GP106 duplicate-path: two devices (or a device and a model's file) publish to one path.

Fails:   `file_name: "fv$(MA:0:6).conf"` with two devices of the same vendor prefix, or
         an `encryption.previous.file_name` (the old names of a key rotation) that is
         `file_name` itself or gives one device's old name to another device
Passes:  `file_name: "fv$(MA).conf"` (the MAC makes each name unique)
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem, error
from gitprov.inventory import DEVICE, stem
from gitprov.rules import RuleContext, error_at, get
from gitprov.yamldoc import Document

CODE = "GP106"
NAME = "duplicate-path"


def check(ctx: RuleContext) -> Iterator[Problem]:
    fleet = ctx.fleet
    if fleet is None:
        return
    taken: dict[str, Document] = {}  # by a model's file: every device there clashes
    for m in ctx.models:
        for key in ("config_file_name",):
            name = get(m.data, key)
            if isinstance(name, str):
                taken[name] = m
        fw = get(m.data, "firmware", "file")
        if isinstance(fw, str):
            taken[fw] = m

    # During a key rotation each device is published under its old name too.
    previous = get(fleet.data, "encryption", "previous", "file_name")
    if not isinstance(previous, str):
        previous = None
    elif previous == ctx.file_name_env[0]:
        yield error_at(
            fleet,
            ("encryption", "previous", "file_name"),
            CODE,
            "encryption.previous.file_name is file_name itself: each device's file for its "
            "old key and its file for the new one would be published to one path",
            "give file_name a new name for the new key (docs: rotating keys), e.g. "
            '"fv$(MA)-k2.conf"',
        )
        previous = None

    def published(doc: Document) -> Iterator[tuple[str, tuple[int, int]]]:
        named = ctx.file_name_of(doc)
        if named is not None:
            yield named[1], doc.pos(("mac",))
            old = ctx.file_name_of(doc, previous) if previous is not None else None
            if old is not None and old[1] != named[1]:
                yield old[1], doc.pos(("mac",))

    yield from _image_clashes(ctx, fleet)
    index = ctx.index(NAME, (DEVICE,), (ctx.file_name_env, previous), published)
    for name, model in taken.items():
        for (path, _), at in index.members(name):
            yield _clash(path, at, name, model.path)
    # Otherwise the first device to publish a name keeps it.
    for name in index.shared:
        if name in taken:
            continue
        ((first, _), _), *rest = index.members(name)
        for (path, _), at in rest:
            yield _clash(path, at, name, first)


def _image_clashes(ctx: RuleContext, fleet: Document) -> Iterator[Problem]:
    """A firmware image named as a model's option-66 bootstrap (its config_file_name, by
    default its product's name): two different files, one name. The publish refused it
    without saying where; two images of one name, or two bootstraps, are the same bytes."""
    option66 = get(fleet.data, "publish", "option66")
    boot: dict[str, Document] = {}
    for m in ctx.models:
        model = stem(m.path)
        if not (option66 is True or (isinstance(option66, list) and model in option66)):
            continue
        name = get(m.data, "config_file_name")
        if not isinstance(name, str):
            product = get(m.data, "product_name")
            name = f"{product if isinstance(product, str) else model}.conf"
        boot.setdefault(name, m)
    for m in ctx.models:
        image = get(m.data, "firmware", "file")
        if isinstance(image, str) and image in boot:
            yield error_at(
                m,
                ("firmware", "file"),
                CODE,
                f"firmware.file {image!r} is the name of the option-66 bootstrap of "
                f"{boot[image].path}: two different files would be published as it",
                "give the image its own name (the one its vendor gives it, e.g. IP542N_F107.bin)",
            )


def _clash(path: str, at: tuple[int, int], name: str, other: str) -> Problem:
    return error(
        path,
        *at,
        CODE,
        f"publishes to {name!r}, which {other} publishes too",
        "make the fleet's file_name unique per device (include $(MA))",
    )
