"""`gitprov import`: bring an existing fleet into an inventory.

Two sources:

- a directory of param.conf files, one per device, plaintext or encrypted the way
  `openssl enc -aes-256-cbc -k KEY` (and the vendor's `encrypt_file`) writes them — what an
  operator copies from the web or TFTP root of the provisioning server gitprov replaces;
- a CSV spreadsheet, one row per device: MAC, model, profile and line columns.

What an import promises, and checks before it writes anything: the inventory validates,
and for every imported param.conf it builds the same parameters, except
DBID_DBASE_VERSION, which starts above every imported one (`version_floor`) so that the
devices apply the first published file. Devices keep the key they hold now: the key of
their Profile Rule (or, without one, the key their file was encrypted with) becomes their
own `key:`. Values that most devices share go into profiles; device files keep their
differences. Every secret is sealed to the repository's public key, and no plaintext
secret is written, returned or put into a message.

Every problem of the input comes back at once, located (file:line:col of the input), and
then nothing is written; otherwise every file is written, or — should the disk fail half
way — none is.

The modules: conf and read_csv run the two imports; read_conf, with decrypt and tables,
reads each param.conf into a Device (values); factor moves what devices share into
profiles; write plans the YAML, seals the secrets and writes everything or nothing; check
holds what must be true before anything is written; context is the inventory imported
into and the report, problems the GP401-GP413 codes.
"""

from gitprov.importer.conf import DEFAULT_PREFIX, DEFAULT_THRESHOLD, ConfOptions, import_conf
from gitprov.importer.context import FileReport, ImportResult
from gitprov.importer.problems import (
    CIPHER,
    CSV,
    DECRYPT,
    MAC,
    MALFORMED,
    MODEL,
    RESULT,
    RULE,
    TABLE,
    TAKEN,
    UNREADABLE,
    VALUE,
    VERSION,
    ImportRefused,
)
from gitprov.importer.read_csv import import_csv

__all__ = [
    "CIPHER",
    "CSV",
    "DECRYPT",
    "DEFAULT_PREFIX",
    "DEFAULT_THRESHOLD",
    "MAC",
    "MALFORMED",
    "MODEL",
    "RESULT",
    "RULE",
    "TABLE",
    "TAKEN",
    "UNREADABLE",
    "VALUE",
    "VERSION",
    "ConfOptions",
    "FileReport",
    "ImportRefused",
    "ImportResult",
    "import_conf",
    "import_csv",
]
