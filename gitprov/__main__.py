import sys

try:
    from gitprov.cli import entry
except KeyboardInterrupt:
    # Ctrl-C while gitprov loads (a tenth of a second): said as any other, not a trace.
    sys.stderr.write("gitprov: interrupted\n")
    sys.exit(130)

entry()
