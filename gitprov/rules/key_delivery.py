"""GP131 key-delivery: how a device that arrives by option 66 learns its key
(`publish.key_delivery`, docs/key-delivery.md).

- plaintext-bootstrap (warning): each device's stage file carries its key in plaintext in
  the HTTP and TFTP roots; anyone who knows (or guesses) a MAC reads that device's key,
  and with it its SIP credentials.
- https-stage (error) without an HTTPS URL for the stage files: `provisioning.stage_url`,
  or a `provisioning.url` that is https:// itself.
- https-stage or plaintext-bootstrap (warning) where it does nothing: without
  `publish.option66` (no bootstrap leads devices to a stage file), or with the fleet's
  `encryption.mode: none` (there is no key to deliver).

Fails:   `publish: {option66: true, key_delivery: https-stage}` with
         `provisioning: {url: "tftp://10.0.0.1"}` and no `stage_url`
Passes:  the same with `provisioning: {stage_url: "https://prov.example.net"}`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov import DOCS_URL
from gitprov.errors import Problem
from gitprov.inventory import FLEET
from gitprov.rules import DocContext, error_at, get, warning_at
from gitprov.stage import HTTPS_STAGE, PLAINTEXT_BOOTSTRAP

CODE = "GP131"
NAME = "key-delivery"

_AT = ("publish", "key_delivery")


def check_document(dctx: DocContext) -> Iterator[Problem]:
    if dctx.kind != FLEET:
        return
    doc = dctx.doc
    mode = get(doc.data, *_AT)
    if mode not in (HTTPS_STAGE, PLAINTEXT_BOOTSTRAP) or dctx.is_flagged(_AT):
        return
    if mode == PLAINTEXT_BOOTSTRAP:
        yield warning_at(
            doc,
            _AT,
            CODE,
            "key_delivery plaintext-bootstrap publishes each device's key in plaintext over "
            "HTTP and TFTP: anyone who knows or guesses a MAC reads that device's key, and "
            "with it the device's file (its SIP credentials)",
            "prefer https-stage (a stage file served only to the device's own client "
            f"certificate) or manual (keys set at staging); {DOCS_URL}/key-delivery.md",
        )
    if mode == HTTPS_STAGE:
        stage_url = get(doc.data, "provisioning", "stage_url")
        url = get(doc.data, "provisioning", "url")
        if not isinstance(stage_url, str) and not (
            isinstance(url, str) and url.startswith("https://")
        ):
            yield error_at(
                doc,
                _AT,
                CODE,
                "key_delivery https-stage needs an HTTPS URL for the stage files, and "
                "provisioning.url is not https://",
                'set provisioning.stage_url: "https://HOST[:PORT]" (the server that serves '
                f"the stage root with client certificates); {DOCS_URL}/key-delivery.md",
            )
    option66 = get(doc.data, "publish", "option66")
    if option66 is None or option66 is False or option66 == []:
        yield warning_at(
            doc,
            _AT,
            CODE,
            f"key_delivery {mode} does nothing without publish.option66: only the option-66 "
            "bootstrap leads devices to their stage file",
            "set publish.option66 (true, or the models), or remove key_delivery",
        )
    if get(doc.data, "encryption", "mode") == "none":
        yield warning_at(
            doc,
            _AT,
            CODE,
            f"key_delivery {mode} delivers no key: the fleet's encryption.mode is none, so "
            "per-MAC files are plaintext (models that encrypt still get their key)",
            "remove key_delivery, or encrypt the fleet",
        )
