"""Generated inventory repositories for `make bench`: N devices, a few models and profiles,
and either the four commits of the publish scenarios or a long history with merges.

    python bench/fleet.py fleet --devices 10000          # prints the repository's path
    python bench/fleet.py history --devices 10000 --commits 5000

Repositories are built with pygit2 alone: blobs, TreeBuilders on the previous trees (a
commit rewrites only the trees on the changed paths) and commits, never a checkout or an
index of the whole fleet. They are bare, and cached under `$XDG_CACHE_HOME/gitprov-bench`
(default `~/.cache/gitprov-bench`) or `--work DIR`, never inside the checkout; a finished
repository is marked with a `bench-complete` file, so an interrupted generation is redone.

Secrets are sealed to the example's demo key (examples/demo-private-key.txt, so gitprov
warns GP119). A pool of 256 SIP passwords is shared by the devices: sealing one secret
per device would cost ~0.1 ms each and make secrets.yaml the largest file of the fleet,
which is not what a fleet of shared-trunk ATAs looks like either.

The fleet repository's refs (each a child of the one before):

    base        the whole fleet, one root commit
    one-device  one device's display name changed
    profile     profiles/callcenter.yaml changed: 20% of the devices render differently
    child       one more device changed (a child of a validated commit)

The history repository's `main`: a root commit with the fleet, then commits that each
change 1-3 devices, every 100th the `remote` profile (10% of the devices), now and then a
device added or removed, version_floor raised once halfway, and every 10th commit a merge
of a two-commit side branch forked four commits earlier.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pygit2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gitprov.secrets import load_secrets_file, seal  # noqa: E402

# Bump when what is generated changes: cached repositories of another format are rebuilt.
FORMAT = 4
DEMO_KEY_FILE = ROOT / "examples" / "demo-private-key.txt"
EPOCH = 1_700_000_000
BLOB = pygit2.enums.FileMode.BLOB
TREE = pygit2.enums.FileMode.TREE
SIP_SECRETS = 256
DEVICE_KEYS = 16
COMPLETE = "bench-complete"

# Which profile a device uses, by i % 10: callcenter is exactly 20% of the fleet (the
# one-profile scenario), remote 10% (the history's profile edits).
_PROFILE_BY_DIGIT = (
    "callcenter",
    "callcenter",
    "office",
    "office",
    "office",
    "base",
    "base",
    "warehouse",
    "warehouse",
    "remote",
)
# (name, product name, line count)
_MODELS = (("IP542N", "IP542N", 4), ("G502N", "G502N", 2), ("FIP16", "FIP16", 6))


def default_work() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gitprov-bench"


def demo_private_key() -> str:
    lines = [ln for ln in DEMO_KEY_FILE.read_text().splitlines() if ln and not ln.startswith("#")]
    return lines[0]


def mac_of(i: int) -> str:
    """12 lower-case hex digits; never one of the example inventory's (0021f2…)."""
    return f"0021f4{i:06x}"


def device_name(i: int) -> str:
    return f"{mac_of(i)}.yaml"


def device_yaml(i: int, revision: int = 0) -> bytes:
    """A realistic device file: 1-3 lines with accounts and sealed passwords; some devices
    override a parameter, a few carry their own key."""
    mac = mac_of(i)
    colons = ":".join(mac[j : j + 2] for j in range(0, 12, 2))
    model = _MODELS[i % 3]
    lines_used = min(model[2], 1 + (i % 7 == 0) + (i % 11 == 0))
    display = f"Desk {i}" if revision == 0 else f"Desk {i} r{revision}"
    out = [
        f'mac: "{colons}"\n',
        f"model: {model[0]}\n",
        f"serial: GEN{i:08d}\n",
        f"profile: {_PROFILE_BY_DIGIT[i % 10]}\n",
        f"description: Generated device {i}\n",
    ]
    if i % 97 == 0:
        out.append(f"key: !secret devkey_{i % DEVICE_KEYS:02d}\n")
    if i % 13 == 0 or i % 29 == 0:
        out.append("params:\n")
        if i % 13 == 0:
            out.append("  call.dnd: true\n")
        if i % 29 == 0:
            out.append("  web.http_port: 8080\n")
    out.append("lines:\n")
    for slot in range(lines_used):
        account = 1_000_000 + i * 4 + slot
        out += [
            "  - enabled: true\n",
            f'    account: "{account}"\n',
            f'    phone_number: "{account}"\n',
            f"    display_name: {display}{f' line {slot + 1}' if slot else ''}\n",
            f"    password: !secret sip_{(i * 4 + slot) % SIP_SECRETS:03d}\n",
        ]
    return "".join(out).encode()


