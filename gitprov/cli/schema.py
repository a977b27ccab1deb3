"""`gitprov schema`, `params`, `completion`: what gitprov accepts, for editors and shells."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitprov import paths
from gitprov.cli.common import Output, Subparsers, add_command, add_format
from gitprov.errors import UsageError
from gitprov.unsafe import echoed, line_safe

if TYPE_CHECKING:
    from gitprov.catalog import Unpublished


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "schema",
        run_schema,
        help="print or write the JSON Schemas (for editors and programs)",
        description="Print one JSON Schema (draft 2020-12), or write all of them into a "
        "directory for editors: e.g. `# yaml-language-server: $schema=../../schemas/"
        "device.schema.json` at the top of a device file. The *-output kinds describe "
        "gitprov's own --format json output.",
        examples=(
            ("gitprov schema --list", "the name of every schema"),
            ("gitprov schema device", "the JSON Schema of a device file"),
            ("gitprov schema --write schemas", "every schema into ./schemas, for editors"),
        ),
    )
    p.add_argument("kind", nargs="?", default="device", help="which schema (--list shows all)")
    p.add_argument("--write", metavar="DIR", help="write every schema into DIR")
    p.add_argument("--list", action="store_true", help="list the schema kinds")

    p = add_command(
        sub,
        "params",
        run_params,
        help="the parameter catalog",
        description="Every parameter gitprov knows: DBID key, readable name, type, scope, "
        "default. `(not published)`: the reference names it, but its DBID key is not "
        "public; a model binds it to the key its devices use (`bindings:` in "
        "models/NAME.yaml), and only then its devices may set it by name.",
        examples=(
            ("gitprov params", "every parameter: DBID key, readable name, type, scope, default"),
            ("gitprov params --format json", "the same, for a program"),
        ),
    )
    add_format(p)

    p = add_command(
        sub,
        "completion",
        run_completion,
        help="print the shell completion script (bash, zsh or fish)",
        description="Tab completion of commands and options. Install it with, e.g.:\n"
        "  bash: gitprov completion bash > ~/.local/share/bash-completion/completions/gitprov\n"
        "  zsh:  gitprov completion zsh > ~/.zfunc/_gitprov   (fpath+=~/.zfunc)\n"
        "  fish: gitprov completion fish > ~/.config/fish/completions/gitprov.fish",
        examples=(
            (
                "gitprov completion bash",
                "the bash completion script (install it as the description says)",
            ),
        ),
    )
    p.add_argument("shell", choices=["bash", "zsh", "fish"], help="your shell")


def run_schema(args: argparse.Namespace, out: Output) -> int:
    from gitprov.schemas import all_schemas, for_editors, output_schemas

    schemas = {**all_schemas(), **output_schemas()}
    kinds = [n.removesuffix(".schema.json") for n in schemas]
    if args.write:
        target = Path(args.write)
        if paths.kind(target, "--write") not in (None, stat.S_IFDIR):
            raise UsageError(f"--write {target} is a file", hint="give a directory")
        from gitprov.publish import write_atomic

        try:
            target.mkdir(parents=True, exist_ok=True)
            for name, s in sorted(schemas.items()):
                # (a temp renamed over the name: in a checked-out repository's schemas/
                # a name may be a symbolic link to any file of the user's, ~/.bashrc,
                # which writing to the name would overwrite)
                text = json.dumps(for_editors(s), indent=2) + "\n"
                write_atomic(target / name, text.encode(), sync=False)
        except OSError as exc:
            raise UsageError(
                f"--write {target}: cannot write the schemas: {exc.strerror or exc}",
                hint="give a directory you may write",
            ) from None
        out.info(line_safe(f"wrote {len(schemas)} schema(s) into {target}"))
        return 0
    if args.list:
        out.data("\n".join(kinds))
        return 0
    name = f"{args.kind}.schema.json"
    if name not in schemas:
        raise UsageError(f"no schema {echoed(args.kind)}", hint="kinds: " + ", ".join(kinds))
    out.json(schemas[name])
    return 0


def run_params(args: argparse.Namespace, out: Output) -> int:
    # `--format json`, format version 1: every field always present; parameters whose DBID
    # key the vendor has not published have "key": null and cannot be set by name.
    from gitprov.catalog import Param, load_catalog

    cat = load_catalog()
    rows = []
    entries: list[Param | Unpublished] = [*cat.params, *cat.unpublished]
    for p in entries:
        param = p if isinstance(p, Param) else None
        rows.append(
            {
                "key": param.key if param else None,
                "name": p.name,
                "label": p.label,
                "type": p.type,
                "scope": p.scope,
                "unit": p.unit,
                "default": p.default,
                "min": p.min,
                "max": p.max,
                "max_length": p.max_length,
                "values": list(p.values),
                "managed": param.managed if param else False,
                "secret": param.secret if param else False,
                "settable_by_name": param is not None and not param.managed,
                "source": p.source,
                "description": p.description,
            }
        )
    doc: dict[str, Any] = {"version": 1, "params": rows}
    if args.format == "json":
        out.json(doc)
        return 0
    out.data(f"{'DBID KEY':<34} {'NAME':<36} {'TYPE':<8} {'SCOPE':<6} {'DEFAULT':<8} DESCRIPTION")
    for row in rows:
        flags = " [managed]" if row["managed"] else ""
        flags += " [secret]" if row["secret"] else ""
        key = row["key"] or "(not published)"
        default = row["default"]
        if isinstance(default, bool):
            default = int(default)
        shown = "" if default is None else str(default)
        desc = row["description"]
        desc = desc if len(desc) <= 60 else desc[:59] + "…"
        out.data(
            f"{key:<34} {row['name']:<36} {row['type']:<8} {row['scope']:<6} "
            f"{shown:<8} {desc}{flags}"
        )
    if any(r["key"] is None for r in rows):
        out.info(
            "\n(not published): the vendor has not published the DBID key; once you know "
            "the key a model's devices use, bind it in models/NAME.yaml (bindings: NAME: "
            "{key: DBID_..., source: ...}) and set the parameter by name"
        )
    return 0


def run_completion(args: argparse.Namespace, out: Output) -> int:
    # argcomplete: one argparse parser gives bash, zsh and fish (shtab has no fish); the
    # script calls back into gitprov, so completion never falls behind the options.
    from argcomplete.shell_integration import shellcode

    out.stdout.write(shellcode(["gitprov"], shell=args.shell))
    return 0
