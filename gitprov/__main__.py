from gitprov._start import run

run()
