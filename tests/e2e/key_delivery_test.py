"""Key delivery from factory state (issue 13, docs/key-delivery.md): option 66 from dnsmasq
in a network namespace, then a factory-fresh emulated IP542N that ends on its encrypted
per-MAC file at the newest version with no step by hand.

The namespaces, dnsmasq (DHCP with option 66 and TFTP on the TFTP root) and busybox udhcpc
are tests/fixtures/option66.py's, as for tests/e2e/option66_test.py. The encrypted fleet
is the example's (openssl-md5); `manual` (the key set at staging) is option66_test.py's
`test_encrypted_fleet_needs_the_key_out_of_band`. Here:

- `plaintext-bootstrap`: bootstrap IP542N.conf (TFTP) -> stage-fv<MAC>.conf (TFTP,
  plaintext, carrying the key) -> fv<MAC>.conf (TFTP, encrypted) -> unchanged;
- `https-stage`: the same, but the stage file comes over HTTPS with the device's client
  certificate from `gitprov serve --https-port` running in the server's namespace on
  10.203.0.1:8443, out of a stage root nothing else serves; its fetch log shows the stage
  file served to the device's address over https.

In both, the versions go bootstrap < stage < per-MAC file, the device's final parameters
are exactly `gitprov show MAC --reveal`, and the key reaches it from the stage file alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitprov.formats import flyingvoice
from tests.fixtures.certs import make_certs
from tests.fixtures.gitrepo import ROOT, GitRepo
from tests.fixtures.option66 import (
    FLOOR,
    MAC,
    SERVER_IP,
    Lan,
    gitprov,
    in_device,
    namespace_env,
    option66_fleet,
    option66_lan,
    publish_into,
    sent,
    steps,
)

pytestmark = pytest.mark.e2e

HTTPS_PORT = 8443

# Runs inside the device namespace: JSON in on stdin, JSON out on stdout. With `tls`, the
# device holds the server CA and its own certificate (what deploy/README.md section 7
# uploads), and nothing else: no key, no Profile Rule, option 66 on.
EMULATOR = """
import dataclasses, json, ssl, sys
from gitprov.tools.device import Device, DeviceState, MultiFetcher

job = json.load(sys.stdin)
state = DeviceState(
    job["mac"],
    product_name="IP542N",
    ip=job["ip"],
    config_file_name="IP542N.conf",
    option66_server=job["option66"],
)
context = None
if job["tls"]:
    context = ssl.create_default_context(cafile=job["tls"]["ca"])
    context.load_cert_chain(job["tls"]["cert"], job["tls"]["key"])
fetcher = MultiFetcher.standard(timeout=5.0, ssl_context=context)
results = Device(state).resync_until_stable(fetcher, max_rounds=6)
json.dump({"results": [dataclasses.asdict(r) for r in results], "params": state.params},
          sys.stdout)
"""


@pytest.fixture
def lan() -> Iterator[Lan]:
    with option66_lan() as net:
        yield net


def fleet_repo(path: Path, key_delivery: str) -> GitRepo:
    """The example inventory (encrypted), option 66 for the IP542N from 10.203.0.1 over
    TFTP, and `key_delivery`; https-stage's stage files at https://10.203.0.1:8443."""
    stage = f'  stage_url: "https://{SERVER_IP}:{HTTPS_PORT}"\n'
    return option66_fleet(
        path,
        f"example inventory behind option 66, keys by {key_delivery}",
        provisioning=stage if key_delivery == "https-stage" else "",
        publish=f"  key_delivery: {key_delivery}\n",
    )


def device(net: Lan, tls: dict[str, str] | None) -> dict[str, Any]:
    job = {"mac": MAC, "ip": net.leased, "option66": net.option66, "tls": tls}
    return in_device(net, EMULATOR, job, timeout=120)


def expected(repo: GitRepo, net: Lan) -> tuple[dict[str, str], str]:
    """What the device must end with (`show --reveal`), and its key."""
    want = flyingvoice.parse(
        gitprov(repo, "show", MAC, "--rev", "main", "--reveal").stdout.encode()
    )
    key = gitprov(repo, "key", MAC, "--rev", "main").stdout.strip()
    assert (net.tftp_root / f"fv{MAC}.conf").read_bytes().startswith(b"Salted__")
    return want, key


