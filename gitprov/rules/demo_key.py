"""GP119 demo-key (warning): secrets.yaml is sealed to the example's demo key.

The private half of the example inventory's key is public (examples/demo-private-key.txt),
so anything sealed to it can be read by anyone: fine for `make run`, never for a fleet.

Fails:   `public_key: gitprov-pk-OynYgOcSSeo7rOiuhBmyMxjw9FlMrAkzhDixRkPcPDQ`
Passes:  a key pair of your own (`gitprov secrets keygen`, then `gitprov secrets rotate`)
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import SECRETS
from gitprov.rules import DocContext, get, warning_at

CODE = "GP119"
NAME = "demo-key"

# The public key of examples/demo-private-key.txt (tests check that they belong together).
DEMO_PUBLIC_KEY = "gitprov-pk-OynYgOcSSeo7rOiuhBmyMxjw9FlMrAkzhDixRkPcPDQ"


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    if dctx.kind == SECRETS and get(doc.data, "public_key") == DEMO_PUBLIC_KEY:
        yield warning_at(
            doc,
            ("public_key",),
            CODE,
            "secrets are sealed to the demo key, whose private half is public",
            "make your own: `gitprov secrets keygen --out KEYFILE`, then "
            "`gitprov secrets rotate --new-public-key …`",
        )
