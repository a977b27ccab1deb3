"""gitprov: configuration-as-code for VoIP device provisioning."""

__version__ = "0.1.0"

# Where inventory repositories get the pre-commit hook and the GitHub action from;
# pyproject.toml's project URLs name the same place (tests/packaging_test.py checks).
REPOSITORY_URL = "https://github.com/gitprov/gitprov"

# Where help and hints send a reader: the documentation is not in the package (an
# installed gitprov has no docs/ beside it), so it is named by its address.
DOCS_URL = f"{REPOSITORY_URL}/blob/main/docs"
DEPLOY_URL = f"{REPOSITORY_URL}/tree/main/deploy"
