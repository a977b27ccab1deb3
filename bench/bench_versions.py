"""Issue 4: the time to publish a one-device change in a generated fleet with a long
history, with a cold cache (a fresh clone: every version computed from history) and a warm
one (the cache holds the parent commit, as on a server that published it).

    python bench/bench_versions.py [--devices 10000] [--commits 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gitprov.pipeline import Pipeline
from gitprov.publish import Targets, publish
from tests.fixtures.fleet import device_path, device_yaml
from tests.fixtures.gitrepo import demo_private_key, example_files

SIG = pygit2.Signature("Bench", "bench@gitprov.invalid", 1_700_000_000, 0)


def _tree(repo: pygit2.Repository, files: dict[str, bytes]) -> pygit2.Oid:
    index = pygit2.Index()
    for path, data in sorted(files.items()):
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    return index.write_tree(repo)


def _replace(repo: pygit2.Repository, root: pygit2.Oid, path: str, blob: pygit2.Oid) -> pygit2.Oid:
    """A new root tree with one file replaced, rebuilding only the trees on its path."""
    head, _, rest = path.partition("/")
    tree = repo.get(root)
    assert isinstance(tree, pygit2.Tree)
    tb = repo.TreeBuilder(tree)
    if rest:
        sub = tree[head].id
        tb.insert(head, _replace(repo, sub, rest, blob), pygit2.enums.FileMode.TREE)
    else:
        tb.insert(head, blob, pygit2.enums.FileMode.BLOB)
    return tb.write()


def make_repo(path: Path, devices: int, commits: int) -> pygit2.Repository:
    repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
    files = {p: d for p, d in example_files().items() if "/devices/" not in p}
    for i in range(devices):
        files[device_path(i)] = device_yaml(i).encode()
    tree = _tree(repo, files)
    parent = repo.create_commit("refs/heads/main", SIG, SIG, "fleet", tree, [])
    for n in range(1, commits):
        i = (n * 7919) % devices
        blob = repo.create_blob(device_yaml(i, display=f"Edit {n}").encode())
        tree = _replace(repo, tree, device_path(i), blob)
        parent = repo.create_commit("refs/heads/main", SIG, SIG, f"edit {n}", tree, [parent])
    return repo


def head_of(repo: pygit2.Repository) -> pygit2.Commit:
    c = repo.get(repo.references["refs/heads/main"].target)
    assert isinstance(c, pygit2.Commit)
    return c


def one_change(repo: pygit2.Repository, devices: int, tag: str) -> pygit2.Commit:
    head = head_of(repo)
    i = devices // 2
    blob = repo.create_blob(device_yaml(i, display=f"Change {tag}").encode())
    tree = _replace(repo, head.tree.id, device_path(i), blob)
    repo.create_commit("refs/heads/main", SIG, SIG, f"change {tag}", tree, [head.id])
    return head_of(repo)


def timed_publish(
    repo: pygit2.Repository,
    commit: pygit2.Commit,
    cache: Path,
    roots: Path,
    pipeline: Pipeline | None = None,
) -> float:
    start = time.perf_counter()
    # A fresh Pipeline is a fresh process image (no in-memory caches); passing one in is a
    # long-running watcher.
    p = pipeline or Pipeline(repo, cache_dir=cache)
    build = p.build(commit, demo_private_key())
    publish(build, Targets((roots / "http", roots / "tftp"), roots / "state"))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=int(os.environ.get("BENCH_DEVICES", 10000)))
    ap.add_argument("--commits", type=int, default=int(os.environ.get("BENCH_COMMITS", 1000)))
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="gitprov-bench-"))
    try:
        t0 = time.perf_counter()
        repo = make_repo(tmp / "repo.git", args.devices, args.commits)
        made = time.perf_counter() - t0
        roots = tmp / "roots"
        cache = tmp / "cache"
        # The server published the head before: warm cache, files in place.
        watcher = Pipeline(repo, cache_dir=cache)
        timed_publish(repo, head_of(repo), cache, roots, watcher)
        warm = timed_publish(repo, one_change(repo, args.devices, "warm"), cache, roots)
        same = timed_publish(repo, one_change(repo, args.devices, "watch"), cache, roots, watcher)
        cold_commit = one_change(repo, args.devices, "cold")
        shutil.rmtree(cache)
        cold = timed_publish(repo, cold_commit, cache, roots)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n, c = args.devices, args.commits
    rows = [
        (f"repo: {n} devices, {c} commits (generation)", f"{made:.1f} s"),
        ("publish one-device change, warm cache", f"{warm:.2f} s"),
        ("  the same, in a running watcher", f"{same:.2f} s"),
        ("publish one-device change, cold cache", f"{cold:.2f} s"),
    ]
    for name, value in rows:
        print(f"{name:<50} {value:>12}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
