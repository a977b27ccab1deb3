from gitprov.cli import entry

entry()