def check_journey(out: dict[str, Any], want: dict[str, str], key: str, stage_url: str) -> None:
    version = want["DBID_DBASE_VERSION"]
    results = out["results"]
    assert steps(results) == [
        ("option66", "applied", str(FLOOR)),
        ("profile-rule", "applied", str(int(version) - 1)),  # the stage file
        ("profile-rule", "applied", version),  # the per-MAC file, decrypted with the key
        ("profile-rule", "unchanged", version),
    ]
    assert results[0]["url"] == f"tftp://{SERVER_IP}/IP542N.conf"
    assert results[1]["url"] == stage_url
    assert results[2]["url"] == f"[--key <redacted>]tftp://{SERVER_IP}/fv{MAC}.conf"
    assert key not in json.dumps(results)  # results never carry the key
    assert out["params"] == want
    assert out["params"]["DBID_PROFILE_RULE"] == f"[--key {key}]tftp://{SERVER_IP}/fv{MAC}.conf"
    for name in ("DBID_WEB_SIP_SERVER", "DBID_SIP_ACCOUNT", "DBID_SIP_PASSWORD"):
        assert want[name].strip(), name


def test_plaintext_bootstrap_from_factory_state(lan: Lan, tmp_path: Path) -> None:
    repo = fleet_repo(tmp_path / "repo", "plaintext-bootstrap")
    publish_into(repo, lan)
    want, key = expected(repo, lan)
    boot = flyingvoice.parse((lan.tftp_root / "IP542N.conf").read_bytes())
    assert boot["DBID_PROFILE_RULE"] == f"tftp://{SERVER_IP}/stage-fv$(MA).conf"
    stage = (lan.tftp_root / f"stage-fv{MAC}.conf").read_text()
    assert key in stage  # the price of this mode: readable by anyone who knows the MAC

    out = device(lan, None)
    check_journey(out, want, key, f"tftp://{SERVER_IP}/stage-fv{MAC}.conf")
    sent(lan, "IP542N.conf", 1)
    sent(lan, f"stage-fv{MAC}.conf", 1)
    sent(lan, f"fv{MAC}.conf", 2)


def test_https_stage_from_factory_state(lan: Lan, tmp_path: Path) -> None:
    repo = fleet_repo(tmp_path / "repo", "https-stage")
    stage_root = lan.base / "stage"
    publish_into(repo, lan, "--stage-root", str(stage_root))
    want, key = expected(repo, lan)
    boot = flyingvoice.parse((lan.tftp_root / "IP542N.conf").read_bytes())
    assert boot["DBID_PROFILE_RULE"] == f"https://{SERVER_IP}:{HTTPS_PORT}/stage-fv$(MA).conf"
    for root in (lan.tftp_root, lan.base / "http"):
        assert not any(p.name.startswith("stage-") for p in root.iterdir())
        for path in root.iterdir():
            assert key.encode() not in path.read_bytes(), path
    assert key in (stage_root / f"stage-fv{MAC}.conf").read_text()

    certs = make_certs(lan.base / "pki", [SERVER_IP], [MAC])
    fetch_log = lan.base / "fetch.log"
    serve = subprocess.Popen(
        [lan.ip, "netns", "exec", lan.srv, sys.executable, "-m", "gitprov", "serve",
         "--host", SERVER_IP, "--http-root", str(lan.base / "http"), "--http-port", "8080",
         "--https-port", str(HTTPS_PORT), "--stage-root", str(stage_root),
         "--tls-cert", str(certs.server[0]), "--tls-key", str(certs.server[1]),
         "--client-ca", str(certs.devices_ca), "--fetch-log", str(fetch_log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=namespace_env(),
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        deadline = time.monotonic() + 30
        said = ""
        while "HTTPS:" not in said and time.monotonic() < deadline:
            line = serve.stdout.readline()
            if not line:
                break
            said += line
        assert f"HTTPS: https://{SERVER_IP}:{HTTPS_PORT}" in said, said
        client_cert, client_key = certs.clients[MAC]
        tls = {"ca": str(certs.server_ca), "cert": str(client_cert), "key": str(client_key)}
        out = device(lan, tls)
    finally:
        serve.terminate()
        try:
            serve.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.communicate(timeout=10)
    check_journey(out, want, key, f"https://{SERVER_IP}:{HTTPS_PORT}/stage-fv{MAC}.conf")
    sent(lan, "IP542N.conf", 1)
    sent(lan, f"fv{MAC}.conf", 2)
    fetches = [json.loads(line) for line in fetch_log.read_text().splitlines()]
    stage_fetches = [f for f in fetches if f["path"] == f"/stage-fv{MAC}.conf"]
    assert len(stage_fetches) == 1, fetches
    (got,) = stage_fetches
    assert (got["protocol"], got["client"], got["status"]) == ("https", lan.leased, 200), got
    assert (got["file"], got["mac"]) == (f"stage-fv{MAC}.conf", MAC), got