def profile_yaml(name: str, revision: int = 0) -> bytes:
    """The profiles; `revision` edits one (a value every device using it renders)."""
    texts = {
        "base": "description: SIP service every device uses\n"
        "params:\n"
        "  sip.server: sip.example.net\n"
        "  sip.server_port: 5060\n"
        "  sip.outbound: sbc1.example.net\n"
        "  sip.outbound_port: 5060\n"
        "  provision.option66: false\n",
        "office": "description: Office desks\n"
        "extends: base\n"
        "params:\n"
        "  sip.outbound_backup: sbc2.example.net\n"
        "  sip.outbound_backup_port: 5060\n",
        "callcenter": "description: Call centre seats\n"
        "extends: office\n"
        "params:\n"
        f"  sip.dns_srv_domain: {'cc' if revision == 0 else f'cc{revision}'}.example.net\n"
        "  call.dnd: false\n",
        "warehouse": "description: Warehouse ATAs\n"
        "extends: base\n"
        "params:\n"
        "  web.http_disable: true\n",
        "remote": "description: Home workers behind NAT\n"
        "extends: base\n"
        "params:\n"
        f"  sip.alt_server: {'alt' if revision == 0 else f'alt{revision}'}.example.net\n"
        "  sip.alt_server_port: 5060\n",
    }
    return texts[name].encode()


def model_yaml(name: str, product: str, lines: int) -> bytes:
    return (
        f"description: Flying Voice {product}\n"
        "family: flyingvoice\n"
        f"product_name: {product}\n"
        f"config_file_name: {name}.conf\n"
        f"line_count: {lines}\n"
    ).encode()


def fleet_yaml(version_floor: int = 1000) -> bytes:
    return (
        "fleet: bench\n"
        f"version_floor: {version_floor}\n"
        'file_name: "fv$(MA).conf"\n'
        "provisioning:\n"
        '  url: "http://prov.example.net/fv"\n'
        "encryption:\n"
        "  mode: openssl-md5\n"
        "  master_key: !secret fleet_master_key\n"
    ).encode()


def secrets_yaml() -> bytes:
    """The example's public key and master key, a pool of SIP passwords and device keys,
    sealed now (sealing is randomised: each generation has its own texts)."""
    example = load_secrets_file((ROOT / "inventory" / "secrets.yaml").read_text())
    pk = example.public_key
    lines = [f"public_key: {pk}\n", "secrets:\n"]
    lines.append(f"  fleet_master_key: {example.sealed['fleet_master_key']}\n")
    for k in range(DEVICE_KEYS):
        name = f"devkey_{k:02d}"
        lines.append(f"  {name}: {seal(pk, name, f'device-key-{k:02d}-bench-0123456789')}\n")
    for k in range(SIP_SECRETS):
        name = f"sip_{k:03d}"
        lines.append(f"  {name}: {seal(pk, name, f'pw-{k:03d}-Secret!')}\n")
    return "".join(lines).encode()


class Builder:
    """Trees of one repository, rewritten path by path from the previous ones."""

    def __init__(self, repo: pygit2.Repository) -> None:
        self.repo = repo
        self.tick = 0

    def blob(self, data: bytes) -> pygit2.Oid:
        return self.repo.create_blob(data)

    def tree(self, entries: Mapping[str, pygit2.Oid], base: pygit2.Oid | None = None) -> pygit2.Oid:
        """A tree with `entries` (name -> blob or tree id; a name ending in '/' is a tree)
        over `base`'s entries."""
        tb = self.repo.TreeBuilder(base) if base is not None else self.repo.TreeBuilder()
        for name, oid in entries.items():
            if name.endswith("/"):
                tb.insert(name[:-1], oid, TREE)
            else:
                tb.insert(name, oid, BLOB)
        return tb.write()

    def edit(self, root: pygit2.Oid, changes: Mapping[str, pygit2.Oid | None]) -> pygit2.Oid:
        """`root` with the files at `changes`' paths replaced (None removes), rewriting
        only the trees on those paths."""
        by_head: dict[str, dict[str, pygit2.Oid | None]] = {}
        here: dict[str, pygit2.Oid | None] = {}
        for path, oid in changes.items():
            head, sep, rest = path.partition("/")
            if sep:
                by_head.setdefault(head, {})[rest] = oid
            else:
                here[head] = oid
        tree = self.repo.get(root)
        assert isinstance(tree, pygit2.Tree)
        tb = self.repo.TreeBuilder(tree)
        for head, sub in by_head.items():
            sub_root = tree[head].id if head in tree else self.repo.TreeBuilder().write()
            tb.insert(head, self.edit(sub_root, sub), TREE)
        for name, oid in here.items():
            if oid is None:
                if name in tree:
                    tb.remove(name)
            else:
                tb.insert(name, oid, BLOB)
        return tb.write()

    def commit(
        self, ref: str | None, message: str, tree: pygit2.Oid, parents: list[pygit2.Oid]
    ) -> pygit2.Oid:
        self.tick += 1
        sig = pygit2.Signature(
            f"Engineer {self.tick % 7}",
            f"eng{self.tick % 7}@bench.invalid",
            EPOCH + self.tick * 60,
            0,
        )
        return self.repo.create_commit(ref, sig, sig, message, tree, parents)


