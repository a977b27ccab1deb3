"""Tools around the pipeline, not stages of it: the embedded HTTP/HTTPS/TFTP servers
(`gitprov serve`) and the device emulator (`gitprov probe`, and the tests' stand-in for a
real Flying Voice device)."""
