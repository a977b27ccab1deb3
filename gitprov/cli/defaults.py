"""Values the options' defaults, choices and help show, spelled here so that building the
parser (and so `--help`, completion and every command's start) imports no core module:
those pull in pygit2, jsonschema and cryptography. tests/cli/startup_test.py checks each
against the module that owns it."""

from __future__ import annotations

# gitprov.source.DEFAULT_INVENTORY_DIR
INVENTORY_DIR = "inventory"
# gitprov.publisher_config.CONFIG_ENV, ALLOWED_ROOTS_ENV
CONFIG_ENV = "GITPROV_PUBLISHER_CONFIG"
ALLOWED_ROOTS_ENV = "GITPROV_ALLOWED_ROOTS"
# The values of gitprov.crypto.Mode, in its order; NO_ENCRYPTION is Mode.NONE.
MODES = ("openssl-md5", "openssl-sha256", "openssl-pbkdf2", "none")
NO_ENCRYPTION = "none"
# gitprov.crypto.Cipher().iterations (openssl's -iter default), gitprov.crypto.MAX_ITERATIONS
ITERATIONS = 10000
MAX_ITERATIONS = 10_000_000
# gitprov.importer.DEFAULT_THRESHOLD, DEFAULT_PREFIX
IMPORT_THRESHOLD = 50
IMPORT_PREFIX = "imported"
# The fields of gitprov.tools.serve.TftpLimits()
TFTP_MAX_TRANSFERS = 64
TFTP_MAX_PENDING = 32
TFTP_MAX_PENDING_PER_CLIENT = 4
TFTP_MAX_TIMEOUT = 5
# gitprov.tools.serve.HTTP_MAX_CONNECTIONS
HTTP_MAX_CONNECTIONS = 1024
# gitprov.fleet.FORMATS
LOG_FORMATS = ("gitprov", "nginx", "tftpd")
# gitprov.init.RUNNER_LABEL
RUNNER_LABEL = "provisioning"