def _fleet_tree(b: Builder, devices: int) -> pygit2.Oid:
    dev = b.tree({device_name(i): b.blob(device_yaml(i)) for i in range(devices)})
    profiles = b.tree(
        {f"{p}.yaml": b.blob(profile_yaml(p)) for p in sorted(set(_PROFILE_BY_DIGIT))}
    )
    models = b.tree({f"{m}.yaml": b.blob(model_yaml(m, pn, n)) for m, pn, n in _MODELS})
    inventory = b.tree(
        {
            "gitprov.yaml": b.blob(fleet_yaml()),
            "secrets.yaml": b.blob(secrets_yaml()),
            "devices/": dev,
            "profiles/": profiles,
            "models/": models,
        }
    )
    return b.tree({"inventory/": inventory})


def _cached(path: Path, build: Callable[[Path], None]) -> Path:
    if (path / COMPLETE).is_file():
        return path
    if path.exists():
        shutil.rmtree(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    build(tmp)
    (tmp / COMPLETE).write_text("ok\n")
    tmp.rename(path)
    return path


def _progress(text: str) -> None:
    print(f"[fleet] {text}", file=sys.stderr, flush=True)


def fleet_repo(work: Path, devices: int) -> Path:
    """The publish scenarios' repository (refs: base, one-device, profile, child)."""

    def build(path: Path) -> None:
        _progress(f"generating a fleet of {devices} devices in {path}")
        repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
        b = Builder(repo)
        root = _fleet_tree(b, devices)
        base = b.commit("refs/heads/base", f"{devices} devices", root, [])
        one = devices // 2
        dev1 = f"inventory/devices/{device_name(one)}"
        t1 = b.edit(root, {dev1: b.blob(device_yaml(one, 1))})
        c1 = b.commit("refs/heads/one-device", f"rename {mac_of(one)}", t1, [base])
        t2 = b.edit(
            t1, {"inventory/profiles/callcenter.yaml": b.blob(profile_yaml("callcenter", 1))}
        )
        c2 = b.commit("refs/heads/profile", "callcenter: new SRV domain", t2, [c1])
        other = devices // 3
        t3 = b.edit(t2, {f"inventory/devices/{device_name(other)}": b.blob(device_yaml(other, 1))})
        c3 = b.commit("refs/heads/child", f"rename {mac_of(other)}", t3, [c2])
        repo.references.create("refs/heads/main", c3, force=True)
        _progress("  packing")
        _pack(path)

    return _cached(work / f"fleet-{devices}-v{FORMAT}.git", build)


@dataclass
class _History:
    """What the history generator tracks on main."""

    present: set[int]
    revisions: dict[int, int]
    next_device: int
    profile_revision: int = 0
    floor: int = 1000


def history_target(devices: int) -> str:
    """The MAC that `log` and `blame` are asked about: changed on main and on side
    branches, in the callcenter profile."""
    return mac_of(history_target_index(devices))


def history_target_index(devices: int) -> int:
    return (devices // 2 + 1) // 10 * 10 + 1 if devices >= 20 else 1


def history_repo(work: Path, devices: int, commits: int) -> Path:
    """`commits` commits on main's first-parent chain (merges included) over a fleet of
    `devices`: see the module docstring."""

    def build(path: Path) -> None:
        _progress(f"generating a history of {commits} commits over {devices} devices in {path}")
        repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
        b = Builder(repo)
        root = _fleet_tree(b, devices)
        head = b.commit("refs/heads/main", f"{devices} devices", root, [])
        state = _History(set(range(devices)), {}, devices)
        trees: list[pygit2.Oid] = [root]
        heads: list[pygit2.Oid] = [head]
        target = history_target_index(devices)
        half = devices // 2
        for n in range(1, commits):
            if n % 500 == 0:
                _progress(f"  commit {n}/{commits}")
            if n % 10 == 0 and n >= 4:
                # A side branch forked 4 commits ago changes 2 devices of the upper half
                # (main changes the lower half), then merges; the side's content wins.
                fork = len(heads) - 4
                side_tree, side_head = trees[fork], heads[fork]
                side_changes: dict[str, pygit2.Oid | None] = {}
                for s in range(2):
                    k = half + (n * 31 + s * 17) % max(devices - half, 1)
                    if n % 40 == 0 and s == 0:
                        k = target
                    if k not in state.present:
                        continue
                    rev = state.revisions.get(k, 0) + 1
                    state.revisions[k] = rev
                    change = {f"inventory/devices/{device_name(k)}": b.blob(device_yaml(k, rev))}
                    side_changes.update(change)
                    side_tree = b.edit(side_tree, change)
                    side_head = b.commit(
                        None, f"side {n}.{s}: edit {mac_of(k)}", side_tree, [side_head]
                    )
                tree = b.edit(trees[-1], side_changes)
                head = b.commit(
                    "refs/heads/main", f"Merge side branch {n}", tree, [heads[-1], side_head]
                )
            else:
                changes: dict[str, pygit2.Oid | None] = {}
                message = ""
                if n % 100 == 50:
                    state.profile_revision += 1
                    data = profile_yaml("remote", state.profile_revision)
                    changes["inventory/profiles/remote.yaml"] = b.blob(data)
                    message = "remote: new alternate server"
                elif n == commits // 2:
                    state.floor = 100_000
                    changes["inventory/gitprov.yaml"] = b.blob(fleet_yaml(state.floor))
                    message = "raise version_floor"
                elif n % 100 == 25 and half > 4:
                    k = state.next_device
                    state.next_device += 1
                    state.present.add(k)
                    changes[f"inventory/devices/{device_name(k)}"] = b.blob(device_yaml(k))
                    message = f"add {mac_of(k)}"
                elif n % 150 == 75 and half > 4:
                    k = (n * 7) % half
                    if k in state.present and k != target:
                        state.present.discard(k)
                        changes[f"inventory/devices/{device_name(k)}"] = None
                        message = f"remove {mac_of(k)}"
                if not changes:
                    count = 1 + n % 3
                    picked = [(n * 7919 + j * 104729) % max(half, 1) for j in range(count)]
                    if n % 20 == 3:
                        picked[0] = target
                    for k in picked:
                        if k not in state.present:
                            continue
                        rev = state.revisions.get(k, 0) + 1
                        state.revisions[k] = rev
                        changes[f"inventory/devices/{device_name(k)}"] = b.blob(device_yaml(k, rev))
                    message = "edit " + ", ".join(mac_of(k) for k in picked)
                if not changes:  # every device picked was removed: touch the fleet file
                    changes["inventory/gitprov.yaml"] = b.blob(fleet_yaml(state.floor) + b"# -\n")
                tree = b.edit(trees[-1], changes)
                head = b.commit("refs/heads/main", message, tree, [heads[-1]])
            trees.append(tree)
            heads.append(head)
        _progress("  packing")
        _pack(path)

    return _cached(work / f"history-{devices}x{commits}-v{FORMAT}.git", build)


def _pack(path: Path) -> None:
    """Pack the loose objects as git would (a clone is packed): one pack, deltas between
    trees, so reading the history costs what it costs in a real repository."""
    import subprocess

    if shutil.which("git") is None:
        return  # loose objects work too, only slower to read and larger on disk
    subprocess.run(
        ["git", "-C", str(path), "repack", "-a", "-d", "-q", "--window=10", "--depth=50"],
        check=True,
    )
    subprocess.run(["git", "-C", str(path), "prune-packed", "-q"], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("kind", choices=["fleet", "history"])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--commits", type=int, default=500)
    ap.add_argument("--work", type=Path, default=default_work())
    args = ap.parse_args(argv)
    if args.kind == "fleet":
        print(fleet_repo(args.work, args.devices))
    else:
        print(history_repo(args.work, args.devices, args.commits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
