"""gitprov: configuration-as-code for VoIP device provisioning."""

__version__ = "0.1.0"
